// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * syscall_errors: system calls that failed, by system call and errno.
 *
 * tp_btf/sys_exit sees every system call's return value. A successful call
 * costs a compare and a return; only a failure (a return value in
 * -4095..-1, the kernel's IS_ERR_VALUE range) touches the map: a per-CPU
 * hash keyed by (syscall number, errno) in 4 bytes, so no atomics and no
 * shared cache lines. A hash, not an array: the (syscall, errno) space is
 * ~500 x ~150 but sparse, and an array over it would be megabytes per CPU.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include "bpfsnap.h"

/* Above every syscall number of x86_64 and aarch64 (as in syscalls.bpf.c). */
#define MAX_SYSCALLS 1024
#define MAX_ERRNO 4095
/* Distinct (syscall, errno) pairs kept; pairs first seen once it is full are
 * not counted. A machine shows a few hundred at most. */
#define MAX_PAIRS 16384

struct error_key {
	u16 syscall;
	u16 err;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	/* Memory grows with the pairs seen, not with MAX_PAIRS x CPUs. */
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, MAX_PAIRS);
	__type(key, struct error_key);
	__type(value, u64);
} syscall_errors_total SEC(".maps");

SEC("tp_btf/sys_exit")
int BPF_PROG(syscall_errors_exit, struct pt_regs *regs, long ret)
{
	struct error_key key;
	u64 nr, one = 1, *count;

	if (ret >= 0 || ret < -MAX_ERRNO)
		return 0;
	/* ia32 compat calls (other numbers) come back as ~0: not counted. */
	nr = native_syscall_nr(regs);
	if (nr >= MAX_SYSCALLS)
		return 0;
	key.syscall = nr;
	key.err = -ret;
	count = bpf_map_lookup_elem(&syscall_errors_total, &key);
	if (count) {
		*count += 1;
		return 0;
	}
	/* First failure of this kind (on any CPU: a per-CPU hash entry holds
	 * every CPU's slot, the others start at 0). Losing the race to another
	 * CPU's insert (EEXIST) means the entry exists now. */
	if (bpf_map_update_elem(&syscall_errors_total, &key, &one, BPF_NOEXIST)) {
		count = bpf_map_lookup_elem(&syscall_errors_total, &key);
		if (count)
			*count += 1;
	}
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
