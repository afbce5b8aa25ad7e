//! cgroupfs readers: fill [`CgroupSample`](super::model::CgroupSample) for one cgroup v2 directory
//! and the node totals from `/proc`, in the kernel's own units. They are the fallback where eBPF
//! cannot count and the reference eBPF numbers are tested against (`shared/DESIGN.md` decision 6).
//!
//! Formats follow `Documentation/admin-guide/cgroup-v2.rst`: "Interface Files" (flat keyed,
//! nested keyed, single value, `max`), "CPU" (`cpu.stat`), "Memory" (`memory.current`, `.peak`,
//! `.max`, `.swap.*`, `.stat`, `.events`), "IO" (`io.stat`), "PID" (`pids.current`, `.max`) and
//! "PSI - Pressure Stall Information" (`*.pressure`, which points to
//! `Documentation/accounting/psi.rst` for the line format shared with `/proc/pressure/*`).
//!
//! - [`parse`]: pure parsers, one per file; unknown keys are ignored so newer kernels parse.
//! - [`reader`]: which files a cgroup has, read by open+read+close ([`read_cgroup`]) or through
//!   descriptors kept open and re-read at offset 0 ([`CgroupFiles`]), both giving
//!   [`CgroupRead::Gone`] for a cgroup removed under them.
//! - [`node`]: `/proc/stat`'s `cpu` line, `/proc/meminfo`, `/proc/pressure/*`.
//!
//! # Which reader, and why not `io_uring`
//!
//! The collector reads every pod and container cgroup each second. `cargo xtask bench readers`
//! measured the three ways for 100, 500 and 1000 cgroups (CPU time of the process per round,
//! `getrusage`, and wall time; the tables are in `docs/perf.md`):
//! open+read+close per file, descriptors kept open and re-read with `pread` at offset 0, and the
//! same kept descriptors read in one batch through `io_uring` (`tokio-uring`). Keeping descriptors
//! open removes two of three syscalls and the path walk per file and is the cheapest;
//! `io_uring` saves no CPU on top, because cgroupfs files cannot be read without blocking, so the
//! kernel hands every read to an io-wq worker thread, and the time goes to generating the file
//! (rstat flush for `cpu.stat`, `memory.stat`, `io.stat`), not to the syscalls. The agent
//! therefore keeps [`CgroupFiles`] (pread reuse) with [`read_cgroup`] for one-off reads, and
//! needs no `unsafe` and no extra runtime; the `io_uring` variant lives only in the bench
//! (`tests/examples/cgroupfs_read.rs`).
pub mod node;
pub mod parse;
pub mod reader;

use std::{io, path::PathBuf};

pub use node::{MemInfo, NodeSample, ProcStatCpu, read_node};
pub use parse::ParseError;
pub use reader::{CgroupFile, CgroupFiles, CgroupRead, read_cgroup};

/// Why a cgroup or `/proc` file could not be read or made sense of. A cgroup that disappeared is
/// not an error: the readers return [`CgroupRead::Gone`] for it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("in {}: {source}", dir.display())]
    Parse { dir: PathBuf, source: ParseError },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
