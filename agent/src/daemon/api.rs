//! Cluster mode's wiring (`--kubeconfig`): the API credentials and clients made before
//! anything that records events or answers reviews, then the node's registration and Lease,
//! the API pod source, mirror pods, the status writer and the certificate managers, each a
//! supervised task.
use std::{net::IpAddr, path::PathBuf, sync::Arc};

use super::{DaemonError, Supervisor};
use crate::event::Recorder;
use crate::{
    cluster, config::KubeletConfig, cri::Runtime, pod::PodStore, resources::Amounts, server,
    stats::metrics::Metrics, status::store::StatusStore,
};

/// Cluster mode's side of the API server, made before what records events or answers reviews.
pub(super) struct ApiSide {
    client: kube::Client,
    /// What the clients authenticate with (renewed by `rotateCertificates`).
    credentials: cluster::credentials::Credentials,
    pub(super) reviewers: server::Reviewers,
    pub(super) events: Recorder,
    event_writer: cluster::events::EventWriter,
}

/// The API client of `--kubeconfig`, the reviews it answers and the node's event sink; none
/// when standalone.
pub(super) async fn api_client(
    config: &KubeletConfig,
    metrics: &Arc<Metrics>,
) -> Result<Option<ApiSide>, DaemonError> {
    let Some(path) = &config.kubeconfig else {
        return Ok(None);
    };
    if let Some(bootstrap) = &config.bootstrap_kubeconfig {
        let (dir, name) = (&config.cert_dir, &config.node_name);
        let rate = config.cluster.api_rate.client();
        cluster::bootstrap::ensure_credentials(path, bootstrap, dir, name, rate).await?;
    }
    let pair = cluster::rotation::starting_pair(config);
    let credentials = cluster::credentials::Credentials::load(path, pair).await?;
    let client = credentials.client(config.cluster.api_rate.client())?;
    let reviewer = Arc::new(cluster::reviews::ApiReviewer {
        client: client.clone(),
    });
    let reviewers = server::Reviewers {
        tokens: reviewer.clone(),
        access: reviewer,
    };
    // Events have a client of their own, limited by eventRecordQPS, as upstream's.
    let event_client = credentials.client(config.cluster.event_rate)?;
    let (sink, event_writer) =
        cluster::events::channel(event_client, config.node_name.clone(), metrics.clone());
    Ok(Some(ApiSide {
        client,
        credentials,
        reviewers,
        events: Recorder::new(Arc::new(sink)),
        event_writer,
    }))
}

/// Cluster mode (nothing standalone): the node's registration, status and Lease; the API pod
/// source feeding `pods`; the status writer reading `statuses`.
pub(super) fn spawn_cluster(
    supervisor: &mut Supervisor,
    config: &KubeletConfig,
    api: Option<ApiSide>,
    (runtime, metrics, pods, statuses): (
        &Runtime,
        &Arc<Metrics>,
        &Arc<PodStore>,
        &Arc<StatusStore>,
    ),
    (host_ips, capacity): (Vec<IpAddr>, &Amounts),
) {
    let Some(ApiSide {
        client,
        credentials,
        events,
        event_writer,
        ..
    }) = api
    else {
        return;
    };
    let event_writer = Arc::new(event_writer);
    let cancel = supervisor.cancel.clone();
    supervisor.spawn("events", move || {
        let (writer, cancel) = (event_writer.clone(), cancel.clone());
        async move { writer.run(&cancel).await }
    });
    let certificates =
        cluster::rotation::managers(config, &credentials, &client, &host_ips, metrics);
    for manager in certificates {
        let (manager, cancel) = (Arc::new(manager), supervisor.cancel.clone());
        supervisor.spawn(manager.task_name(), move || {
            let (manager, cancel) = (manager.clone(), cancel.clone());
            async move { manager.run(&cancel).await }
        });
    }
    let host = cluster::facts::HostRoot(PathBuf::from("/"));
    let mut facts = cluster::facts::gather(config, &host, host_ips, capacity);
    let version = runtime.version();
    facts.runtime_version = format!("{}://{}", version.runtime_name, version.runtime_version);
    let mirrors = Arc::new(cluster::mirror::MirrorPods::default());
    let source = Arc::new(cluster::pods::ApiPods {
        client: client.clone(),
        node_name: config.node_name.clone(),
        store: pods.clone(),
        metrics: metrics.clone(),
        fallback_node: cluster::node::registered_node(&facts, &config.cluster),
        mirrors: mirrors.clone(),
        events: events.clone(),
    });
    let keeper = Arc::new(cluster::mirror::MirrorKeeper {
        client: client.clone(),
        node_name: config.node_name.clone(),
        pods: pods.clone(),
        mirrors: mirrors.clone(),
        metrics: metrics.clone(),
    });
    let reporter = Arc::new(cluster::heartbeat::NodeReporter {
        client: client.clone(),
        settings: config.cluster.clone(),
        facts,
        runtime: runtime.clone(),
        metrics: metrics.clone(),
        update_every: config.node_status_update_frequency,
        report_every: config.node_status_report_frequency,
        events,
    });
    let lease = Arc::new(cluster::lease::LeaseKeeper {
        client: client.clone(),
        node_name: config.node_name.clone(),
        duration: config.cluster.node_lease_duration,
        metrics: metrics.clone(),
    });
    let writer = Arc::new(cluster::status::StatusWriter {
        client,
        pods: pods.clone(),
        statuses: statuses.clone(),
        metrics: metrics.clone(),
        mirrors,
    });
    pods.register(cluster::API_SOURCE);
    let cancel = supervisor.cancel.clone();
    supervisor.spawn("node-status", move || {
        let (reporter, lease, cancel) = (reporter.clone(), lease.clone(), cancel.clone());
        async move { cluster::heartbeat::keep_node(&reporter, &lease, &cancel).await }
    });
    let cancel = supervisor.cancel.clone();
    supervisor.spawn("api-pod-source", move || {
        let (source, cancel) = (source.clone(), cancel.clone());
        async move { source.follow(cancel).await }
    });
    let cancel = supervisor.cancel.clone();
    supervisor.spawn("mirror-pods", move || {
        let (keeper, cancel) = (keeper.clone(), cancel.clone());
        async move { keeper.run(&cancel).await }
    });
    let cancel = supervisor.cancel.clone();
    supervisor.spawn("pod-status", move || {
        let (writer, cancel) = (writer.clone(), cancel.clone());
        async move { writer.run(&cancel).await }
    });
}
