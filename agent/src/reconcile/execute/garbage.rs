//! Removing what a running pod no longer needs (the plan's [`Garbage`]): dead container
//! instances past the newest and old sandboxes. As upstream's container GC, which runs beside the
//! pod sync, a removal that fails holds up nothing: it is logged and not tried again before
//! [`GARBAGE_RETRY`] (upstream's `ContainerGCPeriod`). containerd 1.6 can refuse a removal for
//! ever: a container whose start timed out reports `Exited` while its task runs, and
//! `RemoveContainer` then fails with `cannot delete running task`.
use std::time::Duration;

use kernlet_cri::v1;
use tokio_util::sync::CancellationToken;

use super::Executor;
use crate::clock::Nanos;
use crate::reconcile::{backoff::Memory, plan::Garbage};

/// How long a removal that failed is left alone.
pub const GARBAGE_RETRY: Duration = Duration::from_mins(1);

impl Executor {
    /// Removes `garbage` in order; each failure is logged and remembered in `memory`.
    pub(super) async fn collect_garbage(
        &self,
        uid: &str,
        garbage: &[Garbage],
        memory: &mut Memory,
        cancel: &CancellationToken,
    ) {
        for item in garbage {
            if cancel.is_cancelled() {
                return;
            }
            let removed = match item {
                Garbage::Container(id) => {
                    let request = v1::RemoveContainerRequest {
                        container_id: id.clone(),
                    };
                    let call = self.runtime.remove_container(request);
                    self.tolerate_missing(uid, "RemoveContainer", call).await
                }
                Garbage::Sandbox(id) => {
                    let request = v1::RemovePodSandboxRequest {
                        pod_sandbox_id: id.clone(),
                    };
                    let call = self.runtime.remove_pod_sandbox(request);
                    self.tolerate_missing(uid, "RemovePodSandbox", call).await
                }
            };
            if let Err(error) = removed {
                let retry = Nanos::try_from(GARBAGE_RETRY.as_nanos()).unwrap_or(Nanos::MAX);
                let at = self.clock.wall_nanos().saturating_add(retry);
                tracing::warn!(%error, retry_in = ?GARBAGE_RETRY, "removing an unneeded container or sandbox failed");
                memory.garbage_retry.insert(item.id().to_owned(), at);
            }
        }
    }
}

/// Leaves out of `garbage` what failed to be removed less than [`GARBAGE_RETRY`] ago, and forgets
/// the failures of objects that are gone or no longer garbage.
pub fn defer_failed(garbage: &mut Vec<Garbage>, memory: &mut Memory, now: Nanos) {
    memory
        .garbage_retry
        .retain(|id, _| garbage.iter().any(|g| g.id() == id));
    garbage.retain(|g| memory.garbage_retry.get(g.id()).is_none_or(|&at| at <= now));
}
