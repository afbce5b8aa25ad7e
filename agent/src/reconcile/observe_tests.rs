//! Observer costs against the fake runtime: a quiet pod is two list calls, a changed container
//! is read again.
use super::{
    observe::Observer,
    state::RunState,
    test_support::{Harness, pod},
};

#[tokio::test(start_paused = true)]
async fn a_quiet_pod_costs_two_lists_and_a_changed_container_is_read_again() {
    let h = Harness::new();
    h.bring_up(&pod("uid-web", "web", serde_json::json!({})))
        .await;
    let runtime = h.executor.runtime();
    let mut observer = Observer::default();
    h.fake.clear_calls();
    let first = observer.observe_pod(runtime, "uid-web").await.unwrap();
    assert_eq!(
        h.fake.calls(),
        [
            "ListPodSandbox",
            "ListContainers",
            "PodSandboxStatus",
            "ContainerStatus"
        ]
    );
    assert_eq!(first.sandboxes[0].ip.as_deref(), Some("10.88.0.3"));

    h.fake.clear_calls();
    let again = observer.observe_pod(runtime, "uid-web").await.unwrap();
    assert_eq!(h.fake.calls(), ["ListPodSandbox", "ListContainers"]);
    assert_eq!(again, first, "statuses come from the cache");

    let id = first.containers[0].id.clone();
    h.fake.exit(&id, 3);
    h.fake.clear_calls();
    let after = observer.observe_pod(runtime, "uid-web").await.unwrap();
    assert_eq!(
        h.fake.calls(),
        ["ListPodSandbox", "ListContainers", "ContainerStatus"]
    );
    let app = &after.containers[0];
    assert_eq!((app.state, app.exit_code), (RunState::Exited, 3));
    assert!(app.finished_at > app.started_at);
}
