//! The results of the runs, read back off the VM console, and the ratio tables: per pod count
//! and containers per pod, each metric's median (min–max over the rounds) per agent, the
//! kernlet/kubelet ratio of the medians and, where issue 10 sets one, whether the goal is met.
use std::collections::BTreeSet;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::{
    super::{Summary, markdown_table, stats::percentile},
    agent::AgentKind,
    inside::RESULT_PREFIX,
};

/// One endpoint's latency over the run's sequential GETs, and its body size.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Endpoint {
    pub path: String,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub bytes: usize,
}

/// One agent's run on a fresh fixture.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    pub agent: AgentKind,
    pub pods: usize,
    pub containers: usize,
    pub round: usize,
    /// Agent spawned → `/pods` shows every pod with every container running.
    pub startup_s: f64,
    /// CPU seconds per second of the agent's cgroup over the idle window.
    pub cpu_cores: f64,
    /// The agent's `VmRSS` at the end of the window.
    pub rss_mib: f64,
    pub endpoints: Vec<Endpoint>,
    /// Manifest rewritten → the new pod's containers running.
    pub spec_change_s: f64,
    /// SIGKILL of a container → `/pods` shows it exited, one sample per killed container.
    pub exit_ms: Vec<f64>,
    /// The agent's own mean of the same exits, from the runtime's `finishedAt` to the status
    /// (kernlet's `kernlet_pleg_exit_to_status_seconds`; the kubelet has none).
    #[serde(default)]
    pub own_exit_ms: Option<f64>,
    /// The upper bound of the histogram bucket holding the p99 of the same.
    #[serde(default)]
    pub own_exit_p99_ms: Option<f64>,
    /// The mean time of one `/pods` poll (GET and parse) while waiting for the exits: the
    /// resolution of `exit_ms`.
    #[serde(default)]
    pub exit_poll_ms: Option<f64>,
}

impl Default for RunResult {
    fn default() -> Self {
        Self {
            agent: AgentKind::Kubelet,
            pods: 0,
            containers: 0,
            round: 0,
            startup_s: 0.0,
            cpu_cores: 0.0,
            rss_mib: 0.0,
            endpoints: Vec::new(),
            spec_change_s: 0.0,
            exit_ms: Vec::new(),
            own_exit_ms: None,
            own_exit_p99_ms: None,
            exit_poll_ms: None,
        }
    }
}

impl RunResult {
    fn endpoint(&self, path: &str) -> Option<&Endpoint> {
        self.endpoints.iter().find(|e| e.path == path)
    }

    /// The nearest-rank `p`th percentile of this run's exit latencies.
    fn exit_percentile(&self, p: f64) -> Option<f64> {
        let mut sorted = self.exit_ms.clone();
        sorted.sort_by(f64::total_cmp);
        (!sorted.is_empty()).then(|| percentile(&sorted, p))
    }
}

/// The results printed on a console (lines starting with [`RESULT_PREFIX`]).
pub fn parse_console(console: &str) -> Result<Vec<RunResult>> {
    console
        .lines()
        .filter_map(|line| line.split_once(RESULT_PREFIX).map(|(_, json)| json))
        .map(|json| serde_json::from_str(json.trim()).with_context(|| format!("result {json:?}")))
        .collect()
}

/// One row of a table: what it measures, its unit and decimals, issue 10's goal for the
/// kernlet/kubelet ratio (at 110 pods) and how to read it off a run.
struct Metric {
    name: &'static str,
    unit: &'static str,
    decimals: usize,
    goal: Option<f64>,
    value: fn(&RunResult) -> Option<f64>,
}

fn endpoint_value(run: &RunResult, path: &str, pick: fn(&Endpoint) -> f64) -> Option<f64> {
    run.endpoint(path).map(pick)
}

const METRICS: [Metric; 14] = [
    Metric {
        name: "start to all Running",
        unit: "s",
        decimals: 1,
        goal: Some(0.5),
        value: |r| Some(r.startup_s),
    },
    Metric {
        name: "steady CPU",
        unit: "cores",
        decimals: 3,
        goal: Some(0.1),
        value: |r| Some(r.cpu_cores),
    },
    Metric {
        name: "RSS",
        unit: "MiB",
        decimals: 1,
        goal: Some(0.2),
        value: |r| Some(r.rss_mib),
    },
    Metric {
        name: "/stats/summary p50",
        unit: "ms",
        decimals: 1,
        goal: Some(0.05),
        value: |r| endpoint_value(r, "/stats/summary", |e| e.p50_ms),
    },
    Metric {
        name: "/stats/summary p99",
        unit: "ms",
        decimals: 1,
        goal: None,
        value: |r| endpoint_value(r, "/stats/summary", |e| e.p99_ms),
    },
    Metric {
        name: "/stats/summary size",
        unit: "KiB",
        decimals: 1,
        goal: None,
        value: |r| endpoint_value(r, "/stats/summary", |e| e.bytes as f64 / 1024.0),
    },
    Metric {
        name: "/metrics/cadvisor p50",
        unit: "ms",
        decimals: 1,
        goal: None,
        value: |r| endpoint_value(r, "/metrics/cadvisor", |e| e.p50_ms),
    },
    Metric {
        name: "/metrics/cadvisor p99",
        unit: "ms",
        decimals: 1,
        goal: None,
        value: |r| endpoint_value(r, "/metrics/cadvisor", |e| e.p99_ms),
    },
    Metric {
        name: "/metrics/cadvisor size",
        unit: "KiB",
        decimals: 1,
        goal: None,
        value: |r| endpoint_value(r, "/metrics/cadvisor", |e| e.bytes as f64 / 1024.0),
    },
    Metric {
        name: "/metrics/resource p50",
        unit: "ms",
        decimals: 1,
        goal: None,
        value: |r| endpoint_value(r, "/metrics/resource", |e| e.p50_ms),
    },
    Metric {
        name: "/metrics/resource p99",
        unit: "ms",
        decimals: 1,
        goal: None,
        value: |r| endpoint_value(r, "/metrics/resource", |e| e.p99_ms),
    },
    Metric {
        name: "/metrics/resource size",
        unit: "KiB",
        decimals: 1,
        goal: None,
        value: |r| endpoint_value(r, "/metrics/resource", |e| e.bytes as f64 / 1024.0),
    },
    Metric {
        name: "spec change to running",
        unit: "s",
        decimals: 2,
        goal: Some(0.1),
        value: |r| Some(r.spec_change_s),
    },
    Metric {
        name: "exit to status (PLEG) p50",
        unit: "ms",
        decimals: 0,
        goal: Some(0.1),
        value: |r| r.exit_percentile(50.0),
    },
];

/// The extra row for the exits' p99 (no goal), kept out of [`METRICS`] to keep that list the
/// goals' order of the issue.
const EXIT_P99: Metric = Metric {
    name: "exit to status (PLEG) p99",
    unit: "ms",
    decimals: 0,
    goal: None,
    value: |r| r.exit_percentile(99.0),
};

/// kernlet's own measure of the exits (no kubelet counterpart, so no ratio): how much of the
/// polled figure is the agent and how much the runtime and the polling of `/pods`.
const OWN_EXIT: Metric = Metric {
    name: "exit to status, agent's own mean",
    unit: "ms",
    decimals: 0,
    goal: None,
    value: |r| r.own_exit_ms,
};

const OWN_EXIT_P99: Metric = Metric {
    name: "exit to status, agent's own p99 (≤ bucket)",
    unit: "ms",
    decimals: 0,
    goal: None,
    value: |r| r.own_exit_p99_ms,
};

/// What one poll of the exits costs the measuring driver (it bounds the polled figures).
const EXIT_POLL: Metric = Metric {
    name: "one `/pods` poll during the exits",
    unit: "ms",
    decimals: 1,
    goal: None,
    value: |r| r.exit_poll_ms,
};

/// Summary of `metric` over the runs of `agent` in `runs`.
fn summarise(runs: &[&RunResult], agent: AgentKind, metric: &Metric) -> Option<Summary> {
    let values: Vec<f64> = runs
        .iter()
        .filter(|r| r.agent == agent)
        .filter_map(|r| (metric.value)(r))
        .collect();
    Summary::of(&values)
}

/// A ratio cell: `kernlet / kubelet` of the medians.
fn ratio(kernlet: Option<Summary>, kubelet: Option<Summary>) -> Option<f64> {
    let (kernlet, kubelet) = (kernlet?, kubelet?);
    (kubelet.median > 0.0).then(|| kernlet.median / kubelet.median)
}

/// The ratio tables, one per pod count and containers per pod (in ascending order).
#[must_use]
pub fn tables(results: &[RunResult]) -> String {
    let groups: BTreeSet<(usize, usize)> = results.iter().map(|r| (r.pods, r.containers)).collect();
    let mut out = String::new();
    for (pods, containers) in groups {
        let runs: Vec<&RunResult> = results
            .iter()
            .filter(|r| r.pods == pods && r.containers == containers)
            .collect();
        out.push_str(&table(pods, containers, &runs));
        out.push('\n');
    }
    out
}

fn table(pods: usize, containers: usize, runs: &[&RunResult]) -> String {
    let slow: BTreeSet<AgentKind> = runs
        .iter()
        .map(|r| r.agent)
        .filter(|a| matches!(a, AgentKind::Kernlet { housekeeping_s } if *housekeeping_s != 1))
        .collect();
    let kernlet = AgentKind::Kernlet { housekeeping_s: 1 };
    let count = |agent| runs.iter().filter(|r| r.agent == agent).count();
    let title = format!(
        "**{pods} pods × {containers} container{}** (runs: kubelet {}, kernlet {})",
        if containers == 1 { "" } else { "s" },
        count(AgentKind::Kubelet),
        count(kernlet)
    );
    let mut header = vec![
        "metric".to_owned(),
        "kubelet".to_owned(),
        "kernlet".to_owned(),
        "kernlet/kubelet".to_owned(),
        "goal (at 110 pods)".to_owned(),
    ];
    for agent in &slow {
        header.push(agent.to_string());
        header.push(format!("{agent}/kubelet"));
    }
    let cell = |summary: Option<Summary>, metric: &Metric| {
        summary.map_or_else(
            || "—".to_owned(),
            |s| s.display(metric.decimals, metric.unit),
        )
    };
    let ratio_cell = |r: Option<f64>| r.map_or_else(|| "—".to_owned(), |r| format!("{r:.3}"));
    let mut rows = Vec::new();
    for metric in METRICS
        .iter()
        .chain([&EXIT_P99, &OWN_EXIT, &OWN_EXIT_P99, &EXIT_POLL])
    {
        let kubelet_s = summarise(runs, AgentKind::Kubelet, metric);
        let kernlet_s = summarise(runs, kernlet, metric);
        let r = ratio(kernlet_s, kubelet_s);
        let goal = match (metric.goal, r) {
            (Some(goal), Some(r)) => {
                format!("≤ {goal} {}", if r <= goal { "met" } else { "not met" })
            }
            (Some(goal), None) => format!("≤ {goal} ?"),
            (None, _) => String::new(),
        };
        let mut row = vec![
            metric.name.to_owned(),
            cell(kubelet_s, metric),
            cell(kernlet_s, metric),
            ratio_cell(r),
            goal,
        ];
        for &agent in &slow {
            let slow_s = summarise(runs, agent, metric);
            row.push(cell(slow_s, metric));
            row.push(ratio_cell(ratio(slow_s, kubelet_s)));
        }
        rows.push(row);
    }
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    format!("{title}\n\n{}", markdown_table(&header, &rows))
}

/// Problems with a set of results: a group without both agents, or a metric that is not a
/// positive number for either (what the smoke test asserts).
#[must_use]
pub fn missing_values(results: &[RunResult]) -> Vec<String> {
    let mut problems = Vec::new();
    let groups: BTreeSet<(usize, usize)> = results.iter().map(|r| (r.pods, r.containers)).collect();
    for (pods, containers) in groups {
        let runs: Vec<&RunResult> = results
            .iter()
            .filter(|r| r.pods == pods && r.containers == containers)
            .collect();
        for agent in [AgentKind::Kubelet, AgentKind::Kernlet { housekeeping_s: 1 }] {
            for metric in METRICS.iter().chain([&EXIT_P99]) {
                let ok = summarise(&runs, agent, metric)
                    .is_some_and(|s| s.min > 0.0 && s.max.is_finite());
                if !ok {
                    problems.push(format!(
                        "{pods} pods × {containers}: {agent} has no positive {}",
                        metric.name
                    ));
                }
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(agent: AgentKind, round: usize, scale: f64) -> RunResult {
        RunResult {
            agent,
            pods: 10,
            containers: 1,
            round,
            startup_s: 10.0 * scale,
            cpu_cores: 0.2 * scale,
            rss_mib: 50.0 * scale,
            endpoints: ["/stats/summary", "/metrics/cadvisor", "/metrics/resource"]
                .map(|path| Endpoint {
                    path: path.to_owned(),
                    p50_ms: 100.0 * scale,
                    p99_ms: 200.0 * scale,
                    bytes: 2048,
                })
                .to_vec(),
            spec_change_s: 4.0 * scale,
            exit_ms: vec![1000.0 * scale, 3000.0 * scale],
            own_exit_ms: matches!(agent, AgentKind::Kernlet { .. }).then_some(500.0 * scale),
            own_exit_p99_ms: matches!(agent, AgentKind::Kernlet { .. }).then_some(1000.0),
            exit_poll_ms: Some(2.5 * scale),
        }
    }

    #[test]
    fn results_round_trip_through_the_console() {
        let kernlet = AgentKind::Kernlet { housekeeping_s: 10 };
        let result = run(kernlet, 1, 1.0);
        let console = format!(
            "[  1.0] boot\r\n{RESULT_PREFIX}{}\nother line\n",
            serde_json::to_string(&result).unwrap()
        );
        assert_eq!(parse_console(&console).unwrap(), vec![result]);
        assert!(parse_console(&format!("{RESULT_PREFIX}{{broken")).is_err());
    }

    #[test]
    fn tables_show_medians_ratios_and_goals() {
        let kernlet = AgentKind::Kernlet { housekeeping_s: 1 };
        let results = vec![
            run(AgentKind::Kubelet, 1, 1.0),
            run(kernlet, 1, 0.05),
            run(AgentKind::Kubelet, 2, 3.0),
            run(kernlet, 2, 0.15),
            run(AgentKind::Kernlet { housekeeping_s: 10 }, 1, 0.5),
        ];
        let text = tables(&results);
        assert!(text.starts_with("**10 pods × 1 container** (runs: kubelet 2, kernlet 2)"));
        // Medians of two rounds: kubelet 20 s (10–30), kernlet 1 s (0.5–1.5): ratio 0.05.
        let startup = text
            .lines()
            .find(|l| l.starts_with("| start to all Running"))
            .unwrap();
        assert!(startup.contains("20.0 s (10.0–30.0)"), "{startup}");
        assert!(startup.contains("1.0 s (0.5–1.5)"), "{startup}");
        assert!(startup.contains("| 0.050 "), "{startup}");
        assert!(startup.contains("≤ 0.5 met"), "{startup}");
        let summary = text
            .lines()
            .find(|l| l.starts_with("| /stats/summary p50"))
            .unwrap();
        assert!(summary.contains("≤ 0.05 met"), "{summary}");
        // The 10 s kernlet ran once, at half the first kubelet: 0.5 × 10 / 20.
        let cells: Vec<&str> = startup.split('|').map(str::trim).collect();
        assert_eq!(cells[6..8], ["5.0 s (5.0–5.0)", "0.250"], "{startup}");
        let exits = text
            .lines()
            .find(|l| l.starts_with("| exit to status (PLEG) p99"))
            .unwrap();
        assert!(exits.contains("6000 ms (3000–9000)"), "{exits}");
        let own = text
            .lines()
            .find(|l| l.starts_with("| exit to status, agent's own mean"))
            .unwrap();
        let cells: Vec<&str> = own.split('|').map(str::trim).collect();
        assert_eq!(cells[2..5], ["—", "50 ms (25–75)", "—"], "{own}");
        let own_p99 = text
            .lines()
            .find(|l| l.starts_with("| exit to status, agent's own p99"))
            .unwrap();
        assert!(own_p99.contains("1000 ms (1000–1000)"), "{own_p99}");
        let poll = text
            .lines()
            .find(|l| l.starts_with("| one `/pods` poll"))
            .unwrap();
        // Kubelet 2.5 and 7.5 ms; kernlet 0.125 and 0.375 ms.
        assert!(poll.contains("5.0 ms (2.5–7.5)"), "{poll}");
        assert!(missing_values(&results).is_empty());
    }

    #[test]
    fn goals_not_met_and_gaps_are_reported() {
        let kernlet = AgentKind::Kernlet { housekeeping_s: 1 };
        let mut slow = run(kernlet, 1, 0.9);
        slow.endpoints.clear();
        slow.exit_ms.clear();
        let results = vec![run(AgentKind::Kubelet, 1, 1.0), slow];
        let text = tables(&results);
        let cpu = text
            .lines()
            .find(|l| l.starts_with("| steady CPU"))
            .unwrap();
        assert!(cpu.contains("≤ 0.1 not met"), "{cpu}");
        let summary = text
            .lines()
            .find(|l| l.starts_with("| /stats/summary p50"))
            .unwrap();
        assert!(
            summary.split('|').any(|cell| cell.trim() == "—"),
            "{summary}"
        );
        let problems = missing_values(&results);
        assert_eq!(problems.len(), 11, "{problems:?}");
        assert!(problems[0].contains("kernlet has no positive /stats/summary p50"));
        assert_eq!(missing_values(&results[..1]).len(), 15);
    }
}
