// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * runqlat: run-queue latency, the time a task waits between becoming
 * runnable (woken, new, or preempted while runnable) and getting a CPU.
 *
 * The enqueue time lives in task-local storage (no hash lookup keyed by pid)
 * and the histogram in a per-CPU array indexed by the exp2 bucket, so each
 * sched event costs a storage lookup and an increment on this CPU.
 *
 * Kernels whose tracing programs have no task storage (before 5.11) load
 * the *_by_pid programs instead, which keep the time in an LRU hash keyed by
 * the thread id; runqlat.toml says which to load (its [[builtin.variants]]),
 * bpfsnap decides from what the kernel can create.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "bpfsnap.h"

#define MAX_BUCKET 26 /* 2^26 µs ≈ 67 s */
/* Runnable threads waiting for a CPU at once, with the by-pid variant; an
 * LRU hash, so threads that exit while queued cannot fill it. */
#define MAX_QUEUED 16384

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, u64);
} enqueued_at SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, MAX_QUEUED);
	__type(key, u32);
	__type(value, u64);
} enqueued_at_by_pid SEC(".maps");

/* Keys 0..MAX_BUCKET: counts; MAX_BUCKET + 1: sum of µs; MAX_BUCKET + 2: above range. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MAX_BUCKET + 3);
	__type(key, u32);
	__type(value, u64);
} runqueue_latency_seconds SEC(".maps");

static __always_inline void enqueue(struct task_struct *task, bool by_pid)
{
	enqueued_now(&enqueued_at, &enqueued_at_by_pid, task, by_pid);
}

static __always_inline void add(u32 key, u64 n)
{
	u64 *slot = bpf_map_lookup_elem(&runqueue_latency_seconds, &key);

	if (slot)
		*slot += n;
}

static __always_inline void switched(struct task_struct *prev, struct task_struct *next,
				     bool by_pid)
{
	s64 waited_us = switch_waited_us(&enqueued_at, &enqueued_at_by_pid, prev, next, by_pid);

	if (waited_us < 0)
		return;
	add(exp2_bucket(waited_us, MAX_BUCKET), 1);
	add(MAX_BUCKET + 1, waited_us);
}

SEC("tp_btf/sched_wakeup")
int BPF_PROG(runqlat_wakeup, struct task_struct *task)
{
	enqueue(task, false);
	return 0;
}

SEC("tp_btf/sched_wakeup_new")
int BPF_PROG(runqlat_wakeup_new, struct task_struct *task)
{
	enqueue(task, false);
	return 0;
}

SEC("tp_btf/sched_switch")
int BPF_PROG(runqlat_switch, bool preempt, struct task_struct *prev, struct task_struct *next)
{
	switched(prev, next, false);
	return 0;
}

SEC("tp_btf/sched_wakeup")
int BPF_PROG(runqlat_wakeup_by_pid, struct task_struct *task)
{
	enqueue(task, true);
	return 0;
}

SEC("tp_btf/sched_wakeup_new")
int BPF_PROG(runqlat_wakeup_new_by_pid, struct task_struct *task)
{
	enqueue(task, true);
	return 0;
}

SEC("tp_btf/sched_switch")
int BPF_PROG(runqlat_switch_by_pid, bool preempt, struct task_struct *prev,
	     struct task_struct *next)
{
	switched(prev, next, true);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
