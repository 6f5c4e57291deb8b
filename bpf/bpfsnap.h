/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Helpers shared by bpfsnap's BPF programs (built-ins and examples).
 */
#ifndef BPFSNAP_H
#define BPFSNAP_H

#include <bpf/bpf_core_read.h>

/* floor(log2(v)) for v > 0, in six branch-free steps (BPF has no clz). */
static __always_inline u32 log2_floor(u64 v)
{
	u32 r, shift;

	r = (v > 0xFFFFFFFFULL) << 5;
	v >>= r;
	shift = (v > 0xFFFF) << 4;
	v >>= shift;
	r |= shift;
	shift = (v > 0xFF) << 3;
	v >>= shift;
	r |= shift;
	shift = (v > 0xF) << 2;
	v >>= shift;
	r |= shift;
	shift = (v > 0x3) << 1;
	v >>= shift;
	r |= shift;
	r |= (v >> 1);
	return r;
}

/*
 * The exp2 bucket key of v: ceil(log2(v)), so that v <= 2^key and the
 * bucket's `le` is a true upper bound (bcc/libbpf-tools use floor, whose
 * buckets are lower bounds). Keys above max go to max + 2, which bpfsnap
 * counts in +Inf only; max + 1 is the sum key.
 */
static __always_inline u32 exp2_bucket(u64 v, u32 max)
{
	u32 key = v <= 1 ? 0 : log2_floor(v - 1) + 1;

	return key > max ? max + 2 : key;
}

/* Adds n to a hash map's u64 at key, creating the entry (hashes start
 * empty, preallocated or not). */
static __always_inline void hash_add(void *map, void *key, u64 n)
{
	u64 zero = 0;
	u64 *slot = bpf_map_lookup_elem(map, key);

	if (!slot) {
		bpf_map_update_elem(map, key, &zero, BPF_NOEXIST);
		slot = bpf_map_lookup_elem(map, key);
		if (!slot)
			return;
	}
	*slot += n;
}

/*
 * Address families as small stable numbers for map keys (AF_INET = 2 and
 * AF_INET6 = 10 are uapi): 0 = ipv4, 1 = ipv6, 2 = anything else. Specs
 * name them with static_map { "0" = "ipv4", "1" = "ipv6", "2" = "other" }.
 */
#define INET_FAMILY_IPV4 0
#define INET_FAMILY_IPV6 1
#define INET_FAMILY_OTHER 2

static __always_inline u32 inet_family_slot(u16 family)
{
	if (family == 2 /* AF_INET */)
		return INET_FAMILY_IPV4;
	if (family == 10 /* AF_INET6 */)
		return INET_FAMILY_IPV6;
	return INET_FAMILY_OTHER;
}

/*
 * Whether the current task is in a native 64-bit system call: ia32 (int
 * 0x80, sysenter) and aarch32 calls have their own numbering, which the
 * `syscall` decoder does not know, so e.g. an ia32 close (6) would otherwise
 * be named lstat. x32 calls (bit 30 set) are left for the caller's bound on
 * the number to drop. The aarch64 branch is untested (no aarch64 vmlinux.h
 * here yet).
 *
 * bpf_get_current_task_btf() (Linux 5.11+) returns a pointer the verifier
 * lets programs load through; older kernels only have bpf_get_current_task(),
 * whose task must be read with BPF_CORE_READ. Which one the kernel has is a
 * fact of its BTF (enum bpf_func_id), resolved by libbpf at load time: the
 * other branch is dead code the verifier never checks.
 */
static __always_inline bool current_in_native_syscall(void)
{
	struct task_struct *task;

	if (bpf_core_enum_value_exists(enum bpf_func_id, BPF_FUNC_get_current_task_btf)) {
		task = bpf_get_current_task_btf();
#if defined(__TARGET_ARCH_arm64)
		return !(task->thread_info.flags & (1UL << 22)); /* TIF_32BIT */
#else
		return !(task->thread_info.status & 0x0002); /* TS_COMPAT: in_ia32_syscall() */
#endif
	}
	task = (struct task_struct *)bpf_get_current_task();
#if defined(__TARGET_ARCH_arm64)
	return !(BPF_CORE_READ(task, thread_info.flags) & (1UL << 22));
#else
	return !(BPF_CORE_READ(task, thread_info.status) & 0x0002);
#endif
}

/* The number of the native system call in progress at tp_btf/sys_enter or
 * sys_exit (`regs` is the tracepoint's), or ~0 for a 32-bit one. A program
 * that has the number already (sys_enter's `id`) tests
 * current_in_native_syscall() alone. */
static __always_inline u64 native_syscall_nr(struct pt_regs *regs)
{
	if (!current_in_native_syscall())
		return ~0ULL;
#if defined(__TARGET_ARCH_arm64)
	return (u64)regs->syscallno;
#else
	return regs->orig_ax;
#endif
}

/*
 * The id of `task`'s cgroup in the v2 hierarchy (the kernfs node id of its
 * css_set's default cgroup, a u64 since Linux 5.5): what
 * bpf_get_current_cgroup_id() returns for the current task, for any task.
 * The container decoders (container_name, kube_pod ...) name it. Read with
 * BPF_CORE_READ: the css_set pointer is RCU-protected, which BTF-typed loads
 * refuse on some kernels.
 */
static __always_inline u64 task_cgroup_id(struct task_struct *task)
{
	return BPF_CORE_READ(task, cgroups, dfl_cgrp, kn, id);
}

/*
 * The v2 cgroup id of the socket's owner: the cgroup the socket was created
 * in (sock_cgroup_data, set at socket creation), which is whose it is even
 * where the kernel works on it from a timer or softirq. Its first 8 bytes
 * hold the cgroup pointer on every kernel: Linux 5.15 made it `struct
 * cgroup *cgroup`; before, a union whose `val` is the pointer unless its low
 * bits (`is_data`, `no_refcnt`) are set, which sock_cgroup_ptr() of those
 * kernels reads as the root cgroup, as it does a NULL pointer. The root's
 * id is 1 (the kernfs root's).
 */
#define ROOT_CGROUP_ID 1

static __always_inline u64 sock_cgroup_id(const struct sock *sk)
{
	struct cgroup *cgroup;
	u64 word = 0;

	bpf_core_read(&word, sizeof(word), &sk->sk_cgrp_data);
	if (!word || (word & 3))
		return ROOT_CGROUP_ID;
	cgroup = (struct cgroup *)word;
	return BPF_CORE_READ(cgroup, kn, id);
}

/*
 * Run-queue waits (runqlat, runqlat_by_container): when a task became
 * runnable, kept in task-local storage, or in an LRU hash by thread id on
 * kernels whose tracing programs have no task storage (before 5.11).
 * `by_pid` is a constant in each caller, so each program refers to one of
 * the two maps only and loads where the other cannot be created.
 */
#define TASK_RUNNING 0

/* task_struct's state was `state` before Linux 5.14 renamed it `__state`. */
struct task_struct___state_before_5_14 {
	long state;
} __attribute__((preserve_access_index));

static __always_inline bool task_runnable(struct task_struct *task)
{
	if (bpf_core_field_exists(task->__state))
		return task->__state == TASK_RUNNING;
	return BPF_CORE_READ((struct task_struct___state_before_5_14 *)task, state) == TASK_RUNNING;
}

/* The slot holding `task`'s enqueue time (created if `create`), in the
 * task storage map `storage` or, `by_pid`, in the hash `by_pid_map`. */
static __always_inline u64 *enqueued_slot(void *storage, void *by_pid_map,
					  struct task_struct *task, bool by_pid, bool create)
{
	u32 pid = task->pid;
	u64 zero = 0;

	if (!by_pid)
		return bpf_task_storage_get(storage, task, 0,
					    create ? BPF_LOCAL_STORAGE_GET_F_CREATE : 0);
	if (create)
		bpf_map_update_elem(by_pid_map, &pid, &zero, BPF_NOEXIST);
	return bpf_map_lookup_elem(by_pid_map, &pid);
}

/* Notes that `task` waits on a run queue from now (not the idle task). */
static __always_inline void enqueued_now(void *storage, void *by_pid_map,
					 struct task_struct *task, bool by_pid)
{
	u64 *at;

	if (!task->pid)
		return;
	at = enqueued_slot(storage, by_pid_map, task, by_pid, true);
	if (at)
		*at = bpf_ktime_get_ns();
}

/* At a switch from `prev` to `next`: a preempted `prev` waits again from
 * now; returns how long `next` waited in µs, or -1 if it was not seen
 * becoming runnable (or is the idle task). */
static __always_inline s64 switch_waited_us(void *storage, void *by_pid_map,
					    struct task_struct *prev, struct task_struct *next,
					    bool by_pid)
{
	u64 *at, waited_us;

	if (task_runnable(prev))
		enqueued_now(storage, by_pid_map, prev, by_pid);
	if (!next->pid)
		return -1;
	at = enqueued_slot(storage, by_pid_map, next, by_pid, false);
	if (!at || !*at)
		return -1;
	waited_us = (bpf_ktime_get_ns() - *at) / 1000;
	*at = 0;
	return waited_us;
}

#endif
