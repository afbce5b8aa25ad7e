//! Loading and attaching: which program lives in which object and hooks where, and turning every
//! failure into a [`ProgramState`] reason instead of an error.
use std::{fmt, fs::File};

use aya::{
    Btf, Ebpf, EbpfLoader,
    programs::{
        BtfTracePoint, CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, FEntry, ProgramError,
        RawTracePoint,
    },
};

use super::{ProbeOptions, ProgramState, objects};

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
    let btf = Btf::from_sys_fs().map_err(|e| format!("the kernel's BTF is unreadable: {e}"));
    let mut loaded = Loaded {
        rust: None,
        runqlat: None,
        block: None,
        oom: None,
        programs: Vec::with_capacity(PROGRAMS.len()),
    };
    let mut statuses: Vec<(&'static str, Result<(), String>)> = Vec::new();
    for object in Object::ALL {
        let mut ebpf = match EbpfLoader::new().load(object.bytes()) {
            Ok(ebpf) => Some(ebpf),
            Err(e) => {
                let reason = format!("loading object {object}: {e}");
                for (name, _, _) in PROGRAMS.iter().filter(|(_, o, _)| *o == object) {
                    statuses.push((name, Err(reason.clone())));
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
    btf: Result<&Btf, &String>,
    options: &ProbeOptions,
) -> Result<(), String> {
    let program = ebpf
        .program_mut(name)
        .ok_or_else(|| format!("program {name} is not in the object"))?;
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
                .map_err(|e| format!("tracepoint {tracepoint}: {}", describe(&e)))?;
            program.attach().map_err(|e| describe(&e))?;
        }
        Hook::FEntry(function) => {
            let btf = btf.map_err(Clone::clone)?;
            let program: &mut FEntry = program.try_into().map_err(|e| describe(&e))?;
            program
                .load(function, btf)
                .map_err(|e| format!("function {function}: {}", describe(&e)))?;
            program.attach().map_err(|e| describe(&e))?;
        }
        Hook::CgroupSkb(attach_type) => {
            let path = options.skb_cgroup.as_ref().ok_or_else(|| {
                "no cgroup to attach to: network counting is off (ProbeOptions::skb_cgroup)"
                    .to_owned()
            })?;
            let cgroup =
                File::open(path).map_err(|e| format!("opening cgroup {}: {e}", path.display()))?;
            let program: &mut CgroupSkb = program.try_into().map_err(|e| describe(&e))?;
            program.load().map_err(|e| describe(&e))?;
            // On kernels >= 5.7 aya attaches with a bpf_link, which the kernel always attaches in
            // multi mode (other programs on this cgroup and its descendants keep running) and
            // which refuses explicit attach flags: aya 0.14 would pass BPF_F_ALLOW_MULTI for
            // `AllowMultiple` and get EINVAL, so the mode here must be `Single` (flags 0).
            program
                .attach(&cgroup, attach_type, CgroupAttachMode::Single)
                .map_err(|e| format!("attaching to {}: {}", path.display(), describe(&e)))?;
        }
    }
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
        other => {
            // aya's messages name the failed call; the cause (errno) is in the source chain.
            let mut text = other.to_string();
            let mut source = std::error::Error::source(other);
            while let Some(cause) = source {
                text.push_str(": ");
                text.push_str(&cause.to_string());
                source = cause.source();
            }
            text
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
