//! Lifecycle hooks through the real kernlet binary, containerd and runc (issue 11): the
//! postStart hook's effect is visible before the container is reported running, a failing
//! postStart kills the container (`FailedPostStartHook`) and it is restarted; preStop httpGet
//! reaches its server before the container stops, and a preStop sleep holds the stop.
//!
//! Run with `cargo test -p kernlet-tests --test host_hooks -- --ignored --test-threads=1`.
#![expect(
    clippy::disallowed_methods,
    reason = "waits on real processes and measures real time: std time is the right clock"
)]
mod support;

use std::{
    fs,
    io::{Read, Write},
    net::TcpListener,
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use kernlet_tests::node::TestNode;
use support::{container, status, waiting_reason};

const WAIT: Duration = Duration::from_mins(1);

fn pod_manifest(name: &str, grace: u32, volumes: &str, containers: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  restartPolicy: Always\n  \
         terminationGracePeriodSeconds: {grace}\n{volumes}  containers:\n{containers}"
    )
}

#[test]
#[ignore = "host: needs root, containerd and runc; run by cargo xtask test"]
fn post_start_runs_before_running_is_reported_and_a_failing_one_kills() -> Result<()> {
    let node = TestNode::start()?;
    let marks = node.dir().join("marks");
    fs::create_dir_all(&marks)?;
    let volumes = format!(
        "  volumes:\n  - name: marks\n    hostPath:\n      path: {}\n      type: Directory\n",
        marks.display()
    );
    let mount = "    volumeMounts:\n    - name: marks\n      mountPath: /marks\n";
    // The hook takes 2 s, then leaves its mark.
    let slow_hook = format!(
        "{mount}    lifecycle:\n      postStart:\n        exec:\n          \
         command: [\"sh\", \"-c\", \"sleep 2; date +%s > /marks/hooked\"]\n"
    );
    let failing_hook = "    lifecycle:\n      postStart:\n        exec:\n          \
                        command: [\"sh\", \"-c\", \"echo no; exit 3\"]\n";
    node.write_manifest(
        "hooked.yaml",
        &pod_manifest(
            "hooked",
            1,
            &volumes,
            &format!(
                "{}{}",
                container("main", "exec sleep 300", &slow_hook),
                container("failing", "exec sleep 300", failing_hook)
            ),
        ),
    )?;
    // Poll fast: the first status that shows main running must find the hook's mark there.
    let deadline = Instant::now() + WAIT;
    loop {
        let pod = node.pod("hooked-testnode")?;
        if let Some(pod) = pod.filter(|p| status(p, "main")["state"]["running"].is_object()) {
            assert!(
                marks.join("hooked").exists(),
                "main reported running before its postStart hook finished: {}",
                status(&pod, "main")
            );
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "main never ran");
        std::thread::sleep(Duration::from_millis(50));
    }
    node.wait_until("failing was killed and restarted", WAIT, |n| {
        Ok(n.pod("hooked-testnode")?.is_some_and(|p| {
            let failing = status(&p, "failing");
            failing["restartCount"].as_u64() >= Some(1)
                && failing["lastState"]["terminated"].is_object()
                && ["PostStartHookError", "CrashLoopBackOff"].contains(&waiting_reason(failing))
        }))
    })?;
    let log = node.log();
    assert!(
        log.contains("FailedPostStartHook"),
        "upstream's event reason in the log"
    );
    assert!(
        log.contains("Exec lifecycle hook ([\\\"sh\\\", \\\"-c\\\", \\\"echo no; exit 3\\\"])")
            || log.contains("Exec lifecycle hook ([\"sh\", \"-c\", \"echo no; exit 3\"])"),
        "upstream's hook message"
    );
    let pod = node.pod("hooked-testnode")?.unwrap_or_default();
    assert_eq!(status(&pod, "main")["restartCount"], 0, "{pod}");
    Ok(())
}

/// An HTTP server on the host that reports each request's first line and answers 200.
fn http_server() -> Result<(u16, mpsc::Receiver<(String, Instant)>)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut buf = [0_u8; 2048];
            let n = stream.read(&mut buf).unwrap_or(0);
            let head = String::from_utf8_lossy(&buf[..n]).to_string();
            let _ = tx.send((head.lines().next().unwrap_or("").to_owned(), Instant::now()));
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
        }
    });
    Ok((port, rx))
}

#[test]
#[ignore = "host: needs root, containerd and runc; run by cargo xtask test"]
fn pre_stop_http_get_and_sleep_run_before_the_stop() -> Result<()> {
    let node = TestNode::start()?;
    let (port, requests) = http_server()?;
    // Both containers end at once on SIGTERM, so what holds their stop is the hook.
    let quick = "trap 'exit 0' TERM; while true; do sleep 0.1; done";
    let http_hook = format!(
        "    lifecycle:\n      preStop:\n        httpGet:\n          host: 127.0.0.1\n          \
         port: {port}\n          path: /stopping\n"
    );
    let sleep_hook = "    lifecycle:\n      preStop:\n        sleep:\n          seconds: 3\n";
    node.write_manifest(
        "stopper.yaml",
        &pod_manifest(
            "stopper",
            10,
            "",
            &format!(
                "{}{}",
                container("web", quick, &http_hook),
                container("sleeper", quick, sleep_hook)
            ),
        ),
    )?;
    node.wait_until("both run", WAIT, |n| {
        Ok(n.pod("stopper-testnode")?.is_some_and(|p| {
            ["web", "sleeper"]
                .iter()
                .all(|c| status(&p, c)["state"]["running"].is_object())
        }))
    })?;
    let removed = Instant::now();
    node.remove_manifest("stopper.yaml")?;
    let (line, at) = requests
        .recv_timeout(WAIT)
        .context("the preStop httpGet never arrived")?;
    assert!(line.starts_with("GET /stopping HTTP/1.1"), "{line}");
    node.wait_until("the pod is gone", WAIT, |n| {
        Ok(n.pod("stopper-testnode")?.is_none())
    })?;
    let gone = removed.elapsed();
    eprintln!(
        "preStop httpGet after {:?}, pod gone after {gone:?}",
        at - removed
    );
    // The sleep hook held the sleeper for its 3 s; without it both end in well under a second.
    assert!(gone >= Duration::from_secs(3), "gone after {gone:?}");
    assert!(
        gone < Duration::from_secs(10),
        "not the whole grace period: {gone:?}"
    );
    Ok(())
}
