//! The agent's top level: wires the pod sources, the container runtime, the reconciler (PLEG,
//! manager, workers), the status store with its HTTP server, and the eBPF probes together, and
//! runs until cancelled. Stopping kernlet never stops pods: they belong to the
//! runtime, and a restarted kernlet adopts them from the runtime's labels.
use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    sync::{Arc, PoisonError},
};

mod api;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::{
    cgroup::{self, CgroupError, CgroupManager, Cgroupfs, NodeSettings, Setup},
    config::{KubeletConfig, MetricKinds},
    cri::{CriConfig, CriError, Runtime, exits::ExitRecords},
    ebpf::{ProbeOptions, Probes},
    node,
    pod::{
        PodStore,
        source::{Snapshot, StaticPodSource},
        store::follow_snapshots,
    },
    probe::ProbeMetrics,
    reconcile::{
        execute::Executor,
        exits::ExitCounts,
        manager,
        pleg::{self, Wakers},
        spec::{DnsSettings, NodeContext, ResolvConf},
    },
    resources::Amounts,
    server::{self, HealthChecks, Providers},
    stats::{
        collect::{Collector, CollectorConfig},
        metrics::Metrics,
        store::StatsStore,
    },
    status::store::StatusStore,
    supervise::{Faults, Heartbeat, TaskRestarts, supervise},
};

/// Where the cgroup hierarchy is mounted.
const CGROUP_MOUNT: &str = "/sys/fs/cgroup";

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error(transparent)]
    Runtime(#[from] CriError),
    #[error(transparent)]
    Server(#[from] server::ServerError),
    #[error(transparent)]
    ServerSetup(#[from] server::SetupError),
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
    #[error(transparent)]
    Bootstrap(#[from] crate::cluster::bootstrap::BootstrapError),
}

/// Runs the agent until `cancel` fires.
pub async fn run(config: KubeletConfig, cancel: CancellationToken) -> Result<(), DaemonError> {
    tracing::info!(node = %config.node_name, "kernlet starting");
    let proc_root = Path::new("/proc");
    let host_ips = node::host_ips(&config.node_ips, proc_root);
    // Cluster mode's client answers the port's webhook reviews; without one they refuse to start.
    let metrics = Arc::new(Metrics::new());
    let api = api::api_client(&config, &metrics).await?;
    let endpoints = server::endpoints(&config, &host_ips, api.as_ref().map(|a| &a.reviewers))?;
    let capacity = node_capacity(proc_root);
    let cgroup_settings = cgroup::node_settings(&config, &capacity, &kernel_release(proc_root));
    let memory_qos = config.cgroups_per_qos && cgroup_settings.pods.memory_qos;
    let cgroups = pod_cgroups(&config, cgroup_settings)?;
    let mount = v2_mount();
    let probes = load_probes(&mount, cgroups.as_deref(), &metrics);

    let Some(runtime) = connect_runtime(&config, &metrics, &cancel).await? else {
        return Ok(());
    };
    let version = runtime.version();

    let mut node = node_context(&config, host_ips.clone(), &capacity);
    node.memory_qos = memory_qos;
    // The reconciler's client sees exits from containerd's events before CRI records them.
    let exit_records = ExitRecords::default();
    let probe_metrics = Arc::new(ProbeMetrics::new());
    let executor = Arc::new(
        Executor::new(
            Arc::new(runtime.clone().with_exit_records(exit_records.clone())),
            node,
            resolv_conf(&config),
            cgroups.clone(),
        )
        .with_probe_metrics(probe_metrics.clone())
        .with_events(api.as_ref().map(|a| a.events.clone()).unwrap_or_default()),
    );
    let exit_metrics = metrics.clone();
    let store = Arc::new(
        StatusStore::new(version.runtime_name.clone(), host_ips.clone())
            .with_exit_observer(move |took| exit_metrics.observe_exit_to_status(took)),
    );
    let wakers = Wakers::default();

    let mut supervisor = Supervisor::new(&metrics, &cancel);
    let restarts = supervisor.restarts.clone();

    let stats = spawn_stats(
        &mut supervisor,
        &config,
        (store.clone(), runtime.clone(), cgroups),
        (probes, mount, metrics.clone()),
        &cancel,
    );
    let relisted = Arc::new(Heartbeat::default());
    let providers = Providers {
        pods: store.clone(),
        stats,
        metrics: metrics.clone(),
        probes: probe_metrics.clone(),
        metric_kinds: MetricKinds::ALL.without(config.disabled_metrics),
        runtime: Some(runtime.clone()),
        health: HealthChecks::kubelet(relisted.clone(), config.sync_frequency),
        configz: Arc::new(crate::config::configz(&config)),
        pod_list: crate::server::PodListCache::default(),
    };
    for planned in endpoints {
        serve_endpoint(&mut supervisor, planned, providers.clone(), &cancel).await?;
    }
    let faults = Arc::new(faults());
    spawn_pleg(
        &mut supervisor,
        &runtime,
        &wakers,
        &metrics,
        exit_records,
        (!faults.no_task_events(), relisted),
    );
    if let Some(rotation) = crate::logs::LogRotation::from_config(&config) {
        let (runtime, cancel) = (runtime.clone(), cancel.clone());
        supervisor.spawn("log-rotation", move || {
            crate::logs::run(runtime.clone(), rotation, cancel.clone())
        });
    }
    let pods = Arc::new(PodStore::default());
    spawn_static_pods(&mut supervisor, &config, &pods, &metrics, &cancel);
    let node_facts = (host_ips, &capacity);
    let cluster_parts = (&runtime, &metrics, &pods, &store);
    api::spawn_cluster(&mut supervisor, &config, api, cluster_parts, node_facts);
    let manager = Arc::new(manager::Context {
        executor,
        status: store,
        wakers,
        restarts,
        faults,
    });
    supervisor.spawn("manager", {
        let cancel = cancel.clone();
        move || manager::run(pods.clone(), manager.clone(), cancel.clone())
    });

    cancel.cancelled().await;
    while supervisor.tasks.join_next().await.is_some() {}
    tracing::info!("kernlet stopped; pods keep running in the runtime");
    Ok(())
}

/// The name the static pod source feeds the pod store under (upstream's `kubetypes.FileSource`).
const FILE_SOURCE: &str = "file";

/// The daemon's long-lived tasks, each restarted when it fails (see [`crate::supervise`]).
struct Supervisor {
    restarts: Arc<TaskRestarts>,
    cancel: CancellationToken,
    tasks: tokio::task::JoinSet<()>,
}

impl Supervisor {
    /// No tasks yet; restarts are counted into `metrics`.
    fn new(metrics: &Metrics, cancel: &CancellationToken) -> Self {
        let restarts = Arc::new(TaskRestarts::default());
        metrics.track_task_restarts(restarts.clone());
        Self {
            restarts,
            cancel: cancel.clone(),
            tasks: tokio::task::JoinSet::new(),
        }
    }

    fn spawn<F, Fut>(&mut self, task: &'static str, make: F)
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        self.tasks.spawn(supervise(
            task,
            self.restarts.clone(),
            self.cancel.clone(),
            make,
        ));
    }
}

/// The container runtime, its calls timed into `metrics`; `None` when cancelled first.
async fn connect_runtime(
    config: &KubeletConfig,
    metrics: &Arc<Metrics>,
    cancel: &CancellationToken,
) -> Result<Option<Runtime>, DaemonError> {
    let cri = CriConfig {
        endpoint: config.container_runtime_endpoint.clone(),
        image_endpoint: config.image_service_endpoint.clone(),
        request_timeout: config.runtime_request_timeout,
    };
    let runtime = match Runtime::connect_with_backoff(&cri, cancel).await {
        Ok(runtime) => runtime,
        Err(CriError::Cancelled { .. }) => return Ok(None),
        Err(error) => return Err(error.into()),
    };
    let version = runtime.version();
    tracing::info!(runtime = %version.runtime_name, version = %version.runtime_version,
        api = %version.runtime_api_version, "container runtime connected");
    metrics.track_admission(runtime.gate().clone());
    let observed = metrics.clone();
    Ok(Some(runtime.with_observer(Arc::new(
        move |method, took| {
            observed.observe_cri_call(method, took);
        },
    ))))
}

/// The stats collector; its store is what the server serves.
fn spawn_stats(
    supervisor: &mut Supervisor,
    config: &KubeletConfig,
    (store, runtime, cgroups): (Arc<StatusStore>, Runtime, Option<Arc<CgroupManager>>),
    (probes, mount, metrics): (Option<Probes>, PathBuf, Arc<Metrics>),
    cancel: &CancellationToken,
) -> Arc<StatsStore> {
    let stats = Arc::new(StatsStore::default());
    let collector = Collector::new(
        CollectorConfig {
            interval: config.housekeeping_interval,
            mount,
            proc_root: PathBuf::from("/proc"),
            node_name: config.node_name.clone(),
            root_dir: config.root_dir.clone(),
            pod_logs_dir: config.pod_logs_dir.clone(),
        },
        store,
        runtime,
        cgroups,
        probes,
        metrics,
        stats.clone(),
    );
    let collector = Arc::new(tokio::sync::Mutex::new(collector));
    let cancel = cancel.clone();
    supervisor.spawn("stats", move || {
        let (collector, cancel) = (collector.clone(), cancel.clone());
        async move { collector.lock().await.run(cancel).await }
    });
    stats
}

/// The PLEG: container events, exits, and the relist safety net.
fn spawn_pleg(
    supervisor: &mut Supervisor,
    runtime: &Runtime,
    wakers: &Wakers,
    metrics: &Metrics,
    exit_records: ExitRecords,
    (task_events, relisted): (bool, Arc<Heartbeat>),
) {
    let exit_counts = Arc::new(ExitCounts::default());
    metrics.track_exit_watches(exit_counts.clone());
    let (runtime, wakers, cancel) = (runtime.clone(), wakers.clone(), supervisor.cancel.clone());
    supervisor.spawn("pleg", move || {
        let (runtime, wakers) = (runtime.clone(), wakers.clone());
        let exits = pleg::ExitSources {
            counts: exit_counts.clone(),
            records: exit_records.clone(),
            task_events,
            relisted: relisted.clone(),
        };
        pleg::run(runtime, wakers, exits, cancel.clone())
    });
}

/// The static pod source (`staticPodPath`), feeding `pods`.
fn spawn_static_pods(
    supervisor: &mut Supervisor,
    config: &KubeletConfig,
    pods: &Arc<PodStore>,
    metrics: &Metrics,
    cancel: &CancellationToken,
) {
    let Some(path) = config.static_pod_path.clone() else {
        if config.kubeconfig.is_none() {
            tracing::info!("no staticPodPath and no API server: nothing to run");
        }
        return;
    };
    pods.register(FILE_SOURCE);
    let source = StaticPodSource::new(path, config.node_name.clone());
    metrics.track_manifest_errors(source.manifest_errors_counter());
    let (pods, cancel) = (pods.clone(), cancel.clone());
    supervisor.spawn("static-pod-source", move || {
        let (source, pods, cancel) = (source.clone(), pods.clone(), cancel.clone());
        async move {
            let (tx, rx) = watch::channel(Snapshot::default());
            tokio::join!(
                source.run(tx, cancel.clone()),
                follow_snapshots(rx, pods, FILE_SOURCE, cancel),
            );
        }
    });
}

/// Binds `planned` now, so that a port in use stops kernlet at once, and serves it under
/// supervision; a restarted server binds again.
async fn serve_endpoint(
    supervisor: &mut Supervisor,
    planned: server::Planned,
    providers: Providers,
    cancel: &CancellationToken,
) -> Result<(), DaemonError> {
    let server::Planned {
        addr,
        endpoint,
        name,
    } = planned;
    let first = Arc::new(std::sync::Mutex::new(Some(server::bind(addr).await?)));
    let tls = if endpoint.tls.is_some() {
        "https"
    } else {
        "http"
    };
    tracing::info!(%addr, endpoint = name, "serving {tls}");
    let endpoint = Arc::new(endpoint);
    let cancel = cancel.clone();
    supervisor.spawn(name, move || {
        let (first, endpoint) = (first.clone(), endpoint.clone());
        let (providers, cancel) = (providers.clone(), cancel.clone());
        async move {
            let taken = first.lock().unwrap_or_else(PoisonError::into_inner).take();
            let listener = match taken {
                Some(listener) => listener,
                None => match server::bind(addr).await {
                    Ok(listener) => listener,
                    Err(error) => {
                        tracing::error!(%error, "http server cannot listen again");
                        return;
                    }
                },
            };
            if let Err(error) = server::serve(listener, endpoint, providers, cancel).await {
                tracing::error!(%error, "http server stopped");
            }
        }
    });
    Ok(())
}

/// The test-only faults of `KERNLET_FAULT_INJECT` (none when unset).
fn faults() -> Faults {
    std::env::var("KERNLET_FAULT_INJECT")
        .map(|spec| Faults::parse(&spec))
        .unwrap_or_default()
}

/// The cgroup v2 hierarchy: `/sys/fs/cgroup`, or its `unified` part on a hybrid host.
fn v2_mount() -> PathBuf {
    match Setup::detect(Path::new(CGROUP_MOUNT)) {
        Setup::Hybrid { unified } => unified,
        Setup::Unified | Setup::Legacy => PathBuf::from(CGROUP_MOUNT),
    }
}

/// Loads the eBPF probes, with socket accounting attached once where the pods' cgroups are
/// (`kubepods`, else the v2 root); a kernel that refuses them all leaves stats to cgroupfs.
fn load_probes(mount: &Path, cgroups: Option<&CgroupManager>, metrics: &Metrics) -> Option<Probes> {
    let skb_cgroup = match cgroups {
        Some(cgroups) => cgroups.fs().dir(cgroups.kubepods()),
        None => mount.to_owned(),
    };
    let options = ProbeOptions {
        skb_cgroup: Some(skb_cgroup),
        run_time_stats: true,
    };
    match Probes::load_with(&options) {
        Ok(probes) => {
            for program in probes.programs() {
                metrics.set_program_loaded(program.name, program.loaded());
                match &program.status {
                    Ok(()) => tracing::info!(program = program.name, "ebpf program loaded"),
                    Err(reason) => {
                        tracing::warn!(program = program.name, %reason, "ebpf program skipped");
                    }
                }
            }
            Some(probes)
        }
        Err(error) => {
            tracing::warn!(%error, "ebpf probes unavailable; stats come from cgroupfs alone");
            None
        }
    }
}

/// CPU, memory and `pid_max` of this node.
fn node_capacity(proc_root: &Path) -> Amounts {
    let pid_max = std::fs::read_to_string(proc_root.join("sys/kernel/pid_max"))
        .ok()
        .and_then(|text| text.trim().parse().ok());
    Amounts {
        pids: pid_max,
        ..node::capacity(proc_root)
    }
}

fn kernel_release(proc_root: &Path) -> String {
    std::fs::read_to_string(proc_root.join("sys/kernel/osrelease"))
        .map(|text| text.trim().to_owned())
        .unwrap_or_default()
}

/// The cgroup manager, unless `cgroupsPerQOS` is off.
fn pod_cgroups(
    config: &KubeletConfig,
    settings: NodeSettings,
) -> Result<Option<Arc<CgroupManager>>, CgroupError> {
    if !config.cgroups_per_qos {
        tracing::info!("cgroupsPerQOS is false: the runtime places pods, kernlet enforces nothing");
        return Ok(None);
    }
    Ok(Some(Arc::new(cgroup_manager(settings)?)))
}

/// Checks that the host can enforce (cgroup v2 with the controllers kernlet writes), then builds
/// the node-level hierarchy: `kubepods` with node allocatable, the `QoS` tiers, reserved cgroups.
fn cgroup_manager(settings: NodeSettings) -> Result<CgroupManager, CgroupError> {
    let mount = Path::new(CGROUP_MOUNT);
    CgroupManager::check(mount)?;
    let manager = CgroupManager::new(Cgroupfs::new(mount), settings);
    manager.init()?;
    Ok(manager)
}

/// What the CRI request builders need to know of this node.
fn node_context(config: &KubeletConfig, host_ips: Vec<IpAddr>, capacity: &Amounts) -> NodeContext {
    let allocatable = cgroup::allocatable(config, capacity);
    let mut node = NodeContext::new(config.node_name.clone(), host_ips, config.root_dir.clone());
    node.pod_logs_dir.clone_from(&config.pod_logs_dir);
    node.dns = DnsSettings {
        cluster_dns: config.cluster_dns.clone(),
        cluster_domain: config.cluster_domain.clone(),
        resolv_conf: config.resolv_conf.clone(),
    };
    node.memory_capacity_bytes = capacity
        .memory_bytes
        .and_then(|m| u64::try_from(m).ok())
        .unwrap_or(0);
    node.allocatable = allocatable;
    node.memory_throttling_factor = config.memory_throttling_factor;
    node.cpu_cfs_quota = config.cpu_cfs_quota;
    node.cgroup_v2 = node::cgroup_unified(Path::new(CGROUP_MOUNT));
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
