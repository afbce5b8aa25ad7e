//! The demo's static pods (`deploy/examples/`) through the real kernlet binary, containerd and
//! runc: every manifest is accepted and its pod does what its comment says: the readiness pod
//! turns Ready, the liveness pod is restarted by its probe, the sidecar pod runs both
//! containers.
//!
//! Run with `cargo test -p kernlet-tests --test host_examples -- --ignored --test-threads=1`.
mod support;

use std::{fs, time::Duration};

use anyhow::{Context, Result};
use kernlet_tests::node::TestNode;
use support::{init_status, status};

#[test]
#[ignore = "host: needs root, containerd and runc; run by cargo xtask test"]
fn the_demo_examples_run_as_their_comments_say() -> Result<()> {
    let node = TestNode::start()?;
    let examples = xtask::workspace_root().join("deploy/examples");
    let mut names = Vec::new();
    for entry in fs::read_dir(&examples).context("reading deploy/examples")? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let text = fs::read_to_string(&path)?;
            let file = path.file_name().context("no file name")?.to_string_lossy();
            node.write_manifest(&file, &text)?;
            names.push(file.into_owned());
        }
    }
    assert!(names.len() >= 5, "{names:?}");
    node.wait_until("every example pod is listed", Duration::from_mins(1), |n| {
        Ok(n.pods()?.len() == names.len())
    })?;
    node.wait_until(
        "flappy ready, unhealthy restarted by its probe, the sidecar pod running",
        Duration::from_secs(90),
        |n| {
            let flappy = n.pod("flappy-testnode")?;
            let unhealthy = n.pod("unhealthy-testnode")?;
            let sidecar = n.pod("with-sidecar-testnode")?;
            Ok(flappy.is_some_and(|p| status(&p, "web")["ready"] == true)
                && unhealthy
                    .is_some_and(|p| status(&p, "check")["restartCount"].as_u64() >= Some(1))
                && sidecar.is_some_and(|p| {
                    status(&p, "app")["state"]["running"].is_object()
                        && init_status(&p, "shipper")["state"]["running"].is_object()
                }))
        },
    )?;
    assert!(
        node.log()
            .contains("Container check failed liveness probe, will be restarted")
    );
    Ok(())
}
