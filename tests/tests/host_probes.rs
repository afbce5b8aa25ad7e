//! Probes and container start-up through the real kernlet binary, containerd and runc (issue
//! 11): a container that cannot start does not keep its sibling from running; exec, httpGet and
//! tcpSocket probes pass and fail; failureThreshold is counted exactly; a liveness failure
//! restarts the container with restartCount + 1; startup gates liveness; readiness flips
//! `Ready` both ways within one period plus a second; `/metrics/probes` counts.
//!
//! Run with `cargo test -p kernlet-tests --test host_probes -- --ignored --test-threads=1`.
#![expect(
    clippy::disallowed_methods,
    reason = "waits on real processes and measures real time: std time is the right clock"
)]
mod support;

use std::{
    fs,
    time::{Duration, Instant},
};

use anyhow::Result;
use kernlet_tests::node::TestNode;
use serde_json::Value;
use support::{container, status, waiting_reason};

const WAIT: Duration = Duration::from_mins(1);

fn pod_manifest(name: &str, policy: &str, volumes: &str, containers: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  restartPolicy: {policy}\n  \
         terminationGracePeriodSeconds: 1\n{volumes}  containers:\n{containers}"
    )
}

fn host_dir_volume(name: &str, path: &std::path::Path) -> String {
    format!(
        "  volumes:\n  - name: {name}\n    hostPath:\n      path: {}\n      type: Directory\n",
        path.display()
    )
}

fn condition<'a>(pod: &'a Value, kind: &str) -> &'a str {
    pod["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == kind)
        .and_then(|c| c["status"].as_str())
        .unwrap_or_default()
}

#[test]
#[ignore = "host: needs root, containerd and runc; run by cargo xtask test"]
fn a_container_that_cannot_start_does_not_block_its_sibling() -> Result<()> {
    let node = TestNode::start()?;
    let broken =
        "  - name: broken\n    image: kernlet.local/missing:1\n    imagePullPolicy: Never\n";
    node.write_manifest(
        "two.yaml",
        &pod_manifest(
            "two",
            "Always",
            "",
            &format!("{broken}{}", container("main", "exec sleep 300", "")),
        ),
    )?;
    node.wait_until("main runs beside the broken container", WAIT, |n| {
        Ok(n.pod("two-testnode")?.is_some_and(|p| {
            status(&p, "main")["state"]["running"].is_object()
                && waiting_reason(status(&p, "broken")) == "ErrImageNeverPull"
        }))
    })?;
    let pod = node.pod("two-testnode")?.unwrap_or_default();
    assert_eq!(condition(&pod, "ContainersReady"), "False", "{pod}");
    Ok(())
}

#[test]
#[ignore = "host: needs root, containerd and runc; run by cargo xtask test"]
fn liveness_failures_are_counted_exactly_and_restart_the_container() -> Result<()> {
    let node = TestNode::start()?;
    let marks = node.dir().join("marks");
    fs::create_dir_all(&marks)?;
    // Healthy for 3 s, then every probe fails (and notes it); failureThreshold 3.
    let probe = "if [ -e /tmp/alive ]; then echo ok >> /marks/probes; \
                 else echo fail >> /marks/probes; exit 1; fi";
    let extra = format!(
        "    volumeMounts:\n    - name: marks\n      mountPath: /marks\n    livenessProbe:\n      \
         exec:\n        command: [\"sh\", \"-c\", {probe:?}]\n      periodSeconds: 1\n      \
         failureThreshold: 3\n"
    );
    node.write_manifest(
        "live.yaml",
        &pod_manifest(
            "live",
            "Always",
            &host_dir_volume("marks", &marks),
            &container(
                "main",
                "touch /tmp/alive; sleep 3; rm /tmp/alive; exec sleep 300",
                &extra,
            ),
        ),
    )?;
    node.wait_until("main restarted once", WAIT, |n| {
        Ok(n.pod("live-testnode")?
            .is_some_and(|p| status(&p, "main")["restartCount"].as_u64() >= Some(1)))
    })?;
    let pod = node.pod("live-testnode")?.unwrap_or_default();
    let main = status(&pod, "main");
    assert!(main["lastState"]["terminated"].is_object(), "{main}");
    // The first instance's probes: successes, then exactly failureThreshold failures.
    let probes = fs::read_to_string(marks.join("probes"))?;
    let first: Vec<&str> = probes
        .lines()
        .skip_while(|l| *l == "ok")
        .take_while(|l| *l == "fail")
        .collect();
    assert_eq!(first.len(), 3, "probes of the first instance: {probes}");
    let log = node.log();
    assert!(
        log.contains("Liveness probe failed"),
        "upstream's Unhealthy message"
    );
    assert!(
        log.contains("Container main failed liveness probe, will be restarted"),
        "upstream's Killing message"
    );
    let metrics = node.get("/metrics/probes")?;
    let failed = metrics.lines().any(|l| {
        l.starts_with("prober_probe_total{")
            && l.contains("probe_type=\"Liveness\"")
            && l.contains("result=\"failed\"")
            && l.contains("pod=\"live-testnode\"")
    });
    assert!(failed, "{metrics}");
    assert!(
        metrics.contains("prober_probe_duration_seconds_bucket{container=\"main\""),
        "{metrics}"
    );
    Ok(())
}

#[test]
#[ignore = "host: needs root, containerd and runc; run by cargo xtask test"]
fn startup_gates_liveness_and_a_failed_startup_restarts() -> Result<()> {
    let node = TestNode::start()?;
    // Liveness fails until /tmp/up exists (4 s in): without gating it would kill at once.
    let check = "    startupProbe:\n      exec:\n        command: [\"sh\", \"-c\", \"test -e /tmp/up\"]\n      \
                 periodSeconds: 1\n      failureThreshold: 15\n    livenessProbe:\n      exec:\n        \
                 command: [\"sh\", \"-c\", \"test -e /tmp/up\"]\n      periodSeconds: 1\n      failureThreshold: 1\n";
    let never = "    startupProbe:\n      exec:\n        command: [\"false\"]\n      \
                 periodSeconds: 1\n      failureThreshold: 2\n";
    node.write_manifest(
        "slow.yaml",
        &pod_manifest(
            "slow",
            "Always",
            "",
            &format!(
                "{}{}",
                container("slow", "sleep 4; touch /tmp/up; exec sleep 300", check),
                container("never", "exec sleep 300", never)
            ),
        ),
    )?;
    node.wait_until("slow started and never restarted", WAIT, |n| {
        Ok(n.pod("slow-testnode")?.is_some_and(|p| {
            status(&p, "slow")["started"] == true
                && status(&p, "never")["restartCount"].as_u64() >= Some(1)
        }))
    })?;
    // Started and no liveness kill during the slow start, nor after it.
    std::thread::sleep(Duration::from_secs(3));
    let pod = node.pod("slow-testnode")?.unwrap_or_default();
    let slow = status(&pod, "slow");
    assert_eq!(slow["restartCount"], 0, "{slow}");
    assert_eq!(slow["ready"], true, "{slow}");
    let never = status(&pod, "never");
    assert_eq!(never["started"], false, "{never}");
    assert!(
        node.log()
            .contains("Container never failed startup probe, will be restarted")
    );
    Ok(())
}

#[test]
#[ignore = "host: needs root, containerd and runc; run by cargo xtask test"]
fn readiness_flips_ready_both_ways_within_a_period_and_a_second() -> Result<()> {
    let node = TestNode::start()?;
    let www = node.dir().join("www");
    fs::create_dir_all(&www)?;
    // httpd serves /www; readiness asks for /ready by the port's name; a tcpSocket liveness
    // probe on the same port passes throughout.
    let extra = "    ports:\n    - name: web\n      containerPort: 8080\n    volumeMounts:\n    \
                 - name: www\n      mountPath: /www\n    readinessProbe:\n      httpGet:\n        \
                 path: /ready\n        port: web\n      periodSeconds: 1\n      failureThreshold: 1\n    livenessProbe:\n      \
                 tcpSocket:\n        port: 8080\n      periodSeconds: 1\n      failureThreshold: 1\n";
    node.write_manifest(
        "web.yaml",
        &pod_manifest(
            "web",
            "Always",
            &host_dir_volume("www", &www),
            &container("main", "exec httpd -f -p 8080 -h /www", extra),
        ),
    )?;
    let ready = |want: &str| -> Result<Duration> {
        let started = Instant::now();
        node.wait_until(&format!("Ready {want}"), WAIT, |n| {
            Ok(n.pod("web-testnode")?.is_some_and(|p| {
                condition(&p, "Ready") == want && status(&p, "main")["state"]["running"].is_object()
            }))
        })?;
        Ok(started.elapsed())
    };
    ready("False")?;
    let mut took = Vec::new();
    for round in 0..2 {
        fs::write(www.join("ready"), "ok")?;
        took.push(ready("True")?);
        fs::remove_file(www.join("ready"))?;
        took.push(ready("False")?);
        eprintln!("round {round}: {took:?}");
    }
    for t in &took {
        assert!(*t <= Duration::from_millis(2_500), "flips took {took:?}");
    }
    let pod = node.pod("web-testnode")?.unwrap_or_default();
    assert_eq!(
        status(&pod, "main")["restartCount"],
        0,
        "the tcp liveness passes"
    );
    let metrics = node.get("/metrics/probes")?;
    for (kind, result) in [
        ("Readiness", "successful"),
        ("Readiness", "failed"),
        ("Liveness", "successful"),
    ] {
        assert!(
            metrics
                .lines()
                .any(|l| l.contains(&format!("probe_type=\"{kind}\""))
                    && l.contains(&format!("result=\"{result}\""))),
            "{kind} {result} missing:\n{metrics}"
        );
    }
    Ok(())
}
