//! `cargo xtask demo`: kernlet's main job on an embedded default. Standalone mode (static pods, no
//! API server), on a private containerd started by the runtime fixture, with the example static
//! pods in `deploy/examples/`. Everything it starts is torn down on exit (Ctrl-C, SIGTERM or
//! `--for`).
//!
//! The development host has hybrid cgroups (no v2 controllers), so the demo config sets
//! `cgroupsPerQOS: false`, which upstream supports; enforcement is shown by the node-VM tests.
//!
//! The kubelet port is served as in production: TLS with the serving certificate kernlet
//! generates into its cert dir, clients authenticated by certificate (the demo issues a client
//! CA and a `kernlet-admin` certificate, and prints the `curl` line that uses them), no
//! anonymous access. The pod table is read that way too.
use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, ExitStatus},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};

use crate::{
    cmd::run,
    http,
    runtime::{Options, RuntimeFixture},
    setup, workspace_root,
};

mod cluster;

#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Run kernlet as a node of a real local control plane (etcd, kube-apiserver,
    /// kube-controller-manager, kube-scheduler) with a Deployment on it, instead of standalone.
    #[arg(long)]
    pub cluster: bool,
    /// Stop after this many seconds instead of waiting for Ctrl-C.
    #[arg(long = "for", value_name = "SECONDS")]
    pub duration: Option<u64>,
    /// Static pod directory (default: deploy/examples).
    #[arg(long)]
    pub manifests: Option<PathBuf>,
}

/// The demo's kernlet port (localhost only).
pub(super) const DEMO_PORT: u16 = 10250;

/// What ends the demo.
pub(super) enum Event {
    /// Ctrl-C, SIGTERM or the `--for` time.
    Stop,
    /// kernlet exited by itself.
    Exited(std::io::Result<ExitStatus>),
}

pub fn cli(args: &DemoArgs) -> Result<()> {
    setup::ensure()?;
    run(
        Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .args(["build", "-p", "kernlet"])
            .current_dir(workspace_root()),
    )?;
    let manifests = args
        .manifests
        .clone()
        .unwrap_or_else(|| workspace_root().join("deploy/examples"));

    let (events, event_rx) = mpsc::channel();
    let on_signal = events.clone();
    ctrlc::set_handler(move || {
        let _ = on_signal.send(Event::Stop);
    })
    .context("installing the Ctrl-C handler")?;
    if let Some(seconds) = args.duration {
        let on_timer = events.clone();
        thread::spawn(move || {
            thread::sleep(Duration::from_secs(seconds));
            let _ = on_timer.send(Event::Stop);
        });
    }

    let fixture = RuntimeFixture::start(Options::default())?;
    println!("demo: private containerd at {}", fixture.endpoint_uri());
    let result = if args.cluster {
        cluster::run(&fixture, &manifests, &events, &event_rx)
    } else {
        run_kernlet(&fixture, &manifests, &events, &event_rx)
    };
    println!("demo: tearing down");
    let teardown = fixture.stop();
    result.and(teardown)
}

fn run_kernlet(
    fixture: &RuntimeFixture,
    manifests: &Path,
    events: &mpsc::Sender<Event>,
    event_rx: &mpsc::Receiver<Event>,
) -> Result<()> {
    let config_path = fixture.base_dir().join("kernlet-config.yaml");
    let logs = fixture.base_dir().join("logs");
    let config = fixture.kernlet_config(manifests, &logs, DEMO_PORT, "")?;
    let root = fixture.base_dir().join("kubelet");
    let client = http::TlsClient {
        host: "127.0.0.1".to_owned(),
        port: DEMO_PORT,
        pki: fixture.client_pki()?,
        server_ca: root.join("pki/kubelet.crt"),
        server_name: "localhost".to_owned(),
    };
    fs::write(&config_path, config)
        .with_context(|| format!("writing {}", config_path.display()))?;
    let binary = workspace_root().join("target/debug/kernlet");
    let mut kernlet = Command::new(&binary)
        .arg("--config")
        .arg(&config_path)
        .arg("--root-dir")
        .arg(&root)
        .args(["--hostname-override", "kernlet-demo"])
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    let pid = Pid::from_raw(i32::try_from(kernlet.id()).context("kernlet pid out of range")?);
    println!(
        "demo: kernlet pid {pid} serving static pods from {} (Ctrl-C to stop)",
        manifests.display()
    );
    println!(
        "demo: the kubelet API, authenticated by a client certificate:\n  {}",
        client.pki.curl(&root.join("pki"), DEMO_PORT, "/pods")
    );
    thread::spawn(move || print_pods_every(&client, Duration::from_secs(5)));
    let on_exit = events.clone();
    let waiter = thread::spawn(move || {
        let _ = on_exit.send(Event::Exited(kernlet.wait()));
    });
    let outcome = match event_rx.recv() {
        Ok(Event::Exited(status)) => {
            let status = status.context("waiting for kernlet")?;
            anyhow::bail!("kernlet exited by itself: {status}")
        }
        Ok(Event::Stop) | Err(_) => stop_kernlet(pid, event_rx),
    };
    let _ = waiter.join();
    outcome
}

/// Prints the pods kernlet reports (`GET /pods`) as a table, like `kubectl get pods`.
fn print_pods_every(client: &http::TlsClient, period: Duration) {
    loop {
        thread::sleep(period);
        let Ok(body) = client.get("/pods") else {
            continue;
        };
        let Ok(list) = serde_json::from_str::<serde_json::Value>(&body) else {
            continue;
        };
        println!(
            "{:<24} {:<10} {:<6} {:<9} STATUS",
            "NAME", "PHASE", "READY", "RESTARTS"
        );
        for pod in list["items"].as_array().into_iter().flatten() {
            let row = PodRow::of(pod);
            println!(
                "{:<24} {:<10} {:<6} {:<9} {}",
                pod["metadata"]["name"].as_str().unwrap_or_default(),
                pod["status"]["phase"].as_str().unwrap_or_default(),
                format!("{}/{}", row.ready, row.containers),
                row.restarts,
                row.state.unwrap_or("Running"),
            );
        }
    }
}

/// What `kubectl get pods` shows of a pod's containers.
pub(super) struct PodRow<'a> {
    pub ready: usize,
    pub containers: usize,
    pub restarts: u64,
    /// The first waiting or terminated reason, if any.
    pub state: Option<&'a str>,
}

impl<'a> PodRow<'a> {
    pub(super) fn of(pod: &'a serde_json::Value) -> Self {
        let statuses = pod["status"]["containerStatuses"]
            .as_array()
            .map_or(&[][..], Vec::as_slice);
        let state = statuses.iter().find_map(|c| {
            let state = &c["state"];
            state["waiting"]["reason"]
                .as_str()
                .or(state["terminated"]["reason"].as_str())
        });
        Self {
            ready: statuses.iter().filter(|c| c["ready"] == true).count(),
            containers: statuses.len(),
            restarts: statuses
                .iter()
                .filter_map(|c| c["restartCount"].as_u64())
                .sum(),
            state,
        }
    }
}

/// SIGTERM, then SIGKILL after 10 s. kernlet never stops pods when it exits; the fixture's
/// teardown removes them.
pub(super) fn stop_kernlet(pid: Pid, event_rx: &mpsc::Receiver<Event>) -> Result<()> {
    let _ = kill(pid, Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match event_rx.recv_timeout(left) {
            Ok(Event::Exited(status)) => {
                println!(
                    "demo: kernlet exited ({})",
                    status.context("waiting for kernlet")?
                );
                return Ok(());
            }
            Ok(Event::Stop) => {}
            Err(_) => {
                let _ = kill(pid, Signal::SIGKILL);
                anyhow::bail!("kernlet did not exit within 10 s of SIGTERM; killed it");
            }
        }
    }
}
