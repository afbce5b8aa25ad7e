//! The cgroupfs readers on the memory, io and pids files, which only the node VM's pure cgroup
//! v2 hierarchy has: limits read back as written, shmem written by a process in the cgroup shows
//! in `memory.current` and `memory.stat`, `pids.current` counts it, an OOM kill is counted in
//! `memory.events`, and a removed cgroup's kept memory files read as gone.
use std::{fs, process::Command, thread, time::Duration};

use anyhow::{Context, Result, bail};
use kernlet::stats::{
    cgroupfs::{CgroupFile, CgroupFiles, CgroupRead, FileTexts, read_cgroup},
    model::CgroupSample,
};
use kernlet_tests::TestCgroup;

const MIB: u64 = 1024 * 1024;

fn sample(read: CgroupRead) -> Result<CgroupSample> {
    match read {
        CgroupRead::Sample(sample) => Ok(sample),
        CgroupRead::Gone => bail!("the test cgroup reads as gone"),
    }
}

/// Runs `script` with `sh` inside `cgroup` (it moves itself in first) and returns its status.
fn run_in(cgroup: &TestCgroup, script: &str) -> Result<std::process::ExitStatus> {
    let procs = cgroup.path().join("cgroup.procs");
    let script = format!("echo $$ > {} && {script}", procs.display());
    Command::new("sh")
        .args(["-c", &script])
        .status()
        .context("running a shell in the test cgroup")
}

#[test]
#[ignore = "vm: needs the node VM's pure cgroup v2 hierarchy with the memory, io and pids controllers"]
fn memory_pids_and_io_files_are_read() -> Result<()> {
    let cgroup = TestCgroup::create("kernlet-cgroupfs-vm")?;
    fs::write(cgroup.path().join("memory.max"), (256 * MIB).to_string())?;
    fs::write(cgroup.path().join("pids.max"), "64")?;
    let mut kept = CgroupFiles::open(cgroup.path(), &CgroupFile::ALL)?
        .context("the test cgroup is missing")?;
    let mut texts = FileTexts::default();
    let empty = sample(kept.read(&mut texts)?)?;
    let memory = empty.memory.context("no memory controller")?;
    assert_eq!(memory.max, Some(256 * MIB));
    assert_eq!(empty.pids.map(|pids| pids.max), Some(Some(64)));
    assert_eq!(empty.pids.map(|pids| pids.current), Some(0));

    // 32 MiB of shmem charged to the cgroup, kept while a sleeper holds the pids count at 1.
    let shm = format!("/dev/shm/kernlet-cgroupfs-{}", std::process::id());
    let mut sleeper = Command::new("sh")
        .args([
            "-c",
            &format!(
                "echo $$ > {} && dd if=/dev/zero of={shm} bs=1M count=32 2>/dev/null && exec sleep 30",
                cgroup.path().join("cgroup.procs").display()
            ),
        ])
        .spawn()?;
    let mut loaded = sample(kept.read(&mut texts)?)?;
    for _ in 0..100 {
        // Until dd has written and exited, and `sleep` is all that runs.
        let written = loaded.memory.is_some_and(|m| m.stat.shmem >= 32 * MIB);
        if written && loaded.pids.is_some_and(|pids| pids.current == 1) {
            break;
        }
        thread::sleep(Duration::from_millis(100));
        loaded = sample(kept.read(&mut texts)?)?;
    }
    let memory = loaded.memory.context("no memory")?;
    println!("memory with 32 MiB of shmem: {memory:?}");
    assert!(memory.stat.shmem >= 32 * MIB, "shmem {}", memory.stat.shmem);
    assert!(memory.current >= 32 * MIB, "current {}", memory.current);
    assert!(memory.peak.is_some_and(|peak| peak >= memory.current));
    assert!(memory.stat.file >= memory.stat.shmem);
    assert!(memory.working_set() <= memory.current);
    assert_eq!(loaded.pids.map(|pids| pids.current), Some(1));
    assert!(loaded.pressure.memory.is_some() && loaded.pressure.io.is_some());
    // The VM's disks are 9p and tmpfs: io.stat is readable and may be empty.
    assert!(cgroup.path().join("io.stat").exists());
    sleeper.kill()?;
    sleeper.wait()?;
    fs::remove_file(&shm)?;

    // A process that outgrows memory.max is OOM-killed and counted.
    fs::write(cgroup.path().join("memory.max"), (16 * MIB).to_string())?;
    fs::write(cgroup.path().join("memory.swap.max"), "0")?;
    let status = run_in(
        &cgroup,
        "x=$(head -c 67108864 /dev/zero | tr '\\0' a); echo ${#x}",
    )?;
    let after = sample(read_cgroup(cgroup.path(), &CgroupFile::ALL, &mut texts)?)?;
    let memory = after.memory.context("no memory")?;
    println!("after the OOM kill ({status}): {:?}", memory.events);
    assert!(!status.success(), "64 MiB fit under a 16 MiB memory.max");
    assert!(memory.events.oom_kill >= 1, "{:?}", memory.events);
    assert!(memory.events.max >= 1, "{:?}", memory.events);
    assert_eq!(memory.max, Some(16 * MIB));
    assert_eq!(memory.swap_max, Some(0));

    // Kept memory files of a removed cgroup read as gone too. The OOM kill took `sh`; the rest
    // of its pipeline may still be exiting, so kill what is left and retry while it drains.
    fs::write(cgroup.path().join("cgroup.kill"), "1")?;
    let mut removed = fs::remove_dir(cgroup.path());
    for _ in 0..50 {
        if removed.is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        removed = fs::remove_dir(cgroup.path());
    }
    removed.context("removing the emptied test cgroup")?;
    assert_eq!(kept.read(&mut texts)?, CgroupRead::Gone);
    Ok(())
}
