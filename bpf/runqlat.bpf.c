// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * runqlat: run-queue latency, the time a task waits between becoming
 * runnable (woken, new, or preempted while runnable) and getting a CPU.
 *
 * The enqueue time lives in task-local storage (no hash lookup keyed by pid)
 * and the histogram in a per-CPU array indexed by the exp2 bucket, so each
 * sched event costs a storage lookup and an increment on this CPU.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include "bpfsnap.h"

#define MAX_BUCKET 26 /* 2^26 µs ≈ 67 s */
#define TASK_RUNNING 0

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, u64);
} enqueued_at SEC(".maps");

/* Keys 0..MAX_BUCKET: counts; MAX_BUCKET + 1: sum of µs; MAX_BUCKET + 2: above range. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MAX_BUCKET + 3);
	__type(key, u32);
	__type(value, u64);
} runqueue_latency_seconds SEC(".maps");

static __always_inline void enqueue(struct task_struct *task)
{
	u64 *at;

	if (!task->pid)
		return;
	at = bpf_task_storage_get(&enqueued_at, task, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (at)
		*at = bpf_ktime_get_ns();
}

static __always_inline void add(u32 key, u64 n)
{
	u64 *slot = bpf_map_lookup_elem(&runqueue_latency_seconds, &key);

	if (slot)
		*slot += n;
}

SEC("tp_btf/sched_wakeup")
int BPF_PROG(runqlat_wakeup, struct task_struct *task)
{
	enqueue(task);
	return 0;
}

SEC("tp_btf/sched_wakeup_new")
int BPF_PROG(runqlat_wakeup_new, struct task_struct *task)
{
	enqueue(task);
	return 0;
}

SEC("tp_btf/sched_switch")
int BPF_PROG(runqlat_switch, bool preempt, struct task_struct *prev, struct task_struct *next)
{
	u64 *at, waited_us;

	/* Preempted while runnable: it waits in the queue again from now. */
	if (prev->__state == TASK_RUNNING)
		enqueue(prev);
	if (!next->pid)
		return 0;
	at = bpf_task_storage_get(&enqueued_at, next, 0, 0);
	if (!at || !*at)
		return 0;
	waited_us = (bpf_ktime_get_ns() - *at) / 1000;
	*at = 0;
	add(exp2_bucket(waited_us, MAX_BUCKET), 1);
	add(MAX_BUCKET + 1, waited_us);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
