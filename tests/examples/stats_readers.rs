//! The synthetic half of `cargo xtask bench stats`: what one collection round costs per cgroup
//! with kernlet's two cgroupfs readers, for N synthetic cgroups.
//!
//! ```text
//! stats_readers <cgroup v2 mount> <counts, comma-separated> [repeats]
//! ```
//!
//! It creates `max(counts)` empty cgroups under `<mount>/kernlet-bench-stats-<pid>` (removed on
//! exit), and for each count N reads the first N of them, round after round, with
//!
//! - `plain`: [`read_cgroup`], open+read+close of every file each round (given the files the
//!   cgroup was found to have, so no round pays for a failed open);
//! - `kept`: [`CgroupFiles`], descriptors opened once and re-read with `pread` at offset 0, as
//!   kernlet's collector does.
//!
//! Both parse into a `CgroupSample`, as the collector does. CPU time is this thread's
//! (`getrusage(RUSAGE_THREAD)`, user + system), over enough rounds for about [`READS`] cgroup
//! reads, after one warm-up round; the two readers alternate `repeats` times (3 by default). One
//! JSON line per count and reader gives the CPU and wall microseconds per cgroup per round of
//! every repeat; at one round per second (kernlet's default `--housekeeping-interval`), CPU µs per
//! cgroup per round is CPU µs per container per second.
use std::{
    fs,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use kernlet::stats::cgroupfs::{
    CgroupFile, CgroupFiles, CgroupRead, read_cgroup, reader::FileTexts,
};
use nix::sys::resource::{Resource, UsageWho, getrlimit, getrusage, setrlimit};

/// Cgroup reads per reader per repeat (rounds × N), so that small N still run long enough for a
/// stable CPU reading.
const READS: usize = 30_000;

/// This thread's CPU time, user + system.
fn cpu_time() -> Duration {
    getrusage(UsageWho::RUSAGE_THREAD).map_or(Duration::ZERO, |usage| {
        let micros = |t: nix::sys::time::TimeVal| t.tv_sec() * 1_000_000 + t.tv_usec();
        Duration::from_micros((micros(usage.user_time()) + micros(usage.system_time())) as u64)
    })
}

/// The synthetic cgroups; removed on drop.
struct Cgroups {
    parent: PathBuf,
    children: Vec<PathBuf>,
}

impl Cgroups {
    fn create(mount: &Path, count: usize) -> Result<Self> {
        let parent = mount.join(format!("kernlet-bench-stats-{}", std::process::id()));
        fs::create_dir(&parent).with_context(|| format!("creating {}", parent.display()))?;
        let mut cgroups = Self {
            parent,
            children: Vec::new(),
        };
        for index in 0..count {
            let child = cgroups.parent.join(format!("cg{index}"));
            fs::create_dir(&child).with_context(|| format!("creating {}", child.display()))?;
            cgroups.children.push(child);
        }
        Ok(cgroups)
    }
}

impl Drop for Cgroups {
    fn drop(&mut self) {
        for child in self.children.iter().rev() {
            let _ = fs::remove_dir(child);
        }
        let _ = fs::remove_dir(&self.parent);
    }
}

/// One reader over a set of cgroups.
enum Reader {
    Plain(Vec<(PathBuf, Vec<CgroupFile>)>),
    Kept(Vec<CgroupFiles>),
}

impl Reader {
    fn name(&self) -> &'static str {
        match self {
            Self::Plain(_) => "plain",
            Self::Kept(_) => "kept",
        }
    }

    /// Reads every cgroup once; fails if one is gone or unreadable.
    fn round(&self, texts: &mut FileTexts) -> Result<()> {
        let check = |read, dir: &Path| match read {
            CgroupRead::Sample(sample) => {
                std::hint::black_box(sample);
                Ok(())
            }
            CgroupRead::Gone => bail!("{} disappeared", dir.display()),
        };
        match self {
            Self::Plain(cgroups) => {
                for (dir, files) in cgroups {
                    check(read_cgroup(dir, files, texts)?, dir)?;
                }
            }
            Self::Kept(cgroups) => {
                for files in cgroups {
                    check(files.read(texts)?, files.dir())?;
                }
            }
        }
        Ok(())
    }

    /// CPU and wall microseconds per cgroup per round over `rounds` rounds.
    fn measure(&self, cgroups: usize, rounds: usize, texts: &mut FileTexts) -> Result<(f64, f64)> {
        self.round(texts)?;
        let (cpu, wall) = (cpu_time(), Instant::now());
        for _ in 0..rounds {
            self.round(texts)?;
        }
        let per = (cgroups * rounds) as f64;
        Ok((
            cpu_time().saturating_sub(cpu).as_secs_f64() * 1e6 / per,
            wall.elapsed().as_secs_f64() * 1e6 / per,
        ))
    }
}

/// Measures both readers over `dirs`; one JSON line each.
fn measure(dirs: &[PathBuf], repeats: usize, texts: &mut FileTexts) -> Result<()> {
    let mut kept = Vec::new();
    for dir in dirs {
        kept.push(
            CgroupFiles::open(dir, &CgroupFile::ALL)?
                .with_context(|| format!("{} disappeared", dir.display()))?,
        );
    }
    let plain = kept
        .iter()
        .map(|files| {
            let names = files.files().iter().map(|(file, _)| *file).collect();
            (files.dir().to_owned(), names)
        })
        .collect();
    let file_names: Vec<&str> = kept[0].files().iter().map(|(f, _)| f.name()).collect();
    let readers = [Reader::Plain(plain), Reader::Kept(kept)];
    let rounds = (READS / dirs.len()).max(3);
    let mut results = vec![(Vec::new(), Vec::new()); readers.len()];
    for _ in 0..repeats {
        for (reader, (cpu, wall)) in readers.iter().zip(&mut results) {
            let (c, w) = reader.measure(dirs.len(), rounds, texts)?;
            cpu.push(c);
            wall.push(w);
        }
    }
    for (reader, (cpu, wall)) in readers.iter().zip(results) {
        println!(
            "{}",
            serde_json::json!({
                "cgroups": dirs.len(),
                "reader": reader.name(),
                "rounds": rounds,
                "files": file_names,
                "cpu_us": cpu,
                "wall_us": wall,
            })
        );
    }
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(mount), Some(counts)) = (args.first(), args.get(1)) else {
        bail!("usage: stats_readers <cgroup v2 mount> <counts,...> [repeats]");
    };
    let counts = counts
        .split(',')
        .map(|n| n.trim().parse::<usize>().context("a count is not a number"))
        .collect::<Result<Vec<_>>>()?;
    let repeats = args.get(2).map_or(Ok(3), |r| r.parse::<usize>())?;
    let largest = counts.iter().copied().max().unwrap_or(0);
    if largest == 0 || repeats == 0 {
        bail!("nothing to measure");
    }
    // Up to 14 descriptors per cgroup are kept open.
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    let cgroups = Cgroups::create(Path::new(mount), largest)?;
    let mut texts = FileTexts::default();
    for count in counts {
        measure(&cgroups.children[..count], repeats, &mut texts)?;
    }
    Ok(())
}
