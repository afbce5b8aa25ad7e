//! Pure parsers for the cgroup v2 interface files kernlet samples, after
//! `Documentation/admin-guide/cgroup-v2.rst` "Interface Files" > "Format": single values
//! (`memory.current`), single values that may be `max` (`memory.max`), flat keyed files
//! (`cpu.stat`: `key value` lines), nested keyed files (`io.stat`: `key sub=value ...` lines), and
//! the PSI line format of "PSI - Pressure Stall Information".
//!
//! Keys a parser does not know are skipped without looking at their values, so a newer kernel's
//! additions never break parsing; a key it does know must carry a valid number.
use crate::stats::model::{
    CpuStat, IoDeviceStat, MemoryEvents, MemoryStat, Psi, PsiLine, Throttling,
};

/// A file whose text is not what the kernel documents. Names the file (as the kernel calls it)
/// and the offending line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("{file}: {reason} in line {line:?}")]
    Line {
        file: &'static str,
        line: String,
        reason: &'static str,
    },
    #[error("{file}: no {key:?} line")]
    Missing {
        file: &'static str,
        key: &'static str,
    },
}

fn bad(file: &'static str, line: &str, reason: &'static str) -> ParseError {
    ParseError::Line {
        file,
        line: line.to_owned(),
        reason,
    }
}

fn number(file: &'static str, line: &str, value: &str) -> Result<u64, ParseError> {
    value.parse().map_err(|_| bad(file, line, "bad number"))
}

/// The `(key, value)` lines of a flat keyed file, values still text; blank lines are skipped.
fn flat_keyed<'a>(
    file: &'static str,
    text: &'a str,
) -> impl Iterator<Item = Result<(&'a str, &'a str, &'a str), ParseError>> {
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(move |line| {
            let mut words = line.split_whitespace();
            match (words.next(), words.next(), words.next()) {
                (Some(key), Some(value), None) => Ok((line, key, value)),
                _ => Err(bad(file, line, "expected `key value`")),
            }
        })
}

/// A single-value file such as `memory.current` or `pids.current`.
pub fn single(file: &'static str, text: &str) -> Result<u64, ParseError> {
    let line = text.trim();
    number(file, line, line)
}

/// A single-value file that may say `max` (no limit), such as `memory.max`: `None` for `max`.
pub fn single_or_max(file: &'static str, text: &str) -> Result<Option<u64>, ParseError> {
    let line = text.trim();
    if line == "max" {
        return Ok(None);
    }
    number(file, line, line).map(Some)
}

/// `cpu.stat`. The three usage keys are always there; the throttling part is `Some` when the
/// cpu controller adds any of its keys (keys it lacks read 0).
pub fn cpu_stat(text: &str) -> Result<CpuStat, ParseError> {
    const FILE: &str = "cpu.stat";
    let (mut usage, mut user, mut system) = (None, None, None);
    let mut throttling: Option<Throttling> = None;
    for entry in flat_keyed(FILE, text) {
        let (line, key, value) = entry?;
        let slot = match key {
            "usage_usec" => usage.insert(0),
            "user_usec" => user.insert(0),
            "system_usec" => system.insert(0),
            "nr_periods" => &mut throttling.get_or_insert_default().nr_periods,
            "nr_throttled" => &mut throttling.get_or_insert_default().nr_throttled,
            "throttled_usec" => &mut throttling.get_or_insert_default().throttled_usec,
            _ => continue,
        };
        *slot = number(FILE, line, value)?;
    }
    let need = |value: Option<u64>, key| value.ok_or(ParseError::Missing { file: FILE, key });
    Ok(CpuStat {
        usage_usec: need(usage, "usage_usec")?,
        user_usec: need(user, "user_usec")?,
        system_usec: need(system, "system_usec")?,
        throttling,
    })
}

/// `memory.stat`: the keys [`MemoryStat`] has; missing keys read 0.
pub fn memory_stat(text: &str) -> Result<MemoryStat, ParseError> {
    const FILE: &str = "memory.stat";
    let mut stat = MemoryStat::default();
    for entry in flat_keyed(FILE, text) {
        let (line, key, value) = entry?;
        let slot = match key {
            "anon" => &mut stat.anon,
            "file" => &mut stat.file,
            "kernel" => &mut stat.kernel,
            "kernel_stack" => &mut stat.kernel_stack,
            "slab" => &mut stat.slab,
            "sock" => &mut stat.sock,
            "shmem" => &mut stat.shmem,
            "file_mapped" => &mut stat.file_mapped,
            "file_dirty" => &mut stat.file_dirty,
            "file_writeback" => &mut stat.file_writeback,
            "active_anon" => &mut stat.active_anon,
            "inactive_anon" => &mut stat.inactive_anon,
            "active_file" => &mut stat.active_file,
            "inactive_file" => &mut stat.inactive_file,
            "pgfault" => &mut stat.pgfault,
            "pgmajfault" => &mut stat.pgmajfault,
            "pgscan" => &mut stat.pgscan,
            "pgsteal" => &mut stat.pgsteal,
            "workingset_refault_anon" => &mut stat.workingset_refault_anon,
            "workingset_refault_file" => &mut stat.workingset_refault_file,
            _ => continue,
        };
        *slot = number(FILE, line, value)?;
    }
    Ok(stat)
}

/// `memory.events`: missing keys read 0.
pub fn memory_events(text: &str) -> Result<MemoryEvents, ParseError> {
    const FILE: &str = "memory.events";
    let mut events = MemoryEvents::default();
    for entry in flat_keyed(FILE, text) {
        let (line, key, value) = entry?;
        let slot = match key {
            "low" => &mut events.low,
            "high" => &mut events.high,
            "max" => &mut events.max,
            "oom" => &mut events.oom,
            "oom_kill" => &mut events.oom_kill,
            _ => continue,
        };
        *slot = number(FILE, line, value)?;
    }
    Ok(events)
}

/// `io.stat`: one entry per `MAJ:MIN key=value ...` line; keys other than the six byte and
/// operation counters (iocost's `cost.*`, latency keys) are skipped, missing ones read 0.
pub fn io_stat(text: &str) -> Result<Vec<IoDeviceStat>, ParseError> {
    const FILE: &str = "io.stat";
    let mut devices = Vec::new();
    for line in text.lines().filter(|line| !line.trim().is_empty()) {
        let mut words = line.split_whitespace();
        let device = words.next().unwrap_or_default();
        let (major, minor) = device
            .split_once(':')
            .and_then(|(major, minor)| Some((major.parse().ok()?, minor.parse().ok()?)))
            .ok_or_else(|| bad(FILE, line, "expected `MAJ:MIN` first"))?;
        let mut stat = IoDeviceStat {
            major,
            minor,
            ..IoDeviceStat::default()
        };
        for pair in words {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| bad(FILE, line, "expected `key=value`"))?;
            let slot = match key {
                "rbytes" => &mut stat.rbytes,
                "wbytes" => &mut stat.wbytes,
                "rios" => &mut stat.rios,
                "wios" => &mut stat.wios,
                "dbytes" => &mut stat.dbytes,
                "dios" => &mut stat.dios,
                _ => continue,
            };
            *slot = number(FILE, line, value)?;
        }
        devices.push(stat);
    }
    Ok(devices)
}

/// A PSI file (`cpu.pressure`, `/proc/pressure/io`, ...) named `file` in errors: a `some` line
/// and, where the kernel writes one, a `full` line.
pub fn psi(file: &'static str, text: &str) -> Result<Psi, ParseError> {
    let (mut some, mut full) = (None, None);
    for line in text.lines().filter(|line| !line.trim().is_empty()) {
        let mut words = line.split_whitespace();
        let slot = match words.next() {
            Some("some") => &mut some,
            Some("full") => &mut full,
            _ => return Err(bad(file, line, "expected `some` or `full` first")),
        };
        *slot = Some(psi_line(file, line, words)?);
    }
    Ok(Psi {
        some: some.ok_or(ParseError::Missing { file, key: "some" })?,
        full,
    })
}

fn psi_line<'a>(
    file: &'static str,
    line: &str,
    pairs: impl Iterator<Item = &'a str>,
) -> Result<PsiLine, ParseError> {
    let (mut avg10, mut avg60, mut avg300, mut total) = (None, None, None, None);
    for pair in pairs {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| bad(file, line, "expected `key=value`"))?;
        let avg = |value: &str| -> Result<f64, ParseError> {
            value
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .ok_or_else(|| bad(file, line, "bad average"))
        };
        match key {
            "avg10" => avg10 = Some(avg(value)?),
            "avg60" => avg60 = Some(avg(value)?),
            "avg300" => avg300 = Some(avg(value)?),
            "total" => total = Some(number(file, line, value)?),
            _ => {}
        }
    }
    match (avg10, avg60, avg300, total) {
        (Some(avg10), Some(avg60), Some(avg300), Some(total_usec)) => Ok(PsiLine {
            avg10,
            avg60,
            avg300,
            total_usec,
        }),
        _ => Err(bad(file, line, "expected avg10, avg60, avg300 and total")),
    }
}

#[cfg(test)]
mod tests;
