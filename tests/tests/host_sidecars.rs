//! Sidecar containers (restartable init containers) through the real kernlet binary,
//! containerd and runc (issue 11): a sidecar pod reaches Running with both containers, the
//! sidecar started before the next init container; the sidecar is restarted when it dies; a
//! Job-like pod (`restartPolicy: Never`) ends `Succeeded` with its sidecar stopped after the
//! app; a deleted pod stops its app before its sidecar.
//!
//! Run with `cargo test -p kernlet-tests --test host_sidecars -- --ignored --test-threads=1`.
mod support;

use std::{fs, path::Path, time::Duration};

use anyhow::{Context, Result};
use kernlet_tests::node::TestNode;
use support::{container, init_status, phase, status};

const WAIT: Duration = Duration::from_mins(1);

/// A pod with sidecar `side` (restartPolicy Always, as an init container), regular init
/// `setup` and app `main`, sharing a host directory at /marks.
fn sidecar_pod(name: &str, policy: &str, marks: &Path, side: &str, main: &str) -> String {
    let mount = "    volumeMounts:\n    - name: marks\n      mountPath: /marks\n";
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  restartPolicy: {policy}\n  \
         terminationGracePeriodSeconds: 5\n  volumes:\n  - name: marks\n    hostPath:\n      \
         path: {}\n      type: Directory\n  initContainers:\n{}{}  containers:\n{}",
        marks.display(),
        container("side", side, &format!("    restartPolicy: Always\n{mount}")),
        // The regular init container fails unless the sidecar already runs.
        container("setup", "test -e /marks/side-started", mount),
        container("main", main, mount),
    )
}

/// The position of `event` among the lines the containers appended to /marks/events.
fn position(marks: &Path, event: &str) -> Result<usize> {
    let text = fs::read_to_string(marks.join("events")).context("no events")?;
    text.lines()
        .position(|l| l == event)
        .with_context(|| format!("no {event} in {text:?}"))
}

#[test]
#[ignore = "host: needs root, containerd and runc; run by cargo xtask test"]
fn a_sidecar_pod_runs_restarts_its_sidecar_and_stops_it_last() -> Result<()> {
    let node = TestNode::start()?;
    let marks = node.dir().join("marks");
    fs::create_dir_all(&marks)?;
    // The first sidecar instance dies after 3 s; later ones keep running. Both containers note
    // when they get SIGTERM.
    let side = "echo start >> /marks/side-starts; touch /marks/side-started; \
                trap 'echo side-term >> /marks/events; exit 0' TERM; \
                if [ $(wc -l < /marks/side-starts) -eq 1 ]; then sleep 3; exit 1; fi; \
                while true; do sleep 0.1; done";
    let main =
        "trap 'echo main-term >> /marks/events; exit 0' TERM; while true; do sleep 0.1; done";
    node.write_manifest(
        "web.yaml",
        &sidecar_pod("web", "Always", &marks, side, main),
    )?;
    node.wait_until("the pod runs with both containers", WAIT, |n| {
        Ok(n.pod("web-testnode")?.is_some_and(|p| {
            phase(&p) == "Running"
                && status(&p, "main")["state"]["running"].is_object()
                && init_status(&p, "side")["state"]["running"].is_object()
        }))
    })?;
    let pod = node.pod("web-testnode")?.unwrap_or_default();
    assert_eq!(
        init_status(&pod, "setup")["restartCount"],
        0,
        "the sidecar ran first: {pod}"
    );
    assert_eq!(
        init_status(&pod, "setup")["state"]["terminated"]["exitCode"],
        0
    );
    node.wait_until("the sidecar was restarted and runs again", WAIT, |n| {
        Ok(n.pod("web-testnode")?.is_some_and(|p| {
            let side = init_status(&p, "side");
            side["restartCount"].as_u64() >= Some(1)
                && side["state"]["running"].is_object()
                && side["ready"] == true
                && status(&p, "main")["restartCount"] == 0
        }))
    })?;
    node.remove_manifest("web.yaml")?;
    node.wait_until("the pod is gone", WAIT, |n| {
        Ok(n.pod("web-testnode")?.is_none())
    })?;
    assert!(
        position(&marks, "main-term")? < position(&marks, "side-term")?,
        "the app stops before its sidecar"
    );
    Ok(())
}

#[test]
#[ignore = "host: needs root, containerd and runc; run by cargo xtask test"]
fn a_job_with_a_sidecar_succeeds() -> Result<()> {
    let node = TestNode::start()?;
    let marks = node.dir().join("marks");
    fs::create_dir_all(&marks)?;
    let side = "touch /marks/side-started; trap 'echo side-term >> /marks/events; exit 0' TERM; \
                while true; do sleep 0.1; done";
    let main = "sleep 2; echo main-done >> /marks/events; exit 0";
    node.write_manifest("job.yaml", &sidecar_pod("job", "Never", &marks, side, main))?;
    node.wait_until("the job succeeded", WAIT, |n| {
        Ok(n.pod("job-testnode")?
            .is_some_and(|p| phase(&p) == "Succeeded"))
    })?;
    let pod = node.pod("job-testnode")?.unwrap_or_default();
    assert_eq!(
        status(&pod, "main")["state"]["terminated"]["exitCode"],
        0,
        "{pod}"
    );
    assert!(
        init_status(&pod, "side")["state"]["terminated"].is_object(),
        "the sidecar was stopped: {pod}"
    );
    assert!(position(&marks, "main-done")? < position(&marks, "side-term")?);
    Ok(())
}
