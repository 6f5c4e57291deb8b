// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * softirqs: time spent running softirqs, as a histogram of handler run
 * durations per vector (HI, TIMER, NET_TX, NET_RX, ...): its _count is the
 * number of handler runs, its _sum the total time.
 *
 * A softirq vector's handler runs to completion on one CPU and softirqs do
 * not nest, so the entry timestamp lives in a one-slot per-CPU array. The
 * histogram is a preallocated per-CPU hash keyed by vector | bucket << 8 (the
 * key's first byte is the vector label, its second the bucket label), no
 * atomic needed. (A per-CPU array indexed by that key would spare a hash
 * lookup, about 20 ns per run, but needs 7,690 slots for the 310 used, and
 * the kernel allocates a per-CPU array slot by slot: 4.4 ms of every start.)
 *
 * Vector numbers are the kernel's anonymous softirq enum (HI_SOFTIRQ = 0 ...
 * RCU_SOFTIRQ = 9). It has no type name CO-RE could match, but its order is
 * what /proc/softirqs and the softirq tracepoints' output have shown
 * unchanged for over a decade (only BLOCK_IOPOLL was renamed IRQ_POLL), so
 * the numbers are used as they are.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include "bpfsnap.h"

#define NR_VECTORS 10
#define MAX_BUCKET 28 /* 2^28 ns ≈ 268 ms; longer runs count in +Inf only */
#define SLOT(vec, bucket) ((u32)(vec) | ((u32)(bucket) << 8))

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, u64);
} softirq_entered_at SEC(".maps");

/* Per vector: buckets 0..MAX_BUCKET count runs, MAX_BUCKET + 1 sums their
 * nanoseconds, MAX_BUCKET + 2 counts runs above the range. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, NR_VECTORS * (MAX_BUCKET + 3));
	__type(key, u32);
	__type(value, u64);
} softirq_duration_seconds SEC(".maps");

static __always_inline void add(u32 slot, u64 n)
{
	hash_add(&softirq_duration_seconds, &slot, n);
}

SEC("tp_btf/softirq_entry")
int BPF_PROG(softirqs_entry, unsigned int vec)
{
	u32 zero = 0;
	u64 *at = bpf_map_lookup_elem(&softirq_entered_at, &zero);

	if (at)
		*at = bpf_ktime_get_ns();
	return 0;
}

SEC("tp_btf/softirq_exit")
int BPF_PROG(softirqs_exit, unsigned int vec)
{
	u32 zero = 0;
	u64 *at = bpf_map_lookup_elem(&softirq_entered_at, &zero);
	u64 ns;

	/* No entry seen: the run began before the program was attached. */
	if (!at || !*at || vec >= NR_VECTORS)
		return 0;
	ns = bpf_ktime_get_ns() - *at;
	*at = 0;
	add(SLOT(vec, exp2_bucket(ns, MAX_BUCKET)), 1);
	add(SLOT(vec, MAX_BUCKET + 1), ns);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
