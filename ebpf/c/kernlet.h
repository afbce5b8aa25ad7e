/* Map layouts shared with the agent: each struct mirrors a `#[repr(C)]` type in
 * ebpf/common/src/lib.rs (sizes checked on both sides). Keys of every map named CGROUP_* are cgroup
 * v2 ids (the kernfs node id, which is the cgroup directory's inode number). */
#ifndef KERNLET_H
#define KERNLET_H

/* Entries of every CGROUP_* map: kernlet-ebpf-common's CGROUP_ENTRIES, which agent/build.rs passes
 * as -DKERNLET_CGROUP_ENTRIES so the Rust and C maps cannot disagree. */
#ifndef KERNLET_CGROUP_ENTRIES
#error "KERNLET_CGROUP_ENTRIES is not set: build through agent/build.rs"
#endif
#define CGROUP_ENTRIES KERNLET_CGROUP_ENTRIES
#define HIST_BUCKETS 32

struct hist {
	__u64 buckets[HIST_BUCKETS];
	__u64 sum_ns;
};

struct block_counters {
	__u64 read_bytes;
	__u64 write_bytes;
	__u64 reads;
	__u64 writes;
	struct hist latency;
};

struct oom_counters {
	__u64 kills;
	__u32 pid;
	__u32 pad;
	char comm[16];
};

_Static_assert(sizeof(struct hist) == 264, "struct hist must match kernlet-ebpf-common");
_Static_assert(sizeof(struct block_counters) == 296, "struct block_counters must match kernlet-ebpf-common");
_Static_assert(sizeof(struct oom_counters) == 32, "struct oom_counters must match kernlet-ebpf-common");

/* Hash maps keyed by cgroup id are preallocated, the safe kind for programs on scheduler and
 * block hooks: they keep the BPF memory allocator (BPF_F_NO_PREALLOC, 6.1) out of those hooks. With
 * it, the node VM's 6.1 kernel once soft-locked a kernlet thread during an OOM test (CI,
 * 2026-11-21; not root-caused). 4096 live cgroups (dead ones are pruned every 30 s) keep the three
 * maps near 3 MiB. */
#define CGROUP_HASH(name, value_type)                       \
	struct {                                            \
		__uint(type, BPF_MAP_TYPE_HASH);            \
		__uint(max_entries, CGROUP_ENTRIES);        \
		__type(key, __u64);                         \
		__type(value, value_type);                  \
	} name SEC(".maps")

/* floor(log2(v)) for v > 0, 0 for 0, without loops (the verifier counts every branch). */
static __always_inline __u32 log2_u64(__u64 v)
{
	__u32 r = 0, shift;
	shift = (v > 0xFFFFFFFFULL) << 5; v >>= shift; r |= shift;
	shift = (v > 0xFFFF) << 4; v >>= shift; r |= shift;
	shift = (v > 0xFF) << 3; v >>= shift; r |= shift;
	shift = (v > 0xF) << 2; v >>= shift; r |= shift;
	shift = (v > 0x3) << 1; v >>= shift; r |= shift;
	r |= (v >> 1);
	return r;
}

static __always_inline void hist_add(struct hist *h, __u64 ns)
{
	__u32 bucket = log2_u64(ns);
	if (bucket >= HIST_BUCKETS)
		bucket = HIST_BUCKETS - 1;
	__sync_fetch_and_add(&h->buckets[bucket], 1);
	__sync_fetch_and_add(&h->sum_ns, ns);
}

/* The value for `key`, created zeroed when missing; NULL when the map is full. */
static __always_inline void *lookup_or_init(void *map, const __u64 *key, const void *zero)
{
	void *value = bpf_map_lookup_elem(map, key);
	if (value)
		return value;
	/* NOEXIST: another CPU may have created it meanwhile; either way look it up again. */
	bpf_map_update_elem(map, key, zero, BPF_NOEXIST);
	return bpf_map_lookup_elem(map, key);
}

/* The cgroup v2 id of a task: task->cgroups->dfl_cgrp->kn->id (u64 since 5.5). */
static __always_inline __u64 task_cgroup_id(struct task_struct *task)
{
	return BPF_CORE_READ(task, cgroups, dfl_cgrp, kn, id);
}

#endif
