//! cgroupfs readers: fill [`CgroupSample`](super::model::CgroupSample) for one cgroup v2 directory
//! and the node totals from `/proc`, in the kernel's own units. They are the fallback where eBPF
//! cannot count and the reference eBPF numbers are tested against (`docs/architecture.md`,
//! decision 6).
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
//! The collector reads every pod and container cgroup each second. `cargo xtask bench readers
//! --vm` compared, in one run, open+read+close per file ([`read_cgroup`]), descriptors kept open
//! and re-read with `pread` at offset 0 ([`CgroupFiles`]), and the kept descriptors read as one
//! batch of `io_uring` reads (`tokio-uring` 0.5, its safe API; the workspace forbids `unsafe`).
//! CPU time per round (`getrusage`, median of 30), every file parsed into a `CgroupSample`:
//!
//! | cgroups | where, files per cgroup   | open+read+close | pread reuse | `io_uring` |
//! |---------|---------------------------|-----------------|-------------|------------|
//! | 100     | host 6.18, 4 (hybrid)     | 1.28 ms         | 0.44 ms     | 0.74 ms    |
//! | 1000    | host 6.18, 4 (hybrid)     | 13.4 ms         | 5.35 ms     | 8.95 ms    |
//! | 1000    | node VM 6.1 TCG, 14 (all) | 712 ms          | 148 ms      | 272 ms     |
//!
//! Keeping descriptors open saves the path walk, open and close per file: 2.5× less CPU on the
//! host and 4–5× in the VM. `io_uring` costs 1.7–1.8× more than `pread` at every size, and not
//! because of `tokio-uring`: a throw-away program on the raw `io-uring` crate (outside the
//! workspace, reads only, no parsing) took 7.2 ms per round for 1000 host cgroups against 4.4 ms
//! for `pread`. The reads complete inline during submission (no io-wq worker ran), so batching
//! saves only one syscall entry per file, less than the ring's own per-read work; generating the
//! text (with an rstat flush for `cpu.stat`, `memory.stat` and `io.stat`) costs the same in all
//! three. So the agent uses [`CgroupFiles`], with [`read_cgroup`] for
//! one-off reads, and carries no `io_uring` runtime; the `io_uring` variant stays in the bench
//! (`tests/examples/cgroupfs_read.rs`). Kept descriptors cost one fd per file: 1000 containers
//! with every controller hold 14,000, so kernlet must raise `RLIMIT_NOFILE` (soft to hard).
pub mod node;
pub mod parse;
pub mod reader;

use std::{io, path::PathBuf};

pub use node::{MemInfo, NodeSample, ProcStatCpu, read_node};
pub use parse::ParseError;
pub use reader::{CgroupFile, CgroupFiles, CgroupRead, Due, FileTexts, Slow, read_cgroup};

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
