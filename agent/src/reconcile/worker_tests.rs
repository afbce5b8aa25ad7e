//! Worker rules on paused time against the fake runtime: start-up order, adoption, the
//! crash-loop backoff (also across a new worker), termination, spec changes, and a start that
//! failed beside a removal the runtime refuses.
use std::{sync::Arc, time::Duration};

use kernlet_cri::v1;

use super::{
    test_support::{Harness, pod, settle, writes},
    worker::DesiredState,
};
use crate::cri::labels;

const S: i64 = 1_000_000_000;
const RUNNING: i32 = v1::ContainerState::ContainerRunning as i32;
const EXITED: i32 = v1::ContainerState::ContainerExited as i32;

fn restart_count(c: &v1::ContainerStatus) -> u32 {
    c.annotations[labels::CONTAINER_RESTART_COUNT]
        .parse()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_new_pod_gets_its_sandbox_then_its_container() {
    let h = Harness::new();
    let web = pod("uid-web", "web", serde_json::json!({}));
    let worker = h.worker("uid-web", DesiredState::Run(Arc::new(web)));
    settle().await;

    let calls = writes(&h.fake.calls());
    assert_eq!(
        calls,
        ["RunPodSandbox", "CreateContainer", "StartContainer"]
    );
    let sandboxes = h.fake.sandboxes();
    assert_eq!(sandboxes.len(), 1);
    assert_eq!(sandboxes[0].labels[labels::POD_UID], "uid-web");
    let app = h.fake.instances("app");
    assert_eq!(app.len(), 1);
    assert_eq!(app[0].state, RUNNING);
    assert_eq!(restart_count(&app[0]), 0);
    let report = h.reports.report("uid-web").unwrap();
    assert_eq!(
        report.runtime.containers.len(),
        1,
        "the report shows what runs"
    );
    let events = h.events.lines();
    let started = [
        "Created: Created container: app",
        "Started: Started container app",
    ];
    assert!(
        events.len() >= 2 && events[events.len() - 2..] == started,
        "{events:?}"
    );
    worker.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_container_that_cannot_start_does_not_keep_its_sibling_from_running() {
    let h = Harness::new();
    let containers = serde_json::json!({"containers": [
        {"name": "broken", "image": "missing/app:1", "imagePullPolicy": "IfNotPresent"},
        {"name": "app", "image": "busybox:1", "imagePullPolicy": "IfNotPresent"},
    ]});
    let worker = h.worker(
        "uid-two",
        DesiredState::Run(Arc::new(pod("uid-two", "two", containers))),
    );
    // One round starts what it can; the next, after the error pause, publishes the reasons.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let app = h.fake.instances("app");
    assert_eq!(app.len(), 1, "the startable container was created");
    assert_eq!(app[0].state, RUNNING);
    assert!(h.fake.instances("broken").is_empty());
    let report = h.reports.report("uid-two").unwrap();
    let reason = report.waiting.get("broken").map(|w| w.reason.as_str());
    assert!(
        matches!(reason, Some("ErrImagePull" | "ImagePullBackOff")),
        "its own waiting reason: {reason:?}"
    );
    assert!(!report.waiting.contains_key("app"));

    // Later rounds retry only the broken one and leave the running one alone.
    h.fake.clear_calls();
    tokio::time::sleep(Duration::from_secs(30)).await;
    let calls = writes(&h.fake.calls());
    assert!(calls.contains(&"PullImage"), "{calls:?}");
    assert!(
        !calls
            .iter()
            .any(|c| ["CreateContainer", "StopContainer"].contains(c)),
        "{calls:?}"
    );
    assert_eq!(h.fake.instances("app")[0].id, app[0].id);
    // Upstream's events for a pull that fails and then backs off.
    let events = h.events.lines();
    let has = |prefix: &str| events.iter().any(|e| e.starts_with(prefix));
    assert!(
        has("Pulling: Pulling image \"missing/app:1\""),
        "{events:?}"
    );
    assert!(
        has("Failed: Failed to pull image \"missing/app:1\": "),
        "{events:?}"
    );
    assert!(has("Failed: Error: ErrImagePull"), "{events:?}");
    assert!(
        has("BackOff: Back-off pulling image \"missing/app:1\""),
        "{events:?}"
    );
    assert!(has("Started: Started container app"), "{events:?}");
    worker.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_running_pod_is_adopted_without_stopping_or_creating_anything() {
    let h = Harness::new();
    let web = pod("uid-web", "web", serde_json::json!({}));
    h.bring_up(&web).await;
    // As a previous kernlet left it: the third restart running, the one before it exited.
    let running = h.fake.instances("app")[0].id.clone();
    h.fake.set_restart_count(&running, 3);
    h.fake.add_exited_instance(&running, 2, 60 * S);
    h.fake.clear_calls();

    let worker = h.worker("uid-web", DesiredState::Run(Arc::new(web)));
    tokio::time::sleep(Duration::from_mins(1)).await;

    // Nothing is written: the dead instance is the newest dead one, kept as upstream's GC
    // keeps one (it is the status's lastState).
    assert_eq!(writes(&h.fake.calls()), Vec::<&str>::new());
    let app = h.fake.instances("app");
    assert_eq!(app.len(), 2);
    let now_running: Vec<_> = app.iter().filter(|c| c.state == RUNNING).collect();
    assert_eq!(now_running.len(), 1);
    assert_eq!(now_running[0].id, running);
    assert_eq!(
        restart_count(now_running[0]),
        3,
        "the restart count is kept"
    );
    worker.stop().await;
}

/// Ids of every instance of `app`.
fn ids(h: &Harness) -> Vec<String> {
    h.fake.instances("app").into_iter().map(|c| c.id).collect()
}

/// The instance of `app` not among `before`, if one was created.
fn created_since(h: &Harness, before: &[String]) -> Option<v1::ContainerStatus> {
    h.fake
        .instances("app")
        .into_iter()
        .find(|c| !before.contains(&c.id))
}

/// The running instance exits; returns the time from its exit to the next instance's creation,
/// and the new instance.
async fn crash_and_measure(h: &Harness, wake: &tokio::sync::Notify) -> (i64, v1::ContainerStatus) {
    let running = h.fake.instances("app").pop().unwrap();
    assert_eq!(running.state, RUNNING);
    let before = ids(h);
    h.fake.exit(&running.id, 1);
    wake.notify_one(); // what PLEG does on the exit event
    let finished = h.fake.instances("app").pop().unwrap().finished_at;
    for _ in 0..400 {
        if let Some(next) = created_since(h, &before) {
            return (next.created_at - finished, next);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("no restart within 100 s");
}

#[tokio::test(start_paused = true)]
async fn a_crash_loop_backs_off_0_10_20_s_and_a_new_worker_continues_it() {
    let h = Harness::new();
    let web = pod("uid-web", "web", serde_json::json!({}));
    let worker = h.worker("uid-web", DesiredState::Run(Arc::new(web.clone())));
    settle().await;

    let mut delays = Vec::new();
    for restart in 1..=3 {
        let (delay, next) = crash_and_measure(&h, &worker.wake).await;
        assert_eq!(restart_count(&next), restart);
        delays.push(Duration::from_nanos(u64::try_from(delay).unwrap()));
    }
    let s = Duration::from_secs;
    assert_eq!(delays, [s(0), s(10), s(20)]);
    // One `BackOff` event per backoff period (the first restart had none).
    let events = h.events.lines();
    let backoff = "BackOff: Back-off restarting failed container app in pod web_default(uid-web)";
    let count = events.iter().filter(|e| *e == backoff).count();
    assert_eq!(count, 2, "{events:?}");

    // kernlet restarts: the third restart crashes while no worker runs, and a new worker,
    // with nothing in memory, waits 10 s * 2^(3-1) = 40 s from that exit.
    worker.stop().await;
    let last = h.fake.instances("app").pop().unwrap();
    assert_eq!(restart_count(&last), 3);
    h.fake.exit(&last.id, 1);
    let finished = h.fake.instances("app").pop().unwrap().finished_at;
    let before = ids(&h);
    let worker = h.worker("uid-web", DesiredState::Run(Arc::new(web)));
    tokio::time::sleep(Duration::from_secs(39)).await;
    assert_eq!(
        created_since(&h, &before),
        None,
        "still backing off at 39 s"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let next = created_since(&h, &before).expect("restarted once the 40 s are over");
    assert_eq!(restart_count(&next), 4);
    assert_eq!(next.created_at - finished, 40 * S);
    worker.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_failed_start_is_replaced_and_a_refused_removal_holds_up_nothing() {
    let h = Harness::new();
    h.fake.fail_next_start();
    h.fake.refuse_removals(true);
    let web = pod("uid-web", "web", serde_json::json!({}));
    let worker = h.worker("uid-web", DesiredState::Run(Arc::new(web)));
    tokio::time::sleep(Duration::from_secs(2)).await;

    // The created instance is not started again (the runtime may still be starting it): a new
    // instance runs, and the created one is garbage whose removal the runtime refuses.
    let app = h.fake.instances("app");
    assert_eq!(app.len(), 2, "{app:?}");
    assert_eq!(app[0].state, v1::ContainerState::ContainerCreated as i32);
    assert_eq!(app[1].state, RUNNING);
    assert_eq!(restart_count(&app[1]), 1);
    let created = app[0].id.clone();
    let removals = |h: &Harness| {
        let calls = h.fake.calls();
        calls.iter().filter(|c| **c == "RemoveContainer").count()
    };
    assert_eq!(removals(&h), 1, "{:?}", h.fake.calls());

    // A crash restarts the container at once, the refused removal notwithstanding.
    let (delay, next) = crash_and_measure(&h, &worker.wake).await;
    assert_eq!(delay, 0);
    assert_eq!(restart_count(&next), 2);
    // The refused removal is tried again once a minute, not every round.
    h.fake.clear_calls();
    tokio::time::sleep(Duration::from_secs(130)).await;
    assert!((2..=3).contains(&removals(&h)), "{:?}", h.fake.calls());

    // Once the runtime lets it go, the created instance is gone within a minute.
    h.fake.refuse_removals(false);
    tokio::time::sleep(Duration::from_secs(61)).await;
    let app = h.fake.instances("app");
    assert_eq!(
        app.len(),
        2,
        "the newest dead instance stays beside the running one"
    );
    assert!(app.iter().all(|c| c.id != created), "{app:?}");
    worker.stop().await;
}

#[tokio::test(start_paused = true)]
async fn terminate_stops_within_grace_and_removes_everything() {
    let h = Harness::new();
    let web = Arc::new(pod("uid-web", "web", serde_json::json!({})));
    let worker = h.worker("uid-web", DesiredState::Run(web.clone()));
    settle().await;
    h.fake.clear_calls();

    let started = tokio::time::Instant::now();
    worker
        .desired
        .send(DesiredState::Terminate {
            pod: Some(web),
            grace: Duration::from_secs(7),
        })
        .unwrap();
    worker.task.await.unwrap();

    assert!(
        started.elapsed() < Duration::from_secs(7),
        "within the grace period"
    );
    assert_eq!(
        h.fake.stop_timeouts(),
        [7],
        "StopContainer given the grace period"
    );
    let calls = writes(&h.fake.calls());
    assert_eq!(calls.first(), Some(&"StopContainer"));
    assert!(calls.contains(&"StopPodSandbox"), "{calls:?}");
    assert!(calls.contains(&"RemovePodSandbox"), "{calls:?}");
    assert!(!calls.contains(&"CreateContainer"), "{calls:?}");
    assert!(h.fake.sandboxes().is_empty());
    assert!(h.fake.instances("app").is_empty());
    assert!(h.reports.gone("uid-web"), "reported gone");
    let killing = "Killing: Stopping container app".to_owned();
    assert!(
        h.events.lines().contains(&killing),
        "{:?}",
        h.events.lines()
    );
}

#[tokio::test(start_paused = true)]
async fn shutdown_does_not_wait_for_a_stop_in_flight() {
    let h = Harness::new();
    let web = Arc::new(pod("uid-web", "web", serde_json::json!({})));
    let worker = h.worker("uid-web", DesiredState::Run(web.clone()));
    settle().await;
    let _held = h.fake.hold_stops();
    worker
        .desired
        .send(DesiredState::Terminate {
            pod: Some(web),
            grace: Duration::from_secs(30),
        })
        .unwrap();
    settle().await;
    assert_eq!(h.fake.stop_timeouts(), [30], "the stop is in flight");

    let started = tokio::time::Instant::now();
    worker.cancel.cancel();
    tokio::time::timeout(Duration::from_secs(1), worker.task)
        .await
        .expect("the worker returns while StopContainer still runs")
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn a_spec_change_replaces_the_container() {
    let h = Harness::new();
    let web = pod("uid-web", "web", serde_json::json!({}));
    let worker = h.worker("uid-web", DesiredState::Run(Arc::new(web)));
    settle().await;
    let old = h.fake.instances("app")[0].clone();
    h.fake.clear_calls();

    let changed = pod(
        "uid-web",
        "web",
        serde_json::json!({"containers": [{"name": "app", "image": "busybox:2"}]}),
    );
    worker
        .desired
        .send(DesiredState::Run(Arc::new(changed)))
        .unwrap();
    settle().await;

    let calls = writes(&h.fake.calls());
    assert_eq!(calls.first(), Some(&"StopContainer"), "{calls:?}");
    assert!(!calls.contains(&"RunPodSandbox"), "same sandbox: {calls:?}");
    let app = h.fake.instances("app");
    let new = app.last().unwrap();
    assert_ne!(new.id, old.id);
    assert_eq!(new.state, RUNNING);
    assert_ne!(
        new.annotations[labels::CONTAINER_HASH],
        old.annotations[labels::CONTAINER_HASH]
    );
    assert!(
        app.iter().all(|c| c.id == new.id || c.state == EXITED),
        "the old instance is stopped"
    );
    worker.stop().await;
}

#[tokio::test(start_paused = true)]
async fn an_exit_from_the_runtime_events_is_published_before_cri_answers() {
    use super::state::RunState;
    let h = Harness::new();
    let web = pod("uid-web", "web", serde_json::json!({}));
    let worker = h.worker("uid-web", DesiredState::Run(Arc::new(web)));
    settle().await;
    let running = h.fake.instances("app").pop().unwrap();

    h.fake.clear_calls();
    let held = h.fake.hold_lists();
    h.fake.record_exit(&running.id, 137);
    worker.wake.notify_one(); // what PLEG does on the task exit event
    settle().await;
    let report = h.reports.report("uid-web").unwrap();
    let app = report
        .runtime
        .containers
        .iter()
        .find(|c| c.id == running.id)
        .unwrap();
    assert_eq!(
        (app.state, app.exit_code, app.reason.as_str()),
        (RunState::Exited, 137, "Error"),
        "published while ListContainers has not answered"
    );
    assert!(
        writes(&h.fake.calls())
            .iter()
            .all(|c| *c != "CreateContainer"),
        "nothing acts on the quick view"
    );

    drop(held);
    settle().await;
    let app = h.fake.instances("app");
    assert_eq!(
        app.last().unwrap().state,
        RUNNING,
        "restarted once CRI answered"
    );
    assert_eq!(restart_count(app.last().unwrap()), 1);
    worker.stop().await;
}
