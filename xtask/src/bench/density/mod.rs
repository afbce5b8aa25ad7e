//! `cargo xtask bench density` (issue 10): kernlet against the upstream kubelet, side by side in
//! the node VM (pure cgroup v2, qemu TCG), on the same containerd with one configuration.
//!
//! For each pod count N (one VM boot per N) and containers per pod, the agents run one after the
//! other, interleaved over `--rounds` (kubelet, kernlet, kubelet, kernlet, ...), plus kernlet at
//! a 10 s `--housekeeping-interval` once (the kubelet's cAdvisor housekeeping interval, for equal
//! freshness). Every run has a fresh containerd fixture, a fresh agent in a cgroup of its own and
//! N static pods (busybox `sleep`, requests 10m/16Mi, limits 50m/32Mi) written before the agent
//! starts. What each run measures ([`inside`] does it):
//!
//! - **start to all Running**: agent spawned → `GET /pods` (polled every 100 ms) shows all N
//!   pods with every container running; includes the agent's own start-up.
//! - **steady CPU**: `usage_usec` of the agent's cgroup (the agent and anything it forks; the
//!   containers run in their own cgroups) over an idle `--window`, 5 s after all run, in cores.
//! - **RSS**: the agent process's `VmRSS` at the end of the window.
//! - **endpoints**: `--requests` sequential GETs each of `/stats/summary`, `/metrics/cadvisor`
//!   and `/metrics/resource` (a new connection each; the kubelet's read-only port 10255, kernlet's
//!   port): p50, p99 and the body size.
//! - **spec change to running**: `bench-0`'s manifest rewritten with another `sleep` argument
//!   (so a new pod UID) → `/pods` (polled every 10 ms) shows the new pod with every container
//!   running.
//! - **exit to status (PLEG)**: SIGKILL of container `c0`'s process in up to `--exits` pods
//!   (found through `ctr tasks ls`) → `/pods` (polled every 10 ms) shows it terminated,
//!   restarted or replaced; p50 and p99 per run. Beside it, the agent's own mean of the same
//!   exits where it keeps one (kernlet's `kernlet_pleg_exit_to_status_seconds`, from the
//!   runtime's `finishedAt`), which leaves out the polling of `/pods`.
//!
//! The host side ([`cli`]) builds the release kernlet and the test images, finds the kubelet
//! ([`crate::k8s`]), boots the VM once per N running this same xtask binary with `--inside`,
//! reads the [`report`] lines off the console and prints the ratio tables: median (min–max over
//! rounds) per agent, kernlet/kubelet of the medians and whether issue 10's goal is met.
pub mod agent;
mod clues;
pub mod inside;
pub mod report;

use std::{path::PathBuf, time::Duration};

use anyhow::{Context, Result, bail};

use super::{cargo_build_release, machine, target_dir};
use crate::{
    cmd::shell_quote,
    images,
    k8s::{self, K8sBin},
    setup, vm,
};
use agent::Binaries;
use inside::Plan;

#[derive(clap::Args, Debug)]
pub struct DensityArgs {
    /// Pod counts, comma-separated (110 is the kubelet's default maxPods); one VM boot each.
    #[arg(long, value_delimiter = ',', default_values_t = [10, 50, 110])]
    pub pods: Vec<usize>,
    /// Containers per pod, comma-separated: the first count runs at every pod count, the others
    /// only at the largest.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 3])]
    pub containers: Vec<usize>,
    /// Interleaved rounds of kubelet and kernlet; tables show median (min–max).
    #[arg(long, default_value_t = 2)]
    pub rounds: usize,
    /// Also run kernlet once at this `--housekeeping-interval` (seconds); 0: do not.
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    pub slow_kernlet: u64,
    /// Length of the idle CPU window, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    pub window: u64,
    /// Sequential GETs per endpoint and run.
    #[arg(long, default_value_t = 20)]
    pub requests: usize,
    /// Containers killed per run for the exit-to-status latency (one per pod).
    #[arg(long, default_value_t = 5)]
    pub exits: usize,
    /// Longest wait for all pods running or a changed pod, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 900)]
    pub timeout: u64,
    /// Guest memory of the node VM, in MiB.
    #[arg(long, default_value_t = 6144)]
    pub memory_mib: u32,
    /// Run the measuring driver here (inside the node VM): the host side passes this.
    #[arg(long, hide = true)]
    pub inside: bool,
    /// The kernlet binary (with `--inside`).
    #[arg(long, hide = true)]
    pub kernlet: Option<PathBuf>,
    /// The kubelet binary (with `--inside`).
    #[arg(long, hide = true)]
    pub kubelet: Option<PathBuf>,
}

impl DensityArgs {
    fn plan(&self, pods: usize, containers: Vec<usize>, binaries: Binaries) -> Plan {
        Plan {
            pods,
            containers,
            rounds: self.rounds,
            slow_kernlet: (self.slow_kernlet > 0).then_some(self.slow_kernlet),
            window: Duration::from_secs(self.window),
            requests: self.requests,
            exits: self.exits,
            timeout: Duration::from_secs(self.timeout),
            binaries,
        }
    }

    /// The containers-per-pod counts at pod count `pods`: the first at every count, all at the
    /// largest.
    fn containers_at(&self, pods: usize) -> Vec<usize> {
        let largest = self.pods.iter().max().copied().unwrap_or(pods);
        if pods == largest {
            self.containers.clone()
        } else {
            self.containers.iter().take(1).copied().collect()
        }
    }

    /// The arguments of the in-VM run at `pods`.
    fn inside_args(&self, pods: usize, binaries: &Binaries) -> Vec<String> {
        let join = |v: &[usize]| {
            v.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",")
        };
        vec![
            "bench".into(),
            "density".into(),
            "--inside".into(),
            format!("--pods={pods}"),
            format!("--containers={}", join(&self.containers_at(pods))),
            format!("--rounds={}", self.rounds),
            format!("--slow-kernlet={}", self.slow_kernlet),
            format!("--window={}", self.window),
            format!("--requests={}", self.requests),
            format!("--exits={}", self.exits),
            format!("--timeout={}", self.timeout),
            format!("--kernlet={}", binaries.kernlet.display()),
            format!("--kubelet={}", binaries.kubelet.display()),
        ]
    }

    /// The VM's time limit for one pod count: boot, plus per run the pod timeout twice (start,
    /// spec change), the window and room for the requests, exits and teardown.
    fn vm_timeout(&self, pods: usize) -> Duration {
        let runs = self.containers_at(pods).len() * (self.rounds * 2 + 1);
        let per_run = self.timeout * 2 + self.window + 600;
        Duration::from_secs(600 + runs as u64 * per_run)
    }
}

pub fn cli(args: &DensityArgs) -> Result<()> {
    if args.inside {
        return inside_cli(args);
    }
    if !nix::unistd::Uid::effective().is_root() {
        bail!("bench density boots the node VM with containerd fixtures; it needs root");
    }
    if args.pods.is_empty() || args.containers.is_empty() {
        bail!("nothing to measure: give pod counts and containers per pod");
    }
    setup::ensure()?;
    let kubelet = match k8s::find()? {
        K8sBin::Found(dir) => dir.join("kubelet"),
        K8sBin::Missing(reason) => bail!("bench density needs the upstream kubelet: {reason}"),
    };
    cargo_build_release(&["-p", "kernlet", "--bin", "kernlet"])?;
    images::build_all(&crate::xtask_dir().join("images"))?;
    let binaries = Binaries {
        kernlet: target_dir().join("release/kernlet"),
        kubelet,
    };
    let xtask = std::env::current_exe().context("finding the xtask binary")?;
    let mut results = Vec::new();
    let started = std::time::Instant::now();
    for &pods in &args.pods {
        let plan = args.plan(pods, args.containers_at(pods), binaries.clone());
        inside::check_plan(&plan)?;
        let mut command = shell_quote(&xtask.to_string_lossy());
        for arg in args.inside_args(pods, &binaries) {
            command.push(' ');
            command.push_str(&shell_quote(&arg));
        }
        println!("bench: {pods} pods in the node VM: {command}");
        let options = vm::VmOptions {
            memory_mib: args.memory_mib,
            timeout: args.vm_timeout(pods),
            // So the fixture finds the images built above (the VM forwards only KERNLET_*).
            env: vec![(
                "CARGO_TARGET_DIR".to_owned(),
                target_dir().to_string_lossy().into_owned(),
            )],
            ..vm::VmOptions::default()
        };
        let run = vm::run_capture(&options, &command)?;
        let found = report::parse_console(&run.console)?;
        if run.status != 0 {
            bail!(
                "the density driver failed in the node VM at {pods} pods (status {}) after {} \
                 results; see the console above",
                run.status,
                found.len()
            );
        }
        results.extend(found);
    }
    println!();
    println!("Density: kernlet against the upstream kubelet (issue 10)");
    println!("machine: {}", machine());
    println!(
        "node VM: qemu TCG, {} CPUs, {} MiB, Debian 6.1 kernel, pure cgroup v2; kubelet {}",
        vm::DEFAULT_CPUS,
        args.memory_mib,
        kubelet_version(&binaries.kubelet)
    );
    println!(
        "rounds {}, CPU window {} s, {} GETs per endpoint, up to {} exits per run; total {:.0} s",
        args.rounds,
        args.window,
        args.requests,
        args.exits,
        started.elapsed().as_secs_f64()
    );
    println!();
    print!("{}", report::tables(&results));
    Ok(())
}

/// `kubelet --version`, e.g. `Kubernetes v1.36.2`.
fn kubelet_version(kubelet: &std::path::Path) -> String {
    crate::cmd::capture(std::process::Command::new(kubelet).arg("--version"))
        .map_or_else(|_| "(version unknown)".to_owned(), |v| v.trim().to_owned())
}

/// The in-VM side: runs the plan, printing result lines.
fn inside_cli(args: &DensityArgs) -> Result<()> {
    let [pods] = args.pods[..] else {
        bail!("--inside measures one pod count");
    };
    let binaries = Binaries {
        kernlet: args.kernlet.clone().context("--inside needs --kernlet")?,
        kubelet: args.kubelet.clone().context("--inside needs --kubelet")?,
    };
    let plan = args.plan(pods, args.containers.clone(), binaries);
    inside::check_plan(&plan)?;
    inside::run(&plan).map(drop)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: DensityArgs,
    }

    #[test]
    fn extra_container_counts_run_only_at_the_largest_pod_count() {
        let args = Cli::parse_from(["density"]).args;
        assert_eq!(args.pods, [10, 50, 110]);
        assert_eq!(args.containers_at(10), [1]);
        assert_eq!(args.containers_at(110), [1, 3]);
    }

    #[test]
    fn the_inside_run_gets_the_same_settings() {
        let args = Cli::parse_from(["density", "--pods", "2,5", "--window", "7"]).args;
        let binaries = Binaries {
            kernlet: "/k/kernlet".into(),
            kubelet: "/k/kubelet".into(),
        };
        let inner: Vec<String> = args.inside_args(5, &binaries);
        let parsed =
            Cli::parse_from(std::iter::once("density".to_owned()).chain(inner.into_iter().skip(2)))
                .args;
        assert!(parsed.inside);
        assert_eq!(parsed.pods, [5]);
        assert_eq!(parsed.containers, [1, 3]);
        assert_eq!(parsed.window, 7);
        assert_eq!(parsed.kubelet, Some("/k/kubelet".into()));
        // 2 containers counts × (2 rounds × 2 agents + the slow kernlet) runs.
        assert!(args.vm_timeout(5) > Duration::from_hours(5));
    }
}
