//! The metrics endpoints from representative data: exact text where upstream's tests pin it,
//! the rules upstream's collectors follow, `promtool check metrics` on every endpoint, and a
//! reader that parses `/metrics/resource` the way metrics-server does.
use std::collections::BTreeMap;
use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::cadvisor::{
    CadvisorContainer, CadvisorSnapshot, ContainerLabels, ContainerSpec, FsUsage, ProcessCounts,
};
use super::*;
use crate::config::{MetricKind, MetricKinds};
use crate::stats::model::{
    BlockCounters, EbpfCounters, HISTOGRAM_BUCKETS, LatencyHistogram, NetCounters,
};
use crate::stats::summary::testdata::{at, eth0, sample, summary};
use crate::stats::summary::{
    ContainerStats, CpuStats, MemoryStats, NodeStats, PodReference, PodStats, StatsError, Summary,
    SwapStats, Time,
};

/// Problems `promtool check metrics` reports for `text` (empty when clean).
fn promtool(text: &str) -> String {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is installed (Debian package prometheus; cargo xtask setup)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let mut problems = String::from_utf8_lossy(&output.stdout).into_owned();
    problems.push_str(&String::from_utf8_lossy(&output.stderr));
    if !output.status.success() && problems.is_empty() {
        problems = format!("promtool failed: {}", output.status);
    }
    problems
}

/// `promtool` findings that upstream's own output has too: cAdvisor's counter
/// `container_memory_failcnt` lacks `_total`, its gauge `container_fs_inodes_total` has it.
const UPSTREAM_LINT: [&str; 2] = [
    "container_memory_failcnt counter metrics should have \"_total\" suffix",
    "container_fs_inodes_total non-counter metrics should not have \"_total\" suffix",
];

fn promtool_beyond_upstream(text: &str) -> Vec<String> {
    promtool(text)
        .lines()
        .filter(|line| !line.trim().is_empty())
        .filter(|line| !UPSTREAM_LINT.contains(&line.trim()))
        .map(str::to_owned)
        .collect()
}

// ---------------------------------------------------------------- /metrics/resource

/// Upstream's `TestCollectResourceMetrics` case "arbitrary container metrics for different
/// container, pods and namespaces", with its static timestamp.
fn upstream_containers_case() -> Summary {
    let now = std::time::SystemTime::UNIX_EPOCH + Duration::from_nanos(1_624_396_278_302_091_597);
    let time = Time::new(now);
    let container = |name: &str, started_secs_ago: u64, swap: bool| ContainerStats {
        name: name.to_owned(),
        start_time: Time::new(now - Duration::from_secs(started_secs_ago)),
        cpu: Some(CpuStats {
            time,
            usage_core_nano_seconds: Some(10_000_000_000),
            ..CpuStats::default()
        }),
        memory: Some(MemoryStats {
            time,
            working_set_bytes: Some(1000),
            usage_bytes: Some(2000),
            ..MemoryStats::default()
        }),
        swap: swap.then_some(SwapStats {
            time,
            swap_usage_bytes: Some(1000),
            swap_available_bytes: Some(9000),
        }),
        ..ContainerStats::default()
    };
    let pod = |name: &str, namespace: &str, containers| PodStats {
        pod_ref: PodReference {
            name: name.to_owned(),
            namespace: namespace.to_owned(),
            uid: String::new(),
        },
        containers,
        ..PodStats::default()
    };
    Summary {
        node: NodeStats::default(),
        pods: vec![
            pod(
                "pod_a",
                "namespace_a",
                vec![
                    container("container_a", 30, true),
                    container("container_b", 120, false),
                ],
            ),
            pod(
                "pod_b",
                "namespace_b",
                vec![container("container_a", 600, false)],
            ),
        ],
    }
}

#[test]
fn resource_metrics_match_upstream_collector_output() {
    let text = resource::render(Ok(&upstream_containers_case())).unwrap();
    let expected = "\
# HELP container_cpu_usage_seconds_total [STABLE] Cumulative cpu time consumed by the container in core-seconds
# TYPE container_cpu_usage_seconds_total counter
container_cpu_usage_seconds_total{container=\"container_a\",namespace=\"namespace_a\",pod=\"pod_a\"} 10 1624396278302
container_cpu_usage_seconds_total{container=\"container_a\",namespace=\"namespace_b\",pod=\"pod_b\"} 10 1624396278302
container_cpu_usage_seconds_total{container=\"container_b\",namespace=\"namespace_a\",pod=\"pod_a\"} 10 1624396278302
# HELP container_memory_working_set_bytes [STABLE] Current working set of the container in bytes
# TYPE container_memory_working_set_bytes gauge
container_memory_working_set_bytes{container=\"container_a\",namespace=\"namespace_a\",pod=\"pod_a\"} 1000 1624396278302
container_memory_working_set_bytes{container=\"container_a\",namespace=\"namespace_b\",pod=\"pod_b\"} 1000 1624396278302
container_memory_working_set_bytes{container=\"container_b\",namespace=\"namespace_a\",pod=\"pod_a\"} 1000 1624396278302
# HELP container_start_time_seconds [STABLE] Start time of the container since unix epoch in seconds
# TYPE container_start_time_seconds gauge
container_start_time_seconds{container=\"container_a\",namespace=\"namespace_a\",pod=\"pod_a\"} 1624396248.3020916
container_start_time_seconds{container=\"container_a\",namespace=\"namespace_b\",pod=\"pod_b\"} 1624395678.3020916
container_start_time_seconds{container=\"container_b\",namespace=\"namespace_a\",pod=\"pod_a\"} 1624396158.3020916
# HELP container_swap_limit_bytes [ALPHA] Current amount of the container swap limit in bytes. Reported only on non-windows systems
# TYPE container_swap_limit_bytes gauge
container_swap_limit_bytes{container=\"container_a\",namespace=\"namespace_a\",pod=\"pod_a\"} 10000 1624396278302
# HELP container_swap_usage_bytes [ALPHA] Current amount of the container swap usage in bytes. Reported only on non-windows systems
# TYPE container_swap_usage_bytes gauge
container_swap_usage_bytes{container=\"container_a\",namespace=\"namespace_a\",pod=\"pod_a\"} 1000 1624396278302
# HELP resource_scrape_error [STABLE] 1 if there was an error while getting container metrics, 0 otherwise
# TYPE resource_scrape_error gauge
resource_scrape_error 0
";
    assert_eq!(text, expected);
    assert_eq!(promtool_beyond_upstream(&text), Vec::<String>::new());
}

#[test]
fn resource_metrics_on_error_are_only_the_scrape_error() {
    let text = resource::render(Err(&StatsError::NotCollected)).unwrap();
    assert_eq!(
        text,
        "# HELP resource_scrape_error [STABLE] 1 if there was an error while getting container metrics, 0 otherwise\n\
         # TYPE resource_scrape_error gauge\nresource_scrape_error 1\n"
    );
}

#[test]
fn resource_metrics_skip_absent_values_and_unset_start_times() {
    let mut case = upstream_containers_case();
    let first = &mut case.pods[0].containers[0];
    first.cpu.as_mut().unwrap().usage_core_nano_seconds = None;
    first.memory = None;
    first.start_time = Time(None);
    case.pods[1].containers[0].start_time = Time::new(std::time::SystemTime::UNIX_EPOCH);
    let text = resource::render(Ok(&case)).unwrap();
    assert!(!text.contains(
        "container_cpu_usage_seconds_total{container=\"container_a\",namespace=\"namespace_a\""
    ));
    assert!(!text.contains(
        "container_memory_working_set_bytes{container=\"container_a\",namespace=\"namespace_a\""
    ));
    assert_eq!(
        text.matches("container_start_time_seconds{").count(),
        1,
        "{text}"
    );
    assert!(!text.contains("node_"), "no node stats, no node metrics");
}

#[test]
fn resource_metrics_of_a_full_summary_pass_promtool() {
    let text = resource::render(Ok(&summary())).unwrap();
    for family in [
        "node_cpu_usage_seconds_total 2 1624396288000",
        "node_memory_working_set_bytes 41943040 1624396288000",
        "node_swap_usage_bytes 1048576 1624396288000",
        "pod_cpu_usage_seconds_total{namespace=\"default\",pod=\"web\"} 2 1624396288000",
        "pod_memory_working_set_bytes{namespace=\"default\",pod=\"web\"} 41943040 1624396288000",
        "pod_swap_usage_bytes{namespace=\"default\",pod=\"web\"} 1048576 1624396288000",
        "container_swap_limit_bytes{container=\"app\",namespace=\"default\",pod=\"web\"} 16777216 1624396288000",
    ] {
        assert!(text.contains(family), "{family}\n{text}");
    }
    assert_eq!(promtool_beyond_upstream(&text), Vec::<String>::new());
}

/// What metrics-server keeps of one container or the node: cumulative CPU in nanoseconds,
/// memory in bytes, the sample time in ms, the start time.
#[derive(Debug, Default, PartialEq)]
struct MetricsPoint {
    cpu_ns: u64,
    memory: u64,
    timestamp_ms: i64,
    start_time_secs: Option<f64>,
}

/// A reader written from metrics-server's documented `decodeBatch`: it matches series by name
/// prefix, finds `container="`, `pod="` and `namespace="` in the raw label bytes, and takes the
/// sample timestamp in milliseconds (the scrape time when absent).
fn decode_like_metrics_server(
    text: &str,
    scrape_ms: i64,
) -> (
    MetricsPoint,
    BTreeMap<(String, String, String), MetricsPoint>,
) {
    fn label(series: &str, tag: &str) -> String {
        let start = series.find(tag).map_or(series.len(), |i| i + tag.len());
        let rest = &series[start..];
        rest[..rest.find('"').unwrap_or(rest.len())].to_owned()
    }
    let mut node = MetricsPoint::default();
    let mut containers: BTreeMap<(String, String, String), MetricsPoint> = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, rest) = match line.find('}') {
            Some(end) => line.split_at(end + 1),
            None => line.split_at(line.find(' ').unwrap()),
        };
        let mut fields = rest.split_whitespace();
        let value: f64 = fields.next().unwrap().parse().unwrap();
        let timestamp_ms = fields.next().map_or(scrape_ms, |t| t.parse().unwrap());
        let name = &series[..series.find('{').unwrap_or(series.len())];
        let key = || {
            (
                label(series, "namespace=\""),
                label(series, "pod=\""),
                label(series, "container=\""),
            )
        };
        match name {
            "node_cpu_usage_seconds_total" => {
                node.cpu_ns = (value * 1e9) as u64;
                node.timestamp_ms = timestamp_ms;
            }
            "node_memory_working_set_bytes" => {
                node.memory = value as u64;
                node.timestamp_ms = timestamp_ms;
            }
            "container_cpu_usage_seconds_total" => {
                let point = containers.entry(key()).or_default();
                point.cpu_ns = (value * 1e9) as u64;
                point.timestamp_ms = timestamp_ms;
            }
            "container_memory_working_set_bytes" => {
                let point = containers.entry(key()).or_default();
                point.memory = value as u64;
                point.timestamp_ms = timestamp_ms;
            }
            "container_start_time_seconds" => {
                containers.entry(key()).or_default().start_time_secs = Some(value);
            }
            _ => {}
        }
    }
    (node, containers)
}

#[test]
fn metrics_server_reads_resource_metrics_with_their_timestamps() {
    let text = resource::render(Ok(&summary())).unwrap();
    let (node, containers) = decode_like_metrics_server(&text, 0);
    assert_eq!(node.cpu_ns, 2_000_000_000);
    assert_eq!(node.memory, 40 << 20);
    assert_eq!(node.timestamp_ms, 1_624_396_288_000);
    assert_eq!(containers.len(), 2);
    let app = &containers[&("default".to_owned(), "web".to_owned(), "app".to_owned())];
    assert_eq!(app.cpu_ns, 2_000_000_000);
    assert_eq!(app.memory, 40 << 20);
    assert_eq!(app.timestamp_ms, 1_624_396_288_000);
    assert_eq!(app.start_time_secs, Some(1_624_396_278.0));
    // metrics-server drops a container whose CPU or memory is 0: ours are complete.
    assert!(containers.values().all(|c| c.cpu_ns > 0 && c.memory > 0));

    // The upstream case: three containers, timestamps in ms from the stats' time.
    let text = resource::render(Ok(&upstream_containers_case())).unwrap();
    let (_, containers) = decode_like_metrics_server(&text, 0);
    let b = &containers[&(
        "namespace_a".to_owned(),
        "pod_a".to_owned(),
        "container_b".to_owned(),
    )];
    assert_eq!(
        (b.cpu_ns, b.memory, b.timestamp_ms),
        (10_000_000_000, 1000, 1_624_396_278_302)
    );
}

// ---------------------------------------------------------------- /metrics/cadvisor

fn ebpf_counters() -> EbpfCounters {
    let mut runq = LatencyHistogram::default();
    runq.buckets[10] = 5; // [1024, 2048) ns
    runq.buckets[20] = 1; // [~1 ms, ~2 ms)
    runq.buckets[HISTOGRAM_BUCKETS - 1] = 2; // beyond 2^31 ns
    runq.sum_ns = 5 * 1500 + 1_500_000 + 2 * 3_000_000_000;
    EbpfCounters {
        on_cpu_ns: Some(1_500_000_000),
        switches: Some(42),
        runq_latency: Some(runq),
        net: Some(NetCounters {
            rx_bytes: 100,
            rx_packets: 2,
            tx_bytes: 300,
            tx_packets: 4,
        }),
        block: Some(BlockCounters {
            read_bytes: 4096,
            write_bytes: 8192,
            reads: 1,
            writes: 2,
            latency: runq,
        }),
        oom_kills: Some(1),
        last_oom_victim: None,
        page_faults: Some(10),
        major_page_faults: Some(1),
    }
}

fn cadvisor_snapshot() -> CadvisorSnapshot {
    let app = CadvisorContainer {
        labels: ContainerLabels {
            container: "app".to_owned(),
            id: "/kubepods/burstable/poduid-web/abc".to_owned(),
            image: "docker.io/library/nginx:1.27".to_owned(),
            name: "abc".to_owned(),
            namespace: "default".to_owned(),
            pod: "web".to_owned(),
        },
        start_time: Some(at(0)),
        sample: sample(at(10_000), 2_000_000),
        spec: ContainerSpec {
            cpu_period_us: Some(100_000),
            cpu_quota_us: Some(50_000),
            cpu_shares: Some(512),
            memory_limit: Some(128 << 20),
            memory_swap_limit: None,
            memory_reservation: None,
        },
        interfaces: vec![eth0()],
        filesystems: vec![FsUsage {
            device: "/dev/sda1".to_owned(),
            limit_bytes: 4 << 30,
            usage_bytes: 4096,
            inodes: 5000,
            inodes_free: 1000,
        }],
        processes: Some(ProcessCounts {
            processes: 2,
            file_descriptors: 9,
            sockets: 1,
        }),
        ebpf: Some(ebpf_counters()),
    };
    let mut node = CadvisorContainer {
        labels: ContainerLabels {
            id: "/".to_owned(),
            ..ContainerLabels::default()
        },
        sample: sample(at(10_000), 9_000_000),
        ..CadvisorContainer::default()
    };
    node.sample.io[0].major = 259;
    CadvisorSnapshot {
        containers: vec![app, node],
        devices: BTreeMap::from([((8, 0), "/dev/sda".to_owned())]),
    }
}

const APP: &str = "container=\"app\",id=\"/kubepods/burstable/poduid-web/abc\",image=\"docker.io/library/nginx:1.27\",name=\"abc\",namespace=\"default\",pod=\"web\"";

#[test]
fn cadvisor_metrics_have_upstream_names_labels_and_timestamps() {
    let text = cadvisor::render(Ok(&cadvisor_snapshot()), at(20_000), MetricKinds::ALL).unwrap();
    let lines = [
        // Usage samples carry the sample time.
        format!(
            "container_cpu_usage_seconds_total{{{APP_CPU}}} 2 1624396288000",
            APP_CPU = APP.replacen("container=\"app\",", "container=\"app\",cpu=\"total\",", 1)
        ),
        format!("container_cpu_user_seconds_total{{{APP}}} 1.5 1624396288000"),
        format!("container_cpu_cfs_throttled_seconds_total{{{APP}}} 0.25 1624396288000"),
        format!("container_memory_working_set_bytes{{{APP}}} 41943040 1624396288000"),
        format!("container_memory_rss{{{APP}}} 31457280 1624396288000"),
        format!("container_memory_cache{{{APP}}} 18874368 1624396288000"),
        format!("container_oom_events_total{{{APP}}} 1 1624396288000"),
        format!("container_threads_max{{{APP}}} 1024 1624396288000"),
        format!("container_pressure_cpu_waiting_seconds_total{{{APP}}} 2 1624396288000"),
        format!("container_pressure_cpu_stalled_seconds_total{{{APP}}} 1 1624396288000"),
        // Spec samples carry none; last_seen is the scrape time.
        format!("container_start_time_seconds{{{APP}}} 1624396278"),
        format!("container_spec_cpu_quota{{{APP}}} 50000"),
        format!("container_spec_memory_swap_limit_bytes{{{APP}}} 0"),
        format!("container_last_seen{{{APP}}} 1624396298 1624396298000"),
        "container_scrape_error 0".to_owned(),
    ];
    for line in &lines {
        assert!(text.lines().any(|l| l == line), "missing {line}\n{text}");
    }
    let app_only = |l: &&str| l.contains("id=\"/kubepods");
    // Labels in name order, extras included.
    assert!(text.contains(
        "container_memory_failures_total{container=\"app\",failure_type=\"pgmajfault\",id="
    ));
    assert!(text.contains("interface=\"eth0\",name=\"abc\""));
    assert!(text.contains("container_fs_reads_bytes_total{container=\"app\",device=\"/dev/sda\","));
    assert!(text.contains("container_blkio_device_usage_total{container=\"\",device=\"259:0\",id=\"/\",image=\"\",major=\"259\",minor=\"0\",name=\"\",namespace=\"\",operation=\"Write\",pod=\"\"} 8192"));
    // The node has no quota: no CFS samples, and no spec CPU period.
    let cfs: Vec<_> = text
        .lines()
        .filter(|l| l.starts_with("container_cpu_cfs_periods_total{"))
        .collect();
    assert_eq!(cfs.len(), 1);
    assert!(cfs.iter().all(app_only));
    // HELP and TYPE as cAdvisor's.
    for header in [
        "# HELP container_cpu_usage_seconds_total Cumulative cpu time consumed in seconds.",
        "# TYPE container_memory_failcnt counter",
        "# HELP container_threads_max Maximum number of threads allowed inside the container, infinity if value is zero",
        "# TYPE kernlet_cpu_runqueue_latency_seconds histogram",
    ] {
        assert!(text.contains(header), "{header}");
    }
}

#[test]
fn cadvisor_usage_total_needs_usage_and_cfs_needs_a_quota() {
    let mut snapshot = cadvisor_snapshot();
    snapshot.containers.truncate(1);
    snapshot.containers[0]
        .sample
        .cpu
        .as_mut()
        .unwrap()
        .usage_usec = 0;
    snapshot.containers[0].spec.cpu_quota_us = None;
    let text = cadvisor::render(Ok(&snapshot), at(20_000), MetricKinds::ALL).unwrap();
    assert!(!text.contains("container_cpu_usage_seconds_total{"));
    assert!(!text.contains("container_cpu_cfs_"));
    assert!(!text.contains("container_spec_cpu_quota{"));
}

#[test]
fn cadvisor_metrics_on_error_are_only_the_scrape_error() {
    let text = cadvisor::render(Err(&StatsError::NotCollected), at(0), MetricKinds::ALL).unwrap();
    assert!(text.ends_with("container_scrape_error 1\n"), "{text}");
    assert_eq!(text.lines().filter(|l| !l.starts_with('#')).count(), 1);
}

#[test]
fn cadvisor_metrics_pass_promtool() {
    let text = cadvisor::render(Ok(&cadvisor_snapshot()), at(20_000), MetricKinds::ALL).unwrap();
    assert_eq!(promtool_beyond_upstream(&text), Vec::<String>::new());
    // The two upstream findings are the only ones, and they are reported.
    let all = promtool(&text);
    for lint in UPSTREAM_LINT {
        assert!(all.contains(lint), "{all}");
    }
}

#[test]
fn ebpf_histograms_are_cumulative_seconds_buckets() {
    let value = ebpf::histogram(&ebpf_counters().runq_latency.unwrap());
    assert_eq!(value.count, 8);
    assert_eq!(value.buckets.len(), HISTOGRAM_BUCKETS - 1);
    assert!((value.buckets[0].0 - 2e-9).abs() < 1e-18);
    assert_eq!(value.buckets[9].1, 0);
    assert_eq!(value.buckets[10], (2048e-9, 5));
    assert_eq!(value.buckets[20].1, 6);
    assert_eq!(
        value.buckets[HISTOGRAM_BUCKETS - 2],
        ((1_u64 << 31) as f64 / 1e9, 6)
    );
    assert!((value.sum - 6.001_507_5).abs() < 1e-9);

    let text = cadvisor::render(Ok(&cadvisor_snapshot()), at(20_000), MetricKinds::ALL).unwrap();
    let bucket = |le: &str| {
        text.lines()
            .find(|l| {
                l.starts_with("kernlet_cpu_runqueue_latency_seconds_bucket{")
                    && l.contains(APP)
                    && l.contains(&format!("le=\"{le}\""))
            })
            .unwrap_or_else(|| panic!("le={le}"))
            .to_owned()
    };
    assert!(bucket("+Inf").contains("} 8 1624396288000"));
    assert!(bucket("0.000002048").contains("} 5 "));
    for line in [
        format!("kernlet_network_receive_bytes_total{{{APP}}} 100 1624396288000"),
        format!("kernlet_oom_kills_total{{{APP}}} 1 1624396288000"),
        format!("kernlet_cpu_on_cpu_seconds_total{{{APP}}} 1.5 1624396288000"),
        format!("kernlet_block_io_latency_seconds_count{{{APP}}} 8 1624396288000"),
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line}");
    }
}

// ---------------------------------------------------------------- /metrics

#[test]
fn own_metrics_render_what_the_daemon_set() {
    let metrics = Metrics::new();
    assert_eq!(
        metrics.render().unwrap(),
        "",
        "nothing set, nothing written"
    );
    metrics.set_program_loaded("sched_switch", true);
    metrics.set_program_loaded("block_rq", false);
    metrics.set_program_cost("sched_switch", 2_500_000_000, 1000);
    metrics.observe_collection(Duration::from_millis(3));
    metrics.observe_exit_to_status(Duration::from_millis(7));
    metrics.observe_cri_call("RunPodSandbox", Duration::from_millis(40));
    metrics.observe_cri_call("RunPodSandbox", Duration::from_secs(2));
    metrics.observe_cri_call("ListContainers", Duration::from_millis(1));
    let counter = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(2));
    metrics.track_manifest_errors(counter.clone());
    counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);

    let text = metrics.render().unwrap();
    for line in [
        "kernlet_ebpf_program_loaded{program=\"block_rq\"} 0",
        "kernlet_ebpf_program_loaded{program=\"sched_switch\"} 1",
        "kernlet_ebpf_program_run_time_seconds_total{program=\"sched_switch\"} 2.5",
        "kernlet_ebpf_program_runs_total{program=\"sched_switch\"} 1000",
        "kernlet_stats_collection_duration_seconds_bucket{le=\"0.0032\"} 1",
        "kernlet_stats_collection_duration_seconds_bucket{le=\"0.0016\"} 0",
        "kernlet_stats_collection_duration_seconds_count 1",
        "kernlet_pleg_exit_to_status_seconds_bucket{le=\"0.005\"} 0",
        "kernlet_pleg_exit_to_status_seconds_bucket{le=\"0.01\"} 1",
        "kernlet_pleg_exit_to_status_seconds_count 1",
        "kernlet_cri_request_duration_seconds_bucket{method=\"RunPodSandbox\",le=\"0.078125\"} 1",
        "kernlet_cri_request_duration_seconds_bucket{method=\"RunPodSandbox\",le=\"+Inf\"} 2",
        "kernlet_cri_request_duration_seconds_count{method=\"ListContainers\"} 1",
        "kernlet_static_pod_manifest_errors_total 3",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line}\n{text}");
    }
    assert_eq!(promtool_beyond_upstream(&text), Vec::<String>::new());
}

#[test]
fn cadvisor_kinds_leave_out_exactly_their_families() {
    let all = cadvisor::render(Ok(&cadvisor_snapshot()), at(20_000), MetricKinds::ALL).unwrap();
    let off = MetricKinds::parse(["memory", "kernlet", "diskIO"]).unwrap();
    let some = cadvisor::render(
        Ok(&cadvisor_snapshot()),
        at(20_000),
        MetricKinds::ALL.without(off),
    )
    .unwrap();
    let left_out: Vec<&str> = all.lines().filter(|l| !some.contains(*l)).collect();
    assert!(!left_out.is_empty());
    for line in &left_out {
        let family = line
            .trim_start_matches("# HELP ")
            .trim_start_matches("# TYPE ");
        assert!(
            family.starts_with("container_memory_")
                || family.starts_with("kernlet_")
                || family.starts_with("container_fs_reads")
                || family.starts_with("container_fs_writes")
                || family.starts_with("container_blkio_"),
            "{line}"
        );
    }
    // The OOM counter is its own kind, as in cAdvisor.
    assert!(some.contains("container_oom_events_total{"), "{some}");
    assert!(
        some.contains("container_cpu_usage_seconds_total{"),
        "{some}"
    );
    assert!(some.contains("container_fs_usage_bytes{"), "{some}");
    let none = cadvisor::render(Ok(&cadvisor_snapshot()), at(20_000), MetricKinds::NONE).unwrap();
    assert!(!none.contains("container_cpu_") && !none.contains(MetricKind::Kernlet.name()));
    assert!(
        none.contains("container_spec_memory_limit_bytes{"),
        "{none}"
    );
}
