//! The API server's pods for this node (`spec.nodeName=<node>`), fed into the pod store as source
//! `api` beside the static pods.
//!
//! Upstream: `pkg/kubelet/config/apiserver.go` (a list-watch of pods with that field selector)
//! merged by `config.go`, which stamps `kubernetes.io/config.source: api`. Every (re)list — the
//! first one, and each after a watch expired (410 Gone) or broke — replaces the source's pods
//! whole (`PodStore::set`), so a pod deleted while the watch was down is not kept and none is
//! counted twice; between lists, changes are applied one by one. The source counts as seen
//! after its first complete list, so orphans are not judged before. Watch errors are retried
//! with backoff (`kube`'s default: 800 ms doubling to 30 s, with jitter) and logged.

use std::sync::Arc;

use futures_util::TryStreamExt as _;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher::{self, Event};
use tokio_util::sync::CancellationToken;

use crate::pod::PodStore;
use crate::pod::defaults::CONFIG_SOURCE_ANNOTATION;
use crate::stats::metrics::Metrics;

/// The pod store's name for this source (upstream's `kubetypes.ApiserverSource`).
pub const API_SOURCE: &str = "api";

/// Follows the pods bound to `node_name` into `store` until cancelled.
pub async fn follow(
    client: kube::Client,
    node_name: String,
    store: Arc<PodStore>,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
) {
    let api: Api<Pod> = Api::all(client);
    let config = watcher::Config::default().fields(&format!("spec.nodeName={node_name}"));
    let events = watcher::watcher(api, config).default_backoff();
    futures_util::pin_mut!(events);
    // The pods of a list under way, until its end replaces the source's pods.
    let mut listing: Vec<Pod> = Vec::new();
    loop {
        let event = tokio::select! {
            () = cancel.cancelled() => return,
            event = events.try_next() => event,
        };
        let event = match event {
            Ok(Some(event)) => event,
            Ok(None) => return,
            Err(error) => {
                metrics.count_api_request("pods-watch", false);
                tracing::warn!(node = %node_name, %error, "pod watch failed; retrying");
                continue;
            }
        };
        let fed = match event {
            Event::Init => {
                listing.clear();
                Ok(())
            }
            Event::InitApply(pod) => {
                listing.push(stamped(pod));
                Ok(())
            }
            Event::InitDone => {
                metrics.count_api_request("pods-watch", true);
                tracing::debug!(pods = listing.len(), "api pods listed");
                store.set(API_SOURCE, std::mem::take(&mut listing))
            }
            Event::Apply(pod) => store.upsert(API_SOURCE, stamped(pod)),
            Event::Delete(pod) => match pod.metadata.uid.as_deref() {
                Some(uid) => store.remove(API_SOURCE, uid),
                None => Ok(()),
            },
        };
        if let Err(error) = fed {
            tracing::error!(%error, "cannot feed the pod store");
        }
    }
}

/// `pod` with the source annotation upstream's config merge sets.
fn stamped(mut pod: Pod) -> Pod {
    pod.metadata
        .annotations
        .get_or_insert_default()
        .insert(CONFIG_SOURCE_ANNOTATION.to_owned(), API_SOURCE.to_owned());
    pod
}
