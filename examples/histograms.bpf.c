// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * histograms: records values a process passes to lseek(fd = -7777, offset,
 * whence) into an exp2 and a linear histogram, keyed by whence, and into a
 * per-CPU exp2 histogram (the config gives it a `cpu` label: one series per
 * CPU). The magic fd makes the call fail at once (EBADF) and lets a test feed
 * exact values.
 *
 * Bucket keys are chosen so that `le` is a true upper bound: the exp2 key of
 * v is ceil(log2(v)) (v ≤ 2^key, see bpfsnap.h), the linear key is v itself. Keys above the
 * configured range go to max + 2, which bpfsnap counts only in +Inf; key
 * max + 1 holds the sum of the values (ebpf_exporter's convention).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include "bpfsnap.h"

#if defined(__TARGET_ARCH_x86)
#define NR_LSEEK 8
#elif defined(__TARGET_ARCH_arm64)
#define NR_LSEEK 62
#endif

#define MAGIC_FD -7777
#define EXP2_MAX 20
#define LINEAR_MAX 10

struct value_key {
	u32 whence;
	u32 bucket;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, struct value_key);
	__type(value, u64);
} test_values_exp2 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, struct value_key);
	__type(value, u64);
} test_values_linear SEC(".maps");

/* Each CPU has its own copy of every bucket: plain adds, no atomics. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 256);
	__type(key, struct value_key);
	__type(value, u64);
} test_values_per_cpu SEC(".maps");

static __always_inline void add(void *map, struct value_key *key, u64 n)
{
	u64 *count = bpf_map_lookup_elem(map, key);

	if (count) {
		__sync_fetch_and_add(count, n);
		return;
	}
	/* Lost race: another CPU created it; add to that one. */
	if (bpf_map_update_elem(map, key, &n, BPF_NOEXIST)) {
		count = bpf_map_lookup_elem(map, key);
		if (count)
			__sync_fetch_and_add(count, n);
	}
}

static __always_inline void add_this_cpu(struct value_key *key, u64 n)
{
	u64 *count = bpf_map_lookup_elem(&test_values_per_cpu, key);

	if (count) {
		*count += n;
		return;
	}
	/* A new key: n on this CPU, zero on the others. */
	if (bpf_map_update_elem(&test_values_per_cpu, key, &n, BPF_NOEXIST)) {
		/* Another CPU inserted it first. */
		count = bpf_map_lookup_elem(&test_values_per_cpu, key);
		if (count)
			*count += n;
	}
}

SEC("tp_btf/sys_enter")
int BPF_PROG(record_lseek, struct pt_regs *regs, long id)
{
	struct value_key key = {};
	u64 value;

	if (id != NR_LSEEK || (int)PT_REGS_PARM1_CORE_SYSCALL(regs) != MAGIC_FD)
		return 0;
	value = PT_REGS_PARM2_CORE_SYSCALL(regs);
	key.whence = PT_REGS_PARM3_CORE_SYSCALL(regs);

	key.bucket = exp2_bucket(value, EXP2_MAX);
	add(&test_values_exp2, &key, 1);
	key.bucket = EXP2_MAX + 1;
	add(&test_values_exp2, &key, value);

	key.bucket = exp2_bucket(value, EXP2_MAX);
	add_this_cpu(&key, 1);
	key.bucket = EXP2_MAX + 1;
	add_this_cpu(&key, value);

	key.bucket = value > LINEAR_MAX ? LINEAR_MAX + 2 : value;
	add(&test_values_linear, &key, 1);
	key.bucket = LINEAR_MAX + 1;
	add(&test_values_linear, &key, value);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
