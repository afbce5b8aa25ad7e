//! Cluster-mode test helpers: a real control plane (skipped, with the reason printed, without
//! the Kubernetes binaries), kernlet joined to it as node `testnode`, and reading what it wrote.
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use kernlet_tests::{node::TestNode, skip};
use serde_json::Value;
use xtask::{
    control_plane::{self, ControlPlane},
    k8s::{self, K8sBin},
};

pub const NODE: &str = kernlet_tests::node::NODE_NAME;

/// The control plane, or `None` (after printing the skip) without the binaries; the cluster of
/// `$KERNLET_E2E_KUBECONFIG` instead when it is set.
pub fn control_plane(test: &str) -> Result<Option<ControlPlane>> {
    if let Some(path) = std::env::var_os(control_plane::E2E_KUBECONFIG) {
        return Ok(Some(ControlPlane::external(path.as_ref(), NODE)?));
    }
    match k8s::find()? {
        K8sBin::Found(bin) => Ok(Some(ControlPlane::start(&bin)?)),
        K8sBin::Missing(reason) => {
            skip(test, &reason);
            Ok(None)
        }
    }
}

/// A local control plane for a test that stops, reconfigures or proxies it; `None` (after
/// printing the skip) without the binaries or when the tests run against an external cluster.
pub fn local_control_plane(test: &str) -> Result<Option<ControlPlane>> {
    let plane = control_plane(test)?;
    if plane.as_ref().is_some_and(ControlPlane::is_external) {
        skip(
            test,
            "it stops, reconfigures or proxies the API server, which an external cluster \
             ($KERNLET_E2E_KUBECONFIG) does not allow",
        );
        return Ok(None);
    }
    Ok(plane)
}

/// kernlet as node `testnode` of `plane`: its kubelet port trusts the cluster CA, asks the API
/// server about every request (webhook authentication and authorization, the config file's
/// upstream defaults), and the test's client is the cluster admin.
pub fn join(plane: &ControlPlane, args: &[&str]) -> Result<TestNode> {
    let node_pki = plane.issue("node", &format!("system:node:{NODE}"), &["system:nodes"])?;
    let kubeconfig = plane.kubeconfig("node", &node_pki)?;
    let mut all = vec![format!("--kubeconfig={}", kubeconfig.display())];
    all.extend(args.iter().map(|arg| (*arg).to_owned()));
    start_node(plane, &all)
}

/// kernlet as node `testnode` of `plane` with exactly `args` (its credentials among them).
pub fn start_node(plane: &ControlPlane, args: &[String]) -> Result<TestNode> {
    let yaml = format!(
        "authentication: {{x509: {{clientCAFile: {}}}, webhook: {{enabled: true}}, \
         anonymous: {{enabled: false}}}}\nauthorization: {{mode: Webhook}}\n\
         nodeStatusUpdateFrequency: 1s\nnodeLeaseDurationSeconds: 4\n",
        plane.ca_file().display()
    );
    TestNode::start_full(&yaml, &[], args, Some(plane.admin.clone()))
}

/// Condition `type_` of a Node or Pod object.
pub fn condition<'a>(node: &'a Value, type_: &str) -> Option<&'a Value> {
    node["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

/// The Events in `default` about the object named `name`.
pub fn events_of(plane: &ControlPlane, name: &str) -> Vec<Value> {
    let path =
        format!("/api/v1/namespaces/default/events?fieldSelector=involvedObject.name={name}");
    plane
        .get_json(&path)
        .ok()
        .and_then(|list| list["items"].as_array().cloned())
        .unwrap_or_default()
}

/// Waits for the Event about `name` with `reason` (events are written in the background).
pub fn wait_for_event(
    node: &TestNode,
    plane: &ControlPlane,
    name: &str,
    reason: &str,
) -> Result<Value> {
    let mut found = None;
    node.wait_until(
        &format!("a {reason} event about {name}"),
        Duration::from_secs(30),
        |_| {
            found = events_of(plane, name)
                .into_iter()
                .find(|e| e["reason"] == reason);
            Ok(found.is_some())
        },
    )
    .with_context(|| format!("events: {:#?}", events_of(plane, name)))?;
    found.context("no event")
}

/// A pod bound to `testnode` directly (no scheduler), with no service account token to mount.
pub fn bound_pod(name: &str) -> String {
    serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "nodeName": NODE,
            "automountServiceAccountToken": false,
            "terminationGracePeriodSeconds": 5,
            "containers": [{
                "name": "app", "image": super::IMAGE, "imagePullPolicy": "Never",
                "command": ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]
            }]
        }
    })
    .to_string()
}

/// Merges `patch` into `target` (objects key by key; arrays element by element).
pub fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(target), Value::Object(patch)) => {
            for (key, value) in patch {
                merge(target.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
        (Value::Array(target), Value::Array(patch)) => {
            for (target, patch) in target.iter_mut().zip(patch) {
                merge(target, patch);
            }
        }
        (target, patch) => *target = patch.clone(),
    }
}

/// The phase of pod `name` in the API (null when it cannot be read).
pub fn phase(plane: &ControlPlane, name: &str) -> Value {
    let path = format!("/api/v1/namespaces/default/pods/{name}");
    plane
        .get_json(&path)
        .map_or(Value::Null, |pod| pod["status"]["phase"].clone())
}

/// Creates pod `name` bound to the node, running `script` with `restartPolicy`.
pub fn create_pod(plane: &ControlPlane, name: &str, script: &str, restart: &str) -> Result<()> {
    let mut spec: Value = serde_json::from_str(&bound_pod(name))?;
    spec["spec"]["restartPolicy"] = restart.into();
    spec["spec"]["containers"][0]["command"] = serde_json::json!(["sh", "-c", script]);
    let admin = plane.client(&plane.admin);
    let (code, body) = admin.send("POST", "/api/v1/namespaces/default/pods", &spec.to_string())?;
    ensure!(code == 201, "create {name}: {code} {body}");
    Ok(())
}
