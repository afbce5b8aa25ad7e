//! kernlet's own `GET /metrics`: the agent's health as `kernlet_*` families. The daemon
//! updates a shared [`Metrics`]; each scrape renders its current state.
//!
//! | family | type | labels | source |
//! |---|---|---|---|
//! | `kernlet_ebpf_program_loaded` | gauge | `program` | 1 loaded and attached, 0 skipped |
//! | `kernlet_ebpf_program_run_time_seconds_total` | counter | `program` | `bpf_prog_info.run_time_ns` |
//! | `kernlet_ebpf_program_runs_total` | counter | `program` | `bpf_prog_info.run_cnt` |
//! | `kernlet_stats_collection_duration_seconds` | histogram | | one collection round |
//! | `kernlet_cri_request_duration_seconds` | histogram | `method` | one CRI call |
//! | `kernlet_cri_admission_width` | gauge | `lane` | `cri::Gate`: `RunPodSandbox` (`sandbox`) or `StartContainer` (`start`) calls let in at once |
//! | `kernlet_cri_admission_waiting` | gauge | `lane` | `cri::Gate`: calls waiting to be let in |
//! | `kernlet_cri_admission_in_flight` | gauge | `lane` | `cri::Gate`: calls let in and not yet ended |
//! | `kernlet_static_pod_manifest_errors_total` | counter | | `StaticPodSource::manifest_errors_counter` |
//! | `kernlet_task_restarts_total` | counter | `task` | `supervise::TaskRestarts` (panics, early exits) |
//! | `kernlet_pleg_exit_watches` | gauge | | `reconcile::exits::ExitCounts` (pidfds open) |
//! | `kernlet_pleg_exit_events_total` | counter | `source` | `reconcile::exits::ExitCounts` (exits seen in `containerd` task events or through a `pidfd`) |
//! | `kernlet_pleg_exit_to_status_seconds` | histogram | | `status::store::StatusStore` (runtime's `finishedAt` to the status showing the exit) |
//! | `kernlet_api_requests_total` | counter | `call`, `result` | cluster mode: API server calls (`register`, `node-status`, `lease`, ...), `ok` or `error` |
//! | `kubelet_certificate_manager_client_ttl_seconds` | gauge | | `rotateCertificates`: seconds until the client certificate expires (`+Inf` without one) |
//! | `kubelet_certificate_manager_client_expiration_renew_errors` | counter | | `rotateCertificates`: failed renewals |
//! | `kubelet_certificate_manager_server_ttl_seconds` | gauge | | `serverTLSBootstrap`: seconds until the serving certificate expires (`+Inf` without one) |
//! | `kubelet_server_expiration_renew_errors` | counter | | `serverTLSBootstrap`: failed renewals |
//!
//! The four certificate families keep upstream's names (they are what clusters alert on:
//! kube-prometheus' `KubeletClientCertificateExpiration` and the like) and appear only when
//! their manager runs, as upstream registers them.
//!
//! The eBPF run statistics are cumulative in the kernel (and only advance while
//! `kernel.bpf_stats_enabled` is 1), so they are set, not incremented. The CRI buckets are
//! upstream's for `kubelet_runtime_operations_duration_seconds` (0.005 s × 2.5^i, 14 bounds).
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use super::{Desc, Families, HistogramValue, MetricsError};
use crate::cri::Gate;
use crate::reconcile::exits::ExitCounts;
use crate::supervise::TaskRestarts;

const PROGRAM_LOADED: Desc = Desc::gauge(
    "kernlet_ebpf_program_loaded",
    "Whether the eBPF program is loaded and attached on this kernel (1) or was skipped (0).",
);
const PROGRAM_RUN_TIME: Desc = Desc::counter(
    "kernlet_ebpf_program_run_time_seconds_total",
    "Cumulative time the kernel spent running the eBPF program (needs kernel.bpf_stats_enabled).",
);
const PROGRAM_RUNS: Desc = Desc::counter(
    "kernlet_ebpf_program_runs_total",
    "Cumulative count of runs of the eBPF program (needs kernel.bpf_stats_enabled).",
);
const COLLECTION: Desc = Desc::histogram(
    "kernlet_stats_collection_duration_seconds",
    "Time one stats collection round over all cgroups took.",
);
const CRI: Desc = Desc::histogram(
    "kernlet_cri_request_duration_seconds",
    "Duration of CRI calls by gRPC method.",
);
const ADMISSION_WIDTH: Desc = Desc::gauge(
    "kernlet_cri_admission_width",
    "CRI calls of the lane (sandbox: RunPodSandbox, start: StartContainer) let in at once.",
);
const ADMISSION_WAITING: Desc = Desc::gauge(
    "kernlet_cri_admission_waiting",
    "CRI calls of the lane waiting in kernlet to be let in.",
);
const ADMISSION_IN_FLIGHT: Desc = Desc::gauge(
    "kernlet_cri_admission_in_flight",
    "CRI calls of the lane let in and not yet ended.",
);
const MANIFEST_ERRORS: Desc = Desc::counter(
    "kernlet_static_pod_manifest_errors_total",
    "Cumulative count of static pod manifests found broken.",
);

const TASK_RESTARTS: Desc = Desc::counter(
    "kernlet_task_restarts_total",
    "Cumulative count of supervised tasks (pod workers and agent loops) restarted after a panic or an early exit.",
);
const EXIT_WATCHES: Desc = Desc::gauge(
    "kernlet_pleg_exit_watches",
    "Running containers whose main process is watched through a pidfd for its exit.",
);
const EXIT_EVENTS: Desc = Desc::counter(
    "kernlet_pleg_exit_events_total",
    "Cumulative count of container exits seen in containerd's task events or through a pidfd, by source.",
);
const API_REQUESTS: Desc = Desc::counter(
    "kernlet_api_requests_total",
    "Cumulative count of API server requests in cluster mode, by call and result (ok or error).",
);
const EXIT_TO_STATUS: Desc = Desc::histogram(
    "kernlet_pleg_exit_to_status_seconds",
    "Time from a container's exit, as the runtime stamped it, to the pod status showing it.",
);

const CLIENT_TTL: Desc = Desc::gauge(
    "kubelet_certificate_manager_client_ttl_seconds",
    "Seconds until the kubelet's client certificate expires (negative once expired; +Inf without a usable certificate).",
);
const CLIENT_RENEW_ERRORS: Desc = Desc::counter(
    "kubelet_certificate_manager_client_expiration_renew_errors",
    "Cumulative count of failed client certificate renewals.",
);
const SERVER_TTL: Desc = Desc::gauge(
    "kubelet_certificate_manager_server_ttl_seconds",
    "Seconds until the kubelet's serving certificate expires (negative once expired; +Inf without a usable certificate).",
);
const SERVER_RENEW_ERRORS: Desc = Desc::counter(
    "kubelet_server_expiration_renew_errors",
    "Cumulative count of failed serving certificate renewals.",
);

/// Which certificate a certificate manager keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum CertificateKind {
    Client,
    Serving,
}

/// What `/metrics` shows of one certificate manager.
#[derive(Debug, Clone, Copy, Default)]
struct CertificateState {
    expires: Option<std::time::SystemTime>,
    renew_errors: u64,
}

/// 0.005 s × 2.5^i for i in 0..14, as upstream's runtime operation histogram.
const CRI_BUCKETS: [f64; 14] = [
    0.005,
    0.0125,
    0.03125,
    0.078_125,
    0.195_312_5,
    0.488_281_25,
    1.220_703_125,
    3.051_757_812_5,
    7.629_394_531_25,
    19.073_486_328_125,
    47.683_715_820_312_5,
    119.209_289_550_781_25,
    298.023_223_876_953_1,
    745.058_059_692_382_8,
];

/// 100 µs × 2^i for i in 0..16 (up to 3.3 s).
const COLLECTION_BUCKETS: [f64; 16] = [
    0.0001, 0.0002, 0.0004, 0.0008, 0.0016, 0.0032, 0.0064, 0.0128, 0.0256, 0.0512, 0.1024, 0.2048,
    0.4096, 0.8192, 1.6384, 3.2768,
];

/// 1 ms to 10 s, 1-2.5-5 steps: the exit path is milliseconds with events, a relist period
/// (1 s) without.
const EXIT_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Observations in fixed buckets.
#[derive(Debug, Clone)]
struct Buckets {
    bounds: &'static [f64],
    /// Non-cumulative count per bound.
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Buckets {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        }
    }

    fn observe(&mut self, seconds: f64) {
        if let Some(i) = self.bounds.iter().position(|&bound| seconds <= bound) {
            self.counts[i] += 1;
        }
        self.sum += seconds;
        self.count += 1;
    }

    fn value(&self) -> HistogramValue {
        let mut cumulative = 0;
        HistogramValue {
            buckets: self
                .bounds
                .iter()
                .zip(&self.counts)
                .map(|(&bound, &count)| {
                    cumulative += count;
                    (bound, cumulative)
                })
                .collect(),
            sum: self.sum,
            count: self.count,
        }
    }
}

#[derive(Debug, Default)]
struct State {
    loaded: BTreeMap<String, bool>,
    /// `(run_time_ns, run_count)` per program.
    costs: BTreeMap<String, (u64, u64)>,
    collection: Option<Buckets>,
    exit_to_status: Option<Buckets>,
    cri: BTreeMap<String, Buckets>,
    manifest_errors: Option<Arc<AtomicU64>>,
    task_restarts: Option<Arc<TaskRestarts>>,
    exits: Option<Arc<ExitCounts>>,
    admission: Option<Gate>,
    /// `(call, ok)` -> count.
    api: BTreeMap<(&'static str, bool), u64>,
    certificates: BTreeMap<CertificateKind, CertificateState>,
}

/// kernlet's own metrics, shared between the daemon's tasks and the server.
#[derive(Debug, Default)]
pub struct Metrics {
    state: Mutex<State>,
}

impl Metrics {
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records whether `program` is loaded (from `ebpf::ProgramState::loaded`).
    pub fn set_program_loaded(&self, program: &str, loaded: bool) {
        self.state().loaded.insert(program.to_owned(), loaded);
    }

    /// Sets `program`'s cumulative kernel run time (nanoseconds) and run count.
    pub fn set_program_cost(&self, program: &str, run_time_ns: u64, run_count: u64) {
        self.state()
            .costs
            .insert(program.to_owned(), (run_time_ns, run_count));
    }

    /// Records how long one stats collection round took.
    pub fn observe_collection(&self, took: Duration) {
        self.state()
            .collection
            .get_or_insert_with(|| Buckets::new(&COLLECTION_BUCKETS))
            .observe(took.as_secs_f64());
    }

    /// Records how long after a container's exit its status showed it.
    pub fn observe_exit_to_status(&self, took: Duration) {
        self.state()
            .exit_to_status
            .get_or_insert_with(|| Buckets::new(&EXIT_BUCKETS))
            .observe(took.as_secs_f64());
    }

    /// Records one CRI call of `method` (e.g. `RunPodSandbox`) and how long it took.
    pub fn observe_cri_call(&self, method: &str, took: Duration) {
        let mut state = self.state();
        if let Some(buckets) = state.cri.get_mut(method) {
            buckets.observe(took.as_secs_f64());
        } else {
            let mut buckets = Buckets::new(&CRI_BUCKETS);
            buckets.observe(took.as_secs_f64());
            state.cri.insert(method.to_owned(), buckets);
        }
    }

    /// Counts one API server request of `call` (cluster mode) and whether it succeeded.
    pub fn count_api_request(&self, call: &'static str, ok: bool) {
        *self.state().api.entry((call, ok)).or_default() += 1;
    }

    /// Sets when the `kind` certificate in use expires (`None`: there is none); its families
    /// appear from the first call on.
    pub fn set_certificate_expiry(
        &self,
        kind: CertificateKind,
        expires: Option<std::time::SystemTime>,
    ) {
        self.state().certificates.entry(kind).or_default().expires = expires;
    }

    /// Counts one failed renewal of the `kind` certificate.
    pub fn count_certificate_renew_error(&self, kind: CertificateKind) {
        self.state()
            .certificates
            .entry(kind)
            .or_default()
            .renew_errors += 1;
    }

    /// Exposes the static pod source's manifest error counter
    /// (`StaticPodSource::manifest_errors_counter`).
    pub fn track_manifest_errors(&self, counter: Arc<AtomicU64>) {
        self.state().manifest_errors = Some(counter);
    }

    /// Exposes the supervisor's restart counts.
    pub fn track_task_restarts(&self, restarts: Arc<TaskRestarts>) {
        self.state().task_restarts = Some(restarts);
    }

    /// Exposes the runtime's admission lanes.
    pub fn track_admission(&self, gate: Gate) {
        self.state().admission = Some(gate);
    }

    /// Exposes the PLEG's exit watches.
    pub fn track_exit_watches(&self, exits: Arc<ExitCounts>) {
        self.state().exits = Some(exits);
    }

    /// The `/metrics` body.
    pub fn render(&self) -> Result<String, MetricsError> {
        let mut out = Families::default();
        let state = self.state();
        for (program, &loaded) in &state.loaded {
            let labels = vec![("program", program.clone())];
            out.sample(&PROGRAM_LOADED, labels, f64::from(u8::from(loaded)), None);
        }
        for (program, &(run_time_ns, runs)) in &state.costs {
            let labels = || vec![("program", program.clone())];
            out.sample(&PROGRAM_RUN_TIME, labels(), run_time_ns as f64 / 1e9, None);
            out.sample(&PROGRAM_RUNS, labels(), runs as f64, None);
        }
        if let Some(collection) = &state.collection {
            out.histogram(&COLLECTION, Vec::new(), &collection.value(), None);
        }
        for (method, buckets) in &state.cri {
            let labels = vec![("method", method.clone())];
            out.histogram(&CRI, labels, &buckets.value(), None);
        }
        for lane in state.admission.iter().flat_map(Gate::lanes) {
            let labels = || vec![("lane", lane.lane.to_owned())];
            out.sample(&ADMISSION_WIDTH, labels(), lane.width as f64, None);
            out.sample(&ADMISSION_WAITING, labels(), lane.waiting as f64, None);
            out.sample(&ADMISSION_IN_FLIGHT, labels(), lane.in_flight as f64, None);
        }
        if let Some(counter) = &state.manifest_errors {
            let errors = counter.load(Ordering::Relaxed);
            out.sample(&MANIFEST_ERRORS, Vec::new(), errors as f64, None);
        }
        if let Some(restarts) = &state.task_restarts {
            for (task, count) in restarts.counts() {
                let labels = vec![("task", task.to_owned())];
                out.sample(&TASK_RESTARTS, labels, count as f64, None);
            }
        }
        if let Some(exits) = &state.exits {
            out.sample(&EXIT_WATCHES, Vec::new(), exits.watching() as f64, None);
            for (source, count) in [("containerd", exits.task_exits()), ("pidfd", exits.exits())] {
                let labels = vec![("source", source.to_owned())];
                out.sample(&EXIT_EVENTS, labels, count as f64, None);
            }
        }
        for (&(call, ok), &count) in &state.api {
            let result = if ok { "ok" } else { "error" };
            let labels = vec![("call", call.to_owned()), ("result", result.to_owned())];
            out.sample(&API_REQUESTS, labels, count as f64, None);
        }
        if let Some(exits) = &state.exit_to_status {
            out.histogram(&EXIT_TO_STATUS, Vec::new(), &exits.value(), None);
        }
        let now = crate::clock::wall();
        for (kind, certificate) in &state.certificates {
            let (ttl, errors) = match kind {
                CertificateKind::Client => (&CLIENT_TTL, &CLIENT_RENEW_ERRORS),
                CertificateKind::Serving => (&SERVER_TTL, &SERVER_RENEW_ERRORS),
            };
            let seconds = certificate.expires.map_or(f64::INFINITY, |expires| {
                match expires.duration_since(now) {
                    Ok(left) => left.as_secs() as f64,
                    Err(past) => -(past.duration().as_secs() as f64),
                }
            });
            out.sample(ttl, Vec::new(), seconds, None);
            out.sample(errors, Vec::new(), certificate.renew_errors as f64, None);
        }
        drop(state);
        out.encode()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of the unlabelled sample `name` in `text`.
    fn value(text: &str, name: &str) -> Option<f64> {
        text.lines()
            .find_map(|line| line.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.parse().ok())
    }

    #[test]
    fn admission_lanes_appear_once_tracked() {
        let metrics = Metrics::new();
        assert!(!metrics.render().unwrap().contains("kernlet_cri_admission"));
        metrics.track_admission(Gate::new(3, 12));
        let text = metrics.render().unwrap();
        for lane in ["sandbox", "start"] {
            let line = format!("kernlet_cri_admission_width{{lane=\"{lane}\"}} 3");
            assert!(text.contains(&line), "{text}");
            let line = format!("kernlet_cri_admission_waiting{{lane=\"{lane}\"}} 0");
            assert!(text.contains(&line), "{text}");
        }
        assert!(text.contains("# TYPE kernlet_cri_admission_in_flight gauge"));
    }

    #[test]
    fn certificate_families_appear_with_their_managers() {
        let metrics = Metrics::new();
        let text = metrics.render().unwrap();
        assert!(!text.contains("kubelet_certificate_manager"), "{text}");

        let in_an_hour = crate::clock::wall() + Duration::from_hours(1);
        metrics.set_certificate_expiry(CertificateKind::Client, Some(in_an_hour));
        metrics.count_certificate_renew_error(CertificateKind::Client);
        metrics.set_certificate_expiry(CertificateKind::Serving, None);
        let text = metrics.render().unwrap();
        let ttl = value(&text, "kubelet_certificate_manager_client_ttl_seconds").unwrap();
        assert!((3590.0..=3600.0).contains(&ttl), "{ttl}");
        assert!(text.contains("# TYPE kubelet_certificate_manager_client_ttl_seconds gauge"));
        let errors = "kubelet_certificate_manager_client_expiration_renew_errors";
        assert_eq!(value(&text, errors), Some(1.0), "{text}");
        let serving = value(&text, "kubelet_certificate_manager_server_ttl_seconds").unwrap();
        assert!(
            serving.is_infinite() && serving > 0.0,
            "no serving certificate yet"
        );
        assert_eq!(
            value(&text, "kubelet_server_expiration_renew_errors"),
            Some(0.0)
        );

        let an_hour_ago = crate::clock::wall() - Duration::from_hours(1);
        metrics.set_certificate_expiry(CertificateKind::Client, Some(an_hour_ago));
        let text = metrics.render().unwrap();
        let ttl = value(&text, "kubelet_certificate_manager_client_ttl_seconds").unwrap();
        assert!((-3610.0..=-3599.0).contains(&ttl), "expired: {ttl}");
    }
}
