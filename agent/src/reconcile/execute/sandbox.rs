//! The pod's sandbox: its cgroup (with limits applied before the sandbox exists), its volumes,
//! `RunPodSandbox`, and the config later containers are created against.
use k8s_openapi::api::core::v1::Pod;
use kernlet_cri::v1;

use super::{Current, ExecuteError, Executor, prepare, spec_error};
use crate::reconcile::{
    spec,
    state::{PodRuntime, Waiting},
};

impl Executor {
    /// Creates the pod's cgroup and applies its limits before its sandbox exists; returns the
    /// sandbox's cgroup parent.
    async fn ensure_pod_cgroup(
        &self,
        uid: &str,
        pod: &Pod,
    ) -> Result<Option<String>, ExecuteError> {
        let Some(cgroups) = self.cgroups.clone() else {
            return Ok(None);
        };
        let pod = pod.clone();
        let created = tokio::task::spawn_blocking(move || cgroups.ensure_pod(&pod))
            .await
            .map_err(|e| spec_error(uid, &format!("pod cgroup task failed: {e}")))?;
        created
            .map(Some)
            .map_err(|e| spec_error(uid, &format!("failed to ensure the pod cgroup: {e}")))
    }

    pub(super) async fn create_sandbox(
        &self,
        uid: &str,
        pod: &Pod,
        attempt: u32,
    ) -> Result<Current, ExecuteError> {
        // Volumes first, as upstream waits for them before the sandbox: a failure is the pod's
        // FailedMount event (its containers wait in ContainerCreating meanwhile).
        let prepared = match spec::plan_volumes(pod, &self.node) {
            Ok(volumes) => prepare(volumes).await,
            Err(error) => Err(Waiting {
                reason: error.reason().to_owned(),
                message: error.to_string(),
            }),
        };
        if let Err(waiting) = prepared {
            self.failed_mount(pod, &waiting);
            return Err(spec_error(uid, &waiting.message));
        }

        let parent = self.ensure_pod_cgroup(uid, pod).await?;
        let config =
            spec::sandbox_config(pod, attempt, &self.node, &self.resolv, parent.as_deref())
                .map_err(|e| spec_error(uid, &e.to_string()))?;
        let request = v1::RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: String::new(),
        };
        let id = self
            .runtime
            .run_pod_sandbox(request)
            .await
            .map_err(|source| ExecuteError::Runtime {
                uid: uid.into(),
                action: "RunPodSandbox",
                source,
            })?
            .pod_sandbox_id;
        let request = v1::PodSandboxStatusRequest {
            pod_sandbox_id: id.clone(),
            verbose: false,
        };
        let ip = self
            .runtime
            .pod_sandbox_status(request)
            .await
            .ok()
            .and_then(|r| r.status)
            .and_then(|s| s.network)
            .map(|n| n.ip)
            .filter(|ip| !ip.is_empty());
        tracing::info!(%uid, sandbox = %id, attempt, ?ip, "pod sandbox created");
        Ok(Current { id, config, ip })
    }

    /// The newest ready sandbox of the pod, with the config it was created from.
    pub(super) fn current_sandbox(
        &self,
        uid: &str,
        pod: &Pod,
        observed: &PodRuntime,
    ) -> Result<Current, ExecuteError> {
        let sandbox = observed
            .newest_sandbox()
            .filter(|s| s.ready)
            .ok_or_else(|| spec_error(uid, "no ready sandbox to start containers in"))?;
        let parent = self.cgroups.as_ref().map(|c| c.pod_cgroup(pod));
        let config = spec::sandbox_config(
            pod,
            sandbox.attempt,
            &self.node,
            &self.resolv,
            parent.as_deref(),
        )
        .map_err(|e| spec_error(uid, &e.to_string()))?;
        Ok(Current {
            id: sandbox.id.clone(),
            config,
            ip: sandbox.ip.clone(),
        })
    }
}
