//! The latest status of every pod, as workers report it: computed once per report (not per
//! request) and served by `GET /pods`.
use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
    sync::{Mutex, PoisonError},
};

use k8s_openapi::{api::core::v1::Pod, apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};

use super::{StatusInput, pod_status};
use crate::reconcile::{
    state::now_nanos,
    worker::{PodReport, StatusSink},
};

/// The pods with their status filled in, as `GET /pods` lists them; the status store implements
/// it, tests pass a closure.
pub trait PodsProvider: Send + Sync + 'static {
    fn pods(&self) -> Vec<Pod>;
}

impl<F> PodsProvider for F
where
    F: Fn() -> Vec<Pod> + Send + Sync + 'static,
{
    fn pods(&self) -> Vec<Pod> {
        self()
    }
}

/// Pods with their computed status, by UID.
#[derive(Debug)]
pub struct StatusStore {
    runtime_name: String,
    host_ips: Vec<IpAddr>,
    pods: Mutex<BTreeMap<String, Pod>>,
}

impl StatusStore {
    #[must_use]
    pub fn new(runtime_name: String, host_ips: Vec<IpAddr>) -> Self {
        Self {
            runtime_name,
            host_ips,
            pods: Mutex::default(),
        }
    }
}

impl StatusSink for StatusStore {
    fn publish(&self, uid: &str, report: Option<PodReport>) {
        let mut pods = self.pods.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(report) = report else {
            pods.remove(uid);
            return;
        };
        let previous = pods.get(uid).and_then(|p| p.status.clone());
        let status = pod_status(&StatusInput {
            pod: &report.pod,
            runtime: &report.runtime,
            runtime_name: &self.runtime_name,
            waiting: &report.waiting,
            backing_off: &report.backing_off,
            probes: &HashMap::new(),
            host_ips: &self.host_ips,
            start_time: None,
            terminating: report.terminating,
            previous: previous.as_ref(),
            now: Time(
                Timestamp::from_nanosecond(i128::from(now_nanos()))
                    .unwrap_or(Timestamp::UNIX_EPOCH),
            ),
        });
        let mut pod = (*report.pod).clone();
        pod.status = Some(status);
        pods.insert(uid.to_owned(), pod);
    }
}

impl PodsProvider for StatusStore {
    fn pods(&self) -> Vec<Pod> {
        let pods = self.pods.lock().unwrap_or_else(PoisonError::into_inner);
        let mut list: Vec<Pod> = pods.values().cloned().collect();
        list.sort_by(|a, b| {
            let key = |p: &Pod| (p.metadata.namespace.clone(), p.metadata.name.clone());
            key(a).cmp(&key(b))
        });
        list
    }
}
