// SPDX-License-Identifier: GPL-2.0 OR MIT
/* Block I/O per cgroup: bytes and requests (read/write) at issue, and issue-to-completion latency
 * as a log2 histogram, attributed to the cgroup that issued the bio
 * (rq->bio->bi_blkg->blkcg->css.cgroup->kn->id), not to whatever task runs at completion or does
 * writeback. Kernel reference: include/trace/events/block.h (block_rq_issue(rq) and
 * block_rq_complete(rq, error, nr_bytes) on 6.1 and 6.18), block/blk-cgroup.h.
 *
 * C with CO-RE because request, bio, blkcg and cgroup layouts differ between kernels and aya-ebpf
 * has no CO-RE.
 *
 * On a hybrid host the blkcg belongs to the v1 blkio hierarchy, whose ids mean nothing to cgroup v2;
 * there the issuing task's v2 cgroup is used instead (right for synchronous and direct I/O, wrong
 * for writeback). */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "kernlet.h"

/* include/linux/blk_types.h: the op is the low 8 bits of cmd_flags (REQ_OP_BITS). */
#define REQ_OP_MASK 0xff
#define REQ_OP_READ 0
#define REQ_OP_WRITE 1

struct inflight {
	__u64 issued_ns;
	__u64 cgroup;
};

/* Request pointer -> issue time and cgroup. LRU, so requests whose completion we miss age out. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct inflight);
} BLOCK_INFLIGHT SEC(".maps");

CGROUP_HASH(CGROUP_BLOCK, struct block_counters);

static __always_inline __u64 bio_cgroup(struct request *rq)
{
	struct cgroup *cgroup = BPF_CORE_READ(rq, bio, bi_blkg, blkcg, css.cgroup);

	/* Hierarchy 0 is the default (v2) hierarchy. */
	if (cgroup && BPF_CORE_READ(cgroup, root, hierarchy_id) == 0)
		return BPF_CORE_READ(cgroup, kn, id);
	return bpf_get_current_cgroup_id();
}

SEC("tp_btf/block_rq_issue")
int BPF_PROG(block_issue, struct request *rq)
{
	static const struct block_counters zero;
	struct block_counters *counters;
	struct inflight flight;
	__u64 key = (__u64)rq, bytes;
	__u32 op;

	flight.cgroup = bio_cgroup(rq);
	flight.issued_ns = bpf_ktime_get_ns();
	bpf_map_update_elem(&BLOCK_INFLIGHT, &key, &flight, BPF_ANY);

	op = BPF_CORE_READ(rq, cmd_flags) & REQ_OP_MASK;
	if (op != REQ_OP_READ && op != REQ_OP_WRITE)
		return 0;
	bytes = BPF_CORE_READ(rq, __data_len);
	counters = lookup_or_init(&CGROUP_BLOCK, &flight.cgroup, &zero);
	if (!counters)
		return 0;
	if (op == REQ_OP_READ) {
		__sync_fetch_and_add(&counters->read_bytes, bytes);
		__sync_fetch_and_add(&counters->reads, 1);
	} else {
		__sync_fetch_and_add(&counters->write_bytes, bytes);
		__sync_fetch_and_add(&counters->writes, 1);
	}
	return 0;
}

SEC("tp_btf/block_rq_complete")
int BPF_PROG(block_complete, struct request *rq, int error, unsigned int nr_bytes)
{
	static const struct block_counters zero;
	struct block_counters *counters;
	struct inflight *flight;
	__u64 key = (__u64)rq, cgroup, took;

	flight = bpf_map_lookup_elem(&BLOCK_INFLIGHT, &key);
	if (!flight)
		return 0;
	took = bpf_ktime_get_ns() - flight->issued_ns;
	cgroup = flight->cgroup;
	/* A partially completed request reports again; its latency counts once, at the first part. */
	bpf_map_delete_elem(&BLOCK_INFLIGHT, &key);
	counters = lookup_or_init(&CGROUP_BLOCK, &cgroup, &zero);
	if (counters)
		hist_add(&counters->latency, took);
	return 0;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
