//! Clues to where an agent's start went, printed beside the measured values (not measured
//! values themselves): the mean duration of each runtime call from the agent's own `/metrics`
//! (kernlet's `kernlet_cri_request_duration_seconds`, the kubelet's
//! `kubelet_runtime_operations_duration_seconds`), the restarts the pods needed, and the warnings
//! and errors in the agent's log. The node VM's disk is gone after the run, so what is not
//! printed here is lost.
use std::{collections::BTreeMap, fmt::Write as _};

use serde_json::Value;

/// The histograms whose `_sum`/`_count` give the mean runtime call, with their label name.
const CALL_HISTOGRAMS: [(&str, &str); 2] = [
    ("kernlet_cri_request_duration_seconds", "method"),
    (
        "kubelet_runtime_operations_duration_seconds",
        "operation_type",
    ),
];

/// How many distinct warning or error messages are printed.
const MESSAGES: usize = 8;

/// The clues of one agent, as lines to print: call means from `metrics`, restarts from the
/// `/pods` body `pods`, problems from the agent's `log`.
#[must_use]
pub fn start_clues(metrics: &str, pods: &str, log: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let calls = call_means(metrics);
    if !calls.is_empty() {
        let mut line = "runtime calls (count, mean):".to_owned();
        for (name, (count, mean_ms)) in &calls {
            let _ = write!(line, " {name} {count:.0}× {mean_ms:.0} ms;");
        }
        lines.push(line);
    }
    lines.push(format!("container restarts: {}", restarts(pods)));
    let (count, messages) = problems(log);
    lines.push(format!("warnings and errors in the log: {count}"));
    lines.extend(messages.into_iter().map(|(m, n)| format!("  {n}× {m}")));
    lines
}

/// `name → (count, mean ms)` of the runtime call histograms in `metrics`.
fn call_means(metrics: &str) -> BTreeMap<String, (f64, f64)> {
    let mut sums: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    for line in metrics.lines() {
        for (histogram, label) in CALL_HISTOGRAMS {
            let Some(rest) = line.strip_prefix(histogram) else {
                continue;
            };
            let (is_sum, rest) = if let Some(r) = rest.strip_prefix("_sum{") {
                (true, r)
            } else if let Some(r) = rest.strip_prefix("_count{") {
                (false, r)
            } else {
                continue;
            };
            let Some((labels, value)) = rest.rsplit_once("} ") else {
                continue;
            };
            let (Some(name), Ok(value)) = (label_value(labels, label), value.trim().parse::<f64>())
            else {
                continue;
            };
            let entry = sums.entry(name.to_owned()).or_default();
            if is_sum {
                entry.0 += value;
            } else {
                entry.1 += value;
            }
        }
    }
    sums.into_iter()
        .filter(|(_, (_, count))| *count > 0.0)
        .map(|(name, (sum, count))| (name, (count, sum / count * 1e3)))
        .collect()
}

/// The value of `label` in a `a="x",b="y"` label set.
fn label_value<'a>(labels: &'a str, label: &str) -> Option<&'a str> {
    labels.split(',').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        (key == label).then(|| value.trim_matches('"'))
    })
}

/// The sum of every container's `restartCount` in a `/pods` body.
fn restarts(pods: &str) -> u64 {
    let Ok(list) = serde_json::from_str::<Value>(pods) else {
        return 0;
    };
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|pod| {
            pod["status"]["containerStatuses"]
                .as_array()
                .into_iter()
                .flatten()
        })
        .filter_map(|c| c["restartCount"].as_u64())
        .sum()
}

/// The number of warning and error lines in `log` (kernlet's `WARN`/`ERROR`, klog's `W`/`E`),
/// and the most frequent messages with their counts, the variable parts (timestamps, IDs) cut.
fn problems(log: &str) -> (usize, Vec<(String, usize)>) {
    let mut count = 0;
    let mut by_message: BTreeMap<String, usize> = BTreeMap::new();
    for line in log.lines() {
        let plain = strip_ansi(line);
        let Some(message) = problem_message(&plain) else {
            continue;
        };
        count += 1;
        *by_message.entry(message).or_default() += 1;
    }
    let mut messages: Vec<(String, usize)> = by_message.into_iter().collect();
    messages.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    messages.truncate(MESSAGES);
    (count, messages)
}

/// The message of a warning or error line, without its timestamp and fields, or `None`.
fn problem_message(line: &str) -> Option<String> {
    // kernlet (tracing): `<time>  WARN <target>: <message> key=value ...`
    let tracing = [" WARN ", " ERROR "]
        .iter()
        .find_map(|level| line.split_once(level).map(|(_, rest)| rest));
    // kubelet (klog): `E1205 19:30:00.000000    123 file.go:42] "message" key="value"`
    let klog = || {
        let first = line.chars().next()?;
        (matches!(first, 'W' | 'E') && line[1..].starts_with(|c: char| c.is_ascii_digit()))
            .then(|| line.split_once("] ").map(|(_, rest)| rest))?
    };
    let rest = tracing.or_else(klog)?;
    // Up to the first `key=` field: what stays the same between occurrences.
    let message = rest
        .split_whitespace()
        .take_while(|word| !word.contains('='))
        .collect::<Vec<_>>()
        .join(" ");
    Some(message.chars().take(160).collect())
}

/// `line` without ANSI colour sequences (`ESC [ ... m`).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for next in chars.by_ref() {
                if next.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_means_come_from_either_agents_histogram() {
        let metrics = "kernlet_cri_request_duration_seconds_sum{method=\"RunPodSandbox\"} 3\n\
                       kernlet_cri_request_duration_seconds_count{method=\"RunPodSandbox\"} 2\n\
                       kubelet_runtime_operations_duration_seconds_sum{operation_type=\"start_container\"} 0.5\n\
                       kubelet_runtime_operations_duration_seconds_count{operation_type=\"start_container\"} 5\n\
                       kubelet_runtime_operations_duration_seconds_count{operation_type=\"idle\"} 0\n";
        let means = call_means(metrics);
        assert_eq!(means["RunPodSandbox"], (2.0, 1500.0));
        assert_eq!(means["start_container"], (5.0, 100.0));
        assert!(!means.contains_key("idle"));
    }

    #[test]
    fn problems_are_counted_and_grouped_without_their_fields() {
        let log = "\u{1b}[2m2026-12-05T19:37:53Z\u{1b}[0m \u{1b}[33m WARN\u{1b}[0m kernlet::reconcile: \
                   cri call failed uid=1 error=\"deadline\"\n\
                   2026-12-05T19:37:54Z  WARN kernlet::reconcile: cri call failed uid=2\n\
                   2026-12-05T19:37:54Z  INFO kernlet::reconcile: container started uid=2\n\
                   E1205 19:30:00.000000     123 kuberuntime.go:42] \"CreateContainer failed\" err=\"x\"\n\
                   I1205 19:30:00.000000     123 kubelet.go:1] \"fine\"\n";
        let (count, messages) = problems(log);
        assert_eq!(count, 3);
        assert_eq!(
            messages,
            [
                ("kernlet::reconcile: cri call failed".to_owned(), 2),
                ("\"CreateContainer failed\"".to_owned(), 1)
            ]
        );
    }

    #[test]
    fn restarts_are_summed_over_every_container() {
        let pods = r#"{"items": [{"status": {"containerStatuses": [{"restartCount": 2},
            {"restartCount": 1}]}}, {"status": {}}]}"#;
        assert_eq!(restarts(pods), 3);
        assert_eq!(restarts("{broken"), 0);
        let clues = start_clues("", pods, "");
        assert_eq!(
            clues,
            ["container restarts: 3", "warnings and errors in the log: 0"]
        );
    }
}
