//! Cluster mode against a real kube-apiserver (`xtask::control_plane`: etcd and kube-apiserver
//! with `Node,RBAC` and `NodeRestriction`): kernlet, with a `system:node:testnode` client
//! certificate, registers its Node (labels, taints, capacity, allocatable, nodeInfo, addresses,
//! conditions), renews its Lease, and answers its kubelet port with the API server's reviews;
//! runs the pods bound to it after admission, writes their status, deletes a deleted pod's
//! object once it has stopped it, keeps mirror pods for its static pods, and rides out an API
//! server outage. Skipped, with the reason printed, where the Kubernetes binaries are absent.
#![expect(
    clippy::disallowed_methods,
    reason = "the outage test measures real time to the status catching up"
)]
mod support;

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use kernlet_tests::node::TestNode;
use serde_json::Value;
use support::cluster::{
    NODE, bound_pod, condition, control_plane, create_pod, join, local_control_plane, merge, phase,
    wait_for_event,
};
use xtask::control_plane::ControlPlane;

/// The registered Node as upstream's kubelet would have it.
fn check_node(object: &Value, port: u16) -> Result<()> {
    let labels = &object["metadata"]["labels"];
    ensure!(labels["kubernetes.io/hostname"] == NODE, "{labels}");
    ensure!(labels["kubernetes.io/os"] == "linux", "{labels}");
    ensure!(labels["team"] == "kernlet", "{labels}");
    ensure!(labels["node.kubernetes.io/pool"] == "test", "{labels}");
    let taints = &object["spec"]["taints"];
    ensure!(
        taints[0]["key"] == "dedicated" && taints[0]["effect"] == "NoSchedule",
        "{taints}"
    );
    let status = &object["status"];
    for resource in ["cpu", "memory", "pods", "ephemeral-storage"] {
        ensure!(
            status["capacity"][resource].is_string(),
            "capacity: {status:#}"
        );
        ensure!(
            status["allocatable"][resource].is_string(),
            "allocatable: {status:#}"
        );
    }
    let info = &status["nodeInfo"];
    ensure!(
        info["kubeletVersion"]
            .as_str()
            .is_some_and(|v| v.starts_with("v1.36")),
        "{info}"
    );
    ensure!(
        info["containerRuntimeVersion"]
            .as_str()
            .is_some_and(|v| v.starts_with("containerd://")),
        "{info}"
    );
    ensure!(
        info["operatingSystem"] == "linux" && !info["bootID"].as_str().unwrap_or("").is_empty(),
        "{info}"
    );
    ensure!(
        status["daemonEndpoints"]["kubeletEndpoint"]["Port"] == port,
        "{status:#}"
    );
    let addresses = status["addresses"].as_array().context("no addresses")?;
    ensure!(
        addresses.iter().any(|a| a["type"] == "InternalIP"),
        "{addresses:?}"
    );
    ensure!(
        addresses
            .iter()
            .any(|a| a["type"] == "Hostname" && a["address"] == NODE),
        "{addresses:?}"
    );
    for (type_, reason) in [
        ("Ready", "KubeletReady"),
        ("MemoryPressure", "KubeletHasSufficientMemory"),
        ("DiskPressure", "KubeletHasNoDiskPressure"),
        ("PIDPressure", "KubeletHasSufficientPID"),
    ] {
        let found = condition(object, type_).with_context(|| format!("no {type_}"))?;
        ensure!(found["reason"] == reason, "{type_}: {found}");
    }

    Ok(())
}

#[test]
#[ignore = "host: needs root, containerd, runc and the Kubernetes binaries; run by cargo xtask test"]
fn the_node_registers_becomes_ready_and_renews_its_lease() -> Result<()> {
    let Some(plane) = control_plane("the_node_registers_becomes_ready_and_renews_its_lease")?
    else {
        return Ok(());
    };
    let node = join(
        &plane,
        &[
            "--node-labels=team=kernlet,node.kubernetes.io/pool=test",
            "--register-with-taints=dedicated=test:NoSchedule",
        ],
    )?;
    let path = format!("/api/v1/nodes/{NODE}");
    let mut object = Value::Null;
    node.wait_until(
        "the node is Ready in the API",
        Duration::from_mins(1),
        |_| {
            object = plane.get_json(&path).unwrap_or(Value::Null);
            Ok(condition(&object, "Ready").is_some_and(|c| c["status"] == "True"))
        },
    )
    .with_context(|| format!("node: {object:#}\nkernlet log:\n{}", node.log()))?;

    check_node(&object, node.port)?;

    // The Lease is owned by the Node and renewed every second (a quarter of 4 s). It is kept
    // beside the node's status, not after it: on a fresh control plane its namespace may
    // still be in the making when the node is Ready, and the keeper retries.
    let lease_path =
        format!("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{NODE}");
    let mut lease = Value::Null;
    node.wait_until("the lease exists", Duration::from_secs(30), |_| {
        lease = plane.get_json(&lease_path)?;
        Ok(true)
    })
    .with_context(|| format!("kernlet log:\n{}", node.log()))?;
    ensure!(lease["spec"]["holderIdentity"] == NODE, "{lease:#}");
    ensure!(lease["spec"]["leaseDurationSeconds"] == 4, "{lease:#}");
    let owner = &lease["metadata"]["ownerReferences"][0];
    ensure!(
        owner["kind"] == "Node" && owner["uid"] == object["metadata"]["uid"],
        "{lease:#}"
    );
    let first = lease["spec"]["renewTime"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    node.wait_until("the lease is renewed", Duration::from_secs(20), |_| {
        let renewed = plane.get_json(&lease_path)?;
        Ok(renewed["spec"]["renewTime"]
            .as_str()
            .is_some_and(|t| t > first.as_str()))
    })?;

    // The node's events, as upstream's kubelet writes them.
    let starting = wait_for_event(&node, &plane, NODE, "Starting")?;
    ensure!(starting["message"] == "Starting kubelet.", "{starting:#}");
    ensure!(
        starting["source"] == serde_json::json!({"component": "kubelet", "host": NODE}),
        "{starting:#}"
    );
    ensure!(
        starting["involvedObject"]["kind"] == "Node" && starting["involvedObject"]["uid"] == NODE,
        "{starting:#}"
    );
    let ready = wait_for_event(&node, &plane, NODE, "NodeReady")?;
    let text = format!("Node {NODE} status is now: NodeReady");
    ensure!(ready["message"] == text.as_str(), "{ready:#}");
    wait_for_event(&node, &plane, NODE, "NodeHasSufficientMemory")?;

    let metrics = node.get("/metrics")?;
    ensure!(
        metrics.contains(r#"kernlet_api_requests_total{call="lease",result="ok"}"#),
        "{metrics}"
    );
    ensure!(
        metrics.contains(r#"kernlet_api_requests_total{call="event",result="ok"}"#),
        "{metrics}"
    );
    let log = node.log();
    ensure!(
        !log.contains("forbidden"),
        "NodeRestriction or the Node authorizer refused: {log}"
    );
    Ok(())
}

#[test]
#[ignore = "host: needs root, containerd, runc and the Kubernetes binaries; run by cargo xtask test"]
fn the_kubelet_port_asks_the_api_server_who_may_do_what() -> Result<()> {
    let Some(plane) = control_plane("the_kubelet_port_asks_the_api_server_who_may_do_what")? else {
        return Ok(());
    };
    // The admin (system:masters) is allowed: TestNode::start waited for its /pods.
    let node = join(&plane, &[])?;
    let (code, _) = node.client.request("/stats/summary")?;
    ensure!(code == 200, "admin: {code}");

    // Bearer tokens go to a TokenReview: the API server's admin token is the admin; a made-up
    // one is nobody (401).
    let (code, body) = node
        .client
        .request_with_token("/pods", &plane.admin_token)?;
    ensure!(code == 200, "admin token: {code} {body}");
    let (code, _) = node.client.request_with_token("/pods", "not-a-token")?;
    ensure!(code == 401, "made-up token: {code}");

    // A user the API server knows but RBAC does not allow nodes/proxy is denied.
    let viewer = plane.issue("viewer", "jane", &["developers"])?;
    let mut client = node.client.clone();
    client.pki = viewer;
    let (code, body) = client.request("/pods")?;
    ensure!(code == 403, "jane /pods: {code} {body}");
    ensure!(body.contains("jane") && body.contains("proxy"), "{body}");

    // Another node's credentials may not read this node's pods either (the Node authorizer).
    let other = plane.issue("other-node", "system:node:other", &["system:nodes"])?;
    client.pki = other;
    let (code, _) = client.request("/pods")?;
    ensure!(code == 403, "system:node:other /pods: {code}");
    Ok(())
}

#[test]
#[ignore = "host: needs root, containerd, runc and the Kubernetes binaries; run by cargo xtask test"]
fn api_pods_run_report_status_and_are_deleted_gracefully() -> Result<()> {
    let Some(plane) = control_plane("api_pods_run_report_status_and_are_deleted_gracefully")?
    else {
        return Ok(());
    };
    let node = join(&plane, &[])?;
    let admin = plane.client(&plane.admin);
    // The ServiceAccount admission wants the namespace's default account (no controllers here).
    plane.default_service_account()?;
    let (code, body) = admin.send("POST", "/api/v1/namespaces/default/pods", &bound_pod("web"))?;
    ensure!(code == 201, "create pod: {code} {body}");

    let path = "/api/v1/namespaces/default/pods/web";
    let mut pod = Value::Null;
    node.wait_until(
        "the pod is Running and Ready in the API",
        support::WAIT,
        |_| {
            pod = plane.get_json(path).unwrap_or(Value::Null);
            let ready = pod["status"]["conditions"].as_array().is_some_and(|all| {
                all.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            });
            Ok(pod["status"]["phase"] == "Running" && ready)
        },
    )
    .with_context(|| format!("pod: {pod:#}\nkernlet log:\n{}", node.log()))?;
    let status = &pod["status"];
    ensure!(
        status["podIP"].is_string() && status["hostIP"].is_string(),
        "{status:#}"
    );
    ensure!(status["qosClass"] == "BestEffort", "{status:#}");
    ensure!(
        status["containerStatuses"][0]["state"]["running"].is_object(),
        "{status:#}"
    );
    let kernlet_pod = node.pod("web")?.context("kernlet does not list the pod")?;
    ensure!(
        support::uid(&kernlet_pod) == pod["metadata"]["uid"],
        "{kernlet_pod:#}"
    );
    // Its events: the image present, the container created and started.
    let started = wait_for_event(&node, &plane, "web", "Started")?;
    ensure!(started["message"] == "Started container app", "{started:#}");
    let object = &started["involvedObject"];
    ensure!(
        object["uid"] == pod["metadata"]["uid"] && object["fieldPath"] == "spec.containers{app}",
        "{started:#}"
    );
    let created = wait_for_event(&node, &plane, "web", "Created")?;
    ensure!(
        created["message"] == "Created container: app",
        "{created:#}"
    );
    let pulled = wait_for_event(&node, &plane, "web", "Pulled")?;
    let text = format!(
        "Container image \"{}\" already present on machine",
        support::IMAGE
    );
    ensure!(pulled["message"] == text.as_str(), "{pulled:#}");

    // Pods that do not fit are rejected with upstream's reasons and never run.
    check_rejections(&plane, &node)?;
    check_failed_mount(&plane, &node)?;

    // Deleting it: kernlet stops it within its grace and removes the object.
    let (code, body) = admin.send("DELETE", path, "")?;
    ensure!(code == 200, "delete pod: {code} {body}");
    node.wait_until("the pod object is gone", Duration::from_mins(1), |_| {
        Ok(plane.request(path)?.0 == 404)
    })
    .with_context(|| node.log())?;
    node.wait_until(
        "kernlet no longer runs the pod",
        Duration::from_secs(30),
        |node| Ok(node.pod("web")?.is_none()),
    )?;
    let killing = wait_for_event(&node, &plane, "web", "Killing")?;
    ensure!(
        killing["message"] == "Stopping container app",
        "{killing:#}"
    );
    Ok(())
}

#[test]
#[ignore = "host: needs root, containerd, runc and the Kubernetes binaries; run by cargo xtask test"]
fn a_static_pod_has_a_mirror_pod_that_comes_back() -> Result<()> {
    let Some(plane) = control_plane("a_static_pod_has_a_mirror_pod_that_comes_back")? else {
        return Ok(());
    };
    let node = join(&plane, &[])?;
    let manifest = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: mirrored\nspec:\n  containers:\n{}",
        support::container("app", "sleep 3600", "")
    );
    node.write_manifest("mirrored.yaml", &manifest)?;
    let path = format!("/api/v1/namespaces/default/pods/mirrored-{NODE}");
    let mut mirror = Value::Null;
    node.wait_until(
        "the mirror pod shows the static pod Running",
        support::WAIT,
        |_| {
            mirror = plane.get_json(&path).unwrap_or(Value::Null);
            Ok(mirror["status"]["phase"] == "Running")
        },
    )
    .with_context(|| format!("mirror: {mirror:#}\nkernlet log:\n{}", node.log()))?;
    let annotations = &mirror["metadata"]["annotations"];
    ensure!(
        annotations["kubernetes.io/config.mirror"].is_string(),
        "{annotations}"
    );
    let owner = &mirror["metadata"]["ownerReferences"][0];
    ensure!(
        owner["kind"] == "Node" && owner["name"] == NODE,
        "{mirror:#}"
    );
    let first_uid = mirror["metadata"]["uid"].clone();
    let static_pod = node
        .pod(&format!("mirrored-{NODE}"))?
        .context("no static pod")?;

    // Deleted by hand, it comes back (a new object); the static pod was never touched.
    let admin = plane.client(&plane.admin);
    let (code, body) = admin.send("DELETE", &path, "")?;
    ensure!(code == 200, "delete mirror: {code} {body}");
    node.wait_until(
        "the mirror pod is recreated",
        Duration::from_mins(1),
        |_| {
            let again = plane.get_json(&path).unwrap_or(Value::Null);
            Ok(again["metadata"]["uid"].is_string() && again["metadata"]["uid"] != first_uid)
        },
    )?;
    let still = node
        .pod(&format!("mirrored-{NODE}"))?
        .context("static pod gone")?;
    ensure!(
        support::uid(&still) == support::uid(&static_pod)
            && support::status(&still, "app")["restartCount"] == 0,
        "{still:#}"
    );

    // The manifest removed, the mirror goes with it.
    node.remove_manifest("mirrored.yaml")?;
    node.wait_until("the mirror pod is deleted", Duration::from_mins(1), |_| {
        Ok(plane.request(&path)?.0 == 404)
    })?;
    Ok(())
}

#[test]
#[ignore = "host: needs root, containerd, runc and the Kubernetes binaries; run by cargo xtask test"]
fn an_api_server_outage_stops_nothing_and_status_catches_up() -> Result<()> {
    let Some(mut plane) =
        local_control_plane("an_api_server_outage_stops_nothing_and_status_catches_up")?
    else {
        return Ok(());
    };
    let node = join(&plane, &[])?;
    plane.default_service_account()?;
    create_pod(&plane, "steady", "sleep 3600", "Always")?;
    // Ends during the outage: its final status can only reach the API after it.
    create_pod(&plane, "brief", "sleep 20", "Never")?;
    node.wait_until("both pods Running in the API", support::WAIT, |_| {
        Ok(phase(&plane, "steady") == "Running" && phase(&plane, "brief") == "Running")
    })
    .with_context(|| node.log())?;

    let lease_path =
        format!("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{NODE}");
    let renew_time = |plane: &ControlPlane| {
        let lease = plane.get_json(&lease_path).unwrap_or(Value::Null);
        lease["spec"]["renewTime"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    let before = renew_time(&plane);
    plane.stop_apiserver()?;
    // Two minutes, as the issue's fault list has it: five Lease durations, many retries.
    std::thread::sleep(Duration::from_mins(2));
    let steady = node.pod("steady")?.context("steady is gone from kernlet")?;
    ensure!(support::phase(&steady) == "Running", "{steady:#}");
    ensure!(
        support::status(&steady, "app")["restartCount"] == 0,
        "{steady:#}"
    );
    let brief = node.pod("brief")?.context("brief is gone from kernlet")?;
    ensure!(support::phase(&brief) == "Succeeded", "{brief:#}");
    // (/pods answered from the authorization cache; an uncached path gets upstream's 500.)
    plane.restart_apiserver()?;
    let recovered = std::time::Instant::now();
    node.wait_until(
        "the status and the Lease catch up",
        Duration::from_secs(30),
        |_| Ok(phase(&plane, "brief") == "Succeeded" && renew_time(&plane) > before),
    )
    .with_context(|| node.log())?;
    let took = recovered.elapsed();
    println!("status and lease caught up {took:?} after the api server was ready again");
    ensure!(took <= Duration::from_secs(12), "catching up took {took:?}");
    ensure!(
        phase(&plane, "steady") == "Running",
        "steady after the outage"
    );
    let metrics = node.get("/metrics")?;
    ensure!(
        metrics.contains(r#"call="lease",result="error""#),
        "{metrics}"
    );

    Ok(())
}

/// Pods that do not fit are rejected with upstream's reasons and events, and never run.
fn check_rejections(plane: &ControlPlane, node: &TestNode) -> Result<()> {
    let admin = plane.client(&plane.admin);
    for (name, extra, reason, message) in [
        (
            "greedy",
            r#"{"containers": [{"resources": {"requests": {"cpu": "100"}}}]}"#,
            "OutOfcpu",
            "Pod was rejected: Node didn't have enough resource: cpu, requested: 100000",
        ),
        (
            "picky",
            r#"{"nodeSelector": {"disk": "nvme"}}"#,
            "NodeAffinity",
            "Pod was rejected: Predicate NodeAffinity failed: node(s) didn't match Pod's node affinity/selector",
        ),
    ] {
        let mut spec: Value = serde_json::from_str(&bound_pod(name))?;
        merge(&mut spec["spec"], &serde_json::from_str(extra)?);
        let (code, body) =
            admin.send("POST", "/api/v1/namespaces/default/pods", &spec.to_string())?;
        ensure!(code == 201, "create {name}: {code} {body}");
        let path = format!("/api/v1/namespaces/default/pods/{name}");
        let mut pod = Value::Null;
        node.wait_until("the pod is rejected", Duration::from_secs(30), |_| {
            pod = plane.get_json(&path).unwrap_or(Value::Null);
            Ok(pod["status"]["phase"] == "Failed")
        })
        .with_context(|| format!("{name}: {pod:#}"))?;
        ensure!(
            pod["status"]["reason"] == reason,
            "{name}: {:#}",
            pod["status"]
        );
        let text = pod["status"]["message"].as_str().unwrap_or_default();
        ensure!(text.starts_with(message), "{name}: {text}");
        ensure!(node.pod(name)?.is_none(), "{name} runs");
        let event = wait_for_event(node, plane, name, reason)?;
        ensure!(event["type"] == "Warning", "{event:#}");
    }
    Ok(())
}

/// A pod whose volume cannot be set up (a `hostPath` of type `Directory` that does not exist):
/// upstream's `FailedMount` event about the pod, and its container waiting in
/// `ContainerCreating`.
fn check_failed_mount(plane: &ControlPlane, node: &TestNode) -> Result<()> {
    let name = "nomount";
    let missing = "/nonexistent/kernlet-test-volume";
    let mut spec: Value = serde_json::from_str(&bound_pod(name))?;
    let volume = serde_json::json!({
        "volumes": [{"name": "data", "hostPath": {"path": missing, "type": "Directory"}}],
        "containers": [{"volumeMounts": [{"name": "data", "mountPath": "/data"}]}]
    });
    merge(&mut spec["spec"], &volume);
    let admin = plane.client(&plane.admin);
    let (code, body) = admin.send("POST", "/api/v1/namespaces/default/pods", &spec.to_string())?;
    ensure!(code == 201, "create {name}: {code} {body}");
    let event = wait_for_event(node, plane, name, "FailedMount")?;
    ensure!(event["type"] == "Warning", "{event:#}");
    ensure!(event["involvedObject"]["fieldPath"].is_null(), "{event:#}");
    let message = event["message"].as_str().unwrap_or_default();
    ensure!(
        message.starts_with("MountVolume.SetUp failed") && message.contains(missing),
        "{event:#}"
    );
    let path = format!("/api/v1/namespaces/default/pods/{name}");
    let mut pod = Value::Null;
    node.wait_until(
        "the container waits in ContainerCreating",
        Duration::from_secs(30),
        |_| {
            pod = plane.get_json(&path).unwrap_or(Value::Null);
            Ok(
                pod["status"]["containerStatuses"][0]["state"]["waiting"]["reason"]
                    == "ContainerCreating",
            )
        },
    )
    .with_context(|| format!("{pod:#}"))?;
    ensure!(pod["status"]["phase"] == "Pending", "{pod:#}");
    Ok(())
}
