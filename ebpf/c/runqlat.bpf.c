// SPDX-License-Identifier: GPL-2.0 OR MIT
/* Run-queue latency per cgroup: the time a runnable task waits before it gets a CPU, from
 * sched_wakeup/sched_wakeup_new (or being preempted while still runnable) to being switched in,
 * as a log2 histogram keyed by the waiting task's cgroup v2 id.
 *
 * C with CO-RE because the cgroup of the *next* task in sched_switch is only reachable through
 * task_struct->cgroups->dfl_cgrp->kn->id, whose offsets differ between kernels; aya-ebpf has no
 * CO-RE. Kernel reference: include/trace/events/sched.h (sched_switch has
 * (preempt, prev, next, prev_state) since 5.18, so on 6.1 and 6.18 alike). */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "kernlet.h"

#define TASK_RUNNING 0

/* Thread id -> when it became runnable. LRU, so threads that exit while queued age out. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, __u64);
} RUNQ_ENQUEUED SEC(".maps");

CGROUP_HASH(CGROUP_RUNQ, struct hist);

static __always_inline int enqueued(struct task_struct *task)
{
	__u32 pid = BPF_CORE_READ(task, pid);
	__u64 now;

	if (!pid) /* the idle task never waits */
		return 0;
	now = bpf_ktime_get_ns();
	bpf_map_update_elem(&RUNQ_ENQUEUED, &pid, &now, BPF_ANY);
	return 0;
}

SEC("tp_btf/sched_wakeup")
int BPF_PROG(runq_wakeup, struct task_struct *p)
{
	return enqueued(p);
}

SEC("tp_btf/sched_wakeup_new")
int BPF_PROG(runq_wakeup_new, struct task_struct *p)
{
	return enqueued(p);
}

SEC("tp_btf/sched_switch")
int BPF_PROG(runq_switch, bool preempt, struct task_struct *prev, struct task_struct *next,
	     unsigned int prev_state)
{
	static const struct hist zero;
	__u64 *since, waited, cgroup;
	struct hist *hist;
	__u32 pid;

	/* Preempted while runnable: it waits in the run queue again from now. */
	if (prev_state == TASK_RUNNING)
		enqueued(prev);

	pid = BPF_CORE_READ(next, pid);
	since = bpf_map_lookup_elem(&RUNQ_ENQUEUED, &pid);
	if (!since)
		return 0;
	waited = bpf_ktime_get_ns() - *since;
	bpf_map_delete_elem(&RUNQ_ENQUEUED, &pid);

	cgroup = task_cgroup_id(next);
	hist = lookup_or_init(&CGROUP_RUNQ, &cgroup, &zero);
	if (hist)
		hist_add(hist, waited);
	return 0;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
