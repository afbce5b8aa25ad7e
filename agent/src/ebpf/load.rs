//! Loading and attaching: which program lives in which object and hooks where, and turning every
//! failure into a [`ProgramState`] reason instead of an error.
use std::{fmt, fs::File, path::PathBuf};

use aya::{
    Btf, Ebpf, EbpfLoader,
    programs::{
        BtfTracePoint, CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, FEntry, ProgramError,
        RawTracePoint,
    },
};

use super::{ProbeOptions, ProgramState, objects};

/// Why one program did not load or attach. Clone and comparable so a [`ProgramState`] can be;
/// aya's errors are neither, so their text (with the verifier log) is kept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    #[error("the kernel's BTF is unreadable: {reason}")]
    Btf { reason: String },
    #[error("loading object {object}: {reason}")]
    Object { object: String, reason: String },
    #[error("program {name} is not in the object")]
    MissingProgram { name: String },
    #[error("the kernel refused the program: {io_error}\n{verifier_log}")]
    Refused {
        io_error: String,
        verifier_log: String,
    },
    /// Any other aya failure, with its cause chain (the errno is only there).
    #[error("{reason}")]
    Program { reason: String },
    #[error("tracepoint {tracepoint}: {source}")]
    Tracepoint {
        tracepoint: &'static str,
        source: Box<LoadError>,
    },
    #[error("function {function}: {source}")]
    Function {
        function: &'static str,
        source: Box<LoadError>,
    },
    #[error("no cgroup to attach to: network counting is off (ProbeOptions::skb_cgroup)")]
    NoSkbCgroup,
    #[error("opening cgroup {}: {reason}", path.display())]
    OpenCgroup { path: PathBuf, reason: String },
    #[error("attaching to {}: {source}", path.display())]
    AttachCgroup {
        path: PathBuf,
        source: Box<LoadError>,
    },
}

/// The embedded objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Object {
    /// `ebpf/programs` (aya-ebpf).
    Rust,
    /// `ebpf/c/runqlat.bpf.c`.
    Runqlat,
    /// `ebpf/c/block.bpf.c`.
    Block,
    /// `ebpf/c/oom.bpf.c`.
    Oom,
}

impl Object {
    const ALL: [Self; 4] = [Self::Rust, Self::Runqlat, Self::Block, Self::Oom];

    pub(super) fn bytes(self) -> &'static [u8] {
        match self {
            Self::Rust => objects::RUST,
            Self::Runqlat => objects::RUNQLAT,
            Self::Block => objects::BLOCK,
            Self::Oom => objects::OOM,
        }
    }
}

impl fmt::Display for Object {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Rust => "kernlet.bpf.o",
            Self::Runqlat => "runqlat.bpf.o",
            Self::Block => "block.bpf.o",
            Self::Oom => "oom.bpf.o",
        })
    }
}

/// Where a program attaches.
#[derive(Debug, Clone, Copy)]
enum Hook {
    /// A raw tracepoint by name: needs neither tracefs nor kprobes and skips the argument copy.
    RawTracepoint(&'static str),
    /// A BTF-typed tracepoint (`tp_btf`), whose arguments are typed kernel pointers.
    BtfTracepoint(&'static str),
    /// A BPF trampoline on a kernel function's entry.
    FEntry(&'static str),
    /// `cgroup_skb` at [`ProbeOptions::skb_cgroup`].
    CgroupSkb(CgroupSkbAttachType),
}

/// Every program, in the order [`super::Probes::programs`] reports them.
const PROGRAMS: [(&str, Object, Hook); 10] = [
    (
        "sched_switch",
        Object::Rust,
        Hook::RawTracepoint("sched_switch"),
    ),
    (
        "skb_ingress",
        Object::Rust,
        Hook::CgroupSkb(CgroupSkbAttachType::Ingress),
    ),
    (
        "skb_egress",
        Object::Rust,
        Hook::CgroupSkb(CgroupSkbAttachType::Egress),
    ),
    (
        "page_fault_user",
        Object::Rust,
        Hook::RawTracepoint("page_fault_user"),
    ),
    (
        "runq_wakeup",
        Object::Runqlat,
        Hook::BtfTracepoint("sched_wakeup"),
    ),
    (
        "runq_wakeup_new",
        Object::Runqlat,
        Hook::BtfTracepoint("sched_wakeup_new"),
    ),
    (
        "runq_switch",
        Object::Runqlat,
        Hook::BtfTracepoint("sched_switch"),
    ),
    (
        "block_issue",
        Object::Block,
        Hook::BtfTracepoint("block_rq_issue"),
    ),
    (
        "block_complete",
        Object::Block,
        Hook::BtfTracepoint("block_rq_complete"),
    ),
    ("oom_kill", Object::Oom, Hook::FEntry("oom_kill_process")),
];

/// The object program `name` is in.
pub(super) fn object_of(name: &str) -> Option<Object> {
    PROGRAMS
        .iter()
        .find(|(program, _, _)| *program == name)
        .map(|(_, object, _)| *object)
}

/// What [`load_all`] got: each object that loaded, and every program's state.
pub(super) struct Loaded {
    pub rust: Option<Ebpf>,
    pub runqlat: Option<Ebpf>,
    pub block: Option<Ebpf>,
    pub oom: Option<Ebpf>,
    pub programs: Vec<ProgramState>,
}

/// Loads every object and attaches every program it can; never fails as a whole.
pub(super) fn load_all(options: &ProbeOptions) -> Loaded {
    // tp_btf and fentry programs name their hook by BTF type id.
    let btf = Btf::from_sys_fs().map_err(|e| LoadError::Btf {
        reason: e.to_string(),
    });
    let mut loaded = Loaded {
        rust: None,
        runqlat: None,
        block: None,
        oom: None,
        programs: Vec::with_capacity(PROGRAMS.len()),
    };
    let mut statuses: Vec<(&'static str, Result<(), LoadError>)> = Vec::new();
    for object in Object::ALL {
        let mut ebpf = match EbpfLoader::new().load(object.bytes()) {
            Ok(ebpf) => Some(ebpf),
            Err(e) => {
                let error = LoadError::Object {
                    object: object.to_string(),
                    reason: e.to_string(),
                };
                for (name, _, _) in PROGRAMS.iter().filter(|(_, o, _)| *o == object) {
                    statuses.push((name, Err(error.clone())));
                }
                None
            }
        };
        if let Some(ebpf) = ebpf.as_mut() {
            for (name, _, hook) in PROGRAMS.iter().filter(|(_, o, _)| *o == object) {
                statuses.push((name, attach(ebpf, name, *hook, btf.as_ref(), options)));
            }
        }
        match object {
            Object::Rust => loaded.rust = ebpf,
            Object::Runqlat => loaded.runqlat = ebpf,
            Object::Block => loaded.block = ebpf,
            Object::Oom => loaded.oom = ebpf,
        }
    }
    // Report in the table's order whatever order the objects loaded in.
    for (name, _, _) in PROGRAMS {
        if let Some(index) = statuses.iter().position(|(n, _)| *n == name) {
            let (name, status) = statuses.swap_remove(index);
            loaded.programs.push(ProgramState { name, status });
        }
    }
    loaded
}

/// Loads program `name` from `ebpf` and attaches it to `hook`.
fn attach(
    ebpf: &mut Ebpf,
    name: &str,
    hook: Hook,
    btf: Result<&Btf, &LoadError>,
    options: &ProbeOptions,
) -> Result<(), LoadError> {
    let program = ebpf
        .program_mut(name)
        .ok_or_else(|| LoadError::MissingProgram {
            name: name.to_owned(),
        })?;
    match hook {
        Hook::RawTracepoint(tracepoint) => {
            let program: &mut RawTracePoint = program.try_into().map_err(|e| describe(&e))?;
            program.load().map_err(|e| describe(&e))?;
            program.attach(tracepoint).map_err(|e| describe(&e))?;
        }
        Hook::BtfTracepoint(tracepoint) => {
            let btf = btf.map_err(Clone::clone)?;
            let program: &mut BtfTracePoint = program.try_into().map_err(|e| describe(&e))?;
            program
                .load(tracepoint, btf)
                .map_err(|e| LoadError::Tracepoint {
                    tracepoint,
                    source: Box::new(describe(&e)),
                })?;
            program.attach().map_err(|e| describe(&e))?;
        }
        Hook::FEntry(function) => {
            let btf = btf.map_err(Clone::clone)?;
            let program: &mut FEntry = program.try_into().map_err(|e| describe(&e))?;
            program
                .load(function, btf)
                .map_err(|e| LoadError::Function {
                    function,
                    source: Box::new(describe(&e)),
                })?;
            program.attach().map_err(|e| describe(&e))?;
        }
        Hook::CgroupSkb(attach_type) => {
            let path = options.skb_cgroup.as_ref().ok_or(LoadError::NoSkbCgroup)?;
            let cgroup = File::open(path).map_err(|e| LoadError::OpenCgroup {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            let program: &mut CgroupSkb = program.try_into().map_err(|e| describe(&e))?;
            program.load().map_err(|e| describe(&e))?;
            // On kernels >= 5.7 aya attaches with a bpf_link, which the kernel always attaches in
            // multi mode (other programs on this cgroup and its descendants keep running) and
            // which refuses explicit attach flags: aya 0.14 would pass BPF_F_ALLOW_MULTI for
            // `AllowMultiple` and get EINVAL, so the mode here must be `Single` (flags 0).
            program
                .attach(&cgroup, attach_type, CgroupAttachMode::Single)
                .map_err(|e| LoadError::AttachCgroup {
                    path: path.clone(),
                    source: Box::new(describe(&e)),
                })?;
        }
    }
    Ok(())
}

/// aya's error kept as text, with the verifier log when the kernel refused a program.
fn describe(error: &ProgramError) -> LoadError {
    match error {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => LoadError::Refused {
            io_error: io_error.to_string(),
            verifier_log: verifier_log.to_string(),
        },
        other => {
            // aya's messages name the failed call; the cause (errno) is in the source chain.
            let mut text = other.to_string();
            let mut source = std::error::Error::source(other);
            while let Some(cause) = source {
                text.push_str(": ");
                text.push_str(&cause.to_string());
                source = cause.source();
            }
            LoadError::Program { reason: text }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_program_is_in_its_embedded_object() {
        for object in Object::ALL {
            let parsed = aya_obj::Object::parse(object.bytes());
            let Ok(parsed) = parsed else {
                panic!("{object} does not parse: {:?}", parsed.err());
            };
            for (name, _, _) in PROGRAMS.iter().filter(|(_, o, _)| *o == object) {
                assert!(
                    parsed.programs.contains_key(*name),
                    "{name} is missing from {object}"
                );
            }
        }
    }
}
