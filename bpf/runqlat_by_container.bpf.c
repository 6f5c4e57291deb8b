// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * runqlat_by_container: run-queue latency by the waiting task's cgroup
 * (named by the container decoders): runqlat.bpf.c with the histogram in a
 * per-CPU hash keyed by (cgroup id, exp2 bucket) instead of an array. The
 * cgroup is the task's that gets the CPU (sched_switch's `next`), not the
 * current one.
 *
 * As in runqlat.bpf.c, the enqueue time lives in task-local storage, or in
 * an LRU hash by thread id on kernels whose tracing programs have no task
 * storage (before 5.11); runqlat_by_container.toml's variants choose.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "bpfsnap.h"

#define MAX_BUCKET 26 /* 2^26 µs ≈ 67 s */
#define MAX_QUEUED 16384
/* (cgroup, bucket) keys: 29 per cgroup (27 buckets, sum, above range). */
#define MAX_KEYS 65536

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, u64);
} container_enqueued_at SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, MAX_QUEUED);
	__type(key, u32);
	__type(value, u64);
} container_enqueued_at_by_pid SEC(".maps");

struct container_bucket_key {
	u64 cgroup_id;
	u32 bucket; /* 0..MAX_BUCKET: counts; MAX_BUCKET + 1: sum of µs; + 2: above range */
	u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, MAX_KEYS);
	__type(key, struct container_bucket_key);
	__type(value, u64);
} container_runqueue_latency_seconds SEC(".maps");

static __always_inline void enqueue(struct task_struct *task, bool by_pid)
{
	enqueued_now(&container_enqueued_at, &container_enqueued_at_by_pid, task, by_pid);
}

static __always_inline void switched(struct task_struct *prev, struct task_struct *next,
				     bool by_pid)
{
	struct container_bucket_key key = {};
	s64 waited_us = switch_waited_us(&container_enqueued_at, &container_enqueued_at_by_pid,
					 prev, next, by_pid);

	if (waited_us < 0)
		return;
	key.cgroup_id = task_cgroup_id(next);
	key.bucket = exp2_bucket(waited_us, MAX_BUCKET);
	hash_add(&container_runqueue_latency_seconds, &key, 1);
	key.bucket = MAX_BUCKET + 1;
	hash_add(&container_runqueue_latency_seconds, &key, waited_us);
}

SEC("tp_btf/sched_wakeup")
int BPF_PROG(runqlat_by_container_wakeup, struct task_struct *task)
{
	enqueue(task, false);
	return 0;
}

SEC("tp_btf/sched_wakeup_new")
int BPF_PROG(runqlat_by_container_wakeup_new, struct task_struct *task)
{
	enqueue(task, false);
	return 0;
}

SEC("tp_btf/sched_switch")
int BPF_PROG(runqlat_by_container_switch, bool preempt, struct task_struct *prev,
	     struct task_struct *next)
{
	switched(prev, next, false);
	return 0;
}

SEC("tp_btf/sched_wakeup")
int BPF_PROG(runqlat_by_container_wakeup_by_pid, struct task_struct *task)
{
	enqueue(task, true);
	return 0;
}

SEC("tp_btf/sched_wakeup_new")
int BPF_PROG(runqlat_by_container_wakeup_new_by_pid, struct task_struct *task)
{
	enqueue(task, true);
	return 0;
}

SEC("tp_btf/sched_switch")
int BPF_PROG(runqlat_by_container_switch_by_pid, bool preempt, struct task_struct *prev,
	     struct task_struct *next)
{
	switched(prev, next, true);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
