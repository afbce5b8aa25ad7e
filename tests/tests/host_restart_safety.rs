//! Restart safety under fire: kernlet gets SIGKILL 20 times at random 1-10 s intervals while
//! the machine is loaded, with pods that exit on SIGTERM, a crash-looping pod and a pod with an
//! emptyDir. The runtime is the witness (container and sandbox ids, containerd's own log of the
//! CRI calls it served), not kernlet: no container is recreated, no stop is issued, restart
//! counts never go down, and the crash loop's backoff continues across kernlet's restarts.
//! Also: a worker that panics is replaced and its pod managed again, and a container the runtime
//! cannot remove (containerd 1.6's leak after a start that timed out) holds up nothing.
//!
//! Run with `cargo test -p kernlet-tests --test host_restart_safety -- --ignored --test-threads=1`.
#![expect(
    clippy::disallowed_methods,
    reason = "waits on real processes and measures real time: std time is the right clock"
)]
mod support;

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result, ensure};
use kernlet_cri::v1::{
    ContainerConfig, ContainerMetadata, ContainerStatusRequest, CreateContainerRequest,
    ListPodSandboxRequest, PodSandboxConfig, PodSandboxFilter, StopContainerRequest,
};
use kernlet_tests::node::TestNode;
use serde_json::Value;
use support::{
    WAIT, container, phase, pod_containers, pod_selector, runtime_view, status, uid, with_cri,
};

const KILLS: usize = 20;
const STABLE: [&str; 4] = ["term-0", "term-1", "term-2", "scratch"];

fn manifest(name: &str, policy: &str, containers: &str, extra: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  restartPolicy: {policy}\n  \
         terminationGracePeriodSeconds: 2\n{extra}  containers:\n{containers}"
    )
}

/// A pod whose container exits at once on SIGTERM: any stop kills it for good.
fn exits_on_term(name: &str) -> String {
    let main = container("main", "trap 'exit 0' TERM; sleep 600 & wait", "");
    manifest(name, "Always", &main, "")
}

/// A tiny xorshift generator: the intervals are random, and the seed is printed to replay them.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Keeps both cores busy until dropped.
struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(threads: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..threads)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut x = 0_u64;
                    while !stop.load(Ordering::Relaxed) {
                        x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
                    }
                })
            })
            .collect();
        Self { stop, threads }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// One instance of the crash-looping container as the runtime reports it.
#[derive(Debug, Default, Clone, Copy)]
struct Instance {
    started_at: i64,
    finished_at: i64,
}

/// Every instance of pod `uid`'s containers the runtime has now, by restart count.
fn instances(node: &TestNode, uid: &str) -> Result<BTreeMap<u32, Instance>> {
    let selector = pod_selector(uid);
    with_cri(node, async move |client| {
        let list = pod_containers(client, selector).await?;
        let mut out = BTreeMap::new();
        for item in list {
            let restarts: u32 = item
                .annotations
                .get("io.kubernetes.container.restartCount")
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            let Ok(answer) = client
                .container_status(ContainerStatusRequest {
                    container_id: item.id,
                    verbose: false,
                })
                .await
            else {
                continue; // removed since the list
            };
            if let Some(s) = answer.into_inner().status {
                out.insert(
                    restarts,
                    Instance {
                        started_at: s.started_at,
                        finished_at: s.finished_at,
                    },
                );
            }
        }
        Ok(out)
    })
}

/// What the test saw while kernlet lived and died.
#[derive(Default)]
struct Watch {
    /// Highest restart count reported per pod.
    restarts: HashMap<String, i64>,
    /// The crash loop's instances by restart count, with the latest times seen.
    crash: BTreeMap<u32, Instance>,
    samples: usize,
    complete_lists: usize,
}

impl Watch {
    /// One look at `/pods` (when it answers) and at the runtime.
    fn sample(&mut self, node: &TestNode, crash_uid: &str) -> Result<()> {
        if let Ok(pods) = node.pods() {
            self.complete_lists += 1;
            for name in STABLE.iter().chain(&["crash"]) {
                let full = format!("{name}-testnode");
                let pod = pods
                    .iter()
                    .find(|p| p["metadata"]["name"] == full.as_str())
                    .with_context(|| format!("/pods answered without {full}"))?;
                let count = status(pod, "main")["restartCount"].as_i64().unwrap_or(-1);
                let max = self.restarts.entry(full.clone()).or_insert(count);
                ensure!(
                    count >= *max,
                    "{full}: restartCount went from {max} down to {count}"
                );
                *max = count;
            }
        }
        for (count, seen) in instances(node, crash_uid)? {
            let known = self.crash.entry(count).or_default();
            if seen.started_at > 0 {
                known.started_at = seen.started_at;
            }
            if seen.finished_at > 0 {
                known.finished_at = seen.finished_at;
            }
        }
        self.samples += 1;
        Ok(())
    }
}

/// The delay upstream's backoff imposes before restart `n` (n >= 2): 10 s doubling, 300 s cap.
fn expected_delay(n: u32) -> Duration {
    Duration::from_secs(10 * 2_u64.saturating_pow(n - 2)).min(Duration::from_mins(5))
}

/// What the runtime held before the kills.
struct Baseline {
    /// The runtime's objects of each stable pod, with its UID.
    stable: BTreeMap<&'static str, (String, support::RuntimeView)>,
    crash_uid: String,
    token_path: std::path::PathBuf,
    token: String,
}

/// Starts the pods, waits until they run and the crash loop has begun, and records them.
fn start_pods(node: &TestNode) -> Result<Baseline> {
    for name in ["term-0", "term-1", "term-2"] {
        node.write_manifest(&format!("{name}.yaml"), &exits_on_term(name))?;
    }
    let scratch = container(
        "main",
        "cat /proc/sys/kernel/random/uuid > /data/token; trap 'exit 0' TERM; sleep 600 & wait",
        "    volumeMounts:\n    - name: data\n      mountPath: /data\n",
    );
    let volumes = "  volumes:\n  - name: data\n    emptyDir: {}\n";
    node.write_manifest(
        "scratch.yaml",
        &manifest("scratch", "Always", &scratch, volumes),
    )?;
    let crash = container("main", "sleep 1; exit 1", "");
    node.write_manifest("crash.yaml", &manifest("crash", "Always", &crash, ""))?;

    node.wait_until("the pods run and crash loops", WAIT, |n| {
        let pods = n.pods()?;
        let running = STABLE.iter().all(|name| {
            pods.iter().any(|p| {
                p["metadata"]["name"] == format!("{name}-testnode").as_str()
                    && phase(p) == "Running"
            })
        });
        let looping = pods.iter().any(|p| {
            p["metadata"]["name"] == "crash-testnode"
                && status(p, "main")["restartCount"].as_i64() >= Some(1)
        });
        Ok(running && looping)
    })?;
    let pods = node.pods()?;
    let uid_of = |name: &str| -> Result<String> {
        let full = format!("{name}-testnode");
        let pod: &Value = pods
            .iter()
            .find(|p| p["metadata"]["name"] == full.as_str())
            .with_context(|| format!("{full} listed"))?;
        Ok(uid(pod))
    };
    let mut before = BTreeMap::new();
    for name in STABLE {
        let uid = uid_of(name)?;
        before.insert(name, (uid.clone(), runtime_view(node, &uid)?));
    }
    let crash_uid = uid_of("crash")?;
    let token_path = node
        .dir()
        .join("root/pods")
        .join(&before["scratch"].0)
        .join("volumes/kubernetes.io~empty-dir/data/token");
    let token = std::fs::read_to_string(&token_path)
        .with_context(|| format!("reading {}", token_path.display()))?;
    Ok(Baseline {
        stable: before,
        crash_uid,
        token_path,
        token,
    })
}

#[test]
#[ignore = "host: needs root, containerd and runc; run by cargo xtask test"]
fn twenty_sigkills_under_load_stop_and_recreate_nothing() -> Result<()> {
    let mut node = TestNode::start()?;
    let Baseline {
        stable: before,
        crash_uid,
        token_path,
        token,
    } = start_pods(&node)?;
    let containerd_log = node.fixture.as_ref().context("fixture")?.log_path();
    let containerd_log_start = std::fs::metadata(&containerd_log)?.len();
    let seed = std::env::var("KERNLET_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64 | 1)
        });
    println!("random intervals from KERNLET_TEST_SEED={seed}");
    let mut rng = Rng(seed);
    let mut watch = Watch::default();
    let mut logs = String::new();
    let load = Load::start(3);
    let began = Instant::now();
    for kill in 0..KILLS {
        let life = Duration::from_millis(1_000 + rng.below(9_001));
        let until = Instant::now() + life;
        while Instant::now() < until {
            watch.sample(&node, &crash_uid)?;
            std::thread::sleep(Duration::from_millis(250));
        }
        logs.push_str(&node.log());
        node.stop_kernlet(nix::sys::signal::Signal::SIGKILL)?;
        println!("kill {}: after {life:?}", kill + 1);
        watch.sample(&node, &crash_uid)?;
        node.start_kernlet()?;
    }
    // One last life long enough to see the crash loop go on under a kernlet left alone.
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        watch.sample(&node, &crash_uid)?;
        std::thread::sleep(Duration::from_millis(250));
    }
    drop(load);
    logs.push_str(&node.log());
    println!(
        "{KILLS} kills in {:?}; {} samples, {} complete pod lists; crash loop instances {:?}",
        began.elapsed(),
        watch.samples,
        watch.complete_lists,
        watch.crash
    );

    // Nothing recreated: the same sandboxes and containers, still running.
    for (name, (uid, view)) in &before {
        let now = runtime_view(&node, uid)?;
        assert_eq!(&now, view, "{name}: the runtime's objects changed");
        ensure!(
            now.containers.iter().all(|(_, _, state)| *state == 1),
            "{name}: {now:?}"
        );
    }
    assert_eq!(
        std::fs::read_to_string(&token_path)?,
        token,
        "the emptyDir kept its content"
    );
    // No stop was issued: containerd's own log of the CRI calls it served.
    let served = std::fs::read(&containerd_log)?;
    let served = String::from_utf8_lossy(&served[containerd_log_start as usize..]);
    for call in [
        "StopContainer for",
        "StopPodSandbox for",
        "RunPodSandbox for",
        "RemovePodSandbox for",
    ] {
        let lines: Vec<&str> = served.lines().filter(|l| l.contains(call)).collect();
        assert!(lines.is_empty(), "containerd served {call}: {lines:#?}");
    }
    for wrong in [
        "terminating pod no source wants",
        "pod no longer desired",
        "stopping container",
    ] {
        assert!(!logs.contains(wrong), "kernlet logged {wrong:?}");
    }
    check_backoff(&watch.crash)
}

/// Each crash-loop restart seen came no sooner after the previous exit than the delay its
/// restart count calls for, and enough of them were seen to tell.
fn check_backoff(crash: &BTreeMap<u32, Instance>) -> Result<()> {
    // The crash loop's backoff went on across the restarts: each restart came no sooner after
    // the previous exit than the delay its restart count calls for.
    let mut checked = 0;
    for (n, instance) in crash {
        let Some(previous) = crash.get(&(n.wrapping_sub(1))) else {
            continue;
        };
        if *n < 2 || previous.finished_at == 0 || instance.started_at == 0 {
            continue;
        }
        let gap = Duration::from_nanos((instance.started_at - previous.finished_at).max(0) as u64);
        let want = expected_delay(*n);
        ensure!(
            gap + Duration::from_millis(1_500) >= want,
            "restart {n} came {gap:?} after the previous exit; the backoff says {want:?}"
        );
        checked += 1;
    }
    ensure!(
        checked >= 2,
        "saw too few crash-loop restarts to check the backoff: {crash:?}"
    );
    Ok(())
}

#[test]
#[ignore = "host: needs root, containerd and runc; run by cargo xtask test"]
fn a_panicking_worker_is_replaced_and_its_pod_managed_again() -> Result<()> {
    let node = TestNode::start_with("", &[("KERNLET_FAULT_INJECT", "worker-panic=web-testnode")])?;
    // The container exits after a while: only a live worker starts it again.
    let main = container("main", "sleep 8; exit 0", "");
    node.write_manifest("web.yaml", &manifest("web", "Always", &main, ""))?;
    node.wait_until("the worker panics and is replaced", WAIT, |n| {
        Ok(n.log().contains("pod worker failed; replacing it")
            && n.get("/metrics")?
                .contains("kernlet_task_restarts_total{task=\"worker\"} 1"))
    })?;
    node.wait_until("the new worker restarts the exited container", WAIT, |n| {
        Ok(n.pod("web-testnode")?
            .is_some_and(|p| status(&p, "main")["restartCount"].as_i64() >= Some(1)))
    })?;
    let log = node.log();
    assert_eq!(
        log.matches("pod worker failed; replacing it").count(),
        1,
        "one injected panic, one replacement"
    );
    Ok(())
}

/// containerd 1.6's leak, made on purpose: a container the CRI reports `Created` while its task
/// runs (a `StartContainer` that outlived kernlet's timeout but went on inside containerd). Its
/// `RemoveContainer` fails for ever (`cannot delete running task`). Made here as a dying kernlet
/// leaves it: the running instance exits, its restart is created through CRI, and its task is
/// started behind the CRI's back with `ctr`.
fn leak_a_created_container(node: &TestNode, uid: &str) -> Result<String> {
    let selector = pod_selector(uid);
    let created = with_cri(node, async move |client| {
        let list = pod_containers(client, selector.clone()).await?;
        let first = list.first().context("the pod's container")?;
        let request = StopContainerRequest {
            container_id: first.id.clone(),
            timeout: 0,
        };
        client.stop_container(request).await?;
        let request = ContainerStatusRequest {
            container_id: first.id.clone(),
            verbose: false,
        };
        let exited = client.container_status(request).await?.into_inner();
        let exited = exited.status.context("the container's status")?;
        let filter = PodSandboxFilter {
            label_selector: selector,
            ..Default::default()
        };
        let list = ListPodSandboxRequest {
            filter: Some(filter),
        };
        let sandboxes = client.list_pod_sandbox(list).await?.into_inner().items;
        let sandbox = sandboxes.first().context("the pod's sandbox")?;
        let mut annotations = exited.annotations;
        annotations.insert("io.kubernetes.container.restartCount".into(), "1".into());
        let config = ContainerConfig {
            metadata: exited
                .metadata
                .map(|m| ContainerMetadata { attempt: 1, ..m }),
            image: exited.image,
            command: vec!["sleep".into(), "600".into()],
            labels: exited.labels,
            annotations,
            ..Default::default()
        };
        let sandbox_config = PodSandboxConfig {
            metadata: sandbox.metadata.clone(),
            labels: sandbox.labels.clone(),
            annotations: sandbox.annotations.clone(),
            ..Default::default()
        };
        let request = CreateContainerRequest {
            pod_sandbox_id: sandbox.id.clone(),
            config: Some(config),
            sandbox_config: Some(sandbox_config),
        };
        Ok(client
            .create_container(request)
            .await?
            .into_inner()
            .container_id)
    })?;
    ctr(node, &["task", "start", "--detach", "--null-io", &created])?;
    Ok(created)
}

/// Runs `ctr` against the node's containerd in the CRI's namespace.
fn ctr(node: &TestNode, args: &[&str]) -> Result<String> {
    let fixture = node.fixture.as_ref().context("the node has no runtime")?;
    let output = std::process::Command::new("ctr")
        .arg("--address")
        .arg(fixture.endpoint())
        .args(["--namespace", fixture.namespace()])
        .args(args)
        .output()
        .context("running ctr")?;
    ensure!(
        output.status.success(),
        "ctr {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

#[test]
#[ignore = "host: needs root, containerd and runc; run by cargo xtask test"]
fn a_created_container_whose_removal_fails_holds_up_nothing() -> Result<()> {
    let mut node = TestNode::start()?;
    node.write_manifest("left.yaml", &exits_on_term("left"))?;
    let running = |n: &TestNode| -> Result<Option<Value>> {
        Ok(n.pod("left-testnode")?.filter(|p| phase(p) == "Running"))
    };
    node.wait_until("the pod runs", WAIT, |n| Ok(running(n)?.is_some()))?;
    let uid = uid(&running(&node)?.context("the pod")?);
    node.stop_kernlet(nix::sys::signal::Signal::SIGKILL)?;
    let created = leak_a_created_container(&node, &uid)?;

    // kernlet neither starts the created instance nor waits for its removal: a new one runs.
    node.start_kernlet()?;
    node.wait_until("a new instance runs beside the leaked one", WAIT, |n| {
        Ok(running(n)?.is_some_and(|p| status(&p, "main")["restartCount"] == 2))
    })?;
    let view = runtime_view(&node, &uid)?;
    let created_state = view.containers.iter().find(|c| c.0 == created);
    assert_eq!(
        created_state.map(|c| c.2),
        Some(0),
        "CRI still says created"
    );
    node.wait_until("the refused removal is logged", WAIT, |n| {
        Ok(n.log()
            .contains("removing an unneeded container or sandbox failed"))
    })?;
    // The leak ends as an operator would end it (its task killed and deleted). CRI still calls
    // the container created; kernlet's next try, a minute on (the unit tests wait for it on
    // paused time), removes it.
    ctr(&node, &["task", "kill", "--signal", "SIGKILL", &created])?;
    node.wait_until("the leaked task is gone", WAIT, |_| {
        let deleted = ctr(&node, &["task", "delete", &created]);
        Ok(deleted.is_ok() || !ctr(&node, &["task", "ls", "-q"])?.contains(&created))
    })?;
    Ok(())
}
