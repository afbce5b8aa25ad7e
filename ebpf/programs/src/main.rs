//! kernlet's eBPF programs. Each program keys its maps by cgroup id so the agent can attribute
//! kernel events to pods and containers without entering their namespaces.
//!
//! Built by `agent/build.rs` with nightly, `-Z build-std=core` and bpf-linker; the resulting object
//! is embedded in the agent and loaded with aya.
#![no_std]
#![no_main]

use aya_ebpf::{
    helpers::{bpf_get_current_cgroup_id, bpf_ktime_get_ns},
    macros::{map, raw_tracepoint},
    maps::{PerCpuArray, PerCpuHashMap},
    programs::RawTracePointContext,
};
use kernlet_ebpf_common::{CPU_MAP_ENTRIES, CpuCounters};

/// On-CPU counters per cgroup id (per CPU, so updates need no atomics).
#[map(name = "CGROUP_CPU")]
static CGROUP_CPU: PerCpuHashMap<u64, CpuCounters> =
    PerCpuHashMap::with_max_entries(CPU_MAP_ENTRIES, 0);

/// Time of the previous context switch on this CPU.
#[map(name = "LAST_SWITCH")]
static LAST_SWITCH: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// The `sched_switch` raw tracepoint runs in the context of the task being switched out, so the current cgroup
/// is the one that just used the CPU since the previous switch on this CPU.
#[raw_tracepoint(tracepoint = "sched_switch")]
pub fn sched_switch(_ctx: RawTracePointContext) -> u32 {
    // SAFETY: both helpers take no arguments and are allowed in tracepoint programs.
    let (now, cgroup) = unsafe { (bpf_ktime_get_ns(), bpf_get_current_cgroup_id()) };
    let Some(last) = LAST_SWITCH.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: a per-CPU array slot is only touched by this CPU while the program runs.
    let previous = unsafe { core::mem::replace(&mut *last, now) };
    let ran = if previous == 0 {
        0
    } else {
        now.saturating_sub(previous)
    };
    if let Some(counters) = CGROUP_CPU.get_ptr_mut(cgroup) {
        // SAFETY: per-CPU hash map value of this CPU; no other CPU writes it.
        unsafe {
            (*counters).switches += 1;
            (*counters).on_cpu_ns += ran;
        }
    } else {
        let first = CpuCounters {
            switches: 1,
            on_cpu_ns: ran,
        };
        // A full map drops the sample; the agent prunes dead cgroups.
        let _ = CGROUP_CPU.insert(cgroup, first, 0);
    }
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
