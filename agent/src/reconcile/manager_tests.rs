//! Manager rules on paused time against the fake runtime: orphans wait for every source,
//! deletions stop with their grace, and listed pods that run are adopted untouched.
use std::{sync::Arc, time::Duration};

use k8s_openapi::api::core::v1::Pod;
use tokio_util::sync::CancellationToken;

use super::{
    manager::{self, Context},
    pleg::Wakers,
    test_support::{Harness, pod, settle, writes},
};
use crate::{
    pod::PodStore,
    supervise::{Faults, TaskRestarts},
};

const SOURCE: &str = "file";

/// Starts a manager over `store`; returns its cancel token and task.
fn manager(h: &Harness, store: &Arc<PodStore>) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let ctx = Arc::new(Context {
        executor: h.executor.clone(),
        status: h.reports.clone(),
        wakers: Wakers::default(),
        restarts: Arc::new(TaskRestarts::default()),
        faults: Arc::new(Faults::default()),
    });
    let cancel = CancellationToken::new();
    let task = tokio::spawn(manager::run(store.clone(), ctx, cancel.clone()));
    (cancel, task)
}

fn stops(h: &Harness) -> Vec<&'static str> {
    h.fake
        .calls()
        .into_iter()
        .filter(|c| c.starts_with("Stop"))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn an_orphan_is_left_alone_until_every_source_has_listed() {
    let h = Harness::new();
    h.bring_up(&pod("uid-orphan", "orphan", serde_json::json!({})))
        .await;
    h.fake.clear_calls();
    let store = Arc::new(PodStore::default());
    store.register(SOURCE);
    let (cancel, task) = manager(&h, &store);
    tokio::time::sleep(Duration::from_mins(2)).await;
    assert_eq!(
        stops(&h),
        Vec::<&str>::new(),
        "the source has not listed yet"
    );

    store.set(SOURCE, Vec::new()).unwrap();
    settle().await;
    assert_eq!(stops(&h), ["StopContainer", "StopPodSandbox"]);
    assert_eq!(h.fake.stop_timeouts(), [30], "the orphan grace period");
    assert!(h.fake.sandboxes().is_empty(), "removed");
    cancel.cancel();
    task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_deleted_pod_stops_with_its_grace_and_is_not_restarted() {
    let h = Harness::new();
    let store = Arc::new(PodStore::default());
    store.register(SOURCE);
    let web = pod("uid-web", "web", serde_json::json!({}));
    store.set(SOURCE, vec![web.clone()]).unwrap();
    let (cancel, task) = manager(&h, &store);
    settle().await;
    assert_eq!(h.fake.instances("app").len(), 1, "running");

    let mut deleted: Pod = web;
    deleted.metadata.deletion_timestamp =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
        ));
    deleted.metadata.deletion_grace_period_seconds = Some(7);
    store.set(SOURCE, vec![deleted]).unwrap();
    settle().await;
    assert_eq!(h.fake.stop_timeouts(), [7], "the deletion's grace period");
    assert!(h.fake.sandboxes().is_empty(), "removed");
    h.fake.clear_calls();
    tokio::time::sleep(Duration::from_mins(5)).await;
    assert_eq!(
        writes(&h.fake.calls()),
        Vec::<&str>::new(),
        "not started again"
    );
    cancel.cancel();
    task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_listed_running_pod_is_adopted_with_reads_only() {
    let h = Harness::new();
    let web = pod("uid-web", "web", serde_json::json!({}));
    h.bring_up(&web).await;
    h.fake.clear_calls();
    let store = Arc::new(PodStore::default());
    store.register(SOURCE);
    store.set(SOURCE, vec![web]).unwrap();
    let (cancel, task) = manager(&h, &store);
    tokio::time::sleep(Duration::from_mins(1)).await;
    assert_eq!(writes(&h.fake.calls()), Vec::<&str>::new());
    assert!(h.reports.report("uid-web").is_some(), "reported");
    cancel.cancel();
    task.await.unwrap();
}
