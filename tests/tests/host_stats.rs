//! The stats endpoints of a real kernlet with real pods: `/stats/summary` decodes into the strict
//! upstream schema, every metrics endpoint passes `promtool check metrics`, `/metrics/resource`
//! reads the way metrics-server reads it, and a busy container's CPU from the eBPF probe agrees
//! with the kernel's `cpu.stat` within 5% over 5 s, plus what the hypervisor stole meanwhile.
use std::time::Duration;

use anyhow::{Context, Result};
use kernlet::stats::summary::Summary;
use kernlet_tests::{
    node::TestNode,
    scrape::{promtool_problems, sample},
};

const WAIT: Duration = Duration::from_mins(1);

fn manifest(name: &str, script: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  \
         terminationGracePeriodSeconds: 2\n  containers:\n  - name: main\n    \
         image: kernlet.local/busybox:1\n    imagePullPolicy: Never\n    \
         command: [\"sh\", \"-c\", {script:?}]\n"
    )
}

fn summary(node: &TestNode) -> Result<Summary> {
    let text = node.get("/stats/summary")?;
    serde_json::from_str(&text).with_context(|| format!("strict decode of {text}"))
}

#[test]
#[ignore = "host: needs root, containerd, runc and eBPF; run by cargo xtask test"]
fn stats_endpoints_follow_upstream_schemas() -> Result<()> {
    let node = TestNode::start()?;
    node.write_manifest("busy.yaml", &manifest("busy", "while :; do :; done"))?;
    node.wait_until("busy has CPU stats", WAIT, |n| {
        let summary = summary(n)?;
        Ok(summary.pods.iter().any(|p| {
            p.pod_ref.name == "busy-testnode"
                && p.containers
                    .iter()
                    .any(|c| c.cpu.as_ref().is_some_and(|c| c.usage_nano_cores.is_some()))
        }))
    })?;
    let summary = summary(&node)?;
    // Strict schema: what kernlet wrote decodes with no unknown field and re-encodes the same.
    let again: Summary = serde_json::from_slice(&kernlet::stats::summary::encode(&summary)?)?;
    assert_eq!(again, summary);
    assert_eq!(summary.node.node_name, "testnode");
    let pod = summary
        .pods
        .iter()
        .find(|p| p.pod_ref.name == "busy-testnode")
        .context("busy pod")?;
    assert_eq!(pod.pod_ref.namespace, "default");
    let cpu = pod.containers[0].cpu.as_ref().context("container cpu")?;
    let cores = cpu.usage_nano_cores.unwrap_or(0) as f64 / 1e9;
    assert!(cores > 0.5, "a busy loop uses {cores} cores");
    let only: serde_json::Value =
        serde_json::from_str(&node.get("/stats/summary?only_cpu_and_memory=true")?)?;
    assert!(only["node"].get("fs").is_none(), "{only}");

    for path in ["/metrics", "/metrics/cadvisor", "/metrics/resource"] {
        let text = node.get(path)?;
        let problems = promtool_problems(&text)?;
        assert!(problems.is_empty(), "promtool on {path}: {problems:?}");
    }
    // metrics-server: finds labels by their raw bytes and takes the sample timestamp in ms.
    let resource = node.get("/metrics/resource")?;
    let line = resource
        .lines()
        .find(|l| {
            l.starts_with("container_cpu_usage_seconds_total{")
                && l.contains("container=\"main\"")
                && l.contains("pod=\"busy-testnode\"")
                && l.contains("namespace=\"default\"")
        })
        .context("no container_cpu_usage_seconds_total for busy")?;
    let fields: Vec<&str> = line.rsplit(' ').take(2).collect();
    let timestamp_ms: i64 = fields[0].parse()?;
    let value: f64 = fields[1].parse()?;
    assert!(value > 0.0 && timestamp_ms > 1_700_000_000_000, "{line}");
    let own = node.get("/metrics")?;
    assert_eq!(
        sample(
            &own,
            "kernlet_ebpf_program_loaded",
            &[("program", "sched_switch")]
        ),
        Some(1.0),
        "{own}"
    );
    let sandboxes = sample(
        &own,
        "kernlet_cri_request_duration_seconds_count",
        &[("method", "RunPodSandbox")],
    );
    assert!(sandboxes >= Some(1.0), "no RunPodSandbox latency: {own}");
    // The pod runs: kernlet's admission has both lanes open and, once the start call has
    // returned, nothing waiting or in flight.
    node.wait_until("the admission lanes are idle", WAIT, |n| {
        let own = n.get("/metrics")?;
        Ok(["sandbox", "start"].iter().all(|&lane| {
            let of = |name| sample(&own, name, &[("lane", lane)]);
            of("kernlet_cri_admission_width") >= Some(1.0)
                && of("kernlet_cri_admission_waiting") == Some(0.0)
                && of("kernlet_cri_admission_in_flight") == Some(0.0)
        }))
    })?;
    assert!(sample(&own, "kernlet_stats_collection_duration_seconds_count", &[]) > Some(1.0));
    Ok(())
}

#[test]
#[ignore = "host: needs root, containerd, runc and eBPF; run by cargo xtask test"]
fn container_cpu_from_the_probe_matches_cpu_stat() -> Result<()> {
    let node = TestNode::start()?;
    // The probe adds a stint of CPU time when its task is switched out, so a loop that runs alone
    // on a core can be seconds ahead of it. Compare totals once the loop is over and the task
    // sleeps: then every stint has been counted.
    let script =
        "end=$(( $(date +%s) + 5 )); while [ $(date +%s) -lt $end ]; do :; done; sleep 3600";
    node.write_manifest("busy.yaml", &manifest("busy", script))?;
    let labels = [("container", "main"), ("pod", "busy-testnode")];
    let read = |node: &TestNode| -> Result<(f64, f64)> {
        let text = node.get("/metrics/cadvisor")?;
        let probe = sample(&text, "kernlet_cpu_on_cpu_seconds_total", &labels);
        let kernel = sample(&text, "container_cpu_usage_seconds_total", &labels);
        probe.zip(kernel).context("no cpu samples for busy yet")
    };
    let steal_before = steal_seconds()?;
    let mut last = (0.0, 0.0);
    node.wait_until("busy ran its loop and went to sleep", WAIT, |n| {
        let Ok(now) = read(n) else { return Ok(false) };
        let settled = now.1 > 2.0 && now.1 - last.1 < 0.02 && now.0 - last.0 < 0.02;
        last = now;
        if !settled {
            std::thread::sleep(Duration::from_millis(1500));
        }
        Ok(settled)
    })?;
    let (probe, kernel) = last;
    // The probe times the CPU between switches; the kernel's runtime leaves out what the
    // hypervisor stole meanwhile (paravirt steal accounting). The node's steal over the window
    // bounds that part of the difference.
    let steal = steal_seconds()? - steal_before;
    println!("busy loop: probe {probe:.3} s, cpu.stat {kernel:.3} s, node steal {steal:.3} s");
    let ratio = probe / kernel;
    assert!(
        ratio >= 0.95 && probe <= kernel * 1.05 + steal,
        "probe/cpu.stat = {ratio:.3} with {steal:.3} s stolen"
    );
    Ok(())
}

/// Time stolen from this machine's CPUs by its hypervisor since boot, all CPUs together
/// (`/proc/stat`, in clock ticks of 1/100 s as `USER_HZ` is on Linux).
fn steal_seconds() -> Result<f64> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let steal = stat
        .lines()
        .find_map(|line| line.strip_prefix("cpu "))
        .and_then(|fields| fields.split_whitespace().nth(7))
        .context("no steal field in /proc/stat")?;
    Ok(steal.parse::<f64>()? / 100.0)
}

fn container_id(pod: &serde_json::Value) -> Result<String> {
    Ok(pod["status"]["containerStatuses"][0]["containerID"]
        .as_str()
        .and_then(|id| id.strip_prefix("containerd://"))
        .context("container id")?
        .to_owned())
}

/// Bytes sent on `eth0` as the network namespace of container `id` counts them.
fn eth0_tx(id: &str) -> Result<u64> {
    let mount = std::path::Path::new("/sys/fs/cgroup/unified");
    let mount = if mount.is_dir() {
        mount
    } else {
        std::path::Path::new("/sys/fs/cgroup")
    };
    let cgroups = kernlet::stats::host::index_containers(mount);
    let path = cgroups.get(id).context("the container's cgroup")?;
    let procs = std::fs::read_to_string(
        mount
            .join(path.trim_start_matches('/'))
            .join("cgroup.procs"),
    )?;
    let pid = procs
        .lines()
        .next()
        .context("no process in the container")?;
    let dev = std::fs::read_to_string(format!("/proc/{pid}/net/dev"))?;
    let line = dev
        .lines()
        .find(|l| l.trim_start().starts_with("eth0:"))
        .context("no eth0")?;
    let fields: Vec<u64> = line
        .split_once(':')
        .context("net/dev line")?
        .1
        .split_whitespace()
        .filter_map(|f| f.parse().ok())
        .collect();
    fields.get(8).copied().context("tx bytes")
}

#[test]
#[ignore = "host: needs root, containerd, runc and eBPF; run by cargo xtask test"]
fn pod_network_bytes_match_the_pods_interface() -> Result<()> {
    const MIB: u64 = 1 << 20;
    let node = TestNode::start()?;
    // The source serves a 10 MiB file over HTTP (busybox httpd); the sink fetches it.
    let serve =
        "mkdir /www && head -c 10485760 /dev/zero > /www/f && exec httpd -f -p 8080 -h /www";
    node.write_manifest("source.yaml", &manifest("source", serve))?;
    node.wait_until("source runs", WAIT, |n| {
        Ok(n.pod("source-testnode")?
            .is_some_and(|p| p["status"]["phase"] == "Running"))
    })?;
    let source = node.pod("source-testnode")?.context("source")?;
    let ip = source["status"]["podIP"]
        .as_str()
        .context("source ip")?
        .to_owned();
    let fetch = format!("sleep 1; wget -q -O /dev/null http://{ip}:8080/f; sleep 3600");
    node.write_manifest("sink.yaml", &manifest("sink", &fetch))?;
    let id = container_id(&source)?;
    node.wait_until("10 MiB left the source pod", WAIT, |_| {
        Ok(eth0_tx(&id)? >= 10 * MIB)
    })?;
    std::thread::sleep(Duration::from_secs(3));
    let interface = eth0_tx(&id)?;
    let summary = summary(&node)?;
    let pod = summary
        .pods
        .iter()
        .find(|p| p.pod_ref.name == "source-testnode")
        .context("source in the summary")?;
    let probe = pod
        .network
        .as_ref()
        .and_then(|n| n.tx_bytes)
        .context("source has no network stats")?;
    let ratio = probe as f64 / interface as f64;
    println!("source pod: probe tx {probe} B, eth0 tx {interface} B, ratio {ratio:.4}");
    // The probe counts IP packets; the interface adds a 14-byte Ethernet header to each.
    assert!(
        (0.98..=1.02).contains(&ratio),
        "probe/interface = {ratio:.4}"
    );
    Ok(())
}
