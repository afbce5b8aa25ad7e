//! Reading one cgroup directory into a [`CgroupSample`].
//!
//! Which files exist tells which controllers are enabled for the cgroup (cgroup-v2.rst
//! "Controlling Controllers"): a missing `memory.current` means no memory controller, and the
//! sample's memory part stays `None`. `cpu.stat` and the PSI files are core files every cgroup has
//! (on a hybrid host they are all there is).
//!
//! A cgroup can be removed while it is read (a container exits). Two kernel facts make that cheap
//! to tell apart from an error: opening a file of a removed cgroup fails with `ENOENT`, and reading
//! a descriptor opened before the removal fails with `ENODEV` (kernfs deactivates the node).
//! [`read_cgroup`] opens `cpu.stat` last: a cgroup removed half-way fails that open too, so the
//! half-read sample is dropped as [`CgroupRead::Gone`] instead of reporting missing controllers.
//!
//! cgroupfs files are seq files whose whole text is produced by one `show` call, and a read at
//! offset 0 regenerates it: so one `pread` at offset 0 into a buffer larger than the file returns
//! fresh, complete text, and a short read is the end of the file (no extra read for EOF).
use std::{
    fs::File,
    io,
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
    time::SystemTime,
};

use super::{Error, ParseError, Result, parse};
use crate::stats::model::{CgroupSample, MemoryStats, PidsStats, Pressure};

/// The files kernlet samples from a cgroup, in the order [`read_cgroup`] reads them (`cpu.stat`
/// last, see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CgroupFile {
    MemoryCurrent,
    MemoryPeak,
    MemoryMax,
    MemorySwapCurrent,
    MemorySwapMax,
    MemoryStat,
    MemoryEvents,
    IoStat,
    PidsCurrent,
    PidsMax,
    CpuPressure,
    MemoryPressure,
    IoPressure,
    CpuStat,
}

impl CgroupFile {
    pub const ALL: [Self; 14] = [
        Self::MemoryCurrent,
        Self::MemoryPeak,
        Self::MemoryMax,
        Self::MemorySwapCurrent,
        Self::MemorySwapMax,
        Self::MemoryStat,
        Self::MemoryEvents,
        Self::IoStat,
        Self::PidsCurrent,
        Self::PidsMax,
        Self::CpuPressure,
        Self::MemoryPressure,
        Self::IoPressure,
        Self::CpuStat,
    ];

    /// The file's name in the cgroup directory.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::MemoryCurrent => "memory.current",
            Self::MemoryPeak => "memory.peak",
            Self::MemoryMax => "memory.max",
            Self::MemorySwapCurrent => "memory.swap.current",
            Self::MemorySwapMax => "memory.swap.max",
            Self::MemoryStat => "memory.stat",
            Self::MemoryEvents => "memory.events",
            Self::IoStat => "io.stat",
            Self::PidsCurrent => "pids.current",
            Self::PidsMax => "pids.max",
            Self::CpuPressure => "cpu.pressure",
            Self::MemoryPressure => "memory.pressure",
            Self::IoPressure => "io.pressure",
            Self::CpuStat => "cpu.stat",
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    /// Which slow class the file is in, `None` for the files read every round.
    #[must_use]
    pub fn slow(self) -> Option<Slow> {
        match self {
            Self::MemoryMax | Self::MemorySwapMax | Self::PidsMax => Some(Slow::Limits),
            Self::CpuPressure | Self::MemoryPressure | Self::IoPressure => Some(Slow::Pressure),
            _ => None,
        }
    }
}

/// Files whose text changes on a clock of its own, so a 1 s collector need not read them every
/// round: [`CgroupFiles::read_due`] reuses their last text until they are due again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slow {
    /// `memory.max`, `memory.swap.max`, `pids.max`: change only when written (by kernlet's
    /// cgroup manager on a pod's start or resize).
    Limits,
    /// `*.pressure`: the kernel recomputes the averages every 2 s (`PSI_FREQ`, kernel/sched/psi.c).
    Pressure,
}

/// Which [`Slow`] files one round reads again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Due {
    pub limits: bool,
    pub pressure: bool,
}

impl Due {
    /// Every file.
    pub const ALL: Self = Self {
        limits: true,
        pressure: true,
    };

    fn wants(self, file: CgroupFile) -> bool {
        match file.slow() {
            None => true,
            Some(Slow::Limits) => self.limits,
            Some(Slow::Pressure) => self.pressure,
        }
    }
}

/// What reading a cgroup gave.
#[derive(Debug, Clone, PartialEq)]
#[expect(
    clippy::large_enum_variant,
    reason = "one per cgroup per round, moved straight into the stats store; boxing would only add an allocation"
)]
pub enum CgroupRead {
    Sample(CgroupSample),
    /// The cgroup was removed before or while it was read.
    Gone,
}

/// Where one round's file texts of one cgroup are collected; reused across cgroups and rounds
/// so that reading allocates nothing once warm.
#[derive(Debug)]
pub struct FileTexts {
    /// What each read lands in first: larger than any cgroup file kernlet reads (a 6.1
    /// `memory.stat` is about 1.2 KiB) so that one read gets the whole text.
    scratch: Box<[u8]>,
    bytes: Vec<u8>,
    spans: [Option<(usize, usize)>; CgroupFile::ALL.len()],
}

/// The scratch buffer size; a file that fills it is read on at the next offset.
const SCRATCH: usize = 16 * 1024;

impl Default for FileTexts {
    fn default() -> Self {
        Self {
            scratch: vec![0; SCRATCH].into_boxed_slice(),
            bytes: Vec::with_capacity(4 * SCRATCH),
            spans: [None; CgroupFile::ALL.len()],
        }
    }
}

impl FileTexts {
    /// Forgets every text (keeps the buffers).
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.spans = [None; CgroupFile::ALL.len()];
    }

    /// Reads `from` from offset 0 to its end as `file`'s text.
    pub fn read(&mut self, file: CgroupFile, from: &File) -> io::Result<()> {
        let start = self.bytes.len();
        let mut offset = 0;
        loop {
            let n = match from.read_at(&mut self.scratch, offset) {
                Ok(n) => n,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => {
                    self.bytes.truncate(start);
                    return Err(error);
                }
            };
            self.bytes.extend_from_slice(&self.scratch[..n]);
            if n < self.scratch.len() {
                break;
            }
            offset += n as u64;
        }
        self.spans[file.index()] = Some((start, self.bytes.len()));
        Ok(())
    }

    /// `file`'s bytes as read, `None` when it was not read.
    fn bytes(&self, file: CgroupFile) -> Option<&[u8]> {
        self.spans[file.index()].map(|(start, end)| &self.bytes[start..end])
    }

    /// Records `text` as `file`'s text (for readers that do their own I/O).
    pub fn insert(&mut self, file: CgroupFile, text: &[u8]) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(text);
        self.spans[file.index()] = Some((start, self.bytes.len()));
    }

    /// `file`'s text, `None` when it was not read.
    pub fn text(&self, file: CgroupFile) -> Result<Option<&str>, ParseError> {
        let Some((start, end)) = self.spans[file.index()] else {
            return Ok(None);
        };
        let bytes = &self.bytes[start..end];
        std::str::from_utf8(bytes)
            .map(Some)
            .map_err(|_| ParseError::Line {
                file: file.name(),
                line: String::from_utf8_lossy(bytes).into_owned(),
                reason: "not UTF-8",
            })
    }

    /// The sample the texts make: a part whose files were not read stays `None` (or empty).
    pub fn sample(&self, time: SystemTime) -> Result<CgroupSample, ParseError> {
        use CgroupFile as F;
        let text = |file| self.text(file);
        let psi = |file: F| -> Result<_, ParseError> {
            text(file)?
                .map(|text| parse::psi(file.name(), text))
                .transpose()
        };
        let single = |file: F| -> Result<_, ParseError> {
            text(file)?
                .map(|text| parse::single(file.name(), text))
                .transpose()
        };
        let or_max = |file: F| -> Result<_, ParseError> {
            Ok(text(file)?
                .map(|text| parse::single_or_max(file.name(), text))
                .transpose()?
                .flatten())
        };
        let memory = match single(F::MemoryCurrent)? {
            Some(current) => Some(MemoryStats {
                current,
                peak: single(F::MemoryPeak)?,
                max: or_max(F::MemoryMax)?,
                swap_current: single(F::MemorySwapCurrent)?,
                swap_max: or_max(F::MemorySwapMax)?,
                stat: text(F::MemoryStat)?
                    .map(parse::memory_stat)
                    .transpose()?
                    .unwrap_or_default(),
                events: text(F::MemoryEvents)?
                    .map(parse::memory_events)
                    .transpose()?
                    .unwrap_or_default(),
            }),
            None => None,
        };
        let pids = match single(F::PidsCurrent)? {
            Some(current) => Some(PidsStats {
                current,
                max: or_max(F::PidsMax)?,
            }),
            None => None,
        };
        Ok(CgroupSample {
            time: Some(time),
            cpu: text(F::CpuStat)?.map(parse::cpu_stat).transpose()?,
            memory,
            io: text(F::IoStat)?
                .map(parse::io_stat)
                .transpose()?
                .unwrap_or_default(),
            pids,
            pressure: Pressure {
                cpu: psi(F::CpuPressure)?,
                memory: psi(F::MemoryPressure)?,
                io: psi(F::IoPressure)?,
            },
        })
    }
}

/// `ENODEV`: the descriptor's cgroup was removed after it was opened.
fn removed(error: &io::Error) -> bool {
    error.raw_os_error() == Some(nix::libc::ENODEV)
}

/// Reads `dir`'s files among `files` (all of [`CgroupFile::ALL`] for a first look) by
/// open+read+close each; files that do not exist are skipped. `cpu.stat` is always read.
pub fn read_cgroup(dir: &Path, files: &[CgroupFile], texts: &mut FileTexts) -> Result<CgroupRead> {
    texts.clear();
    let time = crate::clock::wall();
    let mut path = dir.to_path_buf();
    for file in CgroupFile::ALL {
        if file != CgroupFile::CpuStat && !files.contains(&file) {
            continue;
        }
        path.push(file.name());
        let read = File::open(&path).and_then(|from| texts.read(file, &from));
        match read {
            Ok(()) => {}
            Err(error) if removed(&error) => return Ok(CgroupRead::Gone),
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                if file == CgroupFile::CpuStat {
                    return Ok(CgroupRead::Gone);
                }
            }
            Err(source) => return Err(Error::Io { path, source }),
        }
        path.pop();
    }
    texts
        .sample(time)
        .map(CgroupRead::Sample)
        .map_err(|source| Error::Parse {
            dir: dir.to_owned(),
            source,
        })
}

/// One cgroup's files, opened once and re-read at offset 0 every round (two syscalls and a path
/// walk fewer per file than [`read_cgroup`]). Holds one descriptor per existing file, so a
/// collector of many cgroups needs `RLIMIT_NOFILE` raised (soft to hard) at startup.
#[derive(Debug)]
pub struct CgroupFiles {
    dir: PathBuf,
    files: Vec<(CgroupFile, File)>,
    /// The last text of each [`Slow`] file read, for rounds it is not due.
    kept: Vec<(CgroupFile, Box<[u8]>)>,
}

impl CgroupFiles {
    /// Opens those of `files` that `dir` has (and `cpu.stat` always); `None` when the cgroup does
    /// not exist (any more).
    pub fn open(dir: &Path, files: &[CgroupFile]) -> Result<Option<Self>> {
        let mut opened = Vec::new();
        for file in CgroupFile::ALL {
            if file != CgroupFile::CpuStat && !files.contains(&file) {
                continue;
            }
            let path = dir.join(file.name());
            match File::open(&path) {
                Ok(handle) => opened.push((file, handle)),
                Err(error) if error.kind() == io::ErrorKind::NotFound => {
                    if file == CgroupFile::CpuStat {
                        return Ok(None);
                    }
                }
                Err(source) => return Err(Error::Io { path, source }),
            }
        }
        Ok(Some(Self {
            dir: dir.to_owned(),
            files: opened,
            kept: Vec::new(),
        }))
    }

    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The open files: which ones the cgroup has, and their descriptors (for batched readers).
    #[must_use]
    pub fn files(&self) -> &[(CgroupFile, File)] {
        &self.files
    }

    /// Reads every open file at offset 0.
    pub fn read(&mut self, texts: &mut FileTexts) -> Result<CgroupRead> {
        self.read_due(texts, Due::ALL)
    }

    /// Reads the open files at offset 0, except [`Slow`] ones that are not `due` and were read
    /// before: their last text is used again.
    pub fn read_due(&mut self, texts: &mut FileTexts, due: Due) -> Result<CgroupRead> {
        texts.clear();
        let time = crate::clock::wall();
        for (file, handle) in &self.files {
            let kept = self.kept.iter().find(|(k, _)| k == file);
            if let (false, Some((_, text))) = (due.wants(*file), kept) {
                texts.insert(*file, text);
                continue;
            }
            match texts.read(*file, handle) {
                Ok(()) if file.slow().is_some() => {
                    let text = texts.bytes(*file).unwrap_or_default();
                    match self.kept.iter_mut().find(|(k, _)| k == file) {
                        Some((_, old)) if **old == *text => {}
                        Some((_, old)) => *old = text.into(),
                        None => self.kept.push((*file, text.into())),
                    }
                }
                Ok(()) => {}
                Err(error) if removed(&error) => return Ok(CgroupRead::Gone),
                Err(source) => {
                    return Err(Error::Io {
                        path: self.dir.join(file.name()),
                        source,
                    });
                }
            }
        }
        texts
            .sample(time)
            .map(CgroupRead::Sample)
            .map_err(|source| Error::Parse {
                dir: self.dir.clone(),
                source,
            })
    }
}

#[cfg(test)]
mod tests;
