// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * syscalls: system calls entered, counted by syscall number.
 *
 * tp_btf/sys_enter is the cheapest way in on current kernels (no tracefs
 * argument copying), and a per-CPU array indexed by the syscall number needs
 * neither a hash nor an atomic add: the hot path is one inlined array lookup
 * and an increment on this CPU's own cache line.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include "bpfsnap.h"

/* Above every syscall number of x86_64 and aarch64 (highest: 470 in Linux
 * 6.18); ids beyond it (x32's bit 30, -1 from ptrace) and 32-bit compat calls
 * are not counted. */
#define MAX_SYSCALLS 1024

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MAX_SYSCALLS);
	__type(key, u32);
	__type(value, u64);
} syscalls_total SEC(".maps");

SEC("tp_btf/sys_enter")
int BPF_PROG(syscalls_enter, struct pt_regs *regs, long id)
{
	/* The tracepoint's id is the number (no load through regs: this runs
	 * on every system call). 32-bit (ia32/compat) calls have other
	 * numbers: skip, not misname. */
	u32 key = (u32)id;
	u64 *count;

	if ((u64)id >= MAX_SYSCALLS || !current_in_native_syscall())
		return 0;
	count = bpf_map_lookup_elem(&syscalls_total, &key);
	if (count)
		*count += 1;
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
