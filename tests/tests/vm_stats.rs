//! Stats of real pods against the kernel's own accounting, in the node VM (every v2 controller,
//! kernlet's own hierarchy): a 50 MiB direct write against the container's `io.stat`; the working set against `memory.current - inactive_file`; an OOM kill
//! counted by the probe and by `memory.events`.
mod support;

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context, Result, ensure};
use kernlet::stats::summary::Summary;
use kernlet_tests::{node::TestNode, scrape::sample};
use serde_json::Value;
use support::{VM_WAIT as WAIT, container, phase, status, uid};

const CONFIG: &str = "cgroupsPerQOS: true\ncgroupRoot: {cgroup_root}\n";
const MIB: u64 = 1 << 20;

fn manifest(name: &str, containers: &str, extra_spec: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  \
         terminationGracePeriodSeconds: 2\n{extra_spec}  containers:\n{containers}"
    )
}

fn running(node: &TestNode, name: &str) -> Result<Value> {
    node.wait_until(&format!("{name} runs"), WAIT, |n| {
        Ok(n.pod(name)?.is_some_and(|p| phase(&p) == "Running"))
    })?;
    node.pod(name)?.context("pod vanished")
}

fn summary(node: &TestNode) -> Result<Summary> {
    Ok(serde_json::from_str(&node.get("/stats/summary")?)?)
}

fn container_id(pod: &Value) -> Result<String> {
    Ok(status(pod, "main")["containerID"]
        .as_str()
        .and_then(|id| id.strip_prefix("containerd://"))
        .context("container id")?
        .to_owned())
}

/// The cgroup directory of container `main` of `pod`, in `QoS` tier directory `tier`.
fn container_dir(node: &TestNode, tier: &str, pod: &Value) -> Result<PathBuf> {
    Ok(PathBuf::from("/sys/fs/cgroup")
        .join(node.cgroup_root().trim_start_matches('/'))
        .join("kubepods")
        .join(tier)
        .join(format!("pod{}", uid(pod)))
        .join(container_id(pod)?))
}

fn keyed(text: &str, key: &str) -> Option<u64> {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .windows(2)
        .find_map(|w| (w[0] == key).then(|| w[1].parse().ok()).flatten())
}

/// An ext4 filesystem on a loop device over a tmpfs file, mounted for a hostPath volume.
struct Disk {
    dir: tempfile::TempDir,
    device: String,
}

impl Disk {
    fn create() -> Result<Self> {
        if !Path::new("/dev/loop-control").exists() {
            let _ = Command::new("modprobe").arg("loop").status();
        }
        let dir = tempfile::tempdir()?;
        let run = |cmd: &mut Command| -> Result<String> {
            let out = cmd.output()?;
            ensure!(out.status.success(), "{cmd:?}: {out:?}");
            Ok(String::from_utf8(out.stdout)?.trim().to_owned())
        };
        run(Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=160m", "kernlet-disk"])
            .arg(dir.path()))?;
        let file = dir.path().join("disk");
        fs::File::create(&file)?.set_len(150 * MIB)?;
        let device = run(Command::new("losetup")
            .args(["--find", "--show"])
            .arg(&file))?;
        let name = device.trim_start_matches("/dev/").to_owned();
        let _ = fs::write(format!("/sys/block/{name}/queue/scheduler"), "none");
        run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&device))?;
        let mnt = dir.path().join("mnt");
        fs::create_dir(&mnt)?;
        run(Command::new("mount").arg(&device).arg(&mnt))?;
        Ok(Self { dir, device })
    }

    fn mount(&self) -> PathBuf {
        self.dir.path().join("mnt")
    }

    fn numbers(&self) -> Result<String> {
        let name = self.device.trim_start_matches("/dev/");
        Ok(fs::read_to_string(format!("/sys/block/{name}/dev"))?
            .trim()
            .to_owned())
    }
}

impl Drop for Disk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.mount()).status();
        let _ = Command::new("losetup").args(["-d", &self.device]).status();
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

#[test]
#[ignore = "vm: needs cgroup v2 controllers, containerd, runc and eBPF; run by cargo xtask test in the node VM"]
fn disk_writes_match_io_stat() -> Result<()> {
    let disk = Disk::create()?;
    let node = TestNode::start_with(CONFIG, &[])?;
    let script = "dd if=/dev/zero of=/data/file bs=1M count=50 oflag=direct && sync && sleep 3600";
    let mounts = "    volumeMounts:\n    - {name: data, mountPath: /data}\n";
    let volumes = format!(
        "  volumes:\n  - name: data\n    hostPath: {{path: {}, type: Directory}}\n",
        disk.mount().display()
    );
    node.write_manifest(
        "writer.yaml",
        &manifest("writer", &container("main", script, mounts), &volumes),
    )?;
    let writer = running(&node, "writer-testnode")?;
    let dir = container_dir(&node, "besteffort", &writer)?;
    let numbers = disk.numbers()?;
    let io_stat = || -> Result<u64> {
        let text = fs::read_to_string(dir.join("io.stat"))?;
        Ok(text
            .lines()
            .find(|l| l.starts_with(&format!("{numbers} ")))
            .and_then(|l| keyed(&l.replace('=', " "), "wbytes"))
            .unwrap_or(0))
    };
    node.wait_until("50 MiB written", Duration::from_mins(2), |_| {
        Ok(io_stat()? >= 50 * MIB)
    })?;
    std::thread::sleep(Duration::from_secs(3));
    let kernel = io_stat()?;
    let text = node.get("/metrics/cadvisor")?;
    let probe = sample(
        &text,
        "kernlet_block_write_bytes_total",
        &[("container", "main"), ("pod", "writer-testnode")],
    )
    .context("no kernlet_block_write_bytes_total for the writer")?;
    let ratio = probe / kernel as f64;
    println!("writer: probe {probe} B, io.stat wbytes {kernel} B, ratio {ratio:.4}");
    ensure!((0.95..=1.05).contains(&ratio), "probe/io.stat = {ratio:.4}");
    Ok(())
}

#[test]
#[ignore = "vm: needs cgroup v2 controllers, containerd, runc and eBPF; run by cargo xtask test in the node VM"]
fn working_set_and_oom_kills_follow_the_memory_controller() -> Result<()> {
    let node = TestNode::start_with(CONFIG, &[])?;
    // 16 MiB of page cache the container reads back, and a resident shell.
    let script = "head -c 16777216 /dev/urandom > /tmp/f; cat /tmp/f > /dev/null; sleep 3600";
    node.write_manifest(
        "cache.yaml",
        &manifest("cache", &container("main", script, ""), ""),
    )?;
    let cache = running(&node, "cache-testnode")?;
    std::thread::sleep(Duration::from_secs(4));
    let dir = container_dir(&node, "besteffort", &cache)?;
    let summary = summary(&node)?;
    let current: u64 = fs::read_to_string(dir.join("memory.current"))?
        .trim()
        .parse()?;
    let inactive = keyed(
        &fs::read_to_string(dir.join("memory.stat"))?,
        "inactive_file",
    )
    .context("inactive_file")?;
    let reported = summary
        .pods
        .iter()
        .find(|p| p.pod_ref.name == "cache-testnode")
        .and_then(|p| p.containers.first()?.memory.as_ref()?.working_set_bytes)
        .context("no working set")?;
    let expected = current.saturating_sub(inactive);
    println!("cache: working set {reported} B, memory.current - inactive_file = {expected} B");
    ensure!(
        reported.abs_diff(expected) <= MIB,
        "working set {reported} vs {expected}"
    );

    let limits = "    resources:\n      limits: {memory: 32Mi}\n";
    node.write_manifest(
        "oom.yaml",
        &manifest("oom", &container("main", "tail /dev/zero", limits), ""),
    )?;
    node.wait_until("oom is OOM-killed", Duration::from_mins(2), |n| {
        Ok(n.pod("oom-testnode")?.is_some_and(|p| {
            status(&p, "main")["lastState"]["terminated"]["reason"] == "OOMKilled"
        }))
    })?;
    // Between restarts (a back-off of 20 s after the second kill) the container's cgroup is
    // gone; the pod's stays, with the kill counted by the probe and by memory.events.
    node.wait_until("oom backs off", Duration::from_mins(1), |n| {
        Ok(n.pod("oom-testnode")?.is_some_and(|p| {
            let main = status(&p, "main");
            main["state"]["waiting"]["reason"] == "CrashLoopBackOff"
                && main["restartCount"].as_u64() >= Some(2)
        }))
    })?;
    std::thread::sleep(Duration::from_secs(3));
    let text = node.get("/metrics/cadvisor")?;
    let pod_series = |metric: &str| {
        text.lines()
            .filter(|l| {
                l.starts_with(&format!("{metric}{{"))
                    && l.contains("pod=\"oom-testnode\"")
                    && l.contains("container=\"\"")
            })
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
            .sum::<f64>()
    };
    let probe = pod_series("kernlet_oom_kills_total");
    let events = pod_series("container_oom_events_total");
    println!(
        "oom pod between restarts: kernlet_oom_kills_total {probe}, container_oom_events_total {events}"
    );
    ensure!(
        probe >= 1.0 && events >= 1.0,
        "pod series between restarts: kernlet_oom_kills_total {probe}, container_oom_events_total {events}"
    );
    ensure!(
        sample(
            &text,
            "container_memory_usage_bytes",
            &[("container", "main"), ("pod", "oom-testnode")]
        )
        .is_none(),
        "the exited container is still served"
    );
    Ok(())
}
