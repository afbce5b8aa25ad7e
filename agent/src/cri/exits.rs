//! Container exits as containerd's own event service reports them, ahead of CRI's record.
//!
//! When a container's main process exits, containerd's shim reaps it and publishes a `TaskExit`
//! event (exit status and time) at once. The CRI plugin handles the same event by first deleting
//! the task (`runc delete`, the shim's cleanup) and only then recording the exit, so for tens to
//! hundreds of milliseconds — more under load — CRI still reports the container running. kernlet
//! subscribes to those events ([`Runtime::task_events`]), keeps each exit in [`ExitRecords`]
//! until CRI has caught up, and overlays it on what `ListContainers` and `ContainerStatus` return:
//! state exited, the event's exit code and time, and CRI's own reason rule (`OOMKilled` after a
//! `TaskOOM` event, else `Completed` for 0 and `Error` otherwise). containerd records the same
//! code and time from the same event, so the status does not change when CRI catches up.
//!
//! Exec processes (probes, `kubectl exec`) publish `TaskExit` too, with their exec ID; only the
//! main process (ID equal to the container ID) counts, as in containerd's CRI plugin.
//!
//! Other runtimes answer `Subscribe` with Unimplemented; the pidfd watches and the relist then
//! carry exits (`reconcile::exits`).
//!
//! Reference: containerd `api/services/events/v1`, `api/events/task.proto`,
//! `pkg/cri/server/events.go` (`handleContainerExit`).
use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

use kernlet_cri::{
    containerd::{events, services::events::v1 as service},
    v1,
};
use prost::Message;

use super::{CriError, Runtime};
use crate::clock::Nanos;

/// The containerd namespace of CRI's objects.
const CRI_NAMESPACE: &str = "k8s.io";
const EXIT_TOPIC: &str = "/tasks/exit";
const OOM_TOPIC: &str = "/tasks/oom";

const RUNNING: i32 = v1::ContainerState::ContainerRunning as i32;
const EXITED: i32 = v1::ContainerState::ContainerExited as i32;

/// A task event kernlet acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskEvent {
    /// A container's main process exited.
    Exit(Exit),
    /// The kernel OOM-killed a process of the container.
    Oom { container_id: String },
}

/// A container's exit, from its `TaskExit` event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exit {
    pub container_id: String,
    pub exit_code: i32,
    pub finished_at: Nanos,
}

impl TaskEvent {
    /// The container the event is about.
    #[must_use]
    pub fn container_id(&self) -> &str {
        match self {
            Self::Exit(exit) => &exit.container_id,
            Self::Oom { container_id } => container_id,
        }
    }

    /// The event an envelope carries, when it is a CRI container's exit or OOM.
    #[must_use]
    pub fn decode(envelope: &service::Envelope) -> Option<Self> {
        if envelope.namespace != CRI_NAMESPACE {
            return None;
        }
        let payload = &envelope.event.as_ref()?.value;
        match envelope.topic.as_str() {
            EXIT_TOPIC => {
                let exit = events::TaskExit::decode(payload.as_slice()).ok()?;
                // An exec process's exit is not the container's.
                if exit.id != exit.container_id {
                    return None;
                }
                let finished_at = exit
                    .exited_at
                    .map_or(0, |t| t.seconds * 1_000_000_000 + i64::from(t.nanos));
                Some(Self::Exit(Exit {
                    container_id: exit.container_id,
                    // CRI reports the exit status as the int32 it is.
                    exit_code: i32::try_from(exit.exit_status).unwrap_or(i32::MAX),
                    finished_at,
                }))
            }
            OOM_TOPIC => {
                let oom = events::TaskOom::decode(payload.as_slice()).ok()?;
                Some(Self::Oom {
                    container_id: oom.container_id,
                })
            }
            _ => None,
        }
    }
}

impl Runtime {
    /// containerd's task exit and OOM events in CRI's namespace, for as long as containerd keeps
    /// the stream open. Unimplemented on runtimes other than containerd.
    pub async fn task_events(&self) -> Result<tonic::Streaming<service::Envelope>, CriError> {
        let mut client = self.events.clone();
        let filters = [EXIT_TOPIC, OOM_TOPIC]
            .map(|topic| format!("namespace=={CRI_NAMESPACE:?},topic=={topic:?}"))
            .to_vec();
        client
            .subscribe(service::SubscribeRequest { filters })
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| CriError::Call {
                method: "containerd Events.Subscribe",
                status,
            })
    }
}

/// Exits seen in events that CRI may not have recorded yet, shared by the PLEG (which records
/// and prunes) and the runtime client the reconciler uses (which overlays them).
#[derive(Debug, Default, Clone)]
pub struct ExitRecords {
    inner: Arc<Mutex<Records>>,
}

#[derive(Debug, Default)]
struct Records {
    exits: HashMap<String, Exit>,
    oom: HashSet<String>,
}

impl ExitRecords {
    fn lock(&self) -> MutexGuard<'_, Records> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Remembers an event.
    pub fn record(&self, event: TaskEvent) {
        let mut records = self.lock();
        match event {
            TaskEvent::Exit(exit) => {
                records.exits.insert(exit.container_id.clone(), exit);
            }
            TaskEvent::Oom { container_id } => {
                records.oom.insert(container_id);
            }
        }
    }

    /// Forgets every container CRI no longer lists as running: CRI has recorded its exit (or
    /// it is gone), so the overlay has nothing left to add.
    pub fn retain_running(&self, running: &HashSet<&str>) {
        let mut records = self.lock();
        records.exits.retain(|id, _| running.contains(id.as_str()));
        records.oom.retain(|id| running.contains(id.as_str()));
    }

    /// Exits recorded now (for tests and metrics).
    #[must_use]
    pub fn len(&self) -> usize {
        self.lock().exits.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Marks listed containers that CRI still calls running but have exited.
    pub fn patch_list(&self, containers: &mut [v1::Container]) {
        let records = self.lock();
        if records.exits.is_empty() {
            return;
        }
        for container in containers.iter_mut().filter(|c| c.state == RUNNING) {
            if records.exits.contains_key(&container.id) {
                container.state = EXITED;
            }
        }
    }

    /// Completes a status CRI still calls running with the recorded exit.
    pub fn patch_status(&self, status: &mut v1::ContainerStatus) {
        if status.state != RUNNING {
            return;
        }
        let Some(exit) = self.get(&status.id) else {
            return;
        };
        status.state = EXITED;
        status.exit_code = exit.exit_code;
        status.finished_at = exit.finished_at;
        exit.reason.clone_into(&mut status.reason);
    }

    /// Container `id`'s recorded exit, as CRI will report it.
    #[must_use]
    pub fn get(&self, id: &str) -> Option<RecordedExit> {
        let records = self.lock();
        let exit = records.exits.get(id)?;
        let reason = if records.oom.contains(id) {
            "OOMKilled"
        } else if exit.exit_code == 0 {
            "Completed"
        } else {
            "Error"
        };
        Some(RecordedExit {
            exit_code: exit.exit_code,
            finished_at: exit.finished_at,
            reason,
        })
    }
}

/// An exit the events reported ahead of CRI: code, time and CRI's reason for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordedExit {
    pub exit_code: i32,
    pub finished_at: Nanos,
    pub reason: &'static str,
}

#[cfg(test)]
#[path = "exits_tests.rs"]
mod tests;
