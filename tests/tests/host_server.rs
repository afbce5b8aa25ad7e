//! The kubelet API of the real kernlet binary, over TLS with a client certificate: every
//! `/containerLogs` parameter on real CRI log files (containerd writes them), `follow` across a
//! rotation, `previous` after a restart, upstream's errors; the read-only port and the healthz
//! port.
mod support;

use std::{fs, time::Duration};

use anyhow::{Context, Result, ensure};
use kernlet_tests::node::TestNode;
use support::{WAIT, container, status};

fn pod_manifest(name: &str, volumes: &str, containers: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  \
         terminationGracePeriodSeconds: 1\n{volumes}  containers:\n{containers}"
    )
}

/// The numbers of the `out N` lines in `text`, in order.
fn numbers(text: &str) -> Vec<u64> {
    text.lines()
        .filter_map(|line| line.strip_prefix("out ")?.parse().ok())
        .collect()
}

#[test]
#[ignore = "host: needs root, containerd and runc; run by cargo xtask test"]
fn container_logs_serve_every_parameter() -> Result<()> {
    let node = TestNode::start_with(
        "containerLogMaxSize: 16Ki\ncontainerLogMaxFiles: 3\n",
        &[("KERNLET_LOG_MONITOR_INTERVAL", "1s")],
    )?;
    // stdout and stderr, ten lines a second; every 5th line ~2 KB so that a 16 KiB log rotates
    // every few seconds.
    let talker = "i=0; while true; do i=$((i+1)); echo \"out $i\"; echo \"err $i\" >&2; \
                  if [ $((i % 5)) = 0 ]; then yes pad | head -c 2000 | tr -d '\\n'; echo; fi; \
                  sleep 0.1; done";
    node.write_manifest(
        "talker.yaml",
        &pod_manifest("talker", "", &container("app", talker, "")),
    )?;
    let base = "/containerLogs/default/talker-testnode/app";
    node.wait_until("talker has logged 20 lines", WAIT, |node| {
        Ok(numbers(&node.client.request(base)?.1).len() >= 20)
    })?;

    let (code, all) = node.client.request(base)?;
    ensure!(code == 200, "{code} {all}");
    ensure!(
        all.contains("out 1\n") && all.contains("err 1\n"),
        "both streams: {all}"
    );

    let (_, tail) = node.client.request(&format!("{base}?tailLines=3"))?;
    ensure!(tail.lines().count() == 3, "tailLines=3: {tail:?}");

    let (_, stamped) = node
        .client
        .request(&format!("{base}?tailLines=2&timestamps=true"))?;
    for line in stamped.lines() {
        let (stamp, rest) = line.split_once(' ').context("no timestamp")?;
        ensure!(
            stamp.len() >= 20 && stamp.as_bytes()[4] == b'-' && stamp.contains('T'),
            "{line}"
        );
        ensure!(!rest.is_empty(), "{line}");
    }

    let (_, limited) = node.client.request(&format!("{base}?limitBytes=12"))?;
    ensure!(limited.len() == 12, "limitBytes=12: {limited:?}");

    let (_, recent) = node.client.request(&format!("{base}?sinceSeconds=1"))?;
    let recent = numbers(&recent);
    ensure!(
        !recent.is_empty() && recent[0] > 1,
        "sinceSeconds=1 starts later: {recent:?}"
    );
    let (_, future) = node
        .client
        .request(&format!("{base}?sinceTime=2099-01-01T00:00:00Z"))?;
    ensure!(future.is_empty(), "sinceTime in the future: {future:?}");

    // Errors as upstream: undecodable 400, invalid 422, unknown pod or container 404.
    for (path, want) in [
        (format!("{base}?tailLines=x"), 400),
        (format!("{base}?tailLines=-1"), 422),
        (
            format!("{base}?sinceSeconds=1&sinceTime=2020-01-01T00:00:00Z"),
            422,
        ),
        ("/containerLogs/default/nope/app".to_owned(), 404),
        (
            "/containerLogs/default/talker-testnode/nope".to_owned(),
            404,
        ),
        (format!("{base}?previous=true"), 400),
    ] {
        let (code, body) = node.client.request(&path)?;
        ensure!(code == want, "{path}: {code} {body}, wanted {want}");
    }

    follow_across_a_rotation(&node, base)
}

/// `follow`, across at least one rotation: the numbers keep coming, in order, none lost.
fn follow_across_a_rotation(node: &TestNode, base: &str) -> Result<()> {
    let log_dir = node.logs().join(format!(
        "default_talker-testnode_{}",
        pod_uid(node, "talker-testnode")?
    ));
    // Rotated files are named by the time of their rotation: a new name is a new rotation.
    let rotated = || -> Result<std::collections::BTreeSet<String>> {
        Ok(fs::read_dir(log_dir.join("app"))?
            .filter_map(Result::ok)
            .map(|e| {
                e.file_name()
                    .to_string_lossy()
                    .trim_end_matches(".gz")
                    .to_owned()
            })
            .filter(|name| name.starts_with("0.log."))
            .collect())
    };
    let before = rotated()?;
    let (code, followed) = node.client.stream_for(
        &format!("{base}?follow=true&tailLines=1"),
        Duration::from_secs(8),
    )?;
    ensure!(code == 200, "follow: {code}");
    let seen = numbers(&followed);
    ensure!(
        seen.len() >= 40,
        "follow brought {} lines in 12 s",
        seen.len()
    );
    ensure!(
        seen.windows(2).all(|w| w[1] == w[0] + 1),
        "follow lost or reordered lines: {seen:?}"
    );
    let files: Vec<_> = fs::read_dir(log_dir.join("app"))?
        .filter_map(Result::ok)
        .map(|e| (e.file_name(), e.metadata().map_or(0, |m| m.len())))
        .collect();
    ensure!(
        !rotated()?.is_subset(&before),
        "no rotation happened while following: {files:?}\n{}",
        node.log()
            .lines()
            .filter(|l| l.contains("rotat"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    Ok(())
}

fn pod_uid(node: &TestNode, name: &str) -> Result<String> {
    let pod = node.pod(name)?.context("no pod")?;
    Ok(pod["metadata"]["uid"]
        .as_str()
        .context("no uid")?
        .to_owned())
}

#[test]
#[ignore = "host: needs root, containerd and runc; run by cargo xtask test"]
fn previous_serves_the_instance_before_the_restart() -> Result<()> {
    let node = TestNode::start()?;
    let marks = node.dir().join("marks");
    fs::create_dir_all(&marks)?;
    let volumes = format!(
        "  volumes:\n  - name: marks\n    hostPath:\n      path: {}\n      type: Directory\n",
        marks.display()
    );
    let mount = "    volumeMounts:\n    - name: marks\n      mountPath: /marks\n";
    let script = "if [ -e /marks/once ]; then echo second; exec sleep 300; \
                  else touch /marks/once; echo first; exit 1; fi";
    node.write_manifest(
        "twice.yaml",
        &pod_manifest("twice", &volumes, &container("app", script, mount)),
    )?;
    node.wait_until("twice restarted and runs", WAIT, |node| {
        let Some(pod) = node.pod("twice-testnode")? else {
            return Ok(false);
        };
        let app = status(&pod, "app");
        Ok(app["restartCount"].as_u64() == Some(1) && app["state"]["running"].is_object())
    })?;
    let base = "/containerLogs/default/twice-testnode/app";
    let (code, now) = node.client.request(base)?;
    ensure!(code == 200 && now == "second\n", "current: {code} {now:?}");
    let (code, before) = node.client.request(&format!("{base}?previous=true"))?;
    ensure!(
        code == 200 && before == "first\n",
        "previous: {code} {before:?}"
    );
    Ok(())
}

#[test]
#[ignore = "host: needs root, containerd and runc; run by cargo xtask test"]
fn read_only_and_healthz_ports_serve_only_their_routes() -> Result<()> {
    let read_only = xtask::http::free_port()?;
    let healthz = xtask::http::free_port()?;
    let node = TestNode::start_with(
        &format!(
            "readOnlyPort: {read_only}\nhealthzPort: {healthz}\nhealthzBindAddress: 127.0.0.1\n"
        ),
        &[],
    )?;
    // Plain HTTP, no credentials.
    ensure!(xtask::http::get(healthz, "/healthz")? == "ok");
    ensure!(
        xtask::http::get(healthz, "/pods").is_err(),
        "healthz port serves /pods"
    );
    ensure!(xtask::http::get(read_only, "/pods")?.contains("PodList"));
    ensure!(xtask::http::get(read_only, "/metrics/resource").is_ok());
    for debugging in ["/configz", "/runningpods/", "/containerLogs/default/x/y"] {
        let error = xtask::http::get(read_only, debugging)
            .err()
            .context("served")?;
        ensure!(error.to_string().contains("404"), "{debugging}: {error}");
    }
    // The kubelet port is TLS only: plain HTTP gets no answer.
    ensure!(
        xtask::http::get(node.port, "/healthz").is_err(),
        "plain HTTP on the TLS port"
    );
    Ok(())
}

#[test]
#[ignore = "host: needs root, containerd and runc; run by cargo xtask test"]
fn the_read_only_port_is_closed_by_default() -> Result<()> {
    let node = TestNode::start()?;
    ensure!(node.get("/healthz")? == "ok");
    let config = fs::read_to_string(node.dir().join("config.yaml"))?;
    ensure!(
        !config.contains("readOnlyPort"),
        "the fixture sets no read-only port"
    );
    // Upstream's read-only port number; nothing of kernlet's listens there.
    ensure!(
        std::net::TcpStream::connect(("127.0.0.1", 10255)).is_err(),
        "something listens on 10255"
    );
    Ok(())
}

#[test]
#[ignore = "host: needs root, containerd and runc; run by cargo xtask test"]
fn healthz_checks_running_pods_and_configz() -> Result<()> {
    let node = TestNode::start()?;
    node.write_manifest(
        "idle.yaml",
        &pod_manifest("idle", "", &container("app", "exec sleep 300", "")),
    )?;
    node.wait_until("idle runs", WAIT, |node| {
        Ok(node
            .pod("idle-testnode")?
            .is_some_and(|pod| pod["status"]["phase"] == "Running"))
    })?;
    let verbose = node.get("/healthz?verbose")?;
    ensure!(
        verbose == "[+]ping ok\n[+]syncloop ok\nhealthz check passed\n",
        "{verbose:?}"
    );
    ensure!(node.get("/healthz/syncloop")? == "ok");
    let running: serde_json::Value = serde_json::from_str(&node.get("/runningpods/")?)?;
    let idle = running["items"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|pod| pod["metadata"]["name"] == "idle-testnode")
        .context("idle-testnode not among the running pods")?;
    ensure!(idle["metadata"]["uid"] == pod_uid(&node, "idle-testnode")?.as_str());
    ensure!(idle["spec"]["containers"][0]["name"] == "app", "{idle}");

    let configz: serde_json::Value = serde_json::from_str(&node.get("/configz")?)?;
    let effective = &configz["kubeletconfig"];
    ensure!(effective["port"] == node.port, "{configz}");
    ensure!(
        effective["authorization"]["mode"] == "AlwaysAllow",
        "{configz}"
    );
    ensure!(
        effective["authentication"]["x509"]["clientCAFile"].is_string(),
        "{configz}"
    );
    ensure!(effective["syncFrequency"] == "1m0s", "{configz}");
    Ok(())
}
