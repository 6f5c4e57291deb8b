// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * oomkill: tasks the OOM killer chose as victims, by command name
 * (tp_btf/oom/mark_victim, which fires once per victim whether the OOM is
 * global or confined to a memory cgroup).
 *
 * OOM kills are rare, so cost is no concern; the comm-keyed LRU hash bounds
 * the number of series.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#define TASK_COMM_LEN 16
#define MAX_COMMS 1024

struct comm_key {
	char comm[TASK_COMM_LEN];
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, MAX_COMMS);
	__type(key, struct comm_key);
	__type(value, u64);
} oom_kills_total SEC(".maps");

SEC("tp_btf/mark_victim")
int BPF_PROG(oomkill_mark_victim, struct task_struct *task)
{
	struct comm_key key = {};
	u64 one = 1, *count;

	/* Up to the NUL, the rest zero: one key per name however it was set. */
	bpf_probe_read_kernel_str(key.comm, sizeof(key.comm), task->comm);
	count = bpf_map_lookup_elem(&oom_kills_total, &key);
	if (count)
		__sync_fetch_and_add(count, 1);
	else
		bpf_map_update_elem(&oom_kills_total, &key, &one, BPF_NOEXIST);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
