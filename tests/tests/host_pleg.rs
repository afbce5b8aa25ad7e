//! Container exits reach the pod status through containerd's task events, not the 1 s relist, on
//! containerd 1.6, which has no CRI event stream: the exit is counted in
//! `kernlet_pleg_exit_events_total{source="containerd"}`, and the status says terminated with the
//! exit code and reason CRI later records too. The latency from kill to status is printed (the
//! bench measures it; `docs/perf.md`). The pidfd route, for runtimes without task events, is
//! tested against containerd too, with the task events switched off (`KERNLET_FAULT_INJECT`).
#![expect(
    clippy::disallowed_methods,
    reason = "measures a real exit against real time: std time is the right clock"
)]
mod support;

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use kernlet_cri::v1::ContainerStatusRequest;
use kernlet_tests::{node::TestNode, scrape::sample};
use nix::{sys::signal, unistd::Pid};
use support::{WAIT, container, pod_containers, pod_selector, status, uid, with_cri};

const PODS: usize = 3;
const POLL: Duration = Duration::from_millis(10);

fn manifest(name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  restartPolicy: Never\n  \
         terminationGracePeriodSeconds: 2\n  containers:\n{}",
        container("main", "exec sleep 3600", "")
    )
}

/// The main process of pod `uid`'s only container, from the runtime's verbose status.
fn main_pid(node: &TestNode, uid: &str) -> Result<i32> {
    let selector = pod_selector(uid);
    with_cri(node, async move |client| {
        let containers = pod_containers(client, selector).await?;
        let id = containers
            .first()
            .context("the pod has no container")?
            .id
            .clone();
        let response = client
            .container_status(ContainerStatusRequest {
                container_id: id,
                verbose: true,
            })
            .await?
            .into_inner();
        let info: serde_json::Value =
            serde_json::from_str(response.info.get("info").context("no verbose info")?)?;
        let pid = info["pid"].as_i64().context("no pid in the verbose info")?;
        Ok(i32::try_from(pid)?)
    })
}

/// How many exits `kernlet_pleg_exit_to_status_seconds` has seen, and their summed latency.
fn exit_to_status(node: &TestNode) -> Result<(f64, f64)> {
    let metrics = node.get("/metrics")?;
    let family = "kernlet_pleg_exit_to_status_seconds";
    Ok((
        sample(&metrics, &format!("{family}_count"), &[]).unwrap_or(0.0),
        sample(&metrics, &format!("{family}_sum"), &[]).unwrap_or(0.0),
    ))
}

fn exit_events(node: &TestNode, source: &str) -> Result<f64> {
    let metrics = node.get("/metrics")?;
    sample(
        &metrics,
        "kernlet_pleg_exit_events_total",
        &[("source", source)],
    )
    .context("no exit event counter")
}

/// Runs [`PODS`] pods, kills each one's main process, and checks that each exit reaches the
/// status with its code and reason, counted under `source`.
fn kill_each_and_check(node: &TestNode, source: &str) -> Result<()> {
    let names: Vec<String> = (0..PODS).map(|i| format!("exit-{i}")).collect();
    for name in &names {
        node.write_manifest(&format!("{name}.yaml"), &manifest(name))?;
    }
    let pods: Vec<String> = names.iter().map(|n| format!("{n}-testnode")).collect();
    node.wait_until("every pod runs", WAIT, |n| {
        Ok(pods.iter().all(|p| {
            n.pod(p)
                .ok()
                .flatten()
                .is_some_and(|pod| status(&pod, "main")["state"]["running"].is_object())
        }))
    })?;
    if source == "pidfd" {
        // The relist that starts the watches runs every second.
        node.wait_until("every container is watched", WAIT, |n| {
            let metrics = n.get("/metrics")?;
            Ok(sample(&metrics, "kernlet_pleg_exit_watches", &[]) >= Some(PODS as f64))
        })?;
    }
    let before = exit_events(node, source)?;
    let (seen_before, sum_before) = exit_to_status(node)?;
    let mut latencies = Vec::new();
    for pod in &pods {
        let uid = uid(&node.pod(pod)?.context("pod gone")?);
        let pid = main_pid(node, &uid)?;
        let killed = Instant::now();
        signal::kill(Pid::from_raw(pid), signal::Signal::SIGKILL)?;
        let (latency, terminated) = loop {
            let seen = node.pod(pod)?.unwrap_or_default();
            let terminated = &status(&seen, "main")["state"]["terminated"];
            if terminated.is_object() {
                break (killed.elapsed(), terminated.clone());
            }
            ensure!(killed.elapsed() < WAIT, "{pod} never reported its exit");
            std::thread::sleep(POLL);
        };
        ensure!(terminated["exitCode"] == 137, "{terminated}");
        ensure!(terminated["reason"] == "Error", "{terminated}");
        latencies.push(latency);
    }
    let after = exit_events(node, source)?;
    ensure!(
        after - before >= PODS as f64,
        "exits counted from {source}: {before} before, {after} after killing {PODS} containers"
    );
    latencies.sort();
    println!("{source}: kill to status (polled every {POLL:?}): {latencies:?}");
    // kernlet's own measure, from the runtime's finishedAt to the status, agrees.
    let (seen, sum) = exit_to_status(node)?;
    let mean = (sum - sum_before) / (seen - seen_before).max(1.0);
    println!(
        "{source}: kernlet_pleg_exit_to_status_seconds mean {:.1} ms",
        mean * 1e3
    );
    ensure!(
        seen - seen_before >= PODS as f64,
        "exit-to-status observations: {seen_before} before, {seen} after killing {PODS} containers"
    );
    let slowest = latencies.last().map_or(0.0, Duration::as_secs_f64);
    ensure!(
        mean <= slowest,
        "mean exit-to-status {mean:.3} s is beyond the slowest kill-to-status seen ({slowest:.3} s)"
    );
    Ok(())
}

#[test]
#[ignore = "host: needs root, containerd and runc; run by cargo xtask test"]
fn a_killed_container_is_reported_from_containerd_task_events() -> Result<()> {
    kill_each_and_check(&TestNode::start()?, "containerd")
}

#[test]
#[ignore = "host: needs root, containerd and runc; run by cargo xtask test"]
fn without_task_events_a_pidfd_per_container_reports_exits() -> Result<()> {
    let node = TestNode::start_with("", &[("KERNLET_FAULT_INJECT", "no-task-events")])?;
    kill_each_and_check(&node, "pidfd")
}
