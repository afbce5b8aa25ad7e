//! Pod lifecycle through the real kernlet binary, real containerd and runc: static pods start,
//! report upstream status, restart per policy, and survive a kernlet SIGKILL without restarts.
use std::time::Duration;

use anyhow::Result;
use kernlet_tests::node::TestNode;
use serde_json::Value;

const WAIT: Duration = Duration::from_mins(1);

fn manifest(name: &str, policy: &str, command: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  restartPolicy: {policy}\n  \
         terminationGracePeriodSeconds: 2\n  containers:\n  - name: main\n    \
         image: kernlet.local/busybox:1\n    imagePullPolicy: Never\n    \
         command: [\"sh\", \"-c\", {command:?}]\n"
    )
}

fn phase(pod: &Value) -> &str {
    pod["status"]["phase"].as_str().unwrap_or_default()
}

fn container(pod: &Value) -> &Value {
    &pod["status"]["containerStatuses"][0]
}

#[test]
#[ignore = "host: needs root, containerd and runc; run by cargo xtask test"]
fn static_pod_runs_and_reports_running_status() -> Result<()> {
    let node = TestNode::start()?;
    node.write_manifest(
        "web.yaml",
        &manifest("web", "Always", "echo started; exec sleep 300"),
    )?;
    node.wait_until("web runs", WAIT, |n| {
        Ok(n.pod("web-testnode")?
            .is_some_and(|p| phase(&p) == "Running" && container(&p)["ready"] == true))
    })?;
    let pod = node.pod("web-testnode")?.unwrap_or_default();
    let status = &pod["status"];
    // The fixture's pod range is 198.18.0.0/15.
    let ip: std::net::Ipv4Addr = status["podIP"].as_str().unwrap_or_default().parse()?;
    assert!(matches!(ip.octets(), [198, 18 | 19, ..]), "{status}");
    assert_eq!(container(&pod)["restartCount"], 0);
    assert!(
        container(&pod)["state"]["running"]["startedAt"].is_string(),
        "{status}"
    );
    assert!(
        container(&pod)["containerID"]
            .as_str()
            .is_some_and(|id| id.starts_with("containerd://"))
    );
    let conditions: Vec<(&str, &str)> = status["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            (
                c["type"].as_str().unwrap_or_default(),
                c["status"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    for wanted in ["PodScheduled", "Initialized", "ContainersReady", "Ready"] {
        assert!(
            conditions.contains(&(wanted, "True")),
            "{wanted} not True in {conditions:?}"
        );
    }
    // The container's CRI log is under podLogsDir/<ns>_<name>_<uid>/<container>/0.log.
    let uid = pod["metadata"]["uid"].as_str().unwrap_or_default();
    let log = node
        .logs()
        .join(format!("default_web-testnode_{uid}/main/0.log"));
    node.wait_until("the container log has its first line", WAIT, |_| {
        Ok(std::fs::read_to_string(&log).is_ok_and(|text| text.contains("started")))
    })?;
    Ok(())
}

#[test]
#[ignore = "host: needs root, containerd and runc; run by cargo xtask test"]
fn restart_policies_and_terminal_phases() -> Result<()> {
    let node = TestNode::start()?;
    node.write_manifest("done.yaml", &manifest("done", "OnFailure", "exit 0"))?;
    node.write_manifest("fails.yaml", &manifest("fails", "Never", "exit 3"))?;
    node.write_manifest("retries.yaml", &manifest("retries", "OnFailure", "exit 1"))?;
    node.wait_until("terminal phases", WAIT, |n| {
        let done = n.pod("done-testnode")?;
        let fails = n.pod("fails-testnode")?;
        Ok(done.is_some_and(|p| phase(&p) == "Succeeded")
            && fails.is_some_and(|p| phase(&p) == "Failed"))
    })?;
    let done = node.pod("done-testnode")?.unwrap_or_default();
    assert_eq!(
        container(&done)["state"]["terminated"]["reason"],
        "Completed"
    );
    assert_eq!(container(&done)["restartCount"], 0);
    let fails = node.pod("fails-testnode")?.unwrap_or_default();
    assert_eq!(container(&fails)["state"]["terminated"]["exitCode"], 3);
    assert_eq!(container(&fails)["state"]["terminated"]["reason"], "Error");
    // OnFailure with exit 1: restarted once at once, then backing off (CrashLoopBackOff).
    node.wait_until("retries is in CrashLoopBackOff", WAIT, |n| {
        Ok(n.pod("retries-testnode")?.is_some_and(|p| {
            container(&p)["state"]["waiting"]["reason"] == "CrashLoopBackOff"
                && container(&p)["restartCount"].as_u64() >= Some(1)
        }))
    })?;
    Ok(())
}

#[test]
#[ignore = "host: needs root, containerd and runc; run by cargo xtask test"]
fn kernlet_sigkill_and_restart_restarts_no_container() -> Result<()> {
    let mut node = TestNode::start()?;
    node.write_manifest("web.yaml", &manifest("web", "Always", "exec sleep 300"))?;
    node.wait_until("web runs", WAIT, |n| {
        Ok(n.pod("web-testnode")?
            .is_some_and(|p| phase(&p) == "Running"))
    })?;
    let before = node.pod("web-testnode")?.unwrap_or_default();
    node.stop_kernlet(nix::sys::signal::Signal::SIGKILL)?;
    node.start_kernlet()?;
    node.wait_until("web reported again", WAIT, |n| {
        Ok(n.pod("web-testnode")?
            .is_some_and(|p| phase(&p) == "Running"))
    })?;
    // Give a wrongly restarting kernlet time to show it.
    std::thread::sleep(Duration::from_secs(3));
    let after = node.pod("web-testnode")?.unwrap_or_default();
    assert_eq!(
        container(&after)["containerID"],
        container(&before)["containerID"]
    );
    assert_eq!(container(&after)["restartCount"], 0);
    assert_eq!(after["status"]["podIP"], before["status"]["podIP"]);
    Ok(())
}

#[test]
#[ignore = "host: needs root, containerd and runc; run by cargo xtask test"]
fn removing_the_manifest_removes_the_pod() -> Result<()> {
    let node = TestNode::start()?;
    node.write_manifest("web.yaml", &manifest("web", "Always", "exec sleep 300"))?;
    node.wait_until("web runs", WAIT, |n| {
        Ok(n.pod("web-testnode")?
            .is_some_and(|p| phase(&p) == "Running"))
    })?;
    node.remove_manifest("web.yaml")?;
    node.wait_until("web is gone", WAIT, |n| {
        Ok(n.pod("web-testnode")?.is_none())
    })?;
    Ok(())
}
