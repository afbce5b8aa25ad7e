//! eBPF end to end on the running kernel (the suite runs these on the host, 6.18 with hybrid
//! cgroups, and in the node VM, 6.1 with pure cgroup v2): the agent library loads the embedded
//! objects and each program's per-cgroup numbers are checked against the kernel's own accounting
//! (`cpu.stat`, `io.stat`, `memory.stat`, interface statistics) or against exact workloads.
//! Every test prints the measured values and the programs' per-event cost.
#![expect(
    clippy::disallowed_methods,
    reason = "measures real time against a real kernel and runtime"
)]
use std::{
    fs,
    path::Path,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use kernlet::ebpf::{ProbeOptions, Probes};
use kernlet::stats::model::{EbpfCounters, LatencyHistogram};
use kernlet_tests::{TestCgroup, cgroup2_mount, skip};
use nix::sys::resource::{Resource, setrlimit};

/// Loads every program with run-time stats on, the way the daemon would, without RLIMIT_MEMLOCK.
fn load(skb_cgroup: Option<&Path>) -> Result<Probes> {
    // kernlet must not depend on RLIMIT_MEMLOCK (kernel >= 5.11 charges BPF memory to memcg).
    setrlimit(Resource::RLIMIT_MEMLOCK, 0, 0).context("lowering RLIMIT_MEMLOCK to 0")?;
    let probes = Probes::load_with(&ProbeOptions {
        skb_cgroup: skb_cgroup.map(Path::to_path_buf),
        run_time_stats: true,
    })?;
    println!("loaded in {:?}", probes.load_time());
    Ok(probes)
}

/// Fails unless every program in `names` loaded, with the kernel's reason.
fn require(probes: &Probes, names: &[&str]) -> Result<()> {
    for name in names {
        let state = probes
            .programs()
            .iter()
            .find(|p| p.name == *name)
            .with_context(|| format!("no program {name}"))?;
        if let Err(reason) = &state.status {
            bail!("{name} not loaded: {reason}");
        }
    }
    Ok(())
}

/// Prints the kernel's run time per event of the programs that ran.
fn print_costs(probes: &Probes) -> Result<()> {
    for cost in probes.program_stats()? {
        if let Some(ns) = cost.ns_per_run() {
            println!(
                "cost {:>16}: {:>7.0} ns/event over {} events",
                cost.name, ns, cost.run_count
            );
        }
    }
    Ok(())
}

fn counters_of(probes: &Probes, cgroup: &TestCgroup) -> Result<EbpfCounters> {
    let id = cgroup.id()?;
    Ok(probes.counters()?.remove(&id).unwrap_or_default())
}

fn within(ours: f64, reference: f64, tolerance: f64) -> bool {
    reference > 0.0 && ((ours - reference) / reference).abs() <= tolerance
}

#[test]
#[ignore = "kernel: needs root and a BPF-capable kernel; run by cargo xtask test (host and VM)"]
fn every_program_loads_and_reports_its_state() -> Result<()> {
    let root = cgroup2_mount()?;
    let probes = load(Some(&root))?;
    for program in probes.programs() {
        println!("{:>16}: {:?}", program.name, program.status);
    }
    // Some kernels refuse fentry outright (this project's host answers EPERM for any function,
    // with an empty verifier log); the OOM program is then skipped, which is what kernlet does.
    let names: Vec<&str> = probes
        .programs()
        .iter()
        .map(|p| p.name)
        .filter(|name| *name != "oom_kill")
        .collect();
    require(&probes, &names)?;
    if let Some(Err(reason)) = probes
        .programs()
        .iter()
        .find(|p| p.name == "oom_kill")
        .map(|p| &p.status)
    {
        skip(
            "every_program_loads_and_reports_its_state",
            &format!(
                "oom_kill (fentry) refused by this kernel: {}",
                reason.to_string().trim()
            ),
        );
    }
    let without_skb = load(None)?;
    let skb = without_skb
        .programs()
        .iter()
        .find(|p| p.name == "skb_egress")
        .context("no skb_egress")?;
    ensure!(!skb.loaded(), "skb_egress attached without a cgroup");
    Ok(())
}

#[test]
#[ignore = "kernel: needs root and a BPF-capable kernel; run by cargo xtask test (host and VM)"]
fn sched_switch_counts_on_cpu_time_per_cgroup() -> Result<()> {
    let probes = load(None)?;
    require(&probes, &["sched_switch"])?;
    let cgroup = TestCgroup::create("kernlet-ebpf-cpu")?;
    let usage_before = cgroup.stat("cpu.stat", "usage_usec")?;
    let mut busy = cgroup
        .command("sh")
        .args(["-c", "while :; do :; done"])
        .spawn()?;
    // Run until the loop has had 5 s of CPU (longer when other work competes for the CPUs).
    let deadline = Instant::now() + Duration::from_mins(1);
    while cgroup.stat("cpu.stat", "usage_usec")? - usage_before < 5_000_000
        && Instant::now() < deadline
    {
        thread::sleep(Duration::from_millis(250));
    }
    busy.kill()?;
    busy.wait()?;

    let kernel_ns = (cgroup.stat("cpu.stat", "usage_usec")? - usage_before) * 1000;
    let ours = counters_of(&probes, &cgroup)?;
    let on_cpu = ours.on_cpu_ns.unwrap_or_default();
    println!(
        "cgroup {}: ebpf on-cpu {on_cpu} ns in {:?} switches, cpu.stat {kernel_ns} ns",
        cgroup.id()?,
        ours.switches
    );
    print_costs(&probes)?;
    ensure!(
        ours.switches.unwrap_or_default() > 0,
        "no context switch counted"
    );
    ensure!(
        kernel_ns > 2_500_000_000,
        "the busy loop ran only {kernel_ns} ns"
    );
    ensure!(
        within(on_cpu as f64, kernel_ns as f64, 0.05),
        "ebpf on-CPU time {on_cpu} ns is not within 5% of cpu.stat's {kernel_ns} ns"
    );
    Ok(())
}

/// Two busy loops pinned to one CPU, measured over a window `T` that starts once both spin (so
/// process start-up, slow under the VM's emulation, stays out): each loop is runnable the whole
/// window, so whenever one does not run it waits. Their total wait is therefore `2T - usage`
/// (usage: their CPU time from `cpu.stat`), whatever else runs on that CPU; with nothing else it is
/// `T`, the other loop's run time seen from each side. Waits are recorded when they end, so each
/// window edge can shift one time slice; the bound allows 10% of `T`.
#[test]
#[ignore = "kernel: needs root and a BPF-capable kernel; run by cargo xtask test (host and VM)"]
fn runqlat_attributes_run_queue_wait_to_the_waiting_cgroup() -> Result<()> {
    let probes = load(None)?;
    require(&probes, &["runq_wakeup", "runq_wakeup_new", "runq_switch"])?;
    let cgroup = TestCgroup::create("kernlet-ebpf-runq")?;
    let cpu = std::thread::available_parallelism()?.get() - 1;
    let mut loops = Vec::new();
    for _ in 0..2 {
        loops.push(
            cgroup
                .command("taskset")
                .args(["-c", &cpu.to_string(), "sh", "-c", "while :; do :; done"])
                .spawn()?,
        );
    }
    thread::sleep(Duration::from_secs(1));
    let snapshot = || -> Result<(Instant, u64, LatencyHistogram)> {
        let histogram = counters_of(&probes, &cgroup)?
            .runq_latency
            .context("no run-queue histogram")?;
        Ok((
            Instant::now(),
            cgroup.stat("cpu.stat", "usage_usec")?,
            histogram,
        ))
    };
    let (start, usage_start, before) = snapshot()?;
    thread::sleep(Duration::from_secs(3));
    let (end, usage_end, after) = snapshot()?;
    for child in &mut loops {
        child.kill()?;
    }
    for child in &mut loops {
        child.wait()?;
    }
    let window_ns = (end - start).as_nanos() as f64;
    let usage_ns = ((usage_end - usage_start) * 1000) as f64;
    let waits = after.count() - before.count();
    let waited_ns = (after.sum_ns - before.sum_ns) as f64;
    let expected = 2.0 * window_ns - usage_ns;
    println!(
        "cgroup {}: {waits} waits, total {waited_ns:.0} ns (expected 2T - usage = {expected:.0} ns; \
         T {window_ns:.0} ns, usage {usage_ns:.0} ns); buckets {:?}",
        cgroup.id()?,
        after.buckets
    );
    print_costs(&probes)?;
    ensure!(waits > 0, "no run-queue wait counted");
    ensure!(
        (waited_ns - expected).abs() <= 0.1 * window_ns,
        "total wait {waited_ns:.0} ns is not within 10% of T of 2T - usage = {expected:.0} ns"
    );
    Ok(())
}

/// Perl (in every Debian base system) touches `PAGES` fresh pages in user space with transparent
/// huge pages disabled for itself (`prctl(PR_SET_THP_DISABLE)`), so each page is at least one fault.
const PAGES: u64 = 16_384;
const TOUCH: &str = "syscall(157, 41, 1, 0, 0, 0) == 0 or die \"prctl: $!\"; \
                     my $s = \"a\" x (4096 * $ARGV[0]); print length($s), \"\\n\";";

#[test]
#[ignore = "kernel: needs root and a BPF-capable kernel; run by cargo xtask test (host and VM)"]
fn page_faults_are_counted_for_the_faulting_cgroup() -> Result<()> {
    let probes = load(None)?;
    require(&probes, &["page_fault_user"])?;
    let cgroup = TestCgroup::create("kernlet-ebpf-faults")?;
    let memcg = cgroup.has_controller("memory")?;
    let before = if memcg {
        cgroup.stat("memory.stat", "pgfault")?
    } else {
        0
    };
    let output = cgroup
        .command("perl")
        .args(["-e", TOUCH, &PAGES.to_string()])
        .output()?;
    ensure!(output.status.success(), "perl failed: {output:?}");
    let ours = counters_of(&probes, &cgroup)?
        .page_faults
        .context("no page fault counter")?;
    print_costs(&probes)?;
    if memcg {
        let kernel = cgroup.stat("memory.stat", "pgfault")? - before;
        println!(
            "cgroup {}: ebpf {ours} user faults, memory.stat pgfault {kernel}",
            cgroup.id()?
        );
        // memory.stat also counts faults the kernel takes on user memory (copy_to_user, exec).
        ensure!(
            ours <= kernel && ours as f64 >= 0.9 * kernel as f64,
            "ebpf {ours} faults vs memory.stat pgfault {kernel}: not within [90%, 100%]"
        );
    } else {
        println!(
            "cgroup {}: ebpf {ours} user faults (no memory controller in v2 here)",
            cgroup.id()?
        );
    }
    ensure!(ours >= PAGES, "{ours} faults for {PAGES} touched pages");
    Ok(())
}

/// A loop device over a file on a private tmpfs, detached and unmounted on drop.
struct LoopDevice {
    device: String,
    dir: tempfile::TempDir,
}

impl LoopDevice {
    fn create(size_mib: u64) -> Result<Self> {
        if !Path::new("/dev/loop-control").exists() {
            // A module in the node VM's kernel; built in or loaded already on most hosts.
            let _ = Command::new("modprobe").arg("loop").status();
        }
        let dir = tempfile::tempdir()?;
        run(Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=128m", "kernlet-test"])
            .arg(dir.path()))?;
        let file = dir.path().join("disk");
        fs::File::create(&file)?.set_len(size_mib << 20)?;
        let output = Command::new("losetup")
            .args(["--find", "--show"])
            .arg(&file)
            .output()?;
        ensure!(output.status.success(), "losetup failed: {output:?}");
        let device = String::from_utf8(output.stdout)?.trim().to_owned();
        let loop_device = Self { device, dir };
        // Issue in the submitting task's context: no I/O scheduler deferring to a worker.
        let name = loop_device.device.trim_start_matches("/dev/");
        let _ = fs::write(format!("/sys/block/{name}/queue/scheduler"), "none");
        Ok(loop_device)
    }

    /// `major:minor` as `io.stat` names devices.
    fn numbers(&self) -> Result<String> {
        let name = self.device.trim_start_matches("/dev/");
        Ok(fs::read_to_string(format!("/sys/block/{name}/dev"))?
            .trim()
            .to_owned())
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.device]).status();
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

fn run(command: &mut Command) -> Result<()> {
    let status = command.stderr(Stdio::inherit()).status()?;
    ensure!(status.success(), "{command:?} failed: {status}");
    Ok(())
}

/// `wbytes` of device `numbers` in `io.stat` (0 when the device has no line yet).
fn io_stat_wbytes(cgroup: &TestCgroup, numbers: &str) -> Result<u64> {
    let text = fs::read_to_string(cgroup.path().join("io.stat"))?;
    Ok(text
        .lines()
        .find(|line| line.starts_with(&format!("{numbers} ")))
        .and_then(|line| {
            line.split_whitespace()
                .find_map(|kv| kv.strip_prefix("wbytes="))
        })
        .map_or(Ok(0), str::parse)?)
}

#[test]
#[ignore = "kernel: needs root and a BPF-capable kernel; run by cargo xtask test (host and VM)"]
fn block_io_is_attributed_to_the_issuing_cgroup() -> Result<()> {
    const MIB: u64 = 50;
    let probes = load(None)?;
    require(&probes, &["block_issue", "block_complete"])?;
    let device = LoopDevice::create(64)?;
    let cgroup = TestCgroup::create("kernlet-ebpf-block")?;
    let io_controller = cgroup.has_controller("io")?;
    let output = cgroup
        .command("dd")
        .args(["if=/dev/zero", "bs=1M", "oflag=direct"])
        .arg(format!("of={}", device.device))
        .arg(format!("count={MIB}"))
        .output()?;
    ensure!(output.status.success(), "dd failed: {output:?}");
    let block = counters_of(&probes, &cgroup)?
        .block
        .context("no block counters")?;
    let reference = if io_controller {
        io_stat_wbytes(&cgroup, &device.numbers()?)?
    } else {
        MIB << 20
    };
    println!(
        "cgroup {}: ebpf wrote {} bytes in {} requests, read {} bytes; reference ({}) {reference}; \
         latency {} requests, {} ns total, buckets {:?}",
        cgroup.id()?,
        block.write_bytes,
        block.writes,
        block.read_bytes,
        if io_controller {
            "io.stat wbytes"
        } else {
            "bytes dd wrote"
        },
        block.latency.count(),
        block.latency.sum_ns,
        block.latency.buckets
    );
    print_costs(&probes)?;
    ensure!(
        reference >= MIB << 20,
        "the reference saw only {reference} bytes"
    );
    ensure!(
        within(block.write_bytes as f64, reference as f64, 0.05),
        "ebpf write bytes {} not within 5% of {reference}",
        block.write_bytes
    );
    ensure!(
        block.writes > 0 && block.latency.count() > 0,
        "no request latency recorded"
    );
    Ok(())
}

/// Cgroups of the batch test: more than one `BPF_MAP_LOOKUP_BATCH` call holds in the
/// run-queue map (about 30 histograms per call), so the calls' continuation is exercised.
const BATCH_CGROUPS: usize = 40;

/// The batched reading of the maps (a few `BPF_MAP_LOOKUP_BATCH` calls) gives exactly what the
/// entry-by-entry reading gives, for cgroups whose tasks have finished (so nothing changes their
/// entries between the two reads), and finds every cgroup the other finds.
#[test]
#[ignore = "kernel: needs root and a BPF-capable kernel; run by cargo xtask test (host and VM)"]
fn batched_map_reads_match_entry_by_entry_reads() -> Result<()> {
    let probes = load(None)?;
    require(&probes, &["sched_switch"])?;
    let mut cgroups = Vec::new();
    for i in 0..BATCH_CGROUPS {
        let cgroup = TestCgroup::create(&format!("kernlet-ebpf-batch-{i}"))?;
        // A sleep and a wake-up: a switch, a run-queue wait and page faults for the cgroup.
        let status = cgroup.command("sh").args(["-c", "sleep 0.01"]).status()?;
        ensure!(status.success(), "sleep in {i} failed");
        cgroups.push(cgroup);
    }
    // A reaped task's last switch out can still run on another CPU just after its wait returns.
    thread::sleep(Duration::from_millis(100));
    let batched = probes.counters()?;
    let entries = probes.counters_entry_by_entry()?;
    let runq = batched
        .values()
        .filter(|c| c.runq_latency.is_some())
        .count();
    println!(
        "batched: {} cgroups ({runq} with run-queue histograms), entry by entry: {}",
        batched.len(),
        entries.len()
    );
    for cgroup in &cgroups {
        let id = cgroup.id()?;
        let ours = batched
            .get(&id)
            .with_context(|| format!("batch missed {id}"))?;
        let reference = entries.get(&id).with_context(|| format!("no entry {id}"))?;
        ensure!(ours.switches.unwrap_or_default() > 0, "no switch for {id}");
        ensure!(
            ours == reference,
            "cgroup {id}: batched {ours:?} != entry by entry {reference:?}"
        );
    }
    // Cgroups elsewhere on the node keep running between the reads, but none may go missing.
    let missing: Vec<_> = entries
        .keys()
        .filter(|id| !batched.contains_key(id))
        .collect();
    ensure!(
        missing.len() <= entries.len() / 20,
        "batched reading missed {} of {} cgroups",
        missing.len(),
        entries.len()
    );
    ensure!(
        batched.len() > BATCH_CGROUPS,
        "too few cgroups to span calls"
    );
    Ok(())
}
