//! Cluster mode under faults that are kernlet's own: a kernlet killed with `SIGKILL` comes back
//! to pods that never restarted and statuses that never go backwards in the API (restart counts,
//! start times, container IDs); watches cut mid-stream (`xtask::fault_proxy` between kernlet and
//! the API server) while pods are created and deleted miss no pod and run none twice; error
//! answers (503, 429 with `Retry-After`, 500) and slow answers (`xtask::api_fault` in front of
//! the server) stop nothing and statuses catch up once they end. The API server's outage is in
//! `host_cluster`. Skipped, with the
//! reason printed, where the Kubernetes binaries are absent.
#![expect(
    clippy::disallowed_methods,
    reason = "the test samples the API for a wall-clock period"
)]
mod support;

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use serde_json::Value;
use support::cluster::{
    NODE, control_plane, create_pod, join, local_control_plane, phase, start_node,
};
use xtask::api_fault::{ApiFaultProxy, Fault};
use xtask::fault_proxy::FaultProxy;

/// What must not regress about pod `name` in the API: its start time, its container's ID and
/// start, and its restart count (which may only grow).
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    start_time: Value,
    container_id: Value,
    started_at: Value,
    restarts: u64,
}

fn seen(plane: &xtask::control_plane::ControlPlane, name: &str) -> Result<Seen> {
    let pod = plane.get_json(&format!("/api/v1/namespaces/default/pods/{name}"))?;
    let status = &pod["status"]["containerStatuses"][0];
    Ok(Seen {
        start_time: pod["status"]["startTime"].clone(),
        container_id: status["containerID"].clone(),
        started_at: status["state"]["running"]["startedAt"].clone(),
        restarts: status["restartCount"].as_u64().unwrap_or_default(),
    })
}

#[test]
#[ignore = "host: needs root, containerd, runc and the Kubernetes binaries; run by cargo xtask test"]
fn a_killed_kernlet_restarts_no_pod_and_regresses_no_status() -> Result<()> {
    let test = "a_killed_kernlet_restarts_no_pod_and_regresses_no_status";
    let Some(plane) = control_plane(test)? else {
        return Ok(());
    };
    let mut node = join(&plane, &[])?;
    plane.default_service_account()?;
    create_pod(&plane, "steady", "sleep 3600", "Always")?;
    create_pod(&plane, "crashy", "sleep 1; exit 1", "Always")?;
    node.wait_until(
        "steady Running, crashy restarted once",
        support::WAIT,
        |_| {
            Ok(phase(&plane, "steady") == "Running"
                && seen(&plane, "crashy").is_ok_and(|s| s.restarts >= 1))
        },
    )
    .with_context(|| node.log())?;
    let steady = seen(&plane, "steady")?;
    ensure!(
        steady.container_id.is_string() && steady.started_at.is_string(),
        "{steady:?}"
    );
    let crashy = seen(&plane, "crashy")?;

    node.stop_kernlet(nix::sys::signal::Signal::SIGKILL)?;
    node.start_kernlet()?;
    // Sample the API while the new kernlet takes over and writes statuses again.
    let mut restarts = crashy.restarts;
    let until = Instant::now() + Duration::from_secs(25);
    while Instant::now() < until {
        let now = seen(&plane, "steady")?;
        ensure!(
            now == steady,
            "steady changed: {now:?}, was {steady:?}\n{}",
            node.log()
        );
        let crashy_now = seen(&plane, "crashy")?;
        ensure!(
            crashy_now.restarts >= restarts,
            "crashy's restart count went from {restarts} to {}",
            crashy_now.restarts
        );
        ensure!(crashy_now.start_time == crashy.start_time, "{crashy_now:?}");
        restarts = crashy_now.restarts;
        std::thread::sleep(Duration::from_millis(200));
    }
    // The new kernlet goes on with the crash loop where the old one was.
    ensure!(restarts > crashy.restarts, "crashy stopped restarting");
    let node_object = plane.get_json(&format!("/api/v1/nodes/{NODE}"))?;
    let ready = support::cluster::condition(&node_object, "Ready").context("no Ready")?;
    ensure!(ready["status"] == "True", "{ready:#}");
    Ok(())
}

#[test]
#[ignore = "host: needs root, containerd, runc and the Kubernetes binaries; run by cargo xtask test"]
fn watches_cut_mid_stream_miss_no_pod_and_run_none_twice() -> Result<()> {
    let test = "watches_cut_mid_stream_miss_no_pod_and_run_none_twice";
    let Some(plane) = local_control_plane(test)? else {
        return Ok(());
    };
    let proxy = FaultProxy::start(plane.port)?;
    let pki = plane.issue("node", &format!("system:node:{NODE}"), &["system:nodes"])?;
    let kubeconfig = plane.kubeconfig_at("node-via-proxy", &pki, proxy.port)?;
    let node = start_node(&plane, &[format!("--kubeconfig={}", kubeconfig.display())])?;
    let admin = plane.client(&plane.admin);
    plane.default_service_account()?;
    let mut expected: Vec<String> = vec!["first".to_owned(), "second".to_owned()];
    for name in &expected {
        create_pod(&plane, name, "sleep 3600", "Always")?;
    }
    node.wait_until("both pods run", support::WAIT, |node| {
        Ok(node.pods()?.len() == 2)
    })?;
    // Each round: every connection cut (the pod watch among them), pods created and deleted
    // while kernlet cannot reach the server, then the way back open.
    for round in 0..3 {
        proxy.refuse(true);
        proxy.cut();
        let name = format!("new-{round}");
        create_pod(&plane, &name, "sleep 3600", "Always")?;
        let gone = expected.remove(0);
        let path = format!("/api/v1/namespaces/default/pods/{gone}");
        let (code, body) = admin.send("DELETE", &path, "")?;
        ensure!(code == 200, "delete {gone}: {code} {body}");
        expected.push(name);
        std::thread::sleep(Duration::from_secs(2));
        proxy.refuse(false);
        std::thread::sleep(Duration::from_secs(1));
    }
    expected.sort();
    let mut running = Vec::new();
    node.wait_until(
        "kernlet runs exactly the pods the API has",
        support::WAIT,
        |node| {
            running = node.pod_names()?;
            running.sort();
            Ok(running == expected)
        },
    )
    .with_context(|| format!("kernlet runs {running:?}\n{}", node.log()))?;
    node.wait_until("all of them Running in the API", support::WAIT, |_| {
        Ok(expected.iter().all(|name| phase(&plane, name) == "Running"))
    })?;
    // Once each: one sandbox per pod in the runtime.
    for pod in node.pods()? {
        let view = support::runtime_view(&node, &support::uid(&pod))?;
        let ready = view
            .sandboxes
            .iter()
            .filter(|(_, state)| *state == 0)
            .count();
        ensure!(ready == 1, "{}: {view:?}", pod["metadata"]["name"]);
    }
    ensure!(proxy.accepted() > 3, "the proxy saw no reconnection");
    Ok(())
}

#[test]
#[ignore = "host: needs root, containerd, runc and the Kubernetes binaries; run by cargo xtask test"]
fn api_errors_and_delays_are_retried_and_statuses_catch_up() -> Result<()> {
    let test = "api_errors_and_delays_are_retried_and_statuses_catch_up";
    let Some(plane) = local_control_plane(test)? else {
        return Ok(());
    };
    let pki = plane.issue("node", &format!("system:node:{NODE}"), &["system:nodes"])?;
    let (cert, key) = plane.serving_pair();
    let proxy = ApiFaultProxy::start(plane.port, (&cert, &key), &plane.ca_file(), &pki)?;
    let kubeconfig = plane.kubeconfig_at("node-via-api-proxy", &pki, proxy.port)?;
    let node = start_node(&plane, &[format!("--kubeconfig={}", kubeconfig.display())])?;
    plane.default_service_account()?;
    create_pod(&plane, "before", "sleep 3600", "Always")?;
    node.wait_until("the first pod is Running in the API", support::WAIT, |_| {
        Ok(phase(&plane, "before") == "Running")
    })?;

    // The server answers every request with 503, then with 429 (Retry-After: 1), while a pod
    // is bound to the node: nothing of kernlet stops, and the pod it already runs goes on.
    create_pod(&plane, "during", "sleep 3600", "Always")?;
    for fault in [Fault::Status(503), Fault::Status(429), Fault::Status(500)] {
        proxy.set(fault);
        std::thread::sleep(Duration::from_secs(8));
    }
    let injected = proxy.injected();
    ensure!(injected > 10, "only {injected} requests met the faults");
    ensure!(node.pod("before")?.is_some(), "the running pod was stopped");

    // Slow answers (2 s each) are waited for, not given up on.
    proxy.set(Fault::Delay(Duration::from_secs(2)));
    node.wait_until(
        "the new pod reaches kernlet through slow answers",
        support::WAIT,
        |node| Ok(node.pod("during")?.is_some()),
    )?;
    proxy.set(Fault::Pass);
    let recovered = Instant::now();
    node.wait_until("both pods Running in the API", support::WAIT, |_| {
        Ok(["before", "during"]
            .iter()
            .all(|name| phase(&plane, name) == "Running"))
    })?;
    let caught_up = recovered.elapsed();
    ensure!(
        caught_up < Duration::from_secs(10),
        "caught up in {caught_up:?}"
    );
    let metrics = node.get("/metrics")?;
    let errors = metrics.lines().any(|line| {
        line.starts_with("kernlet_api_requests_total") && line.contains("result=\"error\"")
    });
    ensure!(errors, "the errors were not counted:\n{metrics}");
    let restarts: u64 = node
        .pod("before")?
        .and_then(|p| p["status"]["containerStatuses"][0]["restartCount"].as_u64())
        .unwrap_or(u64::MAX);
    ensure!(restarts == 0, "the running pod restarted {restarts} times");
    Ok(())
}
