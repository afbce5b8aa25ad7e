//! `cargo xtask bench probes`: what kernlet's probes cost (issue 11). N static pods (default
//! 100), each with an exec, an httpGet and a tcpSocket probe every second: a `web` container
//! (busybox httpd) with an httpGet readiness and a tcpSocket liveness probe, and an `exec`
//! container with an exec liveness probe (`true`).
//!
//! Once every pod runs and has settled, kernlet's CPU (its own cgroup) and its probe count
//! (`/metrics/probes`) are read over a window: CPU per probe execution. kernlet's probe latency
//! per handler comes from its `prober_probe_duration_seconds` histograms (the mean is exact, the
//! percentiles are bucket bounds). Then kernlet is stopped (its pods keep running) and the same
//! calls are issued directly at the same pods and rate by the tests crate's `probe_direct`
//! example (CRI `ExecSync` over the same socket, a TCP connect, an HTTP GET), each timed.
//! Needs root; kernlet's log is kept in `target/xtask/bench/probes/`.
use std::{
    collections::BTreeMap,
    path::Path,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use super::{
    cargo_build_release, machine, markdown_table, poll,
    startup::{Kernlet, POLL, keep, running_pods, with_fixture},
    stats::{CpuCgroup, v2_mount},
    target_dir,
};
use crate::{images::TEST_IMAGE, setup};

const TOOL: &str = "probe_direct";
/// The exec probe's `timeoutSeconds`, and its `failureThreshold` so high that no container is
/// killed: 100 `runc exec`s a second can saturate a small host, and the bench measures what
/// the probes cost then, not the restarts that follow.
const EXEC_TIMEOUT: u32 = 5;
/// Idle time once every pod runs, before the window opens (first probes, jitter).
const SETTLE: Duration = Duration::from_secs(10);
/// `prober_probe_duration_seconds` bounds (Prometheus' defaults), in seconds.
const BOUNDS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// The same bounds as the exposition writes them in `le`.
const LE: [&str; 11] = [
    "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10",
];

#[derive(clap::Args, Debug)]
pub struct ProbesArgs {
    /// Static pods, each with three probes every second.
    #[arg(long, default_value_t = 100)]
    pub pods: usize,
    /// Length of the measured window, in seconds (kernlet's, then the direct calls').
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    pub window: u64,
    /// Longest the pods may take to start, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    pub timeout: u64,
}

fn manifest(index: usize) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: probed-{index}\nspec:\n  \
         terminationGracePeriodSeconds: 1\n  containers:\n  - name: web\n    \
         image: {TEST_IMAGE}\n    imagePullPolicy: Never\n    \
         command: [\"sh\", \"-c\", \"mkdir -p /www && echo ok > /www/index.html && exec httpd -f -p 8080 -h /www\"]\n    \
         readinessProbe:\n      httpGet: {{path: /, port: 8080}}\n      periodSeconds: 1\n    \
         livenessProbe:\n      tcpSocket: {{port: 8080}}\n      periodSeconds: 1\n      failureThreshold: 1000000\n  \
         - name: exec\n    image: {TEST_IMAGE}\n    imagePullPolicy: Never\n    \
         command: [\"sleep\", \"3600\"]\n    livenessProbe:\n      exec: {{command: [\"true\"]}}\n      \
         periodSeconds: 1\n      timeoutSeconds: {EXEC_TIMEOUT}\n      failureThreshold: 1000000\n"
    )
}

/// Which handler a `prober_*` sample measures: by container and probe type.
fn handler(labels: &str) -> Option<&'static str> {
    let web = labels.contains("container=\"web\"");
    let exec = labels.contains("container=\"exec\"");
    match (web, exec, labels.contains("probe_type=\"Readiness\"")) {
        (true, _, true) => Some("http"),
        (true, _, false) => Some("tcp"),
        (_, true, _) => Some("exec"),
        _ => None,
    }
}

/// Per handler: attempts, duration sum, and cumulative bucket counts, summed over pods.
#[derive(Debug, Default, Clone, PartialEq)]
struct Counts {
    attempts: f64,
    sum: f64,
    buckets: [f64; BOUNDS.len()],
}

fn parse(metrics: &str) -> BTreeMap<&'static str, Counts> {
    let mut out: BTreeMap<&'static str, Counts> = BTreeMap::new();
    for line in metrics.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let Some(kind) = handler(series) else {
            continue;
        };
        let entry = out.entry(kind).or_default();
        if series.starts_with("prober_probe_total{") {
            entry.attempts += value;
        } else if series.starts_with("prober_probe_duration_seconds_sum{") {
            entry.sum += value;
        } else if series.starts_with("prober_probe_duration_seconds_bucket{") {
            let le = series
                .split("le=\"")
                .nth(1)
                .and_then(|rest| rest.split('"').next());
            if let Some(i) = le.and_then(|b| LE.iter().position(|&x| x == b)) {
                entry.buckets[i] += value;
            }
        }
    }
    out
}

impl Counts {
    fn minus(&self, before: &Self) -> Self {
        let mut buckets = self.buckets;
        for (b, a) in buckets.iter_mut().zip(before.buckets) {
            *b -= a;
        }
        Self {
            attempts: self.attempts - before.attempts,
            sum: self.sum - before.sum,
            buckets,
        }
    }

    /// The smallest bucket bound holding fraction `q` of the observations, in ms.
    fn quantile_bound_ms(&self, q: f64) -> Option<f64> {
        // Cumulative: the largest count is everything up to the last bound.
        let total = self.buckets.iter().copied().fold(0.0, f64::max);
        (total > 0.0).then_some(())?;
        let i = self.buckets.iter().position(|&c| c >= q * total)?;
        Some(BOUNDS[i] * 1e3)
    }
}

/// The `q` quantile of `samples` (nearest rank).
fn quantile(samples: &[f64], q: f64) -> Option<f64> {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.saturating_sub(1)).copied()
}

pub fn cli(args: &ProbesArgs) -> Result<()> {
    setup::ensure()?;
    let started = Instant::now();
    cargo_build_release(&["-p", "kernlet", "--bin", "kernlet"])?;
    cargo_build_release(&["-p", "kernlet-tests", "--example", TOOL])?;
    let release = target_dir().join("release");
    let mount = v2_mount()?;
    let report = with_fixture(|fixture| {
        let cgroup = CpuCgroup::create(&mount, &format!("kernlet-bench-probes-{}", fixture.id()))?;
        let mut kernlet = Kernlet::start_with(&release.join("kernlet"), fixture, &[])?;
        let pid = kernlet.pid().context("kernlet is not running")?;
        cgroup.adopt(pid)?;
        let measured = measure(&mut kernlet, &cgroup, args);
        let log = target_dir().join("xtask/bench/probes/kernlet.log");
        if let Err(error) = keep(&kernlet.dir.join("kernlet.log"), &log) {
            eprintln!("bench: keeping the kernlet log: {error:#}");
        }
        let stopping = Instant::now();
        // kernlet leaves its pods running; a slow stop is reported, not fatal to the bench.
        if let Err(error) = kernlet.stop() {
            eprintln!("bench: stopping kernlet: {error:#}");
        }
        eprintln!("bench: kernlet stopped in {:?}", stopping.elapsed());
        let (cpu_per_probe_us, kernlet_counts, targets) = measured?;
        let direct = direct(
            &release.join("examples").join(TOOL),
            fixture,
            &targets,
            args,
        )?;
        Ok(table(args, cpu_per_probe_us, &kernlet_counts, &direct))
    })?;
    println!("Probes (issue 11)\n{}", machine());
    print!("{report}");
    println!("total bench time {} s", started.elapsed().as_secs());
    Ok(())
}

type Measured = (f64, BTreeMap<&'static str, Counts>, Vec<String>);

fn measure(kernlet: &mut Kernlet, cgroup: &CpuCgroup, args: &ProbesArgs) -> Result<Measured> {
    let manifests = kernlet.dir.join("manifests");
    for index in 0..args.pods {
        let path = manifests.join(format!("probed-{index}.yaml"));
        std::fs::write(&path, manifest(index))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let waited = poll(
        "all pods run",
        POLL * 10,
        Duration::from_secs(args.timeout),
        || {
            kernlet.check_alive()?;
            let body = kernlet.get("/pods").unwrap_or_default();
            Ok((running_pods(&body) >= args.pods).then_some(()))
        },
    );
    if let Err(error) = waited {
        bail!("{error:#}; kernlet log tail:\n{}", kernlet.log_tail(30));
    }
    thread::sleep(SETTLE);
    let before = parse(&kernlet.get("/metrics/probes")?);
    let (cpu, opened) = (cgroup.usage()?, Instant::now());
    thread::sleep(Duration::from_secs(args.window));
    let used = cgroup.usage()?.saturating_sub(cpu);
    let wall = opened.elapsed();
    let after = parse(&kernlet.get("/metrics/probes")?);
    let window: BTreeMap<&'static str, Counts> = after
        .iter()
        .map(|(k, v)| (*k, v.minus(&before.get(k).cloned().unwrap_or_default())))
        .collect();
    let attempts: f64 = window.values().map(|c| c.attempts).sum();
    if attempts <= 0.0 {
        bail!(
            "no probe ran in the window; kernlet log tail:\n{}",
            kernlet.log_tail(30)
        );
    }
    eprintln!(
        "bench: {attempts} probes in {wall:?} ({:.0}/s), kernlet CPU {used:?}",
        attempts / wall.as_secs_f64()
    );
    let targets = targets(&kernlet.get("/pods")?)?;
    Ok((used.as_secs_f64() * 1e6 / attempts, window, targets))
}

/// `<exec container id>,<pod ip>,8080` for each pod, for `probe_direct`.
fn targets(pods: &str) -> Result<Vec<String>> {
    let list: Value = serde_json::from_str(pods).context("parsing /pods")?;
    let mut out = Vec::new();
    for pod in list["items"].as_array().into_iter().flatten() {
        let ip = pod["status"]["podIP"].as_str().unwrap_or_default();
        let id = pod["status"]["containerStatuses"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["name"] == "exec")
            .and_then(|c| c["containerID"].as_str())
            .and_then(|id| id.split_once("://").map(|(_, raw)| raw.to_owned()));
        if let (Some(id), false) = (id, ip.is_empty()) {
            out.push(format!("{id},{ip},8080"));
        }
    }
    Ok(out)
}

fn direct(
    tool: &Path,
    fixture: &crate::runtime::RuntimeFixture,
    targets: &[String],
    args: &ProbesArgs,
) -> Result<Value> {
    let output = Command::new(tool)
        .arg(fixture.endpoint_uri())
        .arg(args.window.to_string())
        .args(targets)
        .output()
        .with_context(|| format!("running {}", tool.display()))?;
    if !output.status.success() {
        bail!("{TOOL} failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .with_context(|| format!("{TOOL} printed {stdout:?}"))
}

fn table(
    args: &ProbesArgs,
    cpu_per_probe_us: f64,
    kernlet: &BTreeMap<&'static str, Counts>,
    direct: &Value,
) -> String {
    let mut rows = Vec::new();
    for kind in ["exec", "http", "tcp"] {
        let counts = kernlet.get(kind).cloned().unwrap_or_default();
        let mean = if counts.attempts > 0.0 {
            format!("{:.2} ms", counts.sum * 1e3 / counts.attempts)
        } else {
            "—".into()
        };
        let bound = |q| {
            counts
                .quantile_bound_ms(q)
                .map_or("—".into(), |b| format!("≤ {b} ms"))
        };
        let samples: Vec<f64> = direct[kind]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_f64)
            .collect();
        let exact = |q| quantile(&samples, q).map_or("—".into(), |v| format!("{v:.2} ms"));
        let direct_mean = if samples.is_empty() {
            "—".into()
        } else {
            format!(
                "{:.2} ms",
                samples.iter().sum::<f64>() / samples.len() as f64
            )
        };
        rows.push(vec![
            kind.to_owned(),
            format!("{:.0}", counts.attempts),
            mean,
            bound(0.5),
            bound(0.99),
            direct_mean,
            exact(0.5),
            exact(0.99),
        ]);
    }
    let header = [
        "handler",
        "kernlet probes",
        "kernlet mean",
        "kernlet p50",
        "kernlet p99",
        "direct mean",
        "direct p50",
        "direct p99",
    ];
    format!(
        "{} pods × 3 probes every second, {} s windows; kernlet CPU per probe execution: {:.1} µs \
         (its own cgroup; the runtime's exec work is the runtime's); direct calls failed: {}\n\n{}",
        args.pods,
        args.window,
        cpu_per_probe_us,
        direct["failed"],
        markdown_table(&header, &rows)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[expect(clippy::float_cmp, reason = "small integer counts are exact")]
    fn metrics_are_summed_per_handler() {
        let text = "\
prober_probe_total{container=\"web\",namespace=\"default\",pod=\"p\",pod_uid=\"u\",probe_type=\"Readiness\",result=\"successful\"} 4
prober_probe_total{container=\"web\",namespace=\"default\",pod=\"p\",pod_uid=\"u\",probe_type=\"Liveness\",result=\"successful\"} 3
prober_probe_total{container=\"exec\",namespace=\"default\",pod=\"p\",pod_uid=\"u\",probe_type=\"Liveness\",result=\"failed\"} 2
prober_probe_duration_seconds_bucket{container=\"exec\",namespace=\"default\",pod=\"p\",probe_type=\"Liveness\",le=\"0.005\"} 1
prober_probe_duration_seconds_bucket{container=\"exec\",namespace=\"default\",pod=\"p\",probe_type=\"Liveness\",le=\"0.01\"} 2
prober_probe_duration_seconds_bucket{container=\"exec\",namespace=\"default\",pod=\"p\",probe_type=\"Liveness\",le=\"+Inf\"} 2
prober_probe_duration_seconds_sum{container=\"exec\",namespace=\"default\",pod=\"p\",probe_type=\"Liveness\"} 0.012
";
        let counts = parse(text);
        assert_eq!(counts["http"].attempts, 4.0);
        assert_eq!(counts["tcp"].attempts, 3.0);
        let exec = &counts["exec"];
        assert_eq!(exec.attempts, 2.0);
        assert!((exec.sum - 0.012).abs() < 1e-9);
        assert_eq!(exec.buckets[..2], [1.0, 2.0]);
        assert_eq!(exec.quantile_bound_ms(0.5), Some(5.0));
        assert_eq!(exec.quantile_bound_ms(0.99), Some(10.0));
    }

    #[test]
    fn nearest_rank_quantiles() {
        let samples = [5.0, 1.0, 3.0, 2.0, 4.0];
        assert_eq!(quantile(&samples, 0.5), Some(3.0));
        assert_eq!(quantile(&samples, 0.99), Some(5.0));
        assert_eq!(quantile(&[], 0.5), None);
    }
}
