//! Table-driven tests of [`super::pod_status`], one file per concern.

mod conditions;
mod containers;
mod network;
mod phase;

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{
    Container as Spec, ContainerState, ContainerStatus, Pod, PodCondition, PodSpec, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::{ProbeResults, StatusInput, pod_status, time_from_nanos};
use crate::reconcile::plan::BackingOff;
use crate::reconcile::state::{Container, Nanos, PodRuntime, RunState, Sandbox, Waiting};

pub(super) const S: Nanos = 1_000_000_000;
pub(super) const NOW: Nanos = 1_000 * S;

/// One scenario: the pod, what the runtime has, and the worker's extra knowledge.
pub(super) struct Fixture {
    pub pod: Pod,
    pub runtime: PodRuntime,
    pub waiting: HashMap<String, Waiting>,
    pub backing_off: Vec<BackingOff>,
    pub probes: HashMap<String, ProbeResults>,
    pub host_ips: Vec<IpAddr>,
    pub terminating: bool,
    pub previous: Option<PodStatus>,
    pub start_time: Option<Nanos>,
    pub now: Nanos,
}

impl Fixture {
    pub fn new(pod: Pod) -> Self {
        Self {
            pod,
            runtime: PodRuntime::default(),
            waiting: HashMap::new(),
            backing_off: Vec::new(),
            probes: HashMap::new(),
            host_ips: vec!["192.0.2.10".parse().unwrap()],
            terminating: false,
            previous: None,
            start_time: Some(100 * S),
            now: NOW,
        }
    }

    /// A ready sandbox `sb` with a pod IP, and the given containers.
    pub fn with(mut self, containers: Vec<Container>) -> Self {
        self.runtime.sandboxes = vec![sandbox("sb", 0, true, Some("10.0.0.5"))];
        self.runtime.containers = containers;
        self
    }

    pub fn wait(mut self, name: &str, reason: &str, message: &str) -> Self {
        self.waiting.insert(
            name.to_owned(),
            Waiting {
                reason: reason.to_owned(),
                message: message.to_owned(),
            },
        );
        self
    }

    pub fn status(&self) -> PodStatus {
        pod_status(&StatusInput {
            pod: &self.pod,
            runtime: &self.runtime,
            runtime_name: "containerd",
            waiting: &self.waiting,
            backing_off: &self.backing_off,
            probes: &self.probes,
            host_ips: &self.host_ips,
            start_time: self.start_time.map(time_from_nanos),
            terminating: self.terminating,
            previous: self.previous.as_ref(),
            now: time_from_nanos(self.now),
        })
    }
}

pub(super) fn spec(name: &str) -> Spec {
    Spec {
        name: name.to_owned(),
        image: Some(format!("registry.local/{name}:1")),
        ..Default::default()
    }
}

/// Pod `web` in `default`, UID `uid-1`, with `restartPolicy` and the named containers.
pub(super) fn pod(policy: &str, init: &[&str], apps: &[&str]) -> Pod {
    pod_with(policy, init.iter().map(|n| spec(n)).collect(), apps)
}

pub(super) fn pod_with(policy: &str, init: Vec<Spec>, apps: &[&str]) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some("web".to_owned()),
            namespace: Some("default".to_owned()),
            uid: Some("uid-1".to_owned()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            restart_policy: Some(policy.to_owned()),
            init_containers: (!init.is_empty()).then_some(init),
            containers: apps.iter().map(|n| spec(n)).collect(),
            ..Default::default()
        }),
        status: None,
    }
}

/// Marks the pod as a static pod (`kubernetes.io/config.source: file`).
pub(super) fn make_static(pod: &mut Pod) {
    pod.metadata.annotations = Some(BTreeMap::from([(
        "kubernetes.io/config.source".to_owned(),
        "file".to_owned(),
    )]));
    pod.status = Some(PodStatus {
        phase: Some("Pending".to_owned()),
        ..Default::default()
    });
}

pub(super) fn sandbox(id: &str, attempt: u32, ready: bool, ip: Option<&str>) -> Sandbox {
    Sandbox {
        id: id.to_owned(),
        ready,
        attempt,
        created_at: (10 + i64::from(attempt)) * S,
        ip: ip.map(str::to_owned),
    }
}

/// An instance of `name` in sandbox `sb`, created at `created` seconds.
pub(super) fn instance(
    name: &str,
    id: &str,
    state: RunState,
    restarts: u32,
    created: i64,
) -> Container {
    Container {
        id: id.to_owned(),
        sandbox_id: "sb".to_owned(),
        name: name.to_owned(),
        state,
        hash: String::new(),
        restart_count: restarts,
        exit_code: 0,
        created_at: created * S,
        started_at: if state == RunState::Created {
            0
        } else {
            (created + 1) * S
        },
        finished_at: 0,
        reason: String::new(),
        message: String::new(),
        image: format!("registry.local/{name}:1"),
        image_ref: format!("sha256:{name}"),
    }
}

pub(super) fn running(name: &str, id: &str, restarts: u32, created: i64) -> Container {
    instance(name, id, RunState::Running, restarts, created)
}

/// An exited instance that finished 5 s after its creation.
pub(super) fn exited(name: &str, id: &str, code: i32, restarts: u32, created: i64) -> Container {
    let mut c = instance(name, id, RunState::Exited, restarts, created);
    c.exit_code = code;
    c.finished_at = (created + 5) * S;
    c.reason = if code == 0 { "Completed" } else { "Error" }.to_owned();
    c
}

pub(super) fn find<'a>(statuses: &'a [ContainerStatus], name: &str) -> &'a ContainerStatus {
    statuses
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no status for {name}"))
}

pub(super) fn app<'a>(status: &'a PodStatus, name: &str) -> &'a ContainerStatus {
    find(status.container_statuses.as_deref().unwrap(), name)
}

pub(super) fn init<'a>(status: &'a PodStatus, name: &str) -> &'a ContainerStatus {
    find(status.init_container_statuses.as_deref().unwrap(), name)
}

pub(super) fn condition<'a>(status: &'a PodStatus, type_: &str) -> &'a PodCondition {
    status
        .conditions
        .as_deref()
        .unwrap()
        .iter()
        .find(|c| c.type_ == type_)
        .unwrap_or_else(|| panic!("no {type_} condition"))
}

/// `(reason, message)` of a waiting state, `None` when not waiting.
pub(super) fn waiting_of(state: Option<&ContainerState>) -> Option<(String, String)> {
    let w = state?.waiting.as_ref()?;
    Some((
        w.reason.clone().unwrap_or_default(),
        w.message.clone().unwrap_or_default(),
    ))
}

/// `(reason, exit code)` of a terminated state, `None` when not terminated.
pub(super) fn terminated_of(state: Option<&ContainerState>) -> Option<(String, i32)> {
    let t = state?.terminated.as_ref()?;
    Some((t.reason.clone().unwrap_or_default(), t.exit_code))
}
