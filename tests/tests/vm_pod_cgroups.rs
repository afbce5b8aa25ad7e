//! Pod cgroups come and go with their pods, in the node VM: many create/delete cycles leave none
//! behind, and a restarted kernlet removes a pod cgroup nobody owns (killing what runs in it).
mod support;

use std::{fs, path::PathBuf, process::Command, time::Duration};

use anyhow::{Context, Result};
use kernlet_tests::node::TestNode;
use support::{VM_WAIT as WAIT, phase};

const PODS_PER_ROUND: usize = 10;
/// Four rounds: each cycle of ten sandboxes takes about a minute under TCG, and ten rounds made
/// this the VM tier's longest binary (677 s of a 53-minute CI run) without finding more.
const ROUNDS: usize = 4;

fn manifest(name: &str) -> String {
    // The pause image exits on SIGTERM, so deletion is quick.
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  \
         terminationGracePeriodSeconds: 2\n  containers:\n  - name: main\n    \
         image: kernlet.local/pause:1\n    imagePullPolicy: Never\n    \
         resources: {{requests: {{cpu: 10m}}}}\n"
    )
}

/// Every `pod*` directory under the node's `kubepods` tiers.
fn pod_cgroups(node: &TestNode) -> Vec<PathBuf> {
    let kubepods = PathBuf::from("/sys/fs/cgroup")
        .join(node.cgroup_root().trim_start_matches('/'))
        .join("kubepods");
    let mut found = Vec::new();
    for tier in [
        kubepods.clone(),
        kubepods.join("burstable"),
        kubepods.join("besteffort"),
    ] {
        for entry in fs::read_dir(&tier).into_iter().flatten().flatten() {
            if entry.file_name().to_string_lossy().starts_with("pod") {
                found.push(entry.path());
            }
        }
    }
    found
}

#[test]
#[ignore = "vm: needs cgroup v2 controllers, containerd and runc; run by cargo xtask test in the node VM"]
fn create_delete_cycles_leave_no_pod_cgroups() -> Result<()> {
    let node = TestNode::start_with("cgroupsPerQOS: true\ncgroupRoot: {cgroup_root}\n", &[])?;
    for round in 0..ROUNDS {
        let names: Vec<String> = (0..PODS_PER_ROUND)
            .map(|i| format!("c{round}-{i}"))
            .collect();
        for name in &names {
            node.write_manifest(&format!("{name}.yaml"), &manifest(name))?;
        }
        node.wait_until(&format!("round {round} runs"), WAIT, |n| {
            let pods = n.pods()?;
            Ok(names.iter().all(|name| {
                pods.iter().any(|p| {
                    p["metadata"]["name"] == format!("{name}-testnode") && phase(p) == "Running"
                })
            }))
        })?;
        assert_eq!(pod_cgroups(&node).len(), PODS_PER_ROUND, "round {round}");
        for name in &names {
            node.remove_manifest(&format!("{name}.yaml"))?;
        }
        node.wait_until(&format!("round {round} is gone"), WAIT, |n| {
            Ok(n.pods()?.is_empty() && pod_cgroups(n).is_empty())
        })?;
    }
    println!(
        "{} pods created and deleted; pod cgroups left: 0",
        ROUNDS * PODS_PER_ROUND
    );
    Ok(())
}

#[test]
#[ignore = "vm: needs cgroup v2 controllers, containerd and runc; run by cargo xtask test in the node VM"]
fn restart_removes_an_orphaned_pod_cgroup() -> Result<()> {
    let mut node = TestNode::start_with("cgroupsPerQOS: true\ncgroupRoot: {cgroup_root}\n", &[])?;
    node.write_manifest("kept.yaml", &manifest("kept"))?;
    node.wait_until("kept runs", WAIT, |n| {
        Ok(n.pod("kept-testnode")?
            .is_some_and(|p| phase(&p) == "Running"))
    })?;
    node.stop_kernlet(nix::sys::signal::Signal::SIGTERM)?;

    // A pod cgroup from "a previous run", with a process still inside.
    let orphan = PathBuf::from("/sys/fs/cgroup")
        .join(node.cgroup_root().trim_start_matches('/'))
        .join("kubepods/besteffort/pod0badc0de-0000-4000-8000-000000000001");
    fs::create_dir(&orphan).with_context(|| format!("creating {}", orphan.display()))?;
    let mut sleeper = Command::new("sleep").arg("600").spawn()?;
    fs::write(orphan.join("cgroup.procs"), sleeper.id().to_string())?;
    let kept_before = pod_cgroups(&node);
    assert_eq!(kept_before.len(), 2, "{kept_before:?}");

    node.start_kernlet()?;
    node.wait_until("the orphan is removed", Duration::from_secs(30), |_| {
        Ok(!orphan.exists())
    })?;
    let status = sleeper.wait()?;
    assert!(
        !status.success(),
        "the orphan's process was not killed: {status}"
    );
    // The running pod keeps its cgroup.
    let left = pod_cgroups(&node);
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(
        node.log().contains("removed orphaned pod cgroups"),
        "no log line"
    );
    Ok(())
}
