//! Pod lifecycle rules through the real kernlet binary, real containerd and runc: a spec change
//! replaces only the changed container; deletion runs preStop before SIGTERM, kills after the
//! grace period and leaves nothing in the runtime; CrashLoopBackOff delays are 0, 10 s, 20 s;
//! init containers run in order, and a failing one fails the pod (`Never`) or is retried with the
//! app waiting (`Always`).
//!
//! Run with `cargo test -p kernlet-tests --test host_lifecycle -- --ignored --test-threads=1`.
#![expect(
    clippy::disallowed_methods,
    reason = "waits on real processes and measures real time: std time is the right clock"
)]
mod support;

use std::{
    collections::BTreeMap,
    fs,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, ensure};
use kernlet_tests::node::TestNode;
use support::{
    IMAGE, WAIT, container, init_status, logged_waiting_reasons, phase, runtime_view, seconds,
    status, uid, waiting_reason,
};

/// A container that runs until SIGTERM, then exits at once.
const UNTIL_TERM: &str = "trap 'exit 0' TERM; sleep 300 & wait";

fn pair_manifest(version: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: pair\n  uid: 6a0c1b2e-lifecycle-pair\n\
         spec:\n  terminationGracePeriodSeconds: 2\n  containers:\n{}{}",
        container("keep", UNTIL_TERM, ""),
        // `sh -c script v1`: the version is the script's $0.
        container(
            "change",
            &format!("echo $0; {UNTIL_TERM}"),
            &format!("    args: [\"{version}\"]\n")
        ),
    )
}

#[test]
#[ignore = "host: needs root, containerd and runc; run by cargo xtask test"]
fn spec_change_recreates_only_the_changed_container() -> Result<()> {
    let node = TestNode::start()?;
    node.write_manifest("pair.yaml", &pair_manifest("v1"))?;
    node.wait_until("both containers run", WAIT, |n| {
        Ok(n.pod("pair-testnode")?.is_some_and(|p| {
            ["keep", "change"]
                .iter()
                .all(|c| status(&p, c)["state"]["running"].is_object())
        }))
    })?;
    let before = node.pod("pair-testnode")?.context("pair is reported")?;
    let pod_uid = uid(&before);
    assert_eq!(pod_uid, "6a0c1b2e-lifecycle-pair");
    let keep_id = status(&before, "keep")["containerID"].clone();
    let change_id = status(&before, "change")["containerID"].clone();

    node.write_manifest("pair.yaml", &pair_manifest("v2"))?;
    node.wait_until("change is replaced and runs", WAIT, |n| {
        Ok(n.pod("pair-testnode")?.is_some_and(|p| {
            let change = status(&p, "change");
            change["containerID"] != change_id && change["state"]["running"].is_object()
        }))
    })?;
    let after = node.pod("pair-testnode")?.context("pair is reported")?;
    assert_eq!(uid(&after), pod_uid, "the explicit UID survives the edit");
    let keep = status(&after, "keep");
    assert_eq!(keep["containerID"], keep_id, "keep must not be touched");
    assert_eq!(keep["restartCount"], 0);
    assert!(keep["state"]["running"].is_object(), "{keep}");
    // Upstream counts the replacement as a restart of `change`.
    assert_eq!(status(&after, "change")["restartCount"], 1);
    assert_eq!(after["status"]["podIP"], before["status"]["podIP"]);

    // The same sandbox, and the new instance really runs the new args.
    let view = runtime_view(&node, &pod_uid)?;
    assert_eq!(view.sandboxes.len(), 1, "{view:?}");
    let logs = node
        .logs()
        .join(format!("default_pair-testnode_{pod_uid}/change"));
    node.wait_until("the new instance logs v2", WAIT, |_| {
        Ok(fs::read_to_string(logs.join("1.log")).is_ok_and(|t| t.contains("v2")))
    })?;
    assert!(fs::read_to_string(logs.join("0.log"))?.contains("v1"));
    Ok(())
}

#[test]
#[ignore = "host: needs root, containerd and runc; run by cargo xtask test"]
fn deletion_runs_pre_stop_then_sigterm_and_kills_after_the_grace_period() -> Result<()> {
    const GRACE: u64 = 5;
    let node = TestNode::start()?;
    let marker = node.dir().join("marker");
    fs::create_dir_all(&marker)?;
    let volume = |extra: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {{name}}\nspec:\n  \
             terminationGracePeriodSeconds: {GRACE}\n  volumes:\n  - name: marker\n    \
             hostPath:\n      path: {}\n      type: Directory\n  containers:\n{extra}",
            marker.display()
        )
    };
    let mounts = "    volumeMounts:\n    - name: marker\n      mountPath: /marker\n";
    // Records preStop, then SIGTERM, then exits 2 s after SIGTERM.
    let graceful = container(
        "main",
        "trap 'echo term >> /marker/order; sleep 2; echo exit >> /marker/order; exit 0' TERM; \
         echo started >> /marker/order; sleep 300 & wait",
        &format!(
            "{mounts}    lifecycle:\n      preStop:\n        exec:\n          \
             command: [\"sh\", \"-c\", \"echo prestop >> /marker/order; sleep 1\"]\n"
        ),
    );
    // Two containers that note SIGTERM and keep running: both are killed when the grace period
    // ends (upstream kills a pod's containers in parallel, each with the pod's grace).
    let stubborn: String = ["main", "second"]
        .iter()
        .map(|name| {
            container(
                name,
                &format!(
                    "trap 'echo ignored >> /marker/{name}' TERM; echo started >> /marker/{name}; \
                     while true; do sleep 1; done"
                ),
                mounts,
            )
        })
        .collect();
    node.write_manifest(
        "graceful.yaml",
        &volume(&graceful).replace("{name}", "graceful"),
    )?;
    node.write_manifest(
        "stubborn.yaml",
        &volume(&stubborn).replace("{name}", "stubborn"),
    )?;
    let mut uids = BTreeMap::new();
    node.wait_until("both pods run and wrote their start", WAIT, |n| {
        for name in ["graceful", "stubborn"] {
            let Some(pod) = n.pod(&format!("{name}-testnode"))? else {
                return Ok(false);
            };
            if !status(&pod, "main")["state"]["running"].is_object() {
                return Ok(false);
            }
            uids.insert(name, uid(&pod));
        }
        Ok(["order", "main", "second"]
            .iter()
            .all(|f| fs::read_to_string(marker.join(f)).is_ok_and(|t| t.contains("started"))))
    })?;

    let removed = Instant::now();
    node.remove_manifest("graceful.yaml")?;
    node.remove_manifest("stubborn.yaml")?;
    let mut gone = BTreeMap::new();
    node.wait_until("both pods are gone", Duration::from_secs(GRACE + 30), |n| {
        for name in ["graceful", "stubborn"] {
            if !gone.contains_key(name) && n.pod(&format!("{name}-testnode"))?.is_none() {
                gone.insert(name, removed.elapsed());
            }
        }
        Ok(gone.len() == 2)
    })?;

    // preStop ran to completion before SIGTERM, and the container got to finish its trap.
    let order = fs::read_to_string(marker.join("order"))?;
    assert_eq!(
        order.lines().collect::<Vec<_>>(),
        ["started", "prestop", "term", "exit"]
    );
    // preStop (1 s) and the trap (2 s) ran in full, well inside the grace period.
    assert!(
        gone["graceful"] >= Duration::from_secs(3)
            && gone["graceful"] < Duration::from_secs(GRACE + 3),
        "graceful took {:?}",
        gone["graceful"]
    );
    // SIGTERM was delivered, ignored, and SIGKILL came after the grace period.
    for name in ["main", "second"] {
        let log = fs::read_to_string(marker.join(name))?;
        assert!(log.contains("ignored"), "{name}: {log}");
    }
    assert!(
        gone["stubborn"] >= Duration::from_secs(GRACE)
            && gone["stubborn"] < Duration::from_secs(GRACE + 4),
        "stubborn took {:?}",
        gone["stubborn"]
    );
    nothing_left(&node, &uids)
}

#[test]
#[ignore = "host: needs root, containerd and runc; run by cargo xtask test"]
fn crash_loop_back_off_waits_0_then_10_then_20_seconds() -> Result<()> {
    let node = TestNode::start()?;
    let marker = node.dir().join("marker");
    fs::create_dir_all(&marker)?;
    // Each instance notes its start time (Unix seconds) and exits 1 at once.
    node.write_manifest(
        "crash.yaml",
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: crash\nspec:\n  \
             restartPolicy: Always\n  terminationGracePeriodSeconds: 1\n  volumes:\n  \
             - name: marker\n    hostPath:\n      path: {}\n      type: Directory\n  \
             containers:\n{}",
            marker.display(),
            container(
                "main",
                "date +%s >> /marker/starts; exit 1",
                "    volumeMounts:\n    - name: marker\n      mountPath: /marker\n"
            )
        ),
    )?;
    let starts = || -> Vec<i64> {
        fs::read_to_string(marker.join("starts"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    };
    // What the status says while each instance n backs off (restartCount n, lastState the
    // instance): n -> (message, startedAt, finishedAt).
    let mut backing_off: BTreeMap<usize, (String, i64, i64)> = BTreeMap::new();
    node.wait_until(
        "the fourth instance started and exited",
        Duration::from_secs(55),
        |n| {
            if let Some(pod) = n.pod("crash-testnode")? {
                let main = status(&pod, "main");
                if waiting_reason(main) == "CrashLoopBackOff"
                    && let Some(count) = main["restartCount"].as_u64()
                {
                    let last = &main["lastState"]["terminated"];
                    assert_eq!(last["exitCode"], 1, "{main}");
                    let message = main["state"]["waiting"]["message"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned();
                    let times = (seconds(&last["startedAt"])?, seconds(&last["finishedAt"])?);
                    backing_off.insert(usize::try_from(count)?, (message, times.0, times.1));
                }
            }
            Ok(starts().len() >= 4 && backing_off.contains_key(&3))
        },
    )?;
    let starts = starts();
    let delays: Vec<i64> = starts.windows(2).map(|w| w[1] - w[0]).collect();
    eprintln!("instance starts {starts:?}, delays {delays:?}, backing off {backing_off:?}");
    // As the containers saw it (each notes its start and exits at once).
    for (delay, expected) in delays.iter().zip([0, 10, 20]) {
        assert!(
            (delay - expected).abs() <= 3,
            "restart delays {delays:?} are not 0, 10, 20 s"
        );
    }
    // As the status reports it: no CrashLoopBackOff before the first restart, then upstream's
    // message with the current delay, counted from the finishedAt it shows to the next
    // instance's startedAt.
    assert!(!backing_off.contains_key(&0), "{backing_off:?}");
    assert!(
        (backing_off[&1].1 - starts[0]).abs() <= 3,
        "{backing_off:?}"
    );
    for (count, delay) in [(1, 10), (2, 20), (3, 40)] {
        let (message, _, finished) = backing_off
            .get(&count)
            .with_context(|| format!("no CrashLoopBackOff seen after restart {count}"))?;
        assert!(
            message.starts_with(&format!(
                "back-off {delay}s restarting failed container=main"
            )),
            "{message}"
        );
        if let Some((_, next_start, _)) = backing_off.get(&(count + 1)) {
            assert!(
                (next_start - finished - delay).abs() <= 3,
                "restart {count}: finished {finished}, next start {next_start}"
            );
        }
    }
    Ok(())
}

fn init_manifest(name: &str, policy: &str, inits: &[(&str, &str)], app: &str) -> String {
    let mounts = "    volumeMounts:\n    - name: shared\n      mountPath: /shared\n";
    let inits: String = inits
        .iter()
        .map(|(name, script)| container(name, script, mounts))
        .collect();
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  \
         restartPolicy: {policy}\n  terminationGracePeriodSeconds: 1\n  volumes:\n  \
         - name: shared\n    emptyDir: {{}}\n  initContainers:\n{inits}  containers:\n{}",
        container("app", app, mounts)
    )
}

#[test]
#[ignore = "host: needs root, containerd and runc; run by cargo xtask test"]
fn init_containers_run_in_order_and_failures_follow_the_restart_policy() -> Result<()> {
    let node = TestNode::start()?;
    node.write_manifest(
        "ordered.yaml",
        &init_manifest(
            "ordered",
            "Always",
            &[
                ("init0", "echo init0 >> /shared/order"),
                ("init1", "sleep 1; echo init1 >> /shared/order"),
            ],
            &format!("cat /shared/order; {UNTIL_TERM}"),
        ),
    )?;
    node.write_manifest(
        "never.yaml",
        &init_manifest("never", "Never", &[("init0", "exit 1")], UNTIL_TERM),
    )?;
    node.write_manifest(
        "always.yaml",
        &init_manifest("always", "Always", &[("init0", "exit 1")], UNTIL_TERM),
    )?;

    // Both init containers completed, in order, before the app started.
    node.wait_until("ordered runs", WAIT, |n| {
        Ok(n.pod("ordered-testnode")?
            .is_some_and(|p| phase(&p) == "Running"))
    })?;
    let ordered = node.pod("ordered-testnode")?.context("ordered")?;
    for init in ["init0", "init1"] {
        let terminated = &init_status(&ordered, init)["state"]["terminated"];
        assert_eq!(terminated["reason"], "Completed", "{init}: {terminated}");
    }
    let log = node.logs().join(format!(
        "default_ordered-testnode_{}/app/0.log",
        uid(&ordered)
    ));
    node.wait_until("the app logged the file", WAIT, |_| {
        Ok(fs::read_to_string(&log).is_ok_and(|t| t.contains("init1")))
    })?;
    let text = fs::read_to_string(&log)?;
    let lines: Vec<&str> = text.lines().filter_map(|l| l.rsplit(' ').next()).collect();
    assert_eq!(lines, ["init0", "init1"], "app log: {text}");

    // Never: the failed init container fails the pod; the app never starts.
    node.wait_until("never fails", WAIT, |n| {
        Ok(n.pod("never-testnode")?
            .is_some_and(|p| phase(&p) == "Failed"))
    })?;
    let never = node.pod("never-testnode")?.context("never")?;
    let init = init_status(&never, "init0");
    assert_eq!(init["state"]["terminated"]["exitCode"], 1, "{init}");
    assert_eq!(init["restartCount"], 0, "{init}");
    assert_eq!(waiting_reason(status(&never, "app")), "PodInitializing");

    // Always: the init container is retried with backoff; the app keeps waiting.
    node.wait_until("always retries its init container", WAIT, |n| {
        Ok(n.pod("always-testnode")?.is_some_and(|p| {
            let init = init_status(&p, "init0");
            init["restartCount"].as_u64() >= Some(1) && waiting_reason(init) == "CrashLoopBackOff"
        }))
    })?;
    let always = node.pod("always-testnode")?.context("always")?;
    assert_eq!(phase(&always), "Pending");
    assert_eq!(waiting_reason(status(&always, "app")), "PodInitializing");

    // By now the runtime has had every chance to start an app container it should not have.
    for pod in [&never, &always] {
        let view = runtime_view(&node, &uid(pod))?;
        ensure!(
            view.containers.iter().all(|(_, name, _)| name == "init0"),
            "{}: {view:?}",
            pod["metadata"]["name"]
        );
    }
    // The failed pod's sandbox is stopped, and it stays failed.
    let view = runtime_view(&node, &uid(&never))?;
    ensure!(
        view.sandboxes.iter().all(|(_, state)| *state != 0),
        "{view:?}"
    );
    assert_eq!(
        phase(&node.pod("never-testnode")?.context("never")?),
        "Failed"
    );
    Ok(())
}

/// The deleted pods left nothing in the runtime, and their stops were timed.
fn nothing_left(node: &TestNode, uids: &BTreeMap<&str, String>) -> Result<()> {
    for (name, pod_uid) in uids {
        let view = runtime_view(node, pod_uid)?;
        ensure!(
            view.sandboxes.is_empty() && view.containers.is_empty(),
            "{name} left {view:?} in the runtime"
        );
    }
    // The preStop exec and the stops are timed like every other CRI call.
    cri_calls_timed(
        node,
        &[
            "ExecSync",
            "StopContainer",
            "StopPodSandbox",
            "RemovePodSandbox",
        ],
    )?;
    Ok(())
}

/// `/metrics` has a CRI latency series for each of `methods`.
fn cri_calls_timed(node: &TestNode, methods: &[&str]) -> Result<()> {
    let metrics = node.get("/metrics")?;
    for method in methods {
        let count = format!("kernlet_cri_request_duration_seconds_count{{method=\"{method}\"}}");
        ensure!(metrics.contains(&count), "no {count} in /metrics");
    }
    Ok(())
}

fn simple_manifest(name: &str, image: &str, policy: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  \
         terminationGracePeriodSeconds: 1\n  containers:\n  - name: main\n    \
         image: {image}\n    imagePullPolicy: {policy}\n    \
         command: [\"sh\", \"-c\", {UNTIL_TERM:?}]\n"
    )
}

#[test]
#[ignore = "host: needs root, containerd and runc; run by cargo xtask test"]
fn image_pull_failures_show_upstream_reasons_and_spare_the_node() -> Result<()> {
    let node = TestNode::start()?;
    // Nothing listens on port 1: the pull fails at once, whatever the host's network.
    node.write_manifest(
        "pull.yaml",
        &simple_manifest("pull", "127.0.0.1:1/kernlet/missing:1", "IfNotPresent"),
    )?;
    node.write_manifest(
        "never.yaml",
        &simple_manifest("never", "kernlet.local/missing:1", "Never"),
    )?;
    node.write_manifest("good.yaml", &simple_manifest("good", IMAGE, "Never"))?;

    // ErrImagePull shows only until the next sync (about half a second) before ImagePullBackOff,
    // so the transitions are read from kernlet's log, where each one is written, not sampled.
    let mut pull_uid = String::new();
    node.wait_until("pull is reported", WAIT, |n| {
        pull_uid = n.pod("pull-testnode")?.map(|p| uid(&p)).unwrap_or_default();
        Ok(!pull_uid.is_empty())
    })?;
    let mut reasons: Vec<String> = Vec::new();
    node.wait_until(
        "kernlet logs ErrImagePull, then ImagePullBackOff for pull",
        WAIT,
        |n| {
            reasons = logged_waiting_reasons(&n.log(), &pull_uid, "main");
            let pulled = reasons.iter().position(|r| r == "ErrImagePull");
            Ok(pulled.is_some_and(|i| reasons[i..].iter().any(|r| r == "ImagePullBackOff")))
        },
    )?;
    assert_eq!(reasons.first().map(String::as_str), Some("ErrImagePull"));
    assert!(
        reasons
            .iter()
            .all(|r| ["ErrImagePull", "ImagePullBackOff"].contains(&r.as_str())),
        "{reasons:?}"
    );
    // What the status shows at any moment is one of the two, never a started container.
    let pull = node.pod("pull-testnode")?.context("pull")?;
    let shown = waiting_reason(status(&pull, "main"));
    assert!(
        ["ErrImagePull", "ImagePullBackOff"].contains(&shown),
        "pull shows {shown:?}"
    );
    node.wait_until("never shows ErrImageNeverPull", WAIT, |n| {
        Ok(n.pod("never-testnode")?
            .is_some_and(|p| waiting_reason(status(&p, "main")) == "ErrImageNeverPull"))
    })?;
    let never = node.pod("never-testnode")?.context("never")?;
    let message = status(&never, "main")["state"]["waiting"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(message.contains("kernlet.local/missing:1"), "{message}");
    node.wait_until("good runs", WAIT, |n| {
        Ok(n.pod("good-testnode")?
            .is_some_and(|p| phase(&p) == "Running"))
    })?;
    for name in ["pull-testnode", "never-testnode"] {
        let pod = node.pod(name)?.context("reported")?;
        assert_eq!(phase(&pod), "Pending", "{name}");
        assert!(status(&pod, "main")["containerID"].is_null(), "{name}");
    }
    // Failed pulls are timed too.
    cri_calls_timed(&node, &["PullImage"])?;
    Ok(())
}

#[test]
#[ignore = "host: needs root, containerd and runc; run by cargo xtask test"]
fn broken_manifests_are_reported_and_do_not_stop_the_good_ones() -> Result<()> {
    let node = TestNode::start()?;
    node.write_manifest(
        "broken.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: broken\n spec: [\n",
    )?;
    node.write_manifest(
        "noimage.yaml",
        &simple_manifest("noimage", IMAGE, "Never").replace(&format!("    image: {IMAGE}\n"), ""),
    )?;
    node.write_manifest("good.yaml", &simple_manifest("good", IMAGE, "Never"))?;
    node.wait_until("good runs", WAIT, |n| {
        Ok(n.pod("good-testnode")?
            .is_some_and(|p| phase(&p) == "Running"))
    })?;
    node.wait_until("both broken files are reported", WAIT, |n| {
        let log = n.log();
        Ok(log.contains("broken.yaml") && log.contains("noimage.yaml"))
    })?;
    let log = node.log();
    let line = |file: &str| -> String {
        log.lines()
            .find(|l| l.contains(file) && l.contains("broken static pod manifest"))
            .unwrap_or_default()
            .to_owned()
    };
    // The YAML error with its position; the missing field by its upstream path.
    let broken = line("broken.yaml");
    assert!(
        broken.contains("invalid yaml") && broken.contains("line "),
        "{broken}"
    );
    let noimage = line("noimage.yaml");
    assert!(
        noimage.contains("spec.containers[0].image") && noimage.contains("required value"),
        "{noimage}"
    );
    assert_eq!(node.pod_names()?, ["good-testnode"]);

    // Fixed later, each runs; the good pod is untouched throughout.
    let good_id =
        status(&node.pod("good-testnode")?.context("good")?, "main")["containerID"].clone();
    node.write_manifest("broken.yaml", &simple_manifest("broken", IMAGE, "Never"))?;
    node.write_manifest("noimage.yaml", &simple_manifest("noimage", IMAGE, "Never"))?;
    node.wait_until("the fixed pods run", WAIT, |n| {
        Ok(["broken-testnode", "noimage-testnode"].iter().all(|name| {
            n.pod(name)
                .ok()
                .flatten()
                .is_some_and(|p| phase(&p) == "Running")
        }))
    })?;
    let good = node.pod("good-testnode")?.context("good")?;
    assert_eq!(status(&good, "main")["containerID"], good_id);
    assert_eq!(status(&good, "main")["restartCount"], 0);
    node.get("/healthz")?;
    Ok(())
}
