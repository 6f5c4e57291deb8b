// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * syscall_errors_by_container: system calls that failed, by the caller's
 * cgroup (named by the container decoders), system call and errno:
 * syscall_errors.bpf.c with the cgroup id in the key. A successful call
 * costs a compare and a return, as there; a failure one more helper call
 * (the cgroup id) and a per-CPU hash update.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include "bpfsnap.h"

#define MAX_SYSCALLS 1024
#define MAX_ERRNO 4095
/* (cgroup, syscall, errno) triples kept; triples first seen once it is full
 * are not counted. */
#define MAX_TRIPLES 65536

struct container_error_key {
	u64 cgroup_id;
	u16 syscall;
	u16 err;
	u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, MAX_TRIPLES);
	__type(key, struct container_error_key);
	__type(value, u64);
} container_syscall_errors_total SEC(".maps");

SEC("tp_btf/sys_exit")
int BPF_PROG(syscall_errors_by_container_exit, struct pt_regs *regs, long ret)
{
	struct container_error_key key = {};
	u64 nr;

	if (ret >= 0 || ret < -MAX_ERRNO)
		return 0;
	nr = native_syscall_nr(regs);
	if (nr >= MAX_SYSCALLS)
		return 0;
	key.cgroup_id = bpf_get_current_cgroup_id();
	key.syscall = nr;
	key.err = -ret;
	/* A per-CPU hash: hash_add's increment touches this CPU's slot only. */
	hash_add(&container_syscall_errors_total, &key, 1);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
