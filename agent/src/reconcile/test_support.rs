//! Shared fixtures for the worker, manager and observer tests: an executor over the
//! [`FakeRuntime`] with a test clock on paused tokio time, pods, and a status sink that records.
use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use k8s_openapi::api::core::v1::Pod;
use tokio::{sync::watch, task::JoinHandle};
use tokio_util::sync::CancellationToken;

use super::{
    execute::Executor,
    fake_runtime::FakeRuntime,
    spec::{NodeContext, ResolvConf},
    worker::{self, DesiredState, PodReport, StatusSink},
};
use crate::clock::TestClock;
use crate::event::{Collected, Recorder};

/// 2026-01-01T00:00:00Z: wall time at the start of every test.
pub const EPOCH_2026: i64 = 1_767_225_600_000_000_000;

/// Records the latest report of every pod (`None`: the pod was reported gone).
#[derive(Debug, Default)]
pub struct Reports {
    latest: Mutex<HashMap<String, Option<PodReport>>>,
}

impl Reports {
    /// The latest report of `uid`, unless it was never reported or is gone.
    pub fn report(&self, uid: &str) -> Option<PodReport> {
        self.latest
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(uid)
            .cloned()
            .flatten()
    }

    /// True once `uid` was reported gone.
    pub fn gone(&self, uid: &str) -> bool {
        matches!(
            self.latest
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(uid),
            Some(None)
        )
    }
}

impl StatusSink for Reports {
    fn publish(&self, uid: &str, report: Option<PodReport>) {
        self.latest
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(uid.to_owned(), report);
    }
}

/// An executor over a fake runtime, with its directories.
pub struct Harness {
    pub fake: Arc<FakeRuntime>,
    pub executor: Arc<Executor>,
    pub reports: Arc<Reports>,
    pub events: Arc<Collected>,
    _dir: tempfile::TempDir,
}

impl Harness {
    /// Must be called on paused time (the clock starts at [`EPOCH_2026`]).
    pub fn new() -> Self {
        let clock = Arc::new(TestClock::new(EPOCH_2026));
        let fake = Arc::new(FakeRuntime::new(clock.clone()));
        let dir = tempfile::tempdir().unwrap();
        let mut node = NodeContext::new(
            "node-a",
            vec!["10.0.0.5".parse().unwrap()],
            dir.path().join("root"),
        );
        node.pod_logs_dir = dir.path().join("logs");
        let events = Arc::new(Collected::default());
        let executor = Executor::new(fake.clone(), node, ResolvConf::default(), None)
            .with_clock(clock)
            .with_events(Recorder::new(events.clone()));
        Self {
            fake,
            executor: Arc::new(executor),
            reports: Arc::new(Reports::default()),
            events,
            _dir: dir,
        }
    }

    /// Starts a worker for `uid` wanting `state`.
    pub fn worker(&self, uid: &str, state: DesiredState) -> Worker {
        let (desired, rx) = watch::channel(state);
        let wake = Arc::new(tokio::sync::Notify::new());
        let cancel = CancellationToken::new();
        let task = tokio::spawn(worker::run(
            uid.to_owned(),
            rx,
            self.executor.clone(),
            self.reports.clone(),
            wake.clone(),
            cancel.clone(),
        ));
        Worker {
            desired,
            wake,
            cancel,
            task,
        }
    }

    /// Runs `pod` to running with a worker that then stops (kernlet going away): the pod stays
    /// in the runtime as a previous kernlet left it.
    pub async fn bring_up(&self, pod: &Pod) {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let worker = self.worker(&uid, DesiredState::Run(Arc::new(pod.clone())));
        settle().await;
        worker.stop().await;
    }
}

/// A running worker task and its inputs.
pub struct Worker {
    pub desired: watch::Sender<DesiredState>,
    pub wake: Arc<tokio::sync::Notify>,
    pub cancel: CancellationToken,
    pub task: JoinHandle<()>,
}

impl Worker {
    /// Stops the worker as kernlet's shutdown does (the pod is left alone).
    pub async fn stop(self) {
        self.cancel.cancel();
        self.task.await.unwrap();
    }
}

/// Lets every task run until it waits (paused time advances only to the next timer).
pub async fn settle() {
    tokio::time::sleep(Duration::from_millis(500)).await;
}

/// A pod `name` with UID `uid`, one container `app` (busybox) and `spec` merged in.
pub fn pod(uid: &str, name: &str, spec: serde_json::Value) -> Pod {
    let mut full = serde_json::json!({
        "containers": [{"name": "app", "image": "busybox:1", "imagePullPolicy": "IfNotPresent"}],
        "restartPolicy": "Always",
        "dnsPolicy": "Default",
        "terminationGracePeriodSeconds": 30,
        "nodeName": "node-a",
    });
    if let (Some(into), serde_json::Value::Object(from)) = (full.as_object_mut(), spec) {
        into.extend(from);
    }
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": "default", "uid": uid},
        "spec": full,
    }))
    .unwrap()
}

/// Methods that only read the runtime.
pub const READS: [&str; 4] = [
    "ListPodSandbox",
    "ListContainers",
    "PodSandboxStatus",
    "ContainerStatus",
];

/// The calls in `calls` that change the runtime.
pub fn writes(calls: &[&'static str]) -> Vec<&'static str> {
    calls
        .iter()
        .copied()
        .filter(|c| !READS.contains(c) && *c != "ImageStatus")
        .collect()
}
