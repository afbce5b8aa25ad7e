//! The stats endpoints of a real kernlet with real pods: `/stats/summary` decodes into the strict
//! upstream schema, every metrics endpoint passes `promtool check metrics`, `/metrics/resource`
//! reads the way metrics-server reads it, and a busy container's CPU from the eBPF probe agrees
//! with the kernel's `cpu.stat` within 5% over 5 s.
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
    Ok(())
}

#[test]
#[ignore = "host: needs root, containerd, runc and eBPF; run by cargo xtask test"]
fn container_cpu_from_the_probe_matches_cpu_stat() -> Result<()> {
    let node = TestNode::start()?;
    node.write_manifest("busy.yaml", &manifest("busy", "while :; do :; done"))?;
    let labels = [("container", "main"), ("pod", "busy-testnode")];
    let read = |node: &TestNode| -> Result<(f64, f64)> {
        let text = node.get("/metrics/cadvisor")?;
        let probe = sample(&text, "kernlet_cpu_on_cpu_seconds_total", &labels);
        let kernel = sample(&text, "container_cpu_usage_seconds_total", &labels);
        probe.zip(kernel).context("no cpu samples for busy yet")
    };
    node.wait_until("busy has probe samples", WAIT, |n| Ok(read(n).is_ok()))?;
    std::thread::sleep(Duration::from_secs(2));
    let (probe0, kernel0) = read(&node)?;
    std::thread::sleep(Duration::from_secs(5));
    let (probe1, kernel1) = read(&node)?;
    let (probe, kernel) = (probe1 - probe0, kernel1 - kernel0);
    println!("busy over ~5 s: probe {probe:.3} s, cpu.stat {kernel:.3} s");
    assert!(kernel > 2.0, "the busy loop ran only {kernel} s");
    let ratio = probe / kernel;
    assert!(
        (0.95..=1.05).contains(&ratio),
        "probe/cpu.stat = {ratio:.3}"
    );
    Ok(())
}
