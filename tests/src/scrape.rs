//! Reading kernlet's metrics endpoints in tests: Prometheus's own checker (`promtool`) and a
//! small sample lookup over the text exposition format.
use std::{
    io::Write,
    process::{Command, Stdio},
};

use anyhow::{Context, Result};

/// `promtool` findings that upstream's own cAdvisor output has too.
const UPSTREAM_LINT: [&str; 2] = [
    "container_memory_failcnt counter metrics should have \"_total\" suffix",
    "container_fs_inodes_total non-counter metrics should not have \"_total\" suffix",
];

/// What `promtool check metrics` (Debian package `prometheus`) reports for `text`, apart from
/// the findings upstream shares.
pub fn promtool_problems(text: &str) -> Result<Vec<String>> {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running promtool (cargo xtask setup installs the prometheus package)")?;
    child
        .stdin
        .take()
        .context("promtool stdin")?
        .write_all(text.as_bytes())?;
    let output = child.wait_with_output()?;
    let mut problems: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .chain(String::from_utf8_lossy(&output.stderr).lines())
        .map(str::trim)
        .filter(|l| !l.is_empty() && !UPSTREAM_LINT.contains(l))
        .map(str::to_owned)
        .collect();
    if !output.status.success() && problems.is_empty() {
        problems.push(format!("promtool failed: {}", output.status));
    }
    Ok(problems)
}

/// The value of the first sample of `metric` whose labels include every `key="value"` in
/// `labels`.
#[must_use]
pub fn sample(text: &str, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(metric)?;
        let (label_text, value) = if let Some(rest) = rest.strip_prefix('{') {
            let (labels, value) = rest.split_once('}')?;
            (labels, value)
        } else if rest.starts_with(' ') {
            ("", rest)
        } else {
            return None;
        };
        let matches = labels
            .iter()
            .all(|(k, v)| label_text.contains(&format!("{k}=\"{v}\"")));
        if !matches {
            return None;
        }
        value.split_whitespace().next()?.parse().ok()
    })
}
