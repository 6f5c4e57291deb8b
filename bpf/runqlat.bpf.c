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
#define TASK_RUNNING 0
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

/* task_struct's state was `state` before Linux 5.14 renamed it `__state`. */
struct task_struct___state_before_5_14 {
	long state;
} __attribute__((preserve_access_index));

static __always_inline bool runnable(struct task_struct *task)
{
	if (bpf_core_field_exists(task->__state))
		return task->__state == TASK_RUNNING;
	return BPF_CORE_READ((struct task_struct___state_before_5_14 *)task, state) == TASK_RUNNING;
}

/* The slot holding `task`'s enqueue time (created if `create`), in task
 * storage or, `by_pid`, in the hash; `by_pid` is a constant in each caller,
 * so each program refers to one map only. */
static __always_inline u64 *enqueued_slot(struct task_struct *task, bool by_pid, bool create)
{
	u32 pid = task->pid;
	u64 zero = 0;

	if (!by_pid)
		return bpf_task_storage_get(&enqueued_at, task, 0,
					    create ? BPF_LOCAL_STORAGE_GET_F_CREATE : 0);
	if (create)
		bpf_map_update_elem(&enqueued_at_by_pid, &pid, &zero, BPF_NOEXIST);
	return bpf_map_lookup_elem(&enqueued_at_by_pid, &pid);
}

static __always_inline void enqueue(struct task_struct *task, bool by_pid)
{
	u64 *at;

	if (!task->pid)
		return;
	at = enqueued_slot(task, by_pid, true);
	if (at)
		*at = bpf_ktime_get_ns();
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
	u64 *at, waited_us;

	/* Preempted while runnable: it waits in the queue again from now. */
	if (runnable(prev))
		enqueue(prev, by_pid);
	if (!next->pid)
		return;
	at = enqueued_slot(next, by_pid, false);
	if (!at || !*at)
		return;
	waited_us = (bpf_ktime_get_ns() - *at) / 1000;
	*at = 0;
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
