//! eBPF end to end on the running kernel (the suite runs it on the host, 6.18, and in the node
//! VM, 6.1): the agent library loads the embedded object and its `sched_switch` program attributes
//! on-CPU time to the right cgroup id.
use std::{process::Command, thread, time::Duration};

use anyhow::{Context, Result};
use kernlet::ebpf::Probes;
use kernlet_tests::TestCgroup;
use nix::sys::resource::{Resource, setrlimit};

#[test]
#[ignore = "kernel: needs root and a BPF-capable kernel; run by cargo xtask test (host and VM)"]
fn sched_switch_counts_on_cpu_time_per_cgroup() -> Result<()> {
    // kernlet must not depend on RLIMIT_MEMLOCK (kernel >= 5.11 charges BPF memory to memcg).
    setrlimit(Resource::RLIMIT_MEMLOCK, 0, 0).context("lowering RLIMIT_MEMLOCK to 0")?;
    let probes = Probes::load()?;
    let state = &probes.programs()[0];
    assert!(
        state.loaded(),
        "sched_switch not loaded: {:?}",
        state.status
    );

    let cgroup = TestCgroup::create("kernlet-ebpf-test")?;
    let usage_before = cgroup.stat("cpu.stat", "usage_usec")?;
    let mut busy = Command::new("sh")
        .args(["-c", "while :; do :; done"])
        .spawn()?;
    cgroup.add(busy.id())?;
    thread::sleep(Duration::from_millis(1500));
    busy.kill()?;
    busy.wait()?;

    let kernel_ns = (cgroup.stat("cpu.stat", "usage_usec")? - usage_before) * 1000;
    let counters = probes.cpu_counters()?;
    let ours = counters.get(&cgroup.id()?).copied().unwrap_or_default();
    println!(
        "cgroup {}: ebpf {ours:?}, cpu.stat {kernel_ns} ns",
        cgroup.id()?
    );
    assert!(
        ours.switches > 0,
        "no context switch counted for the test cgroup"
    );
    assert!(
        kernel_ns > 500_000_000,
        "the busy loop ran only {kernel_ns} ns"
    );
    let ratio = ours.on_cpu_ns as f64 / kernel_ns as f64;
    assert!(
        (0.9..=1.1).contains(&ratio),
        "ebpf on-CPU time is {ratio:.3}x cpu.stat's"
    );
    Ok(())
}
