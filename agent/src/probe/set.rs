//! The probes of one pod: a set of tasks per running container instance, kept in step with what
//! the pod's worker observes, and the results they share with it.
use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use k8s_openapi::api::core::v1::{Container, Pod};
use tokio::sync::Notify;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::{
    Kind, ProbeMetrics, ProbeResults,
    handler::Target,
    runner::{Runner, Subject},
};
use crate::{
    clock::{Clock, Nanos},
    cri::Cri,
    event::{Involved, Recorder},
};

/// What every probe task shares: the runtime (exec probes), the wall clock, the metrics, the
/// event recorder (`Unhealthy`).
#[derive(Debug)]
pub struct Prober {
    runtime: Arc<dyn Cri>,
    clock: Arc<dyn Clock>,
    started: tokio::time::Instant,
    metrics: Arc<ProbeMetrics>,
    events: Recorder,
}

impl Prober {
    #[must_use]
    pub fn new(runtime: Arc<dyn Cri>, clock: Arc<dyn Clock>, metrics: Arc<ProbeMetrics>) -> Self {
        Self {
            runtime,
            clock,
            started: tokio::time::Instant::now(),
            metrics,
            events: Recorder::default(),
        }
    }

    /// This prober recording its events through `events`.
    #[must_use]
    pub fn with_events(mut self, events: Recorder) -> Self {
        self.events = events;
        self
    }

    pub(super) fn events(&self) -> &Recorder {
        &self.events
    }

    pub(super) fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    pub(super) fn wall_nanos(&self) -> Nanos {
        self.clock.wall_nanos()
    }

    pub(super) fn runtime(&self) -> &dyn Cri {
        self.runtime.as_ref()
    }

    pub(super) fn metrics(&self) -> &ProbeMetrics {
        &self.metrics
    }
}

/// One instance's results, and the worker to wake when they change.
#[derive(Debug)]
pub(super) struct Shared {
    results: Mutex<ProbeResults>,
    wake: Arc<Notify>,
}

impl Shared {
    fn get(&self) -> ProbeResults {
        *self.results.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// True once the startup probe has succeeded.
    pub(super) fn started(&self) -> bool {
        self.get().startup == Some(true)
    }

    /// Changes the results; wakes the worker when that changed anything.
    pub(super) fn update(&self, change: impl FnOnce(&mut ProbeResults)) {
        let changed = {
            let mut results = self.results.lock().unwrap_or_else(PoisonError::into_inner);
            let before = *results;
            change(&mut results);
            *results != before
        };
        if changed {
            self.wake.notify_one();
        }
    }
}

/// A running container instance as the worker observed it.
#[derive(Debug, Clone, Copy)]
pub struct Instance<'a> {
    pub id: &'a str,
    pub name: &'a str,
    /// Wall nanoseconds.
    pub started_at: Nanos,
}

/// One instance's probe tasks; dropping it stops them.
struct ContainerProbes {
    shared: Arc<Shared>,
    _stop: DropGuard,
}

/// The probes of one pod's running containers.
pub struct PodProbes {
    prober: Arc<Prober>,
    /// The pod's UID once synced: its metric series go when these probes do.
    uid: Option<String>,
    wake: Arc<Notify>,
    cancel: CancellationToken,
    containers: HashMap<String, ContainerProbes>,
}

impl std::fmt::Debug for PodProbes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodProbes")
            .field("containers", &self.containers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Drop for PodProbes {
    fn drop(&mut self) {
        if let Some(uid) = &self.uid {
            self.prober.metrics.forget(uid);
        }
    }
}

/// The spec's probes of a container, by kind.
fn probes_of(spec: &Container) -> [(Kind, Option<&k8s_openapi::api::core::v1::Probe>); 3] {
    [
        (Kind::Startup, spec.startup_probe.as_ref()),
        (Kind::Liveness, spec.liveness_probe.as_ref()),
        (Kind::Readiness, spec.readiness_probe.as_ref()),
    ]
}

/// The spec of container `name`: app containers and sidecars (restartable init containers),
/// the ones upstream probes.
fn probed_spec<'a>(pod: &'a Pod, name: &str) -> Option<&'a Container> {
    let spec = pod.spec.as_ref()?;
    let sidecars = spec
        .init_containers
        .iter()
        .flatten()
        .filter(|c| c.restart_policy.as_deref() == Some("Always"));
    spec.containers
        .iter()
        .chain(sidecars)
        .find(|c| c.name == name)
}

impl PodProbes {
    /// Probes that wake `wake` when a result changes and stop with `cancel`.
    #[must_use]
    pub fn new(prober: Arc<Prober>, wake: Arc<Notify>, cancel: CancellationToken) -> Self {
        Self {
            prober,
            uid: None,
            wake,
            cancel,
            containers: HashMap::new(),
        }
    }

    /// Starts the probes of each instance in `running` that has none yet and stops those of
    /// instances no longer running.
    pub fn sync(&mut self, pod: &Pod, running: &[Instance<'_>], pod_ip: Option<IpAddr>) {
        if self.uid.is_none() {
            self.uid.clone_from(&pod.metadata.uid);
        }
        self.containers
            .retain(|id, _| running.iter().any(|i| i.id == id));
        for instance in running {
            if self.containers.contains_key(instance.id) {
                continue;
            }
            let Some(spec) = probed_spec(pod, instance.name) else {
                continue;
            };
            if probes_of(spec).iter().all(|(_, p)| p.is_none()) {
                continue;
            }
            let probes = self.start(pod, spec, instance, pod_ip);
            self.containers.insert(instance.id.to_owned(), probes);
        }
    }

    fn start(
        &self,
        pod: &Pod,
        spec: &Container,
        instance: &Instance<'_>,
        pod_ip: Option<IpAddr>,
    ) -> ContainerProbes {
        let shared = Arc::new(Shared {
            results: Mutex::default(),
            wake: self.wake.clone(),
        });
        let subject = Arc::new(Subject {
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            pod: pod.metadata.name.clone().unwrap_or_default(),
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            container: spec.name.clone(),
            involved: Involved::container(pod, &spec.name),
        });
        let target = Arc::new(Target {
            container_id: instance.id.to_owned(),
            ports: spec.ports.clone().unwrap_or_default(),
            pod_ip,
        });
        let stop = self.cancel.child_token();
        let gated = spec.startup_probe.is_some();
        for (kind, probe) in probes_of(spec) {
            let Some(probe) = probe else { continue };
            let runner = Runner {
                kind,
                spec: probe.clone(),
                subject: subject.clone(),
                target: target.clone(),
                started_at: instance.started_at,
                gated,
                shared: shared.clone(),
                prober: self.prober.clone(),
            };
            tokio::spawn(runner.run(stop.clone()));
        }
        ContainerProbes {
            shared,
            _stop: stop.drop_guard(),
        }
    }

    /// Stops every probe (the pod is being terminated).
    pub fn stop_all(&mut self) {
        self.containers.clear();
    }

    /// The current results of every probed running instance, by container ID.
    #[must_use]
    pub fn results(&self) -> HashMap<String, ProbeResults> {
        self.containers
            .iter()
            .map(|(id, probes)| (id.clone(), probes.shared.get()))
            .collect()
    }
}
