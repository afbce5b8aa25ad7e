//! The stats bench's Markdown tables.
#![allow(
    clippy::wildcard_imports,
    reason = "the tables read the bench's own types"
)]
use super::*;

/// The side-by-side table: CPU µs per container per second by collector and count.
pub(super) fn cost_table(readers: &[ReaderRow], runs: &[KernletRun], args: &StatsArgs) -> String {
    let mut counts: Vec<usize> = args.cgroups.iter().chain(&args.pods).copied().collect();
    counts.sort_unstable();
    counts.dedup();
    let titles: Vec<String> = counts.iter().map(|n| format!("{n} containers")).collect();
    let mut header = vec!["CPU µs per container per second"];
    header.extend(titles.iter().map(String::as_str));
    let reader = |name: &str, n: usize| {
        readers
            .iter()
            .find(|r| r.variant == name && r.cgroups == n)
            .map(|r| r.cpu_us)
    };
    let kernlet = |interval: u64, n: usize| {
        runs.iter()
            .find(|r| r.interval == interval && r.pods == n)
            .map(KernletRun::us_per_container_s)
    };
    let cells = |value: &dyn Fn(usize) -> Option<String>| -> Vec<String> {
        counts
            .iter()
            .map(|&n| value(n).unwrap_or_else(|| "—".to_owned()))
            .collect()
    };
    let mut rows = Vec::new();
    let mut row = |title: String, values: Vec<String>| {
        rows.push(std::iter::once(title).chain(values).collect::<Vec<_>>());
    };
    for (variant, title) in [
        (
            "open-read-close",
            "synthetic, plain read (open+read+close, `read_cgroup`)",
        ),
        (
            "pread-reuse",
            "synthetic, kept descriptors (`CgroupFiles` pread, kernlet's)",
        ),
        (
            "io_uring",
            "synthetic, kept descriptors batched through `io_uring`",
        ),
    ] {
        row(title.to_owned(), cells(&|n| reader(variant, n).map(range)));
    }
    for (variant, title) in [
        ("open-read-close", "ratio plain / kept"),
        ("io_uring", "ratio io_uring / kept"),
    ] {
        row(
            title.to_owned(),
            cells(&|n| {
                let ratio = reader(variant, n)?.median / reader("pread-reuse", n)?.median;
                Some(format!("{ratio:.2}×"))
            }),
        );
    }
    for &interval in &args.intervals {
        row(
            format!("kernlet, whole process, `--housekeeping-interval {interval}s`"),
            cells(&|n| kernlet(interval, n).map(|v| format!("{v:.2}"))),
        );
    }
    if let [first, .., last] = args.intervals[..] {
        row(
            format!("ratio kernlet {first}s / {last}s"),
            cells(&|n| Some(format!("{:.2}×", kernlet(first, n)? / kernlet(last, n)?))),
        );
    }
    markdown_table(&header, &rows)
}

/// `median (min–max)` with two decimals and no unit.
pub(super) fn range(summary: Summary) -> String {
    format!(
        "{:.2} ({:.2}–{:.2})",
        summary.median, summary.min, summary.max
    )
}

/// Per kernlet run: CPU share, round time, RSS.
pub(super) fn kernlet_table(runs: &[KernletRun]) -> String {
    let header = [
        "pods",
        "housekeeping",
        "kernlet CPU (% of a core)",
        "µs per container per s",
        "mean collection round (wall)",
        "kernlet RSS",
        "minor faults per s",
    ];
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|run| {
            vec![
                run.pods.to_string(),
                format!("{} s", run.interval),
                format!("{:.2} %", run.cores * 100.0),
                format!("{:.2}", run.us_per_container_s()),
                run.round_ms
                    .map_or_else(|| "—".to_owned(), |ms| format!("{ms:.2} ms")),
                format!("{:.1} MiB", run.rss_mib),
                format!("{:.0}", run.faults_per_s),
            ]
        })
        .collect();
    markdown_table(&header, &rows)
}

/// ns per event per program, one column pair per measured pod count.
pub(super) fn ebpf_table(runs: &[KernletRun]) -> String {
    let probed: Vec<&KernletRun> = runs.iter().filter(|r| !r.ebpf.is_empty()).collect();
    let Some(first) = probed.first() else {
        return "eBPF: kernlet exported no program run-time stats (no program loaded?)\n"
            .to_owned();
    };
    let titles: Vec<String> = probed
        .iter()
        .flat_map(|r| {
            [
                format!("runs ({} pods)", r.pods),
                format!("ns per event ({} pods)", r.pods),
            ]
        })
        .collect();
    let mut header = vec!["eBPF program"];
    header.extend(titles.iter().map(String::as_str));
    let rows: Vec<Vec<String>> = first
        .ebpf
        .iter()
        .map(|program| {
            let mut row = vec![format!("`{}`", program.name)];
            for run in &probed {
                let cost = run.ebpf.iter().find(|c| c.name == program.name);
                row.push(cost.map_or_else(|| "—".to_owned(), |c| format!("{:.0}", c.runs)));
                row.push(cost.filter(|c| c.runs > 0.0).map_or_else(
                    || "—".to_owned(),
                    |c| format!("{:.0}", c.seconds * 1e9 / c.runs),
                ));
            }
            row
        })
        .collect();
    markdown_table(&header, &rows)
}

/// Endpoint latency per probed run.
pub(super) fn latency_table(runs: &[KernletRun], requests: usize) -> String {
    let header = ["endpoint", "pods", "GETs", "p50", "p99", "max", "body"];
    let rows: Vec<Vec<String>> = runs
        .iter()
        .flat_map(|run| {
            run.latency.iter().map(move |l| {
                vec![
                    format!("`{}`", l.path),
                    run.pods.to_string(),
                    requests.to_string(),
                    format!("{:.2} ms", l.p50_ms),
                    format!("{:.2} ms", l.p99_ms),
                    format!("{:.2} ms", l.max_ms),
                    format!("{:.1} KiB", l.bytes as f64 / 1024.0),
                ]
            })
        })
        .collect();
    markdown_table(&header, &rows)
}

/// RSS around the concurrent burst, per run that had one.
pub(super) fn burst_table(runs: &[KernletRun]) -> String {
    let later: Vec<String> = BURST_IDLE
        .iter()
        .map(|idle| format!("RSS {} s later", idle.as_secs()))
        .collect();
    let mut header = vec![
        "pods",
        "burst GETs",
        "burst time",
        "RSS before",
        "RSS right after",
    ];
    header.extend(later.iter().map(String::as_str));
    let rows: Vec<Vec<String>> = runs
        .iter()
        .filter_map(|run| {
            let burst = run.burst.as_ref()?;
            let mut row = vec![
                run.pods.to_string(),
                format!("{} from {BURST_CLIENTS} clients", burst.gets),
                format!("{:.1} s", burst.seconds),
                format!("{:.1} MiB", burst.before_mib),
                format!("{:.1} MiB", burst.after_mib),
            ];
            row.extend(burst.idle_mib.iter().map(|mib| format!("{mib:.1} MiB")));
            Some(row)
        })
        .collect();
    markdown_table(&header, &rows)
}
