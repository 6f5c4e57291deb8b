// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * keys: a large hash map for the snapshot-at-scale benchmark, filled through
 * a system call the benchmark controls. `prctl(FILL_MAGIC, start, count)`
 * (which then fails with EINVAL, harmlessly) makes this program insert keys
 * start .. start + count - 1, key n being {pid 1000 + n / 64, syscall n % 64}
 * with the value n % 1000 + 1: 64 syscalls per "process", like a per-process
 * syscall counter on a busy host. bench/bench.py compiles it once per map
 * size with -DMAX_ENTRIES=N.
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

struct bench_key {
	u32 pid;
	u32 nr;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_ENTRIES);
	__type(key, struct bench_key);
	__type(value, u64);
} bench_keys_total SEC(".maps");

static long fill_one(u64 i, void *data)
{
	u64 n = *(u64 *)data + i;
	struct bench_key key = { .pid = 1000 + n / 64, .nr = n % 64 };
	u64 value = n % 1000 + 1;

	bpf_map_update_elem(&bench_keys_total, &key, &value, BPF_ANY);
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
