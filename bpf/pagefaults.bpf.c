// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * pagefaults: page faults taken in user mode, by access (read, write,
 * instruction fetch) and cause (page not present, or a protection fault such
 * as copy-on-write), from the x86 exception tracepoint
 * tp_btf/page_fault_user (x86 only: on other architectures the built-in is
 * unavailable).
 *
 * The hot path is one per-CPU array increment. Faults come at a high rate
 * (every new page a process touches), hence not in the default set.
 *
 * The array index doubles as the metric's key: byte 0 is the access, byte 1
 * the cause (the index is access | cause << 8 on this little-endian
 * architecture), so two labels are sliced from one u32 key.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

/* arch/x86/include/asm/trap_pf.h: enum x86_pf_error_code */
#define X86_PF_PROT (1UL << 0)
#define X86_PF_WRITE (1UL << 1)
#define X86_PF_INSTR (1UL << 4)

enum access { ACCESS_READ, ACCESS_WRITE, ACCESS_EXEC };
enum cause { CAUSE_NOT_PRESENT, CAUSE_PROTECTION };

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, (CAUSE_PROTECTION << 8) + ACCESS_EXEC + 1);
	__type(key, u32);
	__type(value, u64);
} user_page_faults_total SEC(".maps");

SEC("tp_btf/page_fault_user")
int BPF_PROG(pagefaults_user, unsigned long address, struct pt_regs *regs,
	     unsigned long error_code)
{
	u32 access = error_code & X86_PF_INSTR ? ACCESS_EXEC
		   : error_code & X86_PF_WRITE ? ACCESS_WRITE
					       : ACCESS_READ;
	u32 cause = error_code & X86_PF_PROT ? CAUSE_PROTECTION : CAUSE_NOT_PRESENT;
	u32 key = access | cause << 8;
	u64 *count = bpf_map_lookup_elem(&user_page_faults_total, &key);

	if (count)
		*count += 1;
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
