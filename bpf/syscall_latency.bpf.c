// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * syscall_latency: time from system call entry to exit, per system call, as
 * an exp2 histogram in nanoseconds.
 *
 * Entry stores the time in task-local storage (a pointer hop from the
 * task, no pid-keyed hash); exit reads it, zeroes it and counts the call in
 * a per-CPU hash keyed by (syscall, bucket) in 4 bytes: no atomics, no
 * shared cache lines. A hash and not a per-CPU array because a histogram's
 * bucket must be the last label, and a map key that is an array index
 * cannot be split into syscall and bucket labels at a byte boundary
 * without a 2-million-entry array. (Measured: an array indexed by
 * syscall * 32 + bucket would save ≈ 30 ns of the ≈ 155 ns per call.)
 *
 * Kernels whose tracing programs have no task storage (before 5.11) load the
 * *_by_pid programs instead, which keep the entry time in an LRU hash keyed
 * by the thread id (syscall_latency.toml's [[builtin.variants]]).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include "bpfsnap.h"

/* Every possible key fits: MAX_SYSCALLS x (buckets + sum + overflow). */
#define MAX_SYSCALLS 512 /* above every x86_64/aarch64 number (470 in 6.18) */
#define MIN_BUCKET 7	 /* 2^7 ns = 128 ns: shorter calls count here */
#define MAX_BUCKET 36	 /* 2^36 ns ≈ 68.7 s: longer ones only in +Inf */
#define KEYS_PER_SYSCALL (MAX_BUCKET - MIN_BUCKET + 3)

struct latency_key {
	u16 syscall;
	u16 bucket;
};

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, u64);
} entered_at SEC(".maps");

/* Threads inside a system call at once, with the by-pid variant; an LRU
 * hash, so threads that exit inside a call cannot fill it. */
#define MAX_IN_CALLS 16384

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, MAX_IN_CALLS);
	__type(key, u32);
	__type(value, u64);
} entered_at_by_pid SEC(".maps");

/* Keys {nr, MIN_BUCKET..MAX_BUCKET}: counts; {nr, MAX_BUCKET + 1}: sum of ns;
 * {nr, MAX_BUCKET + 2}: above range. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	/* Memory grows with the keys seen, not with max_entries x CPUs. */
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, MAX_SYSCALLS * KEYS_PER_SYSCALL);
	__type(key, struct latency_key);
	__type(value, u64);
} syscall_latency_seconds SEC(".maps");

static __always_inline void add(u16 syscall, u16 bucket, u64 n)
{
	struct latency_key key = { .syscall = syscall, .bucket = bucket };
	u64 *slot = bpf_map_lookup_elem(&syscall_latency_seconds, &key);

	if (slot) {
		*slot += n;
		return;
	}
	/* First time for this key; if another CPU inserted it meanwhile
	 * (EEXIST), add to this CPU's slot of its entry. */
	if (bpf_map_update_elem(&syscall_latency_seconds, &key, &n, BPF_NOEXIST)) {
		slot = bpf_map_lookup_elem(&syscall_latency_seconds, &key);
		if (slot)
			*slot += n;
	}
}

/* Counts the call entered at *at (cleared, so it counts once). */
static __always_inline void exited(u64 *at, struct pt_regs *regs)
{
	u64 nr, ns;
	u32 bucket;

	/* No entry time: the call was entered before the program was attached
	 * (or never traced as entered, e.g. skipped by seccomp). */
	if (!at || !*at)
		return;
	ns = bpf_ktime_get_ns() - *at;
	*at = 0;
	/* ia32 compat calls (other numbers) come back as ~0: not counted. */
	nr = native_syscall_nr(regs);
	if (nr >= MAX_SYSCALLS)
		return;
	bucket = exp2_bucket(ns, MAX_BUCKET);
	if (bucket < MIN_BUCKET)
		bucket = MIN_BUCKET;
	add(nr, bucket, 1);
	add(nr, MAX_BUCKET + 1, ns);
}

SEC("tp_btf/sys_enter")
int BPF_PROG(syscall_latency_enter, struct pt_regs *regs, long id)
{
	u64 *at = bpf_task_storage_get(&entered_at, bpf_get_current_task_btf(), 0,
				       BPF_LOCAL_STORAGE_GET_F_CREATE);

	if (at)
		*at = bpf_ktime_get_ns();
	return 0;
}

SEC("tp_btf/sys_exit")
int BPF_PROG(syscall_latency_exit, struct pt_regs *regs, long ret)
{
	exited(bpf_task_storage_get(&entered_at, bpf_get_current_task_btf(), 0, 0), regs);
	return 0;
}

SEC("tp_btf/sys_enter")
int BPF_PROG(syscall_latency_enter_by_pid, struct pt_regs *regs, long id)
{
	u32 pid = (u32)bpf_get_current_pid_tgid();
	u64 now = bpf_ktime_get_ns();

	bpf_map_update_elem(&entered_at_by_pid, &pid, &now, BPF_ANY);
	return 0;
}

SEC("tp_btf/sys_exit")
int BPF_PROG(syscall_latency_exit_by_pid, struct pt_regs *regs, long ret)
{
	u32 pid = (u32)bpf_get_current_pid_tgid();

	exited(bpf_map_lookup_elem(&entered_at_by_pid, &pid), regs);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
