//! kernlet's eBPF programs that need no kernel struct walks: on-CPU time (`sched_switch`), socket
//! traffic (`cgroup_skb` ingress/egress) and user page faults (`exceptions:page_fault_user`). Each
//! keys its maps by cgroup id so the agent can attribute kernel events to pods and containers
//! without entering their namespaces.
//!
//! Programs that must read kernel structs (run-queue latency, block I/O, OOM kills) are in C under
//! `ebpf/c`: aya-ebpf has no CO-RE relocations, so Rust could only use fixed offsets that differ
//! between kernels.
//!
//! Built by `agent/build.rs` with nightly, `-Z build-std=core` and bpf-linker; the resulting object
//! is embedded in the agent and loaded with aya.
#![no_std]
#![no_main]

use aya_ebpf::{
    helpers::{bpf_get_current_cgroup_id, bpf_ktime_get_ns, bpf_skb_cgroup_id},
    macros::{cgroup_skb, map, raw_tracepoint},
    maps::{PerCpuArray, PerCpuHashMap},
    programs::{RawTracePointContext, SkBuffContext},
};
use kernlet_ebpf_common::{CGROUP_ENTRIES, CPU_MAP_ENTRIES, CpuCounters, NetCounters};

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

/// Socket traffic per cgroup id (per CPU).
#[map(name = "CGROUP_NET")]
static CGROUP_NET: PerCpuHashMap<u64, NetCounters> =
    PerCpuHashMap::with_max_entries(CGROUP_ENTRIES, 0);

/// User-mode page faults per cgroup id (per CPU).
#[map(name = "CGROUP_FAULTS")]
static CGROUP_FAULTS: PerCpuHashMap<u64, u64> = PerCpuHashMap::with_max_entries(CGROUP_ENTRIES, 0);

/// What `cgroup_skb` programs return to let the packet through.
const SKB_ALLOW: i32 = 1;

/// Packets delivered to a socket in the attach cgroup's subtree. The cgroup is the socket's
/// (`bpf_skb_cgroup_id`), not the current task's: ingress runs in softirq context.
#[cgroup_skb(ingress)]
pub fn skb_ingress(ctx: SkBuffContext) -> i32 {
    count_skb(&ctx, true);
    SKB_ALLOW
}

/// Packets sent by a socket in the attach cgroup's subtree.
#[cgroup_skb(egress)]
pub fn skb_egress(ctx: SkBuffContext) -> i32 {
    count_skb(&ctx, false);
    SKB_ALLOW
}

#[inline(always)]
fn count_skb(ctx: &SkBuffContext, ingress: bool) {
    let bytes = u64::from(ctx.len());
    // SAFETY: the context pointer is the program's own `__sk_buff`.
    let cgroup = unsafe { bpf_skb_cgroup_id(ctx.skb.skb) };
    if let Some(counters) = CGROUP_NET.get_ptr_mut(cgroup) {
        // SAFETY: per-CPU hash map value of this CPU; no other CPU writes it.
        unsafe {
            if ingress {
                (*counters).rx_bytes += bytes;
                (*counters).rx_packets += 1;
            } else {
                (*counters).tx_bytes += bytes;
                (*counters).tx_packets += 1;
            }
        }
    } else {
        let first = if ingress {
            NetCounters {
                rx_bytes: bytes,
                rx_packets: 1,
                ..NetCounters::default()
            }
        } else {
            NetCounters {
                tx_bytes: bytes,
                tx_packets: 1,
                ..NetCounters::default()
            }
        };
        let _ = CGROUP_NET.insert(cgroup, first, 0);
    }
}

/// A page fault taken in user mode, counted for the faulting task's cgroup (the memcg counts the
/// same faults in `memory.stat` pgfault, plus kernel-mode faults on user memory).
#[raw_tracepoint(tracepoint = "page_fault_user")]
pub fn page_fault_user(_ctx: RawTracePointContext) -> u32 {
    // SAFETY: takes no arguments and is allowed in tracepoint programs.
    let cgroup = unsafe { bpf_get_current_cgroup_id() };
    if let Some(faults) = CGROUP_FAULTS.get_ptr_mut(cgroup) {
        // SAFETY: per-CPU hash map value of this CPU.
        unsafe { *faults += 1 };
    } else {
        let _ = CGROUP_FAULTS.insert(cgroup, 1, 0);
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
