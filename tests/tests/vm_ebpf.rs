//! eBPF checks that need cgroup v2 controllers, so only inside the node VM (pure cgroup v2, Debian
//! 6.1): the OOM-kill program against `memory.events`.
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use kernlet::ebpf::{ProbeOptions, Probes};
use kernlet_tests::TestCgroup;
use nix::sys::resource::{Resource, setrlimit};

/// Perl grows a string past the cgroup's 32 MiB limit until the kernel's OOM killer ends it.
const GROW: &str = "my $s = ''; $s .= 'x' x (1 << 20) for 1 .. 256; sleep 5;";

#[test]
#[ignore = "vm: needs the memory controller (pure cgroup v2); run by cargo xtask test --tier vm"]
fn oom_kill_is_counted_for_the_limited_cgroup_with_its_victim() -> Result<()> {
    setrlimit(Resource::RLIMIT_MEMLOCK, 0, 0).context("lowering RLIMIT_MEMLOCK to 0")?;
    let probes = Probes::load_with(&ProbeOptions {
        skb_cgroup: None,
        run_time_stats: true,
    })?;
    let state = probes
        .programs()
        .iter()
        .find(|p| p.name == "oom_kill")
        .context("no oom_kill program")?;
    ensure!(state.loaded(), "oom_kill not loaded: {:?}", state.status);

    let cgroup = TestCgroup::create("kernlet-ebpf-oom")?;
    ensure!(
        cgroup.has_controller("memory")?,
        "no memory controller for the test cgroup"
    );
    cgroup.write("memory.max", "32M")?;
    cgroup.write("memory.swap.max", "0").ok();
    let mut child = cgroup.command("perl").args(["-e", GROW]).spawn()?;
    let pid = child.id();
    let status = child.wait()?;
    std::thread::sleep(Duration::from_millis(100));
    let kernel_kills = cgroup.stat("memory.events", "oom_kill")?;
    let ours = probes.counters()?.remove(&cgroup.id()?).unwrap_or_default();
    println!(
        "cgroup {}: perl pid {pid} ended with {status}; ebpf oom_kills {:?} victim {:?}; \
         memory.events oom_kill {kernel_kills}",
        cgroup.id()?,
        ours.oom_kills,
        ours.last_oom_victim
    );
    for cost in probes.program_stats()? {
        if cost.name == "oom_kill" {
            println!(
                "cost oom_kill: {:?} ns/event over {} events",
                cost.ns_per_run(),
                cost.run_count
            );
        }
    }
    ensure!(
        kernel_kills == 1,
        "memory.events counts {kernel_kills} oom kills, expected 1"
    );
    ensure!(
        ours.oom_kills == Some(kernel_kills),
        "ebpf counted {:?} kills",
        ours.oom_kills
    );
    let victim = ours.last_oom_victim.context("no victim recorded")?;
    ensure!(
        victim.pid == pid,
        "victim pid {} is not perl's {pid}",
        victim.pid
    );
    ensure!(
        victim.comm == "perl",
        "victim comm {:?} is not perl",
        victim.comm
    );
    Ok(())
}
