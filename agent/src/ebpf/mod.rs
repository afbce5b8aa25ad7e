//! Loads kernlet's eBPF programs (embedded at build time) and reads their maps into
//! [`EbpfCounters`] per cgroup id.
//!
//! Programs and hooks (kernel reference: `Documentation/bpf/`, the tracepoints in
//! `include/trace/events/{sched,block,exceptions}.h`, `mm/oom_kill.c`):
//! - Rust (`ebpf/programs`, no struct walks): `sched_switch` raw tracepoint (on-CPU time),
//!   `skb_ingress`/`skb_egress` `cgroup_skb` attached once at the pods' cgroup root in multi-attach
//!   mode (bytes and packets by the socket's cgroup, so every network namespace is seen without
//!   entering it), `page_fault_user` raw tracepoint;
//! - C with CO-RE (`ebpf/c`, loaded by aya, which relocates them against the kernel's BTF):
//!   run-queue latency (`tp_btf` `sched_wakeup`, `sched_wakeup_new`, `sched_switch`), block I/O by
//!   the bio's cgroup (`tp_btf` `block_rq_issue`/`block_rq_complete`), OOM kills by memory cgroup
//!   (`fentry` `oom_kill_process`). aya-ebpf cannot emit CO-RE relocations, and these programs read
//!   `task_struct`, `request` and `oom_control` fields whose offsets differ between kernels.
//!
//! Keys are cgroup ids, the inode number of a cgroup v2 directory (`kn->id`). A program the
//! running kernel cannot load or attach is recorded in [`ProgramState`] with its reason (the
//! verifier log when there is one) and skipped; the agent keeps running without it. Each C object
//! is loaded on its own, so one the kernel refuses cannot take the others down.
//!
//! RLIMIT_MEMLOCK is never raised: since Linux 5.11 BPF memory is charged to the memory cgroup, and
//! on nodes where `setrlimit` is refused (no CAP_SYS_RESOURCE) raising it would fail anyway.
//!
//! Layout: this file holds the API; `counters` the agent-side counter types; `load` loads and
//! attaches programs; `maps` reads, merges and prunes the maps.

mod batch;
pub mod counters;
mod load;
mod maps;

pub use load::LoadError;

use std::{collections::HashMap, os::fd::OwnedFd, path::PathBuf, time::Duration};

use aya::{Ebpf, maps::MapError, programs::ProgramError};
use maps::Reading;

pub use counters::EbpfCounters;

#[derive(Debug, thiserror::Error)]
pub enum EbpfError {
    #[error("no ebpf program could be loaded: {reasons}")]
    NothingLoaded { reasons: String },
    #[error("ebpf map {name} is missing from its loaded object")]
    MissingMap { name: &'static str },
    #[error("reading ebpf map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: MapError,
    },
    #[error("removing cgroup {cgroup} from ebpf map {name}: {source}")]
    Remove {
        name: &'static str,
        cgroup: u64,
        #[source]
        source: MapError,
    },
    #[error("reading run-time stats of ebpf program {name}: {source}")]
    ProgramInfo {
        name: &'static str,
        #[source]
        source: ProgramError,
    },
}

/// What [`Probes::load_with`] attaches where.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProbeOptions {
    /// The cgroup v2 directory to attach the `cgroup_skb` programs to, once, in multi-attach mode
    /// (the pods' root, e.g. `/sys/fs/cgroup/kubepods`). `None` leaves network counting off.
    pub skb_cgroup: Option<PathBuf>,
    /// Have the kernel time every program run (`BPF_ENABLE_STATS`) for [`Probes::program_stats`].
    /// Costs two clock reads per event while the probes live.
    pub run_time_stats: bool,
}

/// Whether one program runs on this kernel, and why not if it does not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgramState {
    pub name: &'static str,
    /// `Err` holds the load or attach error, including the verifier log when there is one.
    pub status: Result<(), LoadError>,
}

impl ProgramState {
    #[must_use]
    pub fn loaded(&self) -> bool {
        self.status.is_ok()
    }
}

/// The kernel's run-time accounting of one program (`bpf_prog_info` `run_time_ns`/`run_cnt`),
/// counted while run-time stats are enabled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProgramCost {
    pub name: &'static str,
    pub run_time_ns: u64,
    pub run_count: u64,
}

impl ProgramCost {
    /// Mean nanoseconds per run; `None` before the first run.
    #[must_use]
    pub fn ns_per_run(&self) -> Option<f64> {
        (self.run_count > 0).then(|| self.run_time_ns as f64 / self.run_count as f64)
    }
}

/// The embedded objects, aligned as aya's ELF parser requires.
pub(crate) mod objects {
    pub static RUST: &[u8] =
        aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/kernlet.bpf.o"));
    pub static RUNQLAT: &[u8] =
        aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/runqlat.bpf.o"));
    pub static BLOCK: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/block.bpf.o"));
    pub static OOM: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/oom.bpf.o"));
}

/// kernlet's loaded eBPF programs. Dropping it detaches and unloads them.
pub struct Probes {
    /// `None` where the whole object failed to load (its programs say why).
    rust: Option<Ebpf>,
    runqlat: Option<Ebpf>,
    block: Option<Ebpf>,
    oom: Option<Ebpf>,
    programs: Vec<ProgramState>,
    /// Keeps `BPF_ENABLE_STATS` on while held.
    _stats: Option<OwnedFd>,
    load_time: Duration,
    /// The possible CPUs (per-CPU values have one slot each); `None` if unreadable.
    cpus: Option<usize>,
}

impl Probes {
    /// Loads every program this kernel supports, without network counting and run-time stats.
    pub fn load() -> Result<Self, EbpfError> {
        Self::load_with(&ProbeOptions::default())
    }

    /// Parses the embedded objects and loads and attaches every program this kernel supports.
    /// Fails only when not a single program loads.
    pub fn load_with(options: &ProbeOptions) -> Result<Self, EbpfError> {
        let started = tokio::time::Instant::now();
        let stats = if options.run_time_stats {
            match aya::sys::enable_stats(aya::sys::Stats::RunTime) {
                Ok(fd) => Some(fd),
                Err(error) => {
                    tracing::warn!(%error, "ebpf run-time stats unavailable");
                    None
                }
            }
        } else {
            None
        };
        let loaded = load::load_all(options);
        let probes = Self {
            rust: loaded.rust,
            runqlat: loaded.runqlat,
            block: loaded.block,
            oom: loaded.oom,
            programs: loaded.programs,
            _stats: stats,
            load_time: started.elapsed(),
            cpus: aya::util::nr_cpus().ok(),
        };
        for program in &probes.programs {
            if let Err(reason) = &program.status {
                tracing::warn!(program = program.name, %reason, "ebpf program skipped");
            }
        }
        if probes.programs.iter().any(ProgramState::loaded) {
            Ok(probes)
        } else {
            let reasons = probes
                .programs
                .iter()
                .filter_map(|p| p.status.as_ref().err().map(|e| format!("{}: {e}", p.name)))
                .collect::<Vec<_>>()
                .join("; ");
            Err(EbpfError::NothingLoaded { reasons })
        }
    }

    /// Load state of every program, in a stable order.
    #[must_use]
    pub fn programs(&self) -> &[ProgramState] {
        &self.programs
    }

    /// How long loading, verifying and attaching every program took.
    #[must_use]
    pub fn load_time(&self) -> Duration {
        self.load_time
    }

    /// Everything the programs counted, per cgroup id, with per-CPU values summed. A part of
    /// [`EbpfCounters`] is `None` when its programs are not loaded, and zero when they are but saw
    /// nothing for that cgroup.
    pub fn counters(&self) -> Result<HashMap<u64, EbpfCounters>, EbpfError> {
        maps::counters(self, Reading::Batched)
    }

    /// [`Probes::counters`] read the way it is read on kernels without batch lookups (two
    /// system calls per entry): the reference the kernel tests hold the batches against.
    pub fn counters_entry_by_entry(&self) -> Result<HashMap<u64, EbpfCounters>, EbpfError> {
        maps::counters(self, Reading::EntryByEntry)
    }

    /// Removes the given cgroup ids (cgroups that no longer exist) from every map.
    pub fn forget(&mut self, cgroups: &[u64]) -> Result<(), EbpfError> {
        maps::forget(self, cgroups)
    }

    /// Keeps only the cgroup ids `keep` accepts in every map; returns how many entries went.
    pub fn retain(&mut self, keep: impl FnMut(u64) -> bool) -> Result<usize, EbpfError> {
        maps::retain(self, keep)
    }

    /// The kernel's run time and run count of every loaded program. Counts only while some
    /// process holds run-time stats on ([`ProbeOptions::run_time_stats`] or the
    /// `kernel.bpf_stats_enabled` sysctl).
    pub fn program_stats(&self) -> Result<Vec<ProgramCost>, EbpfError> {
        let mut costs = Vec::new();
        for state in self.programs.iter().filter(|p| p.loaded()) {
            let Some(program) = self
                .object_of(state.name)
                .and_then(|o| o.program(state.name))
            else {
                continue;
            };
            let info = program.info().map_err(|source| EbpfError::ProgramInfo {
                name: state.name,
                source,
            })?;
            costs.push(ProgramCost {
                name: state.name,
                run_time_ns: u64::try_from(info.run_time().as_nanos()).unwrap_or(u64::MAX),
                run_count: info.run_count(),
            });
        }
        Ok(costs)
    }

    fn possible_cpus(&self) -> Option<usize> {
        self.cpus
    }

    fn loaded(&self, name: &str) -> bool {
        self.programs.iter().any(|p| p.name == name && p.loaded())
    }

    fn object_of(&self, program: &str) -> Option<&Ebpf> {
        self.object(load::object_of(program)?)
    }

    fn object(&self, which: load::Object) -> Option<&Ebpf> {
        match which {
            load::Object::Rust => self.rust.as_ref(),
            load::Object::Runqlat => self.runqlat.as_ref(),
            load::Object::Block => self.block.as_ref(),
            load::Object::Oom => self.oom.as_ref(),
        }
    }

    fn object_mut(&mut self, which: load::Object) -> Option<&mut Ebpf> {
        match which {
            load::Object::Rust => self.rust.as_mut(),
            load::Object::Runqlat => self.runqlat.as_mut(),
            load::Object::Block => self.block.as_mut(),
            load::Object::Oom => self.oom.as_mut(),
        }
    }
}

impl std::fmt::Debug for Probes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Probes")
            .field("programs", &self.programs)
            .field("load_time", &self.load_time)
            .finish_non_exhaustive()
    }
}
