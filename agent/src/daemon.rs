//! The agent's top level: wires the pod sources, the container runtime, the reconciler (PLEG,
//! manager, workers), the status store with its HTTP server, and the eBPF probes together, and
//! runs until cancelled. Stopping kernlet never stops pods: they belong to the
//! runtime, and a restarted kernlet adopts them from the runtime's labels.
use std::{
    net::{IpAddr, SocketAddr},
    path::Path,
    sync::Arc,
};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::{
    config::KubeletConfig,
    cri::{CriConfig, CriError, Runtime},
    ebpf::Probes,
    node,
    pod::source::{Snapshot, StaticPodSource},
    reconcile::{
        execute::Executor,
        manager,
        pleg::{self, Wakers},
        spec::{Allocatable, DnsSettings, NodeContext, ResolvConf},
        worker::StatusSink,
    },
    server::{self, PodsProvider},
    status::store::StatusStore,
};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Runtime(#[from] CriError),
    #[error(transparent)]
    Server(#[from] server::ServerError),
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

    let proc_root = Path::new("/proc");
    let host_ips = node::host_ips(&config.node_ips, proc_root);
    let executor = Arc::new(Executor::new(
        runtime.clone(),
        node_context(&config, host_ips.clone(), proc_root),
        resolv_conf(&config),
        Box::new(|_| None),
    ));
    let store = Arc::new(StatusStore::new(version.runtime_name.clone(), host_ips));
    let wakers = Wakers::default();

    let mut tasks = tokio::task::JoinSet::new();
    if config.enable_server {
        let addr = SocketAddr::new(config.address, config.port);
        let listener = server::bind(addr).await?;
        tracing::info!(%addr, "serving /pods and /healthz");
        let pods: Arc<dyn PodsProvider> = store.clone();
        let cancel = cancel.clone();
        tasks.spawn(async move {
            if let Err(error) = server::serve(listener, pods, cancel).await {
                tracing::error!(%error, "http server stopped");
            }
        });
    }
    tasks.spawn(pleg::run(runtime.clone(), wakers.clone(), cancel.clone()));
    if let Some(rotation) = crate::logs::LogRotation::from_config(&config) {
        tasks.spawn(crate::logs::run(runtime.clone(), rotation, cancel.clone()));
    }
    let (tx, rx) = watch::channel(Snapshot::default());
    if let Some(path) = config.static_pod_path.clone() {
        let source = StaticPodSource::new(path, config.node_name.clone());
        tasks.spawn(source.run(tx, cancel.clone()));
    } else {
        tracing::info!("no staticPodPath and no API server: nothing to run");
        drop(tx);
    }
    let status: Arc<dyn StatusSink> = store;
    tasks.spawn(manager::run(rx, executor, status, wakers, cancel.clone()));

    cancel.cancelled().await;
    while tasks.join_next().await.is_some() {}
    drop(probes);
    tracing::info!("kernlet stopped; pods keep running in the runtime");
    Ok(())
}

/// What the CRI request builders need to know of this node.
fn node_context(config: &KubeletConfig, host_ips: Vec<IpAddr>, proc_root: &Path) -> NodeContext {
    let capacity = node::capacity(proc_root);
    let mut node = NodeContext::new(config.node_name.clone(), host_ips, config.root_dir.clone());
    node.pod_logs_dir.clone_from(&config.pod_logs_dir);
    node.dns = DnsSettings {
        cluster_dns: config.cluster_dns.clone(),
        cluster_domain: config.cluster_domain.clone(),
        resolv_conf: config.resolv_conf.clone(),
    };
    node.memory_capacity_bytes = capacity.memory_bytes;
    node.allocatable = Allocatable {
        cpu_millis: capacity.cpu_millis,
        memory_bytes: i64::try_from(capacity.memory_bytes).unwrap_or(i64::MAX),
        ephemeral_storage_bytes: 0,
    };
    node.cpu_cfs_quota = config.cpu_cfs_quota;
    node.cgroup_v2 = node::cgroup_unified(Path::new("/sys/fs/cgroup"));
    if config.feature_gates.custom_cpu_cfs_quota_period {
        node.cpu_cfs_quota_period_us =
            i64::try_from(config.cpu_cfs_quota_period.as_micros()).unwrap_or(i64::MAX);
    }
    node
}

/// The host resolver config pods inherit; a broken file is logged and treated as empty, as
/// upstream does.
fn resolv_conf(config: &KubeletConfig) -> ResolvConf {
    match &config.resolv_conf {
        Some(path) => ResolvConf::load(path).unwrap_or_else(|error| {
            tracing::warn!(%error, "cannot read resolvConf; pods get no host DNS settings");
            ResolvConf::default()
        }),
        None => ResolvConf::default(),
    }
}
