//! The cgroupfs readers against the running kernel (the suite runs this on the host, 6.18 with a
//! controller-less v2 hierarchy, and in the node VM, 6.1 pure v2): a busy test cgroup's
//! `cpu.stat` grows by the CPU time its process used, descriptors kept open return fresh values
//! at every read, and a removed cgroup reads as gone, through open and through kept descriptors.
use std::{
    fs,
    process::{Child, Command},
    thread,
    time::Duration,
};

use anyhow::{Context, Result, bail};
use kernlet::stats::{
    cgroupfs::{CgroupFile, CgroupFiles, CgroupRead, FileTexts, read_cgroup},
    model::CgroupSample,
};
use kernlet_tests::TestCgroup;
use nix::sys::resource::{UsageWho, getrusage};

fn sample(read: CgroupRead) -> Result<CgroupSample> {
    match read {
        CgroupRead::Sample(sample) => Ok(sample),
        CgroupRead::Gone => bail!("the test cgroup reads as gone"),
    }
}

/// CPU time of this process's waited-for children, in microseconds.
fn children_cpu_usec() -> Result<u64> {
    let usage = getrusage(UsageWho::RUSAGE_CHILDREN)?;
    let usec = |tv: nix::sys::time::TimeVal| tv.tv_sec() as u64 * 1_000_000 + tv.tv_usec() as u64;
    Ok(usec(usage.user_time()) + usec(usage.system_time()))
}

fn busy_loop() -> Result<Child> {
    Command::new("sh")
        .args(["-c", "while :; do :; done"])
        .spawn()
        .context("starting a busy loop")
}

#[test]
#[ignore = "kernel: needs root and a cgroup v2 hierarchy; run by cargo xtask test (host and VM)"]
fn cpu_usage_grows_by_the_busy_time_and_kept_files_see_it() -> Result<()> {
    let cgroup = TestCgroup::create("kernlet-cgroupfs-test")?;
    let mut texts = FileTexts::default();
    let mut kept = CgroupFiles::open(cgroup.path(), &CgroupFile::ALL)?
        .context("the test cgroup is missing")?;
    let before = sample(kept.read(&mut texts)?)?;
    let children_before = children_cpu_usec()?;

    let mut busy = busy_loop()?;
    cgroup.add(busy.id())?;
    thread::sleep(Duration::from_millis(300));
    let midway = sample(kept.read(&mut texts)?)?;
    thread::sleep(Duration::from_millis(700));
    busy.kill()?;
    busy.wait()?;
    let busy_usec = children_cpu_usec()? - children_before;

    let kept_after = sample(kept.read(&mut texts)?)?;
    let fresh = sample(read_cgroup(cgroup.path(), &CgroupFile::ALL, &mut texts)?)?;
    let usage = |sample: &CgroupSample| sample.cpu.map(|cpu| cpu.usage_usec);
    println!(
        "usage_usec before {:?}, midway {:?}, after (kept) {:?}, after (fresh open) {:?}; the \
         busy loop used {busy_usec} us",
        usage(&before),
        usage(&midway),
        usage(&kept_after),
        usage(&fresh)
    );
    let (before, midway, after) = (
        before.cpu.context("no cpu.stat")?,
        midway.cpu.context("no cpu.stat")?,
        kept_after.cpu.context("no cpu.stat")?,
    );
    assert!(
        before.usage_usec < midway.usage_usec && midway.usage_usec < after.usage_usec,
        "a kept descriptor did not see fresh values"
    );
    assert_eq!(
        kept_after.cpu, fresh.cpu,
        "kept and freshly opened cpu.stat differ with nothing running"
    );
    assert!(busy_usec > 300_000, "the busy loop ran only {busy_usec} us");
    let grown = after.usage_usec - before.usage_usec;
    let ratio = grown as f64 / busy_usec as f64;
    assert!(
        (0.9..=1.1).contains(&ratio),
        "cpu.stat grew {grown} us for {busy_usec} us of busy time"
    );
    let split = (after.user_usec + after.system_usec) as f64 / after.usage_usec as f64;
    assert!(
        (0.95..=1.05).contains(&split),
        "user + system is {split:.3} of usage"
    );

    // Parts are there exactly when their files are.
    let has = |name: &str| cgroup.path().join(name).exists();
    assert_eq!(fresh.memory.is_some(), has("memory.current"));
    assert_eq!(fresh.pids.is_some(), has("pids.current"));
    assert_eq!(fresh.pressure.cpu.is_some(), has("cpu.pressure"));
    assert_eq!(
        after.throttling.is_some(),
        fs::read_to_string(cgroup.path().join("cpu.stat"))?.contains("nr_periods")
    );
    Ok(())
}

#[test]
#[ignore = "kernel: needs root and a cgroup v2 hierarchy; run by cargo xtask test (host and VM)"]
fn a_removed_cgroup_reads_as_gone() -> Result<()> {
    let cgroup = TestCgroup::create("kernlet-cgroupfs-gone")?;
    let mut kept = CgroupFiles::open(cgroup.path(), &CgroupFile::ALL)?
        .context("the test cgroup is missing")?;
    let mut texts = FileTexts::default();
    sample(kept.read(&mut texts)?)?;
    fs::remove_dir(cgroup.path()).context("removing the empty test cgroup")?;

    // Descriptors opened before the removal fail with ENODEV.
    assert_eq!(kept.read(&mut texts)?, CgroupRead::Gone);
    assert_eq!(
        read_cgroup(cgroup.path(), &CgroupFile::ALL, &mut texts)?,
        CgroupRead::Gone
    );
    assert!(CgroupFiles::open(cgroup.path(), &CgroupFile::ALL)?.is_none());
    Ok(())
}
