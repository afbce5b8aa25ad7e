//! Cost of reading many cgroups each collection round, for `cargo xtask bench readers`: the
//! same files of N throw-away cgroups read three ways, each round parsed into `CgroupSample`s.
//!
//! ```text
//! cgroupfs_read <cgroup counts, comma-separated> <rounds>
//! ```
//!
//! - `open-read-close`: [`read_cgroup`] per cgroup (open, one `pread`, close per file);
//! - `pread-reuse`: [`CgroupFiles`] opened once, every file re-read at offset 0 each round;
//! - `io_uring`: the same kept descriptors, every file of every cgroup submitted as one batch of
//!   `IORING_OP_READ`s through `tokio-uring`'s safe API (the workspace forbids `unsafe`, which the
//!   raw `io-uring` crate needs for pushing entries), then parsed like the others.
//!
//! It creates `<cgroup2 mount>/kernlet-bench-readers-<pid>/c<i>` (enabling the cpu, memory, io
//! and pids controllers for them where the parent has them), removes them on exit and removes
//! leftovers of earlier runs whose process is gone. The cgroups hold no processes.
//!
//! Per round it measures the process's CPU time (user + system from `getrusage(RUSAGE_SELF)`,
//! which includes the io-wq worker threads the kernel runs `io_uring` reads on) and wall time. The
//! variants take turns within each round (rotating who goes first), after one warm-up round each.
//! Prints one JSON object per line: first `{"files": [...], "kernel": "..."}` (the files each
//! cgroup has, the running kernel's release), then
//! one per cgroup count and variant with the per-round samples in microseconds.
//!
//! It lives in the tests crate because it uses the kernlet library (see `cri_startup.rs`).
#![expect(
    clippy::disallowed_methods,
    reason = "measures real time against a real kernel and runtime"
)]
use std::{
    fs,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use futures_util::future::join_all;
use kernlet::stats::cgroupfs::{CgroupFile, CgroupFiles, CgroupRead, FileTexts, read_cgroup};
use kernlet_tests::cgroup2_mount;
use nix::sys::resource::{Resource, UsageWho, getrlimit, getrusage, setrlimit};
use serde_json::json;

const USAGE: &str = "usage: cgroupfs_read <cgroup counts, comma-separated> <rounds>";
/// Prefix of the bench's parent cgroup; the pid of the run follows.
const PREFIX: &str = "kernlet-bench-readers-";
/// Largest file text the `io_uring` variant reads in one go (a 6.1 `memory.stat` is ~1.2 KiB).
const URING_BUF: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    OpenReadClose,
    PreadReuse,
    IoUring,
}

const VARIANTS: [Variant; 3] = [
    Variant::OpenReadClose,
    Variant::PreadReuse,
    Variant::IoUring,
];

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Self::OpenReadClose => "open-read-close",
            Self::PreadReuse => "pread-reuse",
            Self::IoUring => "io_uring",
        }
    }
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [counts, rounds] = args.as_slice() else {
        bail!("{USAGE}");
    };
    let counts = counts
        .split(',')
        .map(str::parse)
        .collect::<Result<Vec<usize>, _>>()
        .with_context(|| format!("cgroup counts {counts:?}: {USAGE}"))?;
    let rounds: usize = rounds
        .parse()
        .with_context(|| format!("rounds {rounds:?}: {USAGE}"))?;
    ensure!(
        !counts.is_empty() && counts.iter().all(|&n| n > 0) && rounds > 0,
        "nothing to measure: {USAGE}"
    );
    raise_nofile_limit()?;

    let mount = cgroup2_mount()?;
    remove_leftovers(&mount);
    let most = counts.iter().copied().max().unwrap_or_default();
    let cgroups = BenchCgroups::create(&mount, most)?;
    let files = present_files(&cgroups.children[0])?;
    let names: Vec<&str> = files.iter().map(|file| file.name()).collect();
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!("{}", json!({ "files": names, "kernel": kernel.trim() }));

    tokio_uring::builder().entries(1024).start(async {
        for &count in &counts {
            measure(&cgroups.children[..count], &files, rounds).await?;
        }
        Ok(())
    })
}

/// Two descriptors per file per cgroup are open at once (the `pread-reuse` ones and their
/// duplicates for `io_uring`): up to 28,000 for 1000 cgroups. Raises the soft limit to the hard
/// one, and both to [`NOFILE`] where allowed (root with `CAP_SYS_RESOURCE`, as in the node VM
/// whose hard limit is the kernel's default 4096; the host's is already high).
fn raise_nofile_limit() -> Result<()> {
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if hard < NOFILE && setrlimit(Resource::RLIMIT_NOFILE, NOFILE, NOFILE).is_ok() {
        return Ok(());
    }
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).context("raising RLIMIT_NOFILE")
}

/// The open file limit the bench asks for.
const NOFILE: u64 = 1 << 16;

/// The files of `dir` among those kernlet reads.
fn present_files(dir: &Path) -> Result<Vec<CgroupFile>> {
    let opened = CgroupFiles::open(dir, &CgroupFile::ALL)?
        .with_context(|| format!("{} vanished", dir.display()))?;
    Ok(opened.files().iter().map(|(file, _)| *file).collect())
}

/// All rounds of all variants for one set of cgroups; prints their samples.
async fn measure(dirs: &[PathBuf], files: &[CgroupFile], rounds: usize) -> Result<()> {
    let mut kept = Vec::with_capacity(dirs.len());
    for dir in dirs {
        kept.push(
            CgroupFiles::open(dir, files)?
                .with_context(|| format!("{} vanished", dir.display()))?,
        );
    }
    let uring = UringFiles::new(&kept)?;
    let mut texts = FileTexts::default();
    let mut samples: Vec<(Vec<f64>, Vec<f64>)> = vec![(Vec::new(), Vec::new()); VARIANTS.len()];
    for round in 0..=rounds {
        for turn in 0..VARIANTS.len() {
            let index = (round + turn) % VARIANTS.len();
            let cpu_before = cpu_time()?;
            let started = Instant::now();
            let read = match VARIANTS[index] {
                Variant::OpenReadClose => {
                    let mut read = 0;
                    for dir in dirs {
                        read += count(&read_cgroup(dir, files, &mut texts)?);
                    }
                    read
                }
                Variant::PreadReuse => {
                    let mut read = 0;
                    for cgroup in &mut kept {
                        read += count(&cgroup.read(&mut texts)?);
                    }
                    read
                }
                Variant::IoUring => uring.read_all(&mut texts).await?,
            };
            let wall = started.elapsed();
            let cpu = cpu_time()?.saturating_sub(cpu_before);
            ensure!(
                read == dirs.len(),
                "{}: {read} of {} cgroups read",
                VARIANTS[index].name(),
                dirs.len()
            );
            // Round 0 warms caches and lets io_uring start its workers.
            if round > 0 {
                samples[index].0.push(micros(cpu));
                samples[index].1.push(micros(wall));
            }
        }
    }
    for (variant, (cpu_us, wall_us)) in VARIANTS.iter().zip(samples) {
        println!(
            "{}",
            json!({
                "cgroups": dirs.len(),
                "variant": variant.name(),
                "files_per_cgroup": files.len(),
                "cpu_us": cpu_us,
                "wall_us": wall_us,
            })
        );
    }
    Ok(())
}

fn count(read: &CgroupRead) -> usize {
    usize::from(matches!(read, CgroupRead::Sample(_)))
}

fn micros(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e6
}

/// User plus system CPU time of the whole process so far.
fn cpu_time() -> Result<Duration> {
    let usage = getrusage(UsageWho::RUSAGE_SELF)?;
    let to_duration = |tv: nix::sys::time::TimeVal| {
        Duration::from_secs(tv.tv_sec() as u64) + Duration::from_micros(tv.tv_usec() as u64)
    };
    Ok(to_duration(usage.user_time()) + to_duration(usage.system_time()))
}

/// The kept descriptors again, as `tokio-uring` files (duplicated, so the `pread-reuse`
/// variant keeps its own), with one buffer per file reused across rounds.
struct UringFiles {
    /// Per cgroup: its files.
    cgroups: Vec<Vec<(CgroupFile, tokio_uring::fs::File)>>,
    buffers: std::cell::RefCell<Vec<Vec<u8>>>,
}

impl UringFiles {
    fn new(kept: &[CgroupFiles]) -> Result<Self> {
        let mut cgroups = Vec::with_capacity(kept.len());
        let mut total = 0;
        for cgroup in kept {
            let mut files = Vec::new();
            for (file, handle) in cgroup.files() {
                let handle = handle.try_clone().context("duplicating a descriptor")?;
                files.push((*file, tokio_uring::fs::File::from_std(handle)));
            }
            total += files.len();
            cgroups.push(files);
        }
        let buffers = (0..total).map(|_| Vec::with_capacity(URING_BUF)).collect();
        Ok(Self {
            cgroups,
            buffers: std::cell::RefCell::new(buffers),
        })
    }

    /// Submits a read of every file at offset 0 at once, waits for all, and parses them cgroup
    /// by cgroup; returns how many cgroups gave a sample.
    async fn read_all(&self, texts: &mut FileTexts) -> Result<usize> {
        let buffers = std::mem::take(&mut *self.buffers.borrow_mut());
        let reads = self
            .cgroups
            .iter()
            .flatten()
            .zip(buffers)
            .map(|((_, file), mut buffer)| {
                buffer.clear();
                file.read_at(buffer, 0)
            });
        let mut results = join_all(reads).await.into_iter();
        let mut read = 0;
        let mut buffers = Vec::with_capacity(results.len());
        for files in &self.cgroups {
            texts.clear();
            for (file, _) in files {
                let (result, buffer) = results.next().context("a read result is missing")?;
                let n = result.with_context(|| format!("io_uring read of {}", file.name()))?;
                ensure!(n < URING_BUF, "{} fills the whole buffer", file.name());
                texts.insert(*file, &buffer[..n]);
                buffers.push(buffer);
            }
            texts.sample(std::time::SystemTime::now())?;
            read += 1;
        }
        *self.buffers.borrow_mut() = buffers;
        Ok(read)
    }
}

/// The bench's cgroups: removed, children first, when dropped.
struct BenchCgroups {
    parent: PathBuf,
    children: Vec<PathBuf>,
}

impl BenchCgroups {
    fn create(mount: &Path, count: usize) -> Result<Self> {
        let parent = mount.join(format!("{PREFIX}{}", std::process::id()));
        fs::create_dir(&parent).with_context(|| format!("creating {}", parent.display()))?;
        let mut cgroups = Self {
            parent,
            children: Vec::with_capacity(count),
        };
        cgroups.enable_controllers()?;
        for index in 0..count {
            let child = cgroups.parent.join(format!("c{index}"));
            fs::create_dir(&child).with_context(|| format!("creating {}", child.display()))?;
            cgroups.children.push(child);
        }
        Ok(cgroups)
    }

    /// Gives the children the cpu, memory, io and pids controllers the parent has (none on a
    /// hybrid host).
    fn enable_controllers(&self) -> Result<()> {
        let available = fs::read_to_string(self.parent.join("cgroup.controllers"))?;
        let wanted: Vec<String> = available
            .split_whitespace()
            .filter(|name| ["cpu", "memory", "io", "pids"].contains(name))
            .map(|name| format!("+{name}"))
            .collect();
        if !wanted.is_empty() {
            let control = self.parent.join("cgroup.subtree_control");
            fs::write(&control, wanted.join(" ")).with_context(|| {
                format!("writing {} to {}", wanted.join(" "), control.display())
            })?;
        }
        Ok(())
    }
}

impl Drop for BenchCgroups {
    fn drop(&mut self) {
        for child in self.children.iter().rev() {
            if let Err(error) = fs::remove_dir(child) {
                eprintln!("cgroupfs_read: removing {}: {error}", child.display());
            }
        }
        if let Err(error) = fs::remove_dir(&self.parent) {
            eprintln!("cgroupfs_read: removing {}: {error}", self.parent.display());
        }
    }
}

/// Removes bench cgroups left by runs that died (their pid is gone); they hold no processes.
fn remove_leftovers(mount: &Path) {
    let Ok(entries) = fs::read_dir(mount) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix(PREFIX) else {
            continue;
        };
        if Path::new("/proc").join(pid).exists() {
            continue;
        }
        let dir = entry.path();
        for child in fs::read_dir(&dir).into_iter().flatten().flatten() {
            if child.path().is_dir() {
                let _ = fs::remove_dir(child.path());
            }
        }
        match fs::remove_dir(&dir) {
            Ok(()) => eprintln!("cgroupfs_read: removed leftover {}", dir.display()),
            Err(error) => eprintln!("cgroupfs_read: leftover {}: {error}", dir.display()),
        }
    }
}
