//! Cluster mode with the whole control plane (kube-controller-manager and kube-scheduler beside
//! the API server, `xtask::control_plane`): a Deployment's pods are scheduled by the real
//! scheduler onto kernlet's node and run; a readiness probe's result flips the pod's `Ready`
//! condition in the API both ways (certificates: `host_cluster_certificates`). Skipped, with
//! the reason printed, where the Kubernetes binaries are absent.
mod support;

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::Value;
use support::cluster::{NODE, condition, control_plane, join};
use xtask::control_plane::deployment;

fn is_ready(object: &Value) -> bool {
    condition(object, "Ready").is_some_and(|c| c["status"] == "True")
}

#[test]
#[ignore = "host: needs root, containerd, runc and the Kubernetes binaries; run by cargo xtask test"]
fn a_deployment_is_scheduled_onto_the_node_and_runs() -> Result<()> {
    let test = "a_deployment_is_scheduled_onto_the_node_and_runs";
    let Some(mut plane) = control_plane(test)? else {
        return Ok(());
    };
    plane.start_controllers()?;
    let node = join(&plane, &[])?;
    let admin = plane.client(&plane.admin);
    let (code, body) = admin.send(
        "POST",
        "/apis/apps/v1/namespaces/default/deployments",
        &deployment("hello", 2, NODE),
    )?;
    ensure!(code == 201, "create deployment: {code} {body}");

    let path = "/apis/apps/v1/namespaces/default/deployments/hello";
    let mut object = Value::Null;
    node.wait_until(
        "the Deployment has 2 ready replicas",
        Duration::from_mins(3),
        |_| {
            object = plane.get_json(path).unwrap_or(Value::Null);
            Ok(object["status"]["readyReplicas"] == 2)
        },
    )
    .with_context(|| {
        let pods = plane.get_json("/api/v1/namespaces/default/pods");
        format!(
            "deployment: {object:#}\npods: {pods:#?}\nscheduler:\n{}\nkernlet:\n{}",
            plane.log("kube-scheduler"),
            node.log()
        )
    })?;
    let pods = plane.get_json("/api/v1/namespaces/default/pods?labelSelector=app%3Dhello")?;
    let items = pods["items"].as_array().context("no pod list")?;
    ensure!(items.len() == 2, "{pods:#}");
    for pod in items {
        ensure!(pod["spec"]["nodeName"] == NODE, "not on the node: {pod:#}");
        let status = &pod["status"];
        ensure!(status["phase"] == "Running" && is_ready(pod), "{status:#}");
        ensure!(status["podIP"].is_string(), "no pod IP: {status:#}");
        ensure!(status["qosClass"] == "Burstable", "{status:#}");
        let name = pod["metadata"]["name"].as_str().unwrap_or_default();
        ensure!(node.pod(name)?.is_some(), "kernlet does not list {name}");
        // The scheduler's condition stays beside kernlet's.
        let scheduled = condition(pod, "PodScheduled").context("no PodScheduled")?;
        ensure!(scheduled["status"] == "True", "{scheduled:#}");
    }

    // Scaled up, then to zero: kernlet stops all ten pods at once and every object goes (a
    // deleted pod whose worker finished before the status writer looked was once left behind).
    let (code, body) = admin.send("PATCH", path, r#"{"spec": {"replicas": 10}}"#)?;
    ensure!(code == 200, "scale: {code} {body}");
    node.wait_until("10 ready replicas", Duration::from_mins(2), |_| {
        Ok(plane.get_json(path)?["status"]["readyReplicas"] == 10)
    })?;
    let (code, body) = admin.send("PATCH", path, r#"{"spec": {"replicas": 0}}"#)?;
    ensure!(code == 200, "scale: {code} {body}");
    let mut left = Value::Null;
    node.wait_until("the pods are gone", Duration::from_mins(1), |node| {
        left = plane.get_json("/api/v1/namespaces/default/pods?labelSelector=app%3Dhello")?;
        let none_left = left["items"].as_array().is_some_and(Vec::is_empty);
        Ok(none_left && node.pods()?.is_empty())
    })
    .with_context(|| format!("left: {left:#}\n{}", node.log()))?;
    Ok(())
}

#[test]
#[ignore = "host: needs root, containerd, runc and the Kubernetes binaries; run by cargo xtask test"]
fn readiness_from_a_probe_flips_ready_in_the_api() -> Result<()> {
    let test = "readiness_from_a_probe_flips_ready_in_the_api";
    let Some(plane) = control_plane(test)? else {
        return Ok(());
    };
    let node = join(&plane, &[])?;
    let admin = plane.client(&plane.admin);
    plane.default_service_account()?;
    // Ready from about 3 s after the start until the file goes about 8 s later.
    let pod = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "flip", "namespace": "default"},
        "spec": {
            "nodeName": NODE, "automountServiceAccountToken": false,
            "terminationGracePeriodSeconds": 2,
            "containers": [{
                "name": "app", "image": support::IMAGE, "imagePullPolicy": "Never",
                "command": ["sh", "-c",
                    "trap 'exit 0' TERM; sleep 3; touch /tmp/ready; sleep 8; rm /tmp/ready; \
                     sleep 3600 & wait"],
                "readinessProbe": {
                    "exec": {"command": ["test", "-f", "/tmp/ready"]},
                    "periodSeconds": 1, "failureThreshold": 1
                }
            }]
        }
    });
    let (code, body) = admin.send("POST", "/api/v1/namespaces/default/pods", &pod.to_string())?;
    ensure!(code == 201, "create pod: {code} {body}");
    let path = "/api/v1/namespaces/default/pods/flip";
    let mut seen = Vec::new();
    node.wait_until(
        "Ready goes False, True, False in the API",
        Duration::from_mins(1),
        |_| {
            let object = plane.get_json(path).unwrap_or(Value::Null);
            if object["status"]["phase"] == "Running" {
                let ready = is_ready(&object);
                if seen.last() != Some(&ready) {
                    seen.push(ready);
                }
            }
            Ok(seen.ends_with(&[false, true, false]))
        },
    )
    .with_context(|| format!("Ready as seen: {seen:?}\n{}", node.log()))?;
    let object = plane.get_json(path)?;
    let ready = condition(&object, "Ready").context("no Ready")?;
    ensure!(ready["reason"] == "ContainersNotReady", "{ready:#}");
    Ok(())
}
