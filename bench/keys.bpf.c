// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * keys: a large hash map for the snapshot-at-scale benchmark, filled through
 * a system call the benchmark controls. `prctl(FILL_MAGIC, start, count)`
 * (which then fails with EINVAL, harmlessly) makes this program insert keys
 * start .. start + count - 1, key n being {pid 1000 + n / 64, syscall n % 64}
 * with the value n % 1000 + 1: 64 syscalls per "process", like a per-process
 * syscall counter on a busy host. bench/bench.py compiles it once per map
 * size with -DMAX_ENTRIES=N, and once per key shape with -DSHAPE=S:
 *   0 (a) {u32 pid, u32 syscall}: few distinct values per label (above);
 *   1 (b) u64 address 0xffff888000000000 + 64 n: every key distinct;
 *   2 (c) {char comm[16] "task-NNNNNNNN", u32 tid n}: every key distinct;
 *   3 (d) (b) in a per-CPU hash (the filling CPU's slot set).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#ifndef MAX_ENTRIES
#define MAX_ENTRIES 1000000
#endif
#define FILL_MAGIC 0x62706673 /* "bpfs" */

#if defined(__TARGET_ARCH_arm64)
#define NR_PRCTL 167
#else
#define NR_PRCTL 157
#endif

#ifndef SHAPE
#define SHAPE 0
#endif

#if SHAPE == 0
struct bench_key {
	u32 pid;
	u32 nr;
};
#define BENCH_MAP bench_keys_total
#define BENCH_MAP_TYPE BPF_MAP_TYPE_HASH
#elif SHAPE == 1 || SHAPE == 3
struct bench_key {
	u64 addr;
};
#if SHAPE == 1
#define BENCH_MAP bench_addr_total
#define BENCH_MAP_TYPE BPF_MAP_TYPE_HASH
#else
#define BENCH_MAP bench_addr_cpu_total
#define BENCH_MAP_TYPE BPF_MAP_TYPE_PERCPU_HASH
#endif
#elif SHAPE == 2
struct bench_key {
	char comm[16];
	u32 tid;
};
#define BENCH_MAP bench_comm_total
#define BENCH_MAP_TYPE BPF_MAP_TYPE_HASH
#endif

struct {
	__uint(type, BENCH_MAP_TYPE);
	__uint(max_entries, MAX_ENTRIES);
	__type(key, struct bench_key);
	__type(value, u64);
} BENCH_MAP SEC(".maps");

/* Key n of the map's shape. */
static void make_key(u64 n, struct bench_key *key)
{
#if SHAPE == 0
	key->pid = 1000 + n / 64;
	key->nr = n % 64;
#elif SHAPE == 1 || SHAPE == 3
	key->addr = 0xffff888000000000ULL + n * 64;
#elif SHAPE == 2
	u64 rest = n;

	__builtin_memcpy(key->comm, "task-", 5);
	for (int i = 12; i >= 5; i--) {
		key->comm[i] = '0' + rest % 10;
		rest /= 10;
	}
	key->tid = n;
#endif
}

static long fill_one(u64 i, void *data)
{
	u64 n = *(u64 *)data + i;
	struct bench_key key = {};
	u64 value = n % 1000 + 1;

	make_key(n, &key);
	bpf_map_update_elem(&BENCH_MAP, &key, &value, BPF_ANY);
	return 0;
}

SEC("tp_btf/sys_enter")
int BPF_PROG(bench_fill, struct pt_regs *regs, long id)
{
	u64 start;

	if (id != NR_PRCTL || PT_REGS_PARM1(regs) != FILL_MAGIC)
		return 0;
	start = PT_REGS_PARM2(regs);
	bpf_loop(PT_REGS_PARM3(regs), fill_one, &start, 0);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
