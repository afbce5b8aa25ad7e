//! Loads kernlet's eBPF programs (built from `ebpf/programs` and embedded at build time) and reads
//! their maps.
//!
//! Programs are keyed by cgroup id, the inode number of a cgroup v2 directory, which is what
//! `bpf_get_current_cgroup_id` returns (kernel >= 4.18). A program the running kernel cannot load
//! or attach is recorded with its reason and skipped; the agent keeps running without it.
//!
//! RLIMIT_MEMLOCK is never raised: since Linux 5.11 BPF memory is charged to the memory cgroup, and
//! on nodes where `setrlimit` is refused (no CAP_SYS_RESOURCE) raising it would fail anyway.

use std::collections::HashMap;

use aya::{
    Ebpf,
    maps::{MapError, PerCpuHashMap},
    programs::{ProgramError, RawTracePoint},
};
use kernlet_ebpf_common::{CPU_MAP, CpuCounters};

/// The compiled programs, aligned as aya's ELF parser requires.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/kernlet.bpf.o"));

#[derive(Debug, thiserror::Error)]
pub enum EbpfError {
    #[error("parsing the embedded eBPF object: {0}")]
    Object(#[source] aya::EbpfError),
    #[error("ebpf map {name} is missing from the embedded object")]
    MissingMap { name: &'static str },
    #[error("reading ebpf map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: MapError,
    },
    #[error("program {name} is not loaded: {reason}")]
    NotLoaded { name: &'static str, reason: String },
}

/// Whether one program runs on this kernel, and why not if it does not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgramState {
    pub name: &'static str,
    /// `Err` holds the load or attach error, including the verifier log when there is one.
    pub status: Result<(), String>,
}

impl ProgramState {
    #[must_use]
    pub fn loaded(&self) -> bool {
        self.status.is_ok()
    }
}

/// kernlet's loaded eBPF programs. Dropping it detaches and unloads them.
pub struct Probes {
    ebpf: Ebpf,
    programs: Vec<ProgramState>,
}

impl Probes {
    /// Parses the embedded object and loads and attaches every program this kernel supports.
    pub fn load() -> Result<Self, EbpfError> {
        let mut ebpf = Ebpf::load(OBJECT).map_err(EbpfError::Object)?;
        let sched_switch = attach_raw_tracepoint(&mut ebpf, "sched_switch", "sched_switch");
        if let Err(reason) = &sched_switch {
            tracing::warn!(program = "sched_switch", %reason, "ebpf program skipped");
        }
        let programs = vec![ProgramState {
            name: "sched_switch",
            status: sched_switch,
        }];
        Ok(Self { ebpf, programs })
    }

    /// Load state of every program, in a stable order.
    #[must_use]
    pub fn programs(&self) -> &[ProgramState] {
        &self.programs
    }

    /// CPU counters per cgroup id, summed over CPUs.
    pub fn cpu_counters(&self) -> Result<HashMap<u64, CpuCounters>, EbpfError> {
        self.require("sched_switch")?;
        let map = self
            .ebpf
            .map(CPU_MAP)
            .ok_or(EbpfError::MissingMap { name: CPU_MAP })?;
        let map_error = |source| EbpfError::Map {
            name: CPU_MAP,
            source,
        };
        let counters: PerCpuHashMap<_, u64, CpuCounters> =
            PerCpuHashMap::try_from(map).map_err(map_error)?;
        let mut totals = HashMap::new();
        for entry in &counters {
            let (cgroup, per_cpu) = entry.map_err(map_error)?;
            let sum = per_cpu
                .iter()
                .fold(CpuCounters::default(), |acc, c| acc.merged(*c));
            totals.insert(cgroup, sum);
        }
        Ok(totals)
    }

    fn require(&self, name: &'static str) -> Result<(), EbpfError> {
        match self
            .programs
            .iter()
            .find(|p| p.name == name)
            .map(|p| &p.status)
        {
            Some(Ok(())) => Ok(()),
            Some(Err(reason)) => Err(EbpfError::NotLoaded {
                name,
                reason: reason.clone(),
            }),
            None => Err(EbpfError::NotLoaded {
                name,
                reason: "unknown program".into(),
            }),
        }
    }
}

impl std::fmt::Debug for Probes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Probes")
            .field("programs", &self.programs)
            .finish_non_exhaustive()
    }
}

/// Loads program `name` and attaches it to raw tracepoint `tracepoint`. Raw tracepoints need
/// neither tracefs nor kprobes (absent on some hosts) and skip the tracepoint's argument copy.
fn attach_raw_tracepoint(ebpf: &mut Ebpf, name: &str, tracepoint: &str) -> Result<(), String> {
    let program = ebpf
        .program_mut(name)
        .ok_or_else(|| format!("{name} is not in the object"))?;
    let program: &mut RawTracePoint = program.try_into().map_err(|e| describe(&e))?;
    program.load().map_err(|e| describe(&e))?;
    program.attach(tracepoint).map_err(|e| describe(&e))?;
    Ok(())
}

/// Error text with the verifier log when the kernel refused a program.
fn describe(error: &ProgramError) -> String {
    match error {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            format!("the kernel refused the program: {io_error}\n{verifier_log}")
        }
        other => other.to_string(),
    }
}
