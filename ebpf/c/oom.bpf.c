// SPDX-License-Identifier: GPL-2.0 OR MIT
/* OOM kills per memory cgroup with the last victim's pid and comm. fentry on oom_kill_process(oc,
 * message) sees the oom_control: oc->memcg is the memory cgroup whose limit was hit (NULL for a
 * system-wide OOM, then the victim's own cgroup is used) and oc->chosen the victim. kprobes are not
 * available on every node; fentry is (5.5+). Kernel reference: mm/oom_kill.c, include/linux/oom.h.
 *
 * C with CO-RE because oom_control, mem_cgroup and task_struct layouts differ between kernels and
 * aya-ebpf has no CO-RE. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "kernlet.h"

CGROUP_HASH(CGROUP_OOM, struct oom_counters);

SEC("fentry/oom_kill_process")
int BPF_PROG(oom_kill, struct oom_control *oc, const char *message)
{
	static const struct oom_counters zero;
	struct task_struct *victim = BPF_CORE_READ(oc, chosen);
	struct mem_cgroup *memcg = BPF_CORE_READ(oc, memcg);
	struct oom_counters *counters;
	__u64 cgroup;

	/* select_bad_process() leaves (void *)-1 when it aborts. */
	if (!victim || victim == (void *)-1L)
		return 0;
	if (memcg)
		cgroup = BPF_CORE_READ(memcg, css.cgroup, kn, id);
	else
		cgroup = task_cgroup_id(victim);
	counters = lookup_or_init(&CGROUP_OOM, &cgroup, &zero);
	if (!counters)
		return 0;
	__sync_fetch_and_add(&counters->kills, 1);
	counters->pid = BPF_CORE_READ(victim, tgid);
	bpf_probe_read_kernel_str(counters->comm, sizeof(counters->comm), victim->comm);
	return 0;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
