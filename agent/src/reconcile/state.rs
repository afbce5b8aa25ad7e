//! What the runtime holds for one pod, as the planner sees it: sandboxes and containers rebuilt
//! from CRI lists and the upstream labels (design decision 2: no local database).

use std::collections::HashMap;

pub use crate::clock::Nanos;
use crate::probe::ProbeResults;

/// One pod sandbox of the pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sandbox {
    pub id: String,
    /// `SANDBOX_READY`.
    pub ready: bool,
    /// Metadata attempt: 0 for the first sandbox, +1 per re-creation.
    pub attempt: u32,
    pub created_at: Nanos,
    /// The pod IP the network plugin gave this sandbox (empty for host-network pods until the
    /// node IP is filled in by the status code).
    pub ip: Option<String>,
}

/// CRI container state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    Created,
    Running,
    Exited,
    Unknown,
}

/// One container instance (a container name may have several: one per restart).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    pub id: String,
    pub sandbox_id: String,
    /// `io.kubernetes.container.name`.
    pub name: String,
    pub state: RunState,
    /// `io.kubernetes.container.hash`: the spec it was created from.
    pub hash: String,
    /// `io.kubernetes.container.restartCount`.
    pub restart_count: u32,
    pub exit_code: i32,
    pub created_at: Nanos,
    pub started_at: Nanos,
    pub finished_at: Nanos,
    /// The runtime's reason for the last exit (containerd: `Completed`, `Error`, `OOMKilled`).
    pub reason: String,
    pub message: String,
    /// The image as the spec named it, and the resolved reference (digest).
    pub image: String,
    pub image_ref: String,
}

/// Why a container that should run has no running instance, as the worker last saw it
/// (image pull failures, create errors); shown as the container's waiting state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    /// Upstream reason string: `ErrImagePull`, `ImagePullBackOff`, `ErrImageNeverPull`,
    /// `CreateContainerConfigError`, `CreateContainerError`, `RunContainerError`.
    pub reason: String,
    pub message: String,
}

/// Everything the runtime has for one pod UID.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodRuntime {
    pub sandboxes: Vec<Sandbox>,
    pub containers: Vec<Container>,
    /// What the prober concluded about running instances, by container ID (the worker fills it
    /// in after observing; an instance without probes has no entry).
    pub probes: HashMap<String, ProbeResults>,
}

impl PodRuntime {
    /// The newest sandbox (highest attempt, then newest creation).
    #[must_use]
    pub fn newest_sandbox(&self) -> Option<&Sandbox> {
        self.sandboxes
            .iter()
            .max_by_key(|s| (s.attempt, s.created_at))
    }

    /// The newest instance of container `name` in sandbox `sandbox_id`.
    #[must_use]
    pub fn latest(&self, sandbox_id: &str, name: &str) -> Option<&Container> {
        self.containers
            .iter()
            .filter(|c| c.sandbox_id == sandbox_id && c.name == name)
            .max_by_key(|c| (c.created_at, c.restart_count))
    }

    /// The newest instance of container `name` in any sandbox (for restart counts).
    #[must_use]
    pub fn latest_anywhere(&self, name: &str) -> Option<&Container> {
        self.containers
            .iter()
            .filter(|c| c.name == name)
            .max_by_key(|c| (c.created_at, c.restart_count))
    }

    /// True when any container instance of the pod is running.
    #[must_use]
    pub fn any_running(&self) -> bool {
        self.containers.iter().any(|c| c.state == RunState::Running)
    }
}
