//! Reading what the runtime holds, grouped by pod UID, from CRI lists and the upstream labels.
//!
//! A relist is two calls (`ListPodSandbox`, `ListContainers`); `ContainerStatus` and
//! `PodSandboxStatus` are fetched only for objects that are new or changed state since the last
//! observation (exit codes and start times never change once known), so observing a quiet node
//! costs two calls whatever its size.
use std::collections::{HashMap, HashSet};

use kernlet_cri::v1;

use super::state::{Container, PodRuntime, RunState, Sandbox};
use crate::cri::{Cri, CriError, exits::RecordedExit, labels};

/// Details fetched once per container instance and state, and once per sandbox.
#[derive(Debug, Default)]
pub struct Observer {
    containers: HashMap<String, Container>,
    sandbox_ips: HashMap<String, Option<String>>,
}

fn run_state(state: i32) -> RunState {
    match v1::ContainerState::try_from(state) {
        Ok(v1::ContainerState::ContainerCreated) => RunState::Created,
        Ok(v1::ContainerState::ContainerRunning) => RunState::Running,
        Ok(v1::ContainerState::ContainerExited) => RunState::Exited,
        _ => RunState::Unknown,
    }
}

impl Observer {
    /// Every kubelet-managed pod in the runtime, by UID. With `uid`, only that pod.
    pub async fn observe(
        &mut self,
        runtime: &dyn Cri,
        uid: Option<&str>,
    ) -> Result<HashMap<String, PodRuntime>, CriError> {
        let selector = uid.map(labels::pod_selector).unwrap_or_default();
        // Both lists at once: one round trip instead of two on the path from a PLEG wake-up to
        // the pod's status.
        let (sandboxes, containers) = tokio::join!(
            runtime.list_pod_sandbox(v1::ListPodSandboxRequest {
                filter: Some(v1::PodSandboxFilter {
                    label_selector: selector.clone(),
                    ..Default::default()
                }),
            }),
            runtime.list_containers(v1::ListContainersRequest {
                filter: Some(v1::ContainerFilter {
                    label_selector: selector,
                    ..Default::default()
                }),
            }),
        );
        let (sandboxes, containers) = (sandboxes?.items, containers?.containers);

        let mut pods: HashMap<String, PodRuntime> = HashMap::new();
        let mut seen_sandboxes = HashSet::new();
        for item in sandboxes {
            let Some(pod_uid) = item.labels.get(labels::POD_UID).cloned() else {
                continue; // not created by a kubelet
            };
            let ready = item.state == i32::from(v1::PodSandboxState::SandboxReady);
            let ip = self.sandbox_ip(runtime, &item.id, ready).await?;
            seen_sandboxes.insert(item.id.clone());
            pods.entry(pod_uid).or_default().sandboxes.push(Sandbox {
                id: item.id,
                ready,
                attempt: item.metadata.map_or(0, |m| m.attempt),
                created_at: item.created_at,
                ip,
            });
        }
        let mut seen_containers = HashSet::new();
        for item in containers {
            let Some(pod_uid) = item.labels.get(labels::POD_UID).cloned() else {
                continue;
            };
            seen_containers.insert(item.id.clone());
            let container = self.container(runtime, &item).await?;
            pods.entry(pod_uid).or_default().containers.push(container);
        }
        if uid.is_none() {
            self.containers.retain(|id, _| seen_containers.contains(id));
            self.sandbox_ips.retain(|id, _| seen_sandboxes.contains(id));
        }
        Ok(pods)
    }

    /// One pod's runtime state (empty when the runtime has nothing for it).
    pub async fn observe_pod(
        &mut self,
        runtime: &dyn Cri,
        uid: &str,
    ) -> Result<PodRuntime, CriError> {
        Ok(self
            .observe(runtime, Some(uid))
            .await?
            .remove(uid)
            .unwrap_or_default())
    }

    /// `last` with the exits `runtime`'s events reported ahead of CRI applied to its running
    /// containers, or `None` when there are none: what the next observation will say, known
    /// without a call (CRI records the same code and time from the same event).
    pub fn with_recorded_exits(runtime: &dyn Cri, last: &PodRuntime) -> Option<PodRuntime> {
        let exits: Vec<(usize, RecordedExit)> = last
            .containers
            .iter()
            .enumerate()
            .filter(|(_, c)| c.state == RunState::Running)
            .filter_map(|(i, c)| Some((i, runtime.recorded_exit(&c.id)?)))
            .collect();
        if exits.is_empty() {
            return None;
        }
        let mut view = last.clone();
        for (i, exit) in exits {
            let Some(container) = view.containers.get_mut(i) else {
                continue;
            };
            container.state = RunState::Exited;
            container.exit_code = exit.exit_code;
            container.finished_at = exit.finished_at;
            exit.reason.clone_into(&mut container.reason);
        }
        Some(view)
    }

    /// Forgets cached details of a pod's objects (after it is removed).
    pub fn forget(&mut self, pod: &PodRuntime) {
        for c in &pod.containers {
            self.containers.remove(&c.id);
        }
        for s in &pod.sandboxes {
            self.sandbox_ips.remove(&s.id);
        }
    }

    async fn sandbox_ip(
        &mut self,
        runtime: &dyn Cri,
        id: &str,
        ready: bool,
    ) -> Result<Option<String>, CriError> {
        if let Some(ip) = self.sandbox_ips.get(id) {
            return Ok(ip.clone());
        }
        if !ready {
            return Ok(None);
        }
        let request = v1::PodSandboxStatusRequest {
            pod_sandbox_id: id.to_owned(),
            verbose: false,
        };
        let status = match runtime.pod_sandbox_status(request).await {
            Ok(response) => response.status,
            Err(e) if e.is_not_found() => None,
            Err(e) => return Err(e),
        };
        let ip = status
            .and_then(|s| s.network)
            .map(|n| n.ip)
            .filter(|ip| !ip.is_empty());
        self.sandbox_ips.insert(id.to_owned(), ip.clone());
        Ok(ip)
    }

    async fn container(
        &mut self,
        runtime: &dyn Cri,
        item: &v1::Container,
    ) -> Result<Container, CriError> {
        let state = run_state(item.state);
        if let Some(known) = self.containers.get(&item.id).filter(|c| c.state == state) {
            return Ok(known.clone());
        }
        let annotation = |key: &str| item.annotations.get(key).cloned().unwrap_or_default();
        let mut container = Container {
            id: item.id.clone(),
            sandbox_id: item.pod_sandbox_id.clone(),
            name: item
                .labels
                .get(labels::CONTAINER_NAME)
                .cloned()
                .unwrap_or_default(),
            state,
            hash: annotation(labels::CONTAINER_HASH),
            restart_count: annotation(labels::CONTAINER_RESTART_COUNT)
                .parse()
                .unwrap_or(0),
            exit_code: 0,
            created_at: item.created_at,
            started_at: 0,
            finished_at: 0,
            reason: String::new(),
            message: String::new(),
            image: item
                .image
                .as_ref()
                .map(|i| i.image.clone())
                .unwrap_or_default(),
            image_ref: item.image_ref.clone(),
        };
        let request = v1::ContainerStatusRequest {
            container_id: item.id.clone(),
            verbose: false,
        };
        match runtime.container_status(request).await {
            Ok(response) => {
                if let Some(status) = response.status {
                    container.state = run_state(status.state);
                    container.started_at = status.started_at;
                    container.finished_at = status.finished_at;
                    container.exit_code = status.exit_code;
                    container.reason = status.reason;
                    container.message = status.message;
                    if !status.image_ref.is_empty() {
                        container.image_ref = status.image_ref;
                    }
                    // The name as the pod spec wrote it when the runtime echoes it, else the
                    // runtime's resolved name (ListContainers only has the reference sent).
                    if let Some(image) = status.image {
                        let name = if image.user_specified_image.is_empty() {
                            image.image
                        } else {
                            image.user_specified_image
                        };
                        if !name.is_empty() {
                            container.image = name;
                        }
                    }
                }
            }
            // Removed between the list and the status call: report what the list said.
            Err(e) if e.is_not_found() => return Ok(container),
            Err(e) => return Err(e),
        }
        self.containers.insert(item.id.clone(), container.clone());
        Ok(container)
    }
}
