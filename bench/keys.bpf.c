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
 *   3 (d) (b) in a per-CPU hash (the filling CPU's slot set);
 *   4 (f) u64 kernel text address BASE + 16 n, BASE set first with
 *         `prctl(BASE_MAGIC, base)` (the kernel's _stext): many per function;
 *   5 (g) {u32 IPv4 address 10.0.0.0 + n / 16 (network order), u32 port}:
 *         every key distinct;
 *   6 (h) char name[16] "task-NNNNNNNN": every key distinct;
 *   7 (i) {u32 kind n % 64, u32 id n / 64}: kind named by a static_map;
 *   8 (j) {u32 pid 1000 + n / 64, char comm[16] "proc-(pid % 500)",
 *         u32 syscall n % 64}: three labels, few distinct values each.
 * Shape e is (b) decoded as hex. Shapes measured only when named (`bench.py
 * --shapes k,l,m,n`), for a key shape the default run does not have:
 *   9 (k) {char path[40] "/srv/data/NNNNNNNN/log", u32 tid n % 4096}:
 *         44 bytes, every key distinct;
 *  10 (l) {u8 IPv6 address 2001:db8::(n / 16)[16], u16 port, u16 pad};
 *  11 (m) {u64 cgroup n / 64 % 8, u64 kernel text address BASE + 16 n}:
 *         `uint` + `ksym`, many keys per (cgroup, function), as in (f);
 *   n is (d) split by CPU (a `cpu` label).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_endian.h>

#ifndef MAX_ENTRIES
#define MAX_ENTRIES 1000000
#endif
#define FILL_MAGIC 0x62706673 /* "bpfs" */
#define BASE_MAGIC 0x62706674

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
#elif SHAPE == 4
struct bench_key {
	u64 addr;
};
#define BENCH_MAP bench_ksym_total
#define BENCH_MAP_TYPE BPF_MAP_TYPE_HASH
#elif SHAPE == 5
struct bench_key {
	u32 addr;
	u32 port;
};
#define BENCH_MAP bench_inet_total
#define BENCH_MAP_TYPE BPF_MAP_TYPE_HASH
#elif SHAPE == 6
struct bench_key {
	char name[16];
};
#define BENCH_MAP bench_name_total
#define BENCH_MAP_TYPE BPF_MAP_TYPE_HASH
#elif SHAPE == 7
struct bench_key {
	u32 kind;
	u32 id;
};
#define BENCH_MAP bench_kind_total
#define BENCH_MAP_TYPE BPF_MAP_TYPE_HASH
#elif SHAPE == 8
struct bench_key {
	u32 pid;
	char comm[16];
	u32 nr;
};
#define BENCH_MAP bench_three_total
#define BENCH_MAP_TYPE BPF_MAP_TYPE_HASH
#elif SHAPE == 9
struct bench_key {
	char path[40];
	u32 tid;
};
#define BENCH_MAP bench_path_total
#define BENCH_MAP_TYPE BPF_MAP_TYPE_HASH
#elif SHAPE == 10
struct bench_key {
	u8 addr[16];
	u16 port;
	u16 pad;
};
#define BENCH_MAP bench_inet6_total
#define BENCH_MAP_TYPE BPF_MAP_TYPE_HASH
#elif SHAPE == 11
struct bench_key {
	u64 cgroup;
	u64 addr;
};
#define BENCH_MAP bench_cgroup_ksym_total
#define BENCH_MAP_TYPE BPF_MAP_TYPE_HASH
#endif

/* Shapes 4's and 11's first address. */
u64 base = 0;

/* "PREFIX" then the NUL-padded decimal digits of n into out[at..16).
 * Only the shapes with a string label call it. */
static __attribute__((unused)) void put_digits(char *out, int at, u64 n)
{
	char digits[20];
	int len = 0;

	do {
		digits[len++] = '0' + n % 10;
		n /= 10;
	} while (n && len < 20);
	for (int i = 0; i < 20 && i < len && at + i < 15; i++)
		out[at + i] = digits[len - 1 - i];
}

/* The eight low decimal digits of n, zero-padded, into out[0..8). Only
 * the shapes with a numbered string call it. */
static __attribute__((unused)) void put_eight_digits(char *out, u64 n)
{
	for (int i = 7; i >= 0; i--) {
		out[i] = '0' + n % 10;
		n /= 10;
	}
}

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
#elif SHAPE == 4
	key->addr = base + n * 16;
#elif SHAPE == 5
	key->addr = bpf_htonl(0x0a000000 + n / 16);
	key->port = 1024 + n % 16;
#elif SHAPE == 6
	__builtin_memcpy(key->name, "task-", 5);
	put_digits(key->name, 5, n);
#elif SHAPE == 7
	key->kind = n % 64;
	key->id = n / 64;
#elif SHAPE == 8
	key->pid = 1000 + n / 64;
	__builtin_memcpy(key->comm, "proc-", 5);
	put_digits(key->comm, 5, (1000 + n / 64) % 500);
	key->nr = n % 64;
#elif SHAPE == 9
	__builtin_memcpy(key->path, "/srv/data/", 10);
	put_eight_digits(key->path + 10, n);
	__builtin_memcpy(key->path + 18, "/log", 4);
	key->tid = n % 4096;
#elif SHAPE == 10
	u32 low = bpf_htonl(n / 16);

	key->addr[0] = 0x20;
	key->addr[1] = 0x01;
	key->addr[2] = 0x0d;
	key->addr[3] = 0xb8;
	__builtin_memcpy(key->addr + 12, &low, 4);
	key->port = 1024 + n % 16;
#elif SHAPE == 11
	key->cgroup = n / 64 % 8;
	key->addr = base + n * 16;
#elif SHAPE == 2
	__builtin_memcpy(key->comm, "task-", 5);
	put_eight_digits(key->comm + 5, n);
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

	if (id != NR_PRCTL)
		return 0;
	if (PT_REGS_PARM1(regs) == BASE_MAGIC) {
		base = PT_REGS_PARM2(regs);
		return 0;
	}
	if (PT_REGS_PARM1(regs) != FILL_MAGIC)
		return 0;
	start = PT_REGS_PARM2(regs);
	bpf_loop(PT_REGS_PARM3(regs), fill_one, &start, 0);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
