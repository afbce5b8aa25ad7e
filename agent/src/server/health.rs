//! `/healthz` with named checks, after upstream's `k8s.io/apiserver/pkg/server/healthz` as the
//! kubelet installs it (`ping`, `syncloop`).
//!
//! - `/healthz`: `ok` when every check passes; else 500 with one line per check
//!   (`[+]ping ok`, `[-]syncloop failed: reason withheld`) and `healthz check failed`, the
//!   reason going to the log only. `?verbose` lists the checks when they pass too, ending
//!   `healthz check passed`; `?exclude=name` (repeatable) leaves checks out.
//! - `/healthz/<name>`: that check alone, `ok` or 500 `internal server error: <reason>`.
//!
//! kernlet's `syncloop` is its relist loop (the PLEG safety net every pod worker depends on):
//! it fails when no relist completed within upstream's sync-loop threshold, twice
//! `syncFrequency` but at least five minutes.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use hyper::{Response, StatusCode};

use super::query::query_pairs;
use super::routes::{Body, TEXT, not_found, respond};
use crate::supervise::Heartbeat;

/// One check: `Err` says why it fails.
pub type Check = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// The named checks, in order.
#[derive(Clone)]
pub struct HealthChecks(Vec<(&'static str, Check)>);

impl Default for HealthChecks {
    /// `ping` only.
    fn default() -> Self {
        Self(vec![("ping", Arc::new(|| Ok(())))])
    }
}

impl HealthChecks {
    /// These checks and `check` as `name`.
    #[must_use]
    pub fn with(mut self, name: &'static str, check: Check) -> Self {
        self.0.push((name, check));
        self
    }

    /// The kubelet's checks: `ping`, and `syncloop` on `relisted` (see [`Self::syncloop`]).
    #[must_use]
    pub fn kubelet(relisted: Arc<Heartbeat>, sync: Duration) -> Self {
        Self::default().with("syncloop", Self::syncloop(relisted, sync))
    }

    /// Upstream's `syncloop`: fails when `heartbeat` has not beaten for max(2 × `sync`, 5 m).
    #[must_use]
    pub fn syncloop(heartbeat: Arc<Heartbeat>, sync: Duration) -> Check {
        let threshold = (sync * 2).max(Duration::from_mins(5));
        Arc::new(move || {
            let since = heartbeat.since();
            if since > threshold {
                Err(format!(
                    "sync Loop took longer than expected: no relist for {since:?} (threshold {threshold:?})"
                ))
            } else {
                Ok(())
            }
        })
    }
}

/// The answer for `path` (`/healthz` or below) with `query`.
pub(super) fn healthz(path: &str, query: Option<&str>, checks: &HealthChecks) -> Response<Body> {
    if let Some(name) = path.strip_prefix("/healthz/") {
        let Some((_, check)) = checks.0.iter().find(|(n, _)| *n == name) else {
            return not_found();
        };
        return match check() {
            Ok(()) => respond(StatusCode::OK, TEXT, "ok"),
            Err(reason) => {
                tracing::warn!(check = name, %reason, "healthz check failed");
                respond(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    TEXT,
                    format!("internal server error: {reason}\n"),
                )
            }
        };
    }
    let pairs: Vec<(String, String)> = query_pairs(query).collect();
    let verbose = pairs.iter().any(|(k, _)| k == "verbose");
    let excluded: Vec<&str> = pairs
        .iter()
        .filter(|(k, _)| k == "exclude")
        .map(|(_, v)| v.as_str())
        .collect();
    let mut report = String::new();
    let mut failed = false;
    for (name, check) in &checks.0 {
        if excluded.contains(name) {
            let _ = writeln!(report, "[+]{name} excluded: ok");
            continue;
        }
        match check() {
            Ok(()) => {
                let _ = writeln!(report, "[+]{name} ok");
            }
            Err(reason) => {
                failed = true;
                tracing::warn!(check = name, %reason, "healthz check failed");
                let _ = writeln!(report, "[-]{name} failed: reason withheld");
            }
        }
    }
    let unknown: Vec<String> = excluded
        .iter()
        .filter(|name| !checks.0.iter().any(|(n, _)| n == *name))
        .map(|name| format!("{name:?}"))
        .collect();
    if !unknown.is_empty() {
        let _ = writeln!(
            report,
            "warn: some health checks cannot be excluded: no matches for {}",
            unknown.join(",")
        );
    }
    if failed {
        report.push_str("healthz check failed\n");
        return respond(StatusCode::INTERNAL_SERVER_ERROR, TEXT, report);
    }
    if verbose {
        report.push_str("healthz check passed\n");
        return respond(StatusCode::OK, TEXT, report);
    }
    respond(StatusCode::OK, TEXT, "ok")
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt as _;

    use super::*;

    async fn answer(path: &str, query: Option<&str>, checks: &HealthChecks) -> (u16, String) {
        let response = healthz(path, query, checks);
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test(start_paused = true)]
    async fn checks_pass_fail_and_are_listed_as_upstream() {
        let beat = Arc::new(Heartbeat::default());
        beat.beat();
        let checks = HealthChecks::default().with(
            "syncloop",
            HealthChecks::syncloop(beat.clone(), Duration::from_mins(1)),
        );
        assert_eq!(
            answer("/healthz", None, &checks).await,
            (200, "ok".to_owned())
        );
        assert_eq!(
            answer("/healthz", Some("verbose"), &checks).await.1,
            "[+]ping ok\n[+]syncloop ok\nhealthz check passed\n"
        );
        assert_eq!(
            answer("/healthz/syncloop", None, &checks).await,
            (200, "ok".to_owned())
        );
        assert_eq!(answer("/healthz/nope", None, &checks).await.0, 404);

        tokio::time::advance(Duration::from_mins(5) + Duration::from_secs(1)).await;
        let (status, body) = answer("/healthz", None, &checks).await;
        assert_eq!(status, 500);
        assert_eq!(
            body,
            "[+]ping ok\n[-]syncloop failed: reason withheld\nhealthz check failed\n"
        );
        let (status, body) = answer("/healthz/syncloop", None, &checks).await;
        assert_eq!(status, 500);
        assert!(body.starts_with("internal server error: sync Loop took longer than expected"));
        let (status, body) = answer("/healthz", Some("exclude=syncloop"), &checks).await;
        assert_eq!((status, body.as_str()), (200, "ok"));

        beat.beat();
        assert_eq!(answer("/healthz", None, &checks).await.0, 200);
    }
}
