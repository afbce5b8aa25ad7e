//! kernlet across a containerd restart: it keeps its pods without restarting or duplicating
//! anything, and acts on changes made after the runtime is back.
//!
//! Run with `cargo test -p kernlet-tests --test host_runtime_restart -- --ignored --test-threads=1`.
mod support;

use anyhow::{Context, Result, ensure};
use kernlet_tests::node::TestNode;
use serde_json::Value;
use support::{IMAGE, RuntimeView, WAIT, phase, runtime_view, status, uid};

fn manifest(name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  \
         terminationGracePeriodSeconds: 2\n  containers:\n  - name: main\n    \
         image: {IMAGE}\n    imagePullPolicy: Never\n    \
         command: [\"sh\", \"-c\", \"trap 'exit 0' TERM; sleep 300 & wait\"]\n"
    )
}

/// The pod `name` runs with the same container as in `before`, never restarted.
fn unchanged(node: &TestNode, before: &Value) -> Result<()> {
    let name = before["metadata"]["name"].as_str().unwrap_or_default();
    let now = node
        .pod(name)?
        .with_context(|| format!("{name} is reported"))?;
    assert_eq!(phase(&now), "Running", "{name}");
    assert_eq!(
        status(&now, "main")["containerID"],
        status(before, "main")["containerID"],
        "{name}"
    );
    assert_eq!(status(&now, "main")["restartCount"], 0, "{name}");
    assert_eq!(now["status"]["podIP"], before["status"]["podIP"], "{name}");
    Ok(())
}

/// Writes manifest `name`, waits until its pod runs and returns the pod with its runtime view,
/// which must be one sandbox and one container.
fn run(node: &TestNode, name: &str) -> Result<(Value, RuntimeView)> {
    node.write_manifest(&format!("{name}.yaml"), &manifest(name))?;
    let pod_name = format!("{name}-testnode");
    node.wait_until(&format!("{name} runs"), WAIT, |n| {
        Ok(n.pod(&pod_name)?.is_some_and(|p| phase(&p) == "Running"))
    })?;
    let pod = node.pod(&pod_name)?.context("reported")?;
    let view = runtime_view(node, &uid(&pod))?;
    ensure!(
        view.sandboxes.len() == 1 && view.containers.len() == 1,
        "{name}: {view:?}"
    );
    Ok((pod, view))
}

#[test]
#[ignore = "host: needs root, containerd and runc; run by cargo xtask test"]
fn containerd_restart_keeps_pods_and_kernlet_reconnects() -> Result<()> {
    let mut node = TestNode::start()?;
    let (web, web_view) = run(&node, "web")?;

    // A graceful restart (SIGTERM, start again).
    node.fixture
        .as_mut()
        .context("the node has a runtime fixture")?
        .restart()?;
    // A pod created afterwards needs CRI calls: kernlet talks to the new containerd.
    let (after, after_view) = run(&node, "after")?;
    unchanged(&node, &web)?;
    assert_eq!(runtime_view(&node, &uid(&web))?, web_view);

    // A crash with the runtime away for a while: calls fail and must be retried, including
    // those for a pod that arrives during the outage.
    let pid = node
        .fixture
        .as_ref()
        .and_then(xtask::runtime::RuntimeFixture::pid)
        .context("containerd runs")?;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(pid)?),
        nix::sys::signal::Signal::SIGKILL,
    )?;
    let count = |n: &TestNode, what: &str| n.log().matches(what).count();
    let (relists, observations) = (
        count(&node, "pleg relist failed"),
        count(&node, "observing pod failed"),
    );
    node.write_manifest("during.yaml", &manifest("during"))?;
    node.wait_until(
        "the PLEG and the new pod's worker fail and retry",
        WAIT,
        |n| {
            Ok(count(n, "pleg relist failed") > relists
                && count(n, "observing pod failed") >= observations + 2)
        },
    )?;
    node.fixture.as_mut().context("fixture")?.restart()?;
    let pod_name = "during-testnode";
    node.wait_until("during runs", WAIT, |n| {
        Ok(n.pod(pod_name)?.is_some_and(|p| phase(&p) == "Running"))
    })?;
    let during = node.pod(pod_name)?.context("during")?;
    let view = runtime_view(&node, &uid(&during))?;
    ensure!(
        view.sandboxes.len() == 1 && view.containers.len() == 1,
        "retries duplicated objects: {view:?}"
    );
    assert_eq!(status(&during, "main")["restartCount"], 0);
    for (pod, view) in [(&web, &web_view), (&after, &after_view)] {
        unchanged(&node, pod)?;
        assert_eq!(&runtime_view(&node, &uid(pod))?, view);
    }

    // Changes after the restarts are acted on.
    node.remove_manifest("web.yaml")?;
    node.wait_until("web is gone", WAIT, |n| {
        Ok(n.pod("web-testnode")?.is_none())
    })?;
    let view = runtime_view(&node, &uid(&web))?;
    ensure!(
        view.sandboxes.is_empty() && view.containers.is_empty(),
        "{view:?}"
    );
    Ok(())
}
