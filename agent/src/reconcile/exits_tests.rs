//! Exit watches on real processes of this test (pidfds are the kernel's), with `FakeRuntime` (a
//! test double) standing in for the runtime's records. Real time: a real process exits.
use std::{process::Child, time::Duration};

use super::*;
use crate::{clock, reconcile::fake_runtime::FakeRuntime};

const WAIT: Duration = Duration::from_secs(10);

struct Setup {
    fake: Arc<FakeRuntime>,
    wakers: Wakers,
    counts: Arc<ExitCounts>,
    watches: ExitWatches,
    container: String,
}

/// A running container of pod `uid` in the fake runtime, watched by a fresh `ExitWatches`.
async fn setup() -> Setup {
    let fake = Arc::new(FakeRuntime::new(clock::system()));
    let sandbox = fake
        .run_pod_sandbox(v1::RunPodSandboxRequest {
            config: Some(v1::PodSandboxConfig::default()),
            ..Default::default()
        })
        .await
        .unwrap()
        .pod_sandbox_id;
    let container = fake
        .create_container(v1::CreateContainerRequest {
            pod_sandbox_id: sandbox,
            config: Some(v1::ContainerConfig::default()),
            ..Default::default()
        })
        .await
        .unwrap()
        .container_id;
    fake.start_container(v1::StartContainerRequest {
        container_id: container.clone(),
    })
    .await
    .unwrap();
    let (wakers, counts) = (Wakers::default(), Arc::new(ExitCounts::default()));
    let watches = ExitWatches::new(
        fake.clone(),
        wakers.clone(),
        counts.clone(),
        CancellationToken::new(),
    );
    Setup {
        fake,
        wakers,
        counts,
        watches,
        container,
    }
}

fn sleeper() -> Child {
    std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .unwrap()
}

async fn until(what: &str, mut done: impl FnMut() -> bool) {
    tokio::time::timeout(WAIT, async {
        while !done() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting until {what}"));
}

#[tokio::test]
async fn an_exit_wakes_the_pod_once_the_runtime_records_it() {
    let mut s = setup().await;
    let mut child = sleeper();
    s.fake.set_pid(&s.container, child.id());
    let wake = s.wakers.get("pod-a");
    s.watches.sync([(s.container.as_str(), "pod-a")]);
    assert_eq!(s.counts.watching(), 1);
    // The watch has its pidfd once it asked for the PID.
    until("the verbose status was read", || {
        s.fake.calls().contains(&"ContainerStatus")
    })
    .await;

    child.kill().unwrap();
    child.wait().unwrap();
    // The process is gone but the runtime still says running: no wake yet.
    assert!(
        tokio::time::timeout(Duration::from_millis(50), wake.notified())
            .await
            .is_err(),
        "woke before the runtime recorded the exit"
    );
    s.fake.exit(&s.container, 137);
    tokio::time::timeout(WAIT, wake.notified())
        .await
        .expect("the pod's worker is woken");
    assert_eq!(s.counts.exits(), 1);
}

#[tokio::test]
async fn a_process_already_gone_is_confirmed_through_the_runtime() {
    let mut s = setup().await;
    // Above any pid_max: pidfd_open says no such process.
    s.fake.set_pid(&s.container, i32::MAX as u32);
    let wake = s.wakers.get("pod-a");
    s.watches.sync([(s.container.as_str(), "pod-a")]);
    tokio::time::sleep(Duration::from_millis(20)).await;
    s.fake.exit(&s.container, 0);
    tokio::time::timeout(WAIT, wake.notified())
        .await
        .expect("the pod's worker is woken");
    assert_eq!(s.counts.exits(), 1);
}

#[tokio::test]
async fn containers_no_longer_running_lose_their_watch() {
    let mut s = setup().await;
    let mut child = sleeper();
    s.fake.set_pid(&s.container, child.id());
    let wake = s.wakers.get("pod-a");
    s.watches.sync([(s.container.as_str(), "pod-a")]);
    until("the verbose status was read", || {
        s.fake.calls().contains(&"ContainerStatus")
    })
    .await;
    s.watches.sync([]);
    assert_eq!(s.counts.watching(), 0);
    child.kill().unwrap();
    child.wait().unwrap();
    s.fake.exit(&s.container, 137);
    assert!(
        tokio::time::timeout(Duration::from_millis(200), wake.notified())
            .await
            .is_err(),
        "a dropped watch still woke the pod"
    );
    assert_eq!(s.counts.exits(), 0);
}

#[tokio::test]
async fn a_container_without_a_pid_is_left_to_the_relist_and_not_asked_again() {
    let mut s = setup().await;
    let id = s.container.clone();
    s.watches.sync([(id.as_str(), "pod-a")]);
    until("the watch gave up", || {
        s.fake.calls().contains(&"ContainerStatus")
    })
    .await;
    until("the watch task ended", || {
        s.watches.sync([(id.as_str(), "pod-a")]);
        s.counts.watching() == 0
    })
    .await;
    s.watches.sync([(id.as_str(), "pod-a")]);
    let asked = s
        .fake
        .calls()
        .iter()
        .filter(|&&c| c == "ContainerStatus")
        .count();
    assert_eq!(
        asked, 1,
        "one verbose status per container, not one per relist"
    );
}

#[test]
fn the_main_pid_comes_from_the_info_json() {
    let response = |info: Option<&str>| v1::ContainerStatusResponse {
        info: info
            .map(|json| ("info".to_owned(), json.to_owned()))
            .into_iter()
            .collect(),
        ..Default::default()
    };
    let containerd = r#"{"sandboxID":"abc","pid":4242,"removing":false,"runtimeSpec":{"process":{"args":["sleep"]}}}"#;
    assert_eq!(main_pid(&response(Some(containerd))), Some(4242));
    assert_eq!(main_pid(&response(Some(r#"{"pid":0}"#))), None);
    assert_eq!(main_pid(&response(Some(r#"{"sandboxID":"abc"}"#))), None);
    assert_eq!(main_pid(&response(Some("not json"))), None);
    assert_eq!(main_pid(&response(None)), None);
}
