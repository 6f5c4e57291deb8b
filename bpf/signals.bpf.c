// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * signals: signals generated (sent), by signal and by what the kernel did
 * with them (the signal_generate tracepoint's `result`).
 *
 * The count lives in a per-CPU array indexed by signal | result << 8, so the
 * map key's first byte is the signal and its second the result: two labels
 * with no hash and no atomic. Signal numbers are 1..64; results are the
 * kernel's TRACE_SIGNAL_* values 0..4, which are part of the tracepoint's
 * user-visible format (tracefs prints the number) and have not changed since
 * they were introduced in Linux 3.5. vmlinux.h declares them in an anonymous
 * enum, which CO-RE cannot relocate (bpf_core_enum_value needs a named enum),
 * so they are used as they are; anything above 4 is counted as 5 ("other").
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#define MAX_SIGNAL 64
#define RESULT_OTHER 5

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, (RESULT_OTHER + 1) << 8);
	__type(key, u32);
	__type(value, u64);
} signals_total SEC(".maps");

SEC("tp_btf/signal_generate")
int BPF_PROG(signals_generate, int sig, struct kernel_siginfo *info, struct task_struct *task,
	     int group, int result)
{
	u32 key, res = result;
	u64 *count;

	if ((u32)sig > MAX_SIGNAL)
		return 0;
	if (res > TRACE_SIGNAL_LOSE_INFO)
		res = RESULT_OTHER;
	key = (u32)sig | res << 8;
	count = bpf_map_lookup_elem(&signals_total, &key);
	if (count)
		*count += 1;
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
