//! Node totals from `/proc` (`Documentation/filesystems/proc.rst`: "1.8 Miscellaneous kernel
//! statistics in /proc/stat" and `/proc/meminfo`; PSI in `Documentation/accounting/psi.rst`).
//! The per-cgroup counters of the root cgroup are not all there on every setup (a hybrid host has
//! no v2 memory controller), so node capacity and usage come from here.
use std::{fs, io, path::Path, time::SystemTime};

use super::{Error, ParseError, Result, parse};
use crate::stats::model::Pressure;

/// The aggregate `cpu` line of `/proc/stat`, in `USER_HZ` ticks (`sysconf(_SC_CLK_TCK)`, 100 on
/// Linux). `guest` and `guest_nice` are already part of `user` and `nice`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProcStatCpu {
    pub user: u64,
    pub nice: u64,
    pub system: u64,
    pub idle: u64,
    pub iowait: u64,
    pub irq: u64,
    pub softirq: u64,
    pub steal: u64,
    pub guest: u64,
    pub guest_nice: u64,
}

impl ProcStatCpu {
    /// Ticks the CPUs spent doing work (everything but idle and iowait).
    #[must_use]
    pub fn busy(&self) -> u64 {
        self.user + self.nice + self.system + self.irq + self.softirq + self.steal
    }

    /// All ticks, busy or not.
    #[must_use]
    pub fn total(&self) -> u64 {
        self.busy() + self.idle + self.iowait
    }
}

/// `/proc/meminfo` fields kernlet uses, in bytes; fields an old kernel lacks read 0.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemInfo {
    pub total: u64,
    pub free: u64,
    pub available: u64,
    pub buffers: u64,
    pub cached: u64,
    pub active_file: u64,
    pub inactive_file: u64,
    pub swap_total: u64,
    pub swap_free: u64,
}

/// The node at one instant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NodeSample {
    pub time: SystemTime,
    pub cpu: ProcStatCpu,
    pub memory: MemInfo,
    /// `/proc/pressure/{cpu,memory,io}`; `None` where PSI is off.
    pub pressure: Pressure,
}

/// The `cpu` line of `/proc/stat`.
pub fn proc_stat_cpu(text: &str) -> Result<ProcStatCpu, ParseError> {
    const FILE: &str = "/proc/stat";
    let line = text
        .lines()
        .find(|line| line.split_whitespace().next() == Some("cpu"))
        .ok_or(ParseError::Missing {
            file: FILE,
            key: "cpu",
        })?;
    let mut values = [0u64; 10];
    let mut count = 0;
    for word in line.split_whitespace().skip(1) {
        let slot = values.get_mut(count).ok_or_else(|| ParseError::Line {
            file: FILE,
            line: line.to_owned(),
            reason: "more than 10 counters",
        })?;
        *slot = word.parse().map_err(|_| ParseError::Line {
            file: FILE,
            line: line.to_owned(),
            reason: "bad number",
        })?;
        count += 1;
    }
    // user, nice, system and idle are there since Linux 1.0; the rest came later.
    if count < 4 {
        return Err(ParseError::Line {
            file: FILE,
            line: line.to_owned(),
            reason: "fewer than 4 counters",
        });
    }
    let [
        user,
        nice,
        system,
        idle,
        iowait,
        irq,
        softirq,
        steal,
        guest,
        guest_nice,
    ] = values;
    Ok(ProcStatCpu {
        user,
        nice,
        system,
        idle,
        iowait,
        irq,
        softirq,
        steal,
        guest,
        guest_nice,
    })
}

/// `/proc/meminfo`: `Key:   value kB` lines (a few counts have no unit). `MemTotal` is required.
pub fn meminfo(text: &str) -> Result<MemInfo, ParseError> {
    const FILE: &str = "/proc/meminfo";
    let mut info = MemInfo::default();
    let mut total = None;
    for line in text.lines().filter(|line| !line.trim().is_empty()) {
        let bad = |reason| ParseError::Line {
            file: FILE,
            line: line.to_owned(),
            reason,
        };
        let (key, rest) = line.split_once(':').ok_or_else(|| bad("expected `Key:`"))?;
        let slot = match key {
            "MemTotal" => total.insert(0),
            "MemFree" => &mut info.free,
            "MemAvailable" => &mut info.available,
            "Buffers" => &mut info.buffers,
            "Cached" => &mut info.cached,
            "Active(file)" => &mut info.active_file,
            "Inactive(file)" => &mut info.inactive_file,
            "SwapTotal" => &mut info.swap_total,
            "SwapFree" => &mut info.swap_free,
            _ => continue,
        };
        let mut words = rest.split_whitespace();
        let kib: u64 = match (words.next(), words.next(), words.next()) {
            (Some(value), Some("kB"), None) => value.parse().map_err(|_| bad("bad number"))?,
            _ => return Err(bad("expected `<number> kB`")),
        };
        *slot = kib.checked_mul(1024).ok_or_else(|| bad("too large"))?;
    }
    info.total = total.ok_or(ParseError::Missing {
        file: FILE,
        key: "MemTotal",
    })?;
    Ok(info)
}

/// `result` with its error put in `proc_root`.
fn parsed<T>(proc_root: &Path, result: Result<T, ParseError>) -> Result<T> {
    result.map_err(|source| Error::Parse {
        dir: proc_root.to_owned(),
        source,
    })
}

/// Reads the node totals under `proc_root` (`/proc` outside tests).
pub fn read_node(proc_root: &Path) -> Result<NodeSample> {
    let time = crate::clock::wall();
    let read = |name: &str| {
        let path = proc_root.join(name);
        fs::read_to_string(&path).map_err(|source| Error::Io { path, source })
    };
    let pressure = |name: &str, file: &'static str| -> Result<_> {
        let path = proc_root.join("pressure").join(name);
        match fs::read_to_string(&path) {
            Ok(text) => parsed(proc_root, parse::psi(file, &text)).map(Some),
            // No file without CONFIG_PSI; EOPNOTSUPP with `psi=0` on the command line.
            Err(error)
                if error.kind() == io::ErrorKind::NotFound
                    || error.raw_os_error() == Some(nix::libc::EOPNOTSUPP) =>
            {
                Ok(None)
            }
            Err(source) => Err(Error::Io { path, source }),
        }
    };
    Ok(NodeSample {
        time,
        cpu: parsed(proc_root, proc_stat_cpu(&read("stat")?))?,
        memory: parsed(proc_root, meminfo(&read("meminfo")?))?,
        pressure: Pressure {
            cpu: pressure("cpu", "/proc/pressure/cpu")?,
            memory: pressure("memory", "/proc/pressure/memory")?,
            io: pressure("io", "/proc/pressure/io")?,
        },
    })
}

#[cfg(test)]
mod tests;
