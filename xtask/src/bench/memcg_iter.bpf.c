// The BPF cgroup iterator side of the interval-cost comparison (`cargo xtask bench`): walks
// a memory hierarchy in the kernel and stores, per memory cgroup, its id and its memcg event
// counters (the values memory.stat prints as pgfault, pgmajfault, pgscan_*, ...) as rows of
// an mmap-able array; the walk's only output is the row count. A cgroup iterator cannot
// stream the rows: it refuses to resume a walk in a second read() (EOPNOTSUPP), and one read
// holds at most the 32 KiB seq buffer, about 80 rows. CO-RE against the running kernel's BTF
// (vmlinux.h from bpftool); built by clang at bench time, loaded by aya.
#include "vmlinux.h"

#define SEC(name) __attribute__((section(name), used))
#define __uint(name, val) int(*name)[val]
#define __type(name, val) typeof(val) *name

static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)1;
static long (*bpf_probe_read_kernel)(void *dst, __u32 size, const void *src) = (void *)113;
static long (*bpf_seq_write)(struct seq_file *m, const void *data, __u32 len) = (void *)127;

char LICENSE[] SEC("license") = "GPL";

#define EVENTS_SIZE sizeof(((struct memcg_vmstats *)0)->events)
#define MAP_MMAPABLE (1U << 10)

// Fixed-size rows (the bench reads them without knowing this kernel's event count).
struct row {
	__u64 id;
	__u64 events[48];
};
_Static_assert(EVENTS_SIZE <= 48 * sizeof(__u64), "more memcg events than a row holds");

// max_entries set by the loader.
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, MAP_MMAPABLE);
	__type(key, __u32);
	__type(value, struct row);
	__uint(max_entries, 1);
} rows SEC(".maps");

// What the walk writes when it ends: rows filled, and whether memory cgroups did not fit.
struct walked {
	__u32 rows;
	__u32 overflow;
};

static struct walked walked;

SEC("iter/cgroup")
int memcg_stats(struct bpf_iter__cgroup *ctx)
{
	struct cgroup *cgrp = ctx->cgroup;
	struct cgroup_subsys_state *css;
	struct memcg_vmstats *vmstats;
	struct row *row;
	__u32 index;

	if (ctx->meta->seq_num == 0)
		walked = (struct walked){};
	// Called once more with no cgroup when the walk ends.
	if (!cgrp) {
		bpf_seq_write(ctx->meta->seq, &walked, sizeof(walked));
		return 0;
	}
	css = cgrp->subsys[memory_cgrp_id];
	if (!css)
		return 0;
	index = walked.rows;
	row = bpf_map_lookup_elem(&rows, &index);
	if (!row) {
		walked.overflow = 1;
		return 0;
	}
	// css is mem_cgroup's first member.
	if (bpf_probe_read_kernel(&vmstats, sizeof(vmstats), &((struct mem_cgroup *)css)->vmstats))
		return 0;
	if (bpf_probe_read_kernel(row->events, EVENTS_SIZE, &vmstats->events))
		return 0;
	row->id = cgrp->kn->id;
	walked.rows = index + 1;
	return 0;
}
