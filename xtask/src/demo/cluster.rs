//! `cargo xtask demo --cluster`: kernlet as a node of a real local control plane
//! ([`crate::control_plane`]: etcd, kube-apiserver with `Node,RBAC` and `NodeRestriction`,
//! kube-controller-manager, kube-scheduler), with a `system:node:kernlet-demo` client
//! certificate. It creates a Deployment and prints, every 5 s, what `kubectl get nodes` and
//! `kubectl get pods -o wide` would show, read from the API server as the admin (no `kubectl`
//! ships here; the admin kubeconfig it prints works with one). The example static pods run too
//! and appear as mirror pods.
use std::{
    fs,
    path::Path,
    process::Command,
    sync::mpsc,
    thread,
    time::{Duration, SystemTime},
};

use anyhow::{Context, Result, bail};
use nix::unistd::Pid;
use serde_json::Value;

use super::{DEMO_PORT, Event, PodRow, stop_kernlet};
use crate::{
    control_plane::{ControlPlane, deployment},
    k8s::{self, K8sBin},
    runtime::RuntimeFixture,
    workspace_root,
};

const NODE: &str = "kernlet-demo";

/// Starts the control plane; the caller has started the runtime fixture.
pub(super) fn run(
    fixture: &RuntimeFixture,
    manifests: &Path,
    events: &mpsc::Sender<Event>,
    event_rx: &mpsc::Receiver<Event>,
) -> Result<()> {
    let bin = match k8s::find()? {
        K8sBin::Found(bin) => bin,
        K8sBin::Missing(reason) => {
            bail!("the cluster demo needs the Kubernetes binaries: {reason}")
        }
    };
    println!("demo: starting etcd, kube-apiserver, kube-controller-manager and kube-scheduler");
    let mut plane = ControlPlane::start(&bin)?;
    plane.start_controllers()?;
    let admin = plane.kubeconfig("admin", &plane.admin)?;
    println!(
        "demo: control plane at {} (admin kubeconfig: {})",
        plane.server(),
        admin.display()
    );
    let node_pki = plane.issue("node", &format!("system:node:{NODE}"), &["system:nodes"])?;
    let kubeconfig = plane.kubeconfig("node", &node_pki)?;
    // The kubelet port as a cluster's: the cluster CA's clients, the rest asked of the API server.
    let auth = format!(
        "authentication: {{x509: {{clientCAFile: {}}}, webhook: {{enabled: true}}, \
         anonymous: {{enabled: false}}}}\nauthorization: {{mode: Webhook}}\n",
        plane.ca_file().display()
    );
    let logs = fixture.base_dir().join("logs");
    let config = fixture.kernlet_config(manifests, &logs, DEMO_PORT, &auth)?;
    let config_path = fixture.base_dir().join("kernlet-config.yaml");
    fs::write(&config_path, config)
        .with_context(|| format!("writing {}", config_path.display()))?;
    let binary = workspace_root().join("target/debug/kernlet");
    let mut kernlet = Command::new(&binary)
        .arg("--config")
        .arg(&config_path)
        .arg("--root-dir")
        .arg(fixture.base_dir().join("kubelet"))
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["--hostname-override", NODE])
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    let pid = Pid::from_raw(i32::try_from(kernlet.id()).context("kernlet pid out of range")?);
    println!("demo: kernlet pid {pid} joins as node {NODE} (Ctrl-C to stop)");
    let client = plane.client(&plane.admin);
    let (code, body) = client.send(
        "POST",
        "/apis/apps/v1/namespaces/default/deployments",
        &deployment("hello", 3, NODE),
    )?;
    if code != 201 {
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        bail!("creating the demo Deployment: {code} {body}");
    }
    println!("demo: created Deployment default/hello (3 replicas)");
    let on_exit = events.clone();
    let waiter = thread::spawn(move || {
        let _ = on_exit.send(Event::Exited(kernlet.wait()));
    });
    let outcome = loop {
        match event_rx.recv_timeout(Duration::from_secs(5)) {
            Ok(Event::Exited(status)) => {
                let status = status.context("waiting for kernlet")?;
                break Err(anyhow::anyhow!("kernlet exited by itself: {status}"));
            }
            Ok(Event::Stop) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                break stop_kernlet(pid, event_rx);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => print_tables(&plane),
        }
    };
    let _ = waiter.join();
    outcome
}

/// `kubectl get nodes` and `kubectl get pods -o wide`, from the API server.
fn print_tables(plane: &ControlPlane) {
    if let Ok(nodes) = plane.get_json("/api/v1/nodes") {
        println!("\n$ kubectl get nodes");
        println!(
            "{:<16} {:<10} {:<8} {:<6} VERSION",
            "NAME", "STATUS", "ROLES", "AGE"
        );
        for node in nodes["items"].as_array().into_iter().flatten() {
            let ready = node["status"]["conditions"]
                .as_array()
                .and_then(|all| all.iter().find(|c| c["type"] == "Ready"))
                .is_some_and(|c| c["status"] == "True");
            println!(
                "{:<16} {:<10} {:<8} {:<6} {}",
                text(&node["metadata"]["name"]),
                if ready { "Ready" } else { "NotReady" },
                "<none>",
                age(&node["metadata"]["creationTimestamp"]),
                text(&node["status"]["nodeInfo"]["kubeletVersion"]),
            );
        }
    }
    if let Ok(pods) = plane.get_json("/api/v1/namespaces/default/pods") {
        println!("\n$ kubectl get pods -o wide");
        println!(
            "{:<32} {:<6} {:<18} {:<9} {:<15} NODE",
            "NAME", "READY", "STATUS", "RESTARTS", "IP"
        );
        for pod in pods["items"].as_array().into_iter().flatten() {
            print_pod(pod);
        }
    }
}

fn print_pod(pod: &Value) {
    let row = PodRow::of(pod);
    let phase = pod["status"]["phase"].as_str().unwrap_or("Pending");
    let count = pod["spec"]["containers"].as_array().map_or(0, Vec::len);
    println!(
        "{:<32} {:<6} {:<18} {:<9} {:<15} {}",
        text(&pod["metadata"]["name"]),
        format!("{}/{count}", row.ready),
        row.state.unwrap_or(phase),
        row.restarts,
        pod["status"]["podIP"].as_str().unwrap_or("<none>"),
        pod["spec"]["nodeName"].as_str().unwrap_or("<none>"),
    );
}

fn text(value: &Value) -> &str {
    value.as_str().unwrap_or_default()
}

/// `kubectl`'s short age of an RFC 3339 timestamp: `42s`, `3m`.
fn age(created: &Value) -> String {
    let Some(created) = created.as_str().and_then(epoch_seconds) else {
        return "<unknown>".to_owned();
    };
    #[expect(clippy::disallowed_methods, reason = "the demo prints wall-clock ages")]
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let seconds = now.saturating_sub(created);
    if seconds < 120 {
        format!("{seconds}s")
    } else {
        format!("{}m", seconds / 60)
    }
}

/// Seconds since the epoch of an API server timestamp (`2026-12-06T21:40:03Z`).
fn epoch_seconds(text: &str) -> Option<u64> {
    let number = |range: std::ops::Range<usize>| text.get(range)?.parse::<u64>().ok();
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
    // Days from the civil date (Howard Hinnant's algorithm), March-based years.
    let (y, m) = if month <= 2 {
        (year - 1, month + 9)
    } else {
        (year, month - 3)
    };
    let era = y / 400;
    let year_of_era = y - era * 400;
    let day_of_year = (153 * m + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    let days = (era * 146_097 + day_of_era).checked_sub(719_468)?;
    Some(days * 86_400 + hour * 3600 + minute * 60 + second)
}

#[cfg(test)]
mod tests {
    use super::epoch_seconds;

    #[test]
    fn api_timestamps_become_epoch_seconds() {
        assert_eq!(epoch_seconds("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(epoch_seconds("2026-12-06T21:40:03Z"), Some(1_796_593_203));
        assert_eq!(epoch_seconds("2000-03-01T00:00:00Z"), Some(951_868_800));
        assert_eq!(epoch_seconds("garbage"), None);
    }
}
