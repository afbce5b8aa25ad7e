//! The agent's top level: wires the pod sources, the container runtime and the eBPF probes
//! together and runs until cancelled. Stopping kernlet never stops pods: they belong to the
//! runtime, and a restarted kernlet adopts them from the runtime's labels.
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::{
    config::KubeletConfig,
    cri::{CriConfig, CriError, Runtime},
    ebpf::Probes,
    pod::source::{Snapshot, StaticPodSource},
};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Runtime(#[from] CriError),
}

/// Runs the agent until `cancel` fires.
pub async fn run(config: KubeletConfig, cancel: CancellationToken) -> Result<(), DaemonError> {
    tracing::info!(node = %config.node_name, "kernlet starting");
    let probes = match Probes::load() {
        Ok(probes) => {
            for program in probes.programs() {
                tracing::info!(
                    program = program.name,
                    loaded = program.loaded(),
                    "ebpf program"
                );
            }
            Some(probes)
        }
        Err(error) => {
            tracing::warn!(%error, "ebpf probes unavailable; stats fall back to cgroupfs");
            None
        }
    };

    let cri = CriConfig {
        endpoint: config.container_runtime_endpoint.clone(),
        image_endpoint: config.image_service_endpoint.clone(),
        request_timeout: config.runtime_request_timeout,
    };
    let runtime = match Runtime::connect_with_backoff(&cri, &cancel).await {
        Ok(runtime) => runtime,
        Err(CriError::Cancelled { .. }) => return Ok(()),
        Err(error) => return Err(error.into()),
    };
    let version = runtime.version();
    tracing::info!(runtime = %version.runtime_name, version = %version.runtime_version,
        api = %version.runtime_api_version, "container runtime connected");

    let mut tasks = tokio::task::JoinSet::new();
    if let Some(path) = config.static_pod_path.clone() {
        let source = StaticPodSource::new(path, config.node_name.clone());
        let (tx, rx) = watch::channel(Snapshot::default());
        tasks.spawn(source.run(tx, cancel.clone()));
        tasks.spawn(log_snapshots(rx, cancel.clone()));
    } else {
        tracing::info!("no staticPodPath and no API server: nothing to run");
    }

    cancel.cancelled().await;
    while tasks.join_next().await.is_some() {}
    drop(probes);
    tracing::info!("kernlet stopped; pods keep running in the runtime");
    Ok(())
}

/// Logs each new set of desired static pods (the reconciler consumes the same channel).
async fn log_snapshots(mut rx: watch::Receiver<Snapshot>, cancel: CancellationToken) {
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            changed = rx.changed() => if changed.is_err() { return },
        }
        let snapshot = rx.borrow_and_update().clone();
        for pod in &snapshot.pods {
            let meta = &pod.metadata;
            tracing::info!(
                pod = meta.name.as_deref().unwrap_or_default(),
                namespace = meta.namespace.as_deref().unwrap_or_default(),
                uid = meta.uid.as_deref().unwrap_or_default(),
                "desired static pod"
            );
        }
        for error in &snapshot.errors {
            tracing::warn!(%error, "static pod manifest rejected");
        }
    }
}
