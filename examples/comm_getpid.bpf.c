// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * comm_getpid: getpid() calls, counted by the calling thread's command name.
 *
 * The classic tracepoint syscalls/sys_enter_getpid fires for getpid() only,
 * so every other system call costs nothing. The key is the 16-byte comm the
 * kernel keeps for each thread (TASK_COMM_LEN); comm_getpid.toml decodes it
 * with `string` and keeps only the comms its `regexp` decoder matches.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

#define TASK_COMM_LEN 16

struct comm_key {
	char comm[TASK_COMM_LEN];
};

/* The map name is the metric name (bpfsnap_getpid_calls_total). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct comm_key);
	__type(value, u64);
} getpid_calls_total SEC(".maps");

SEC("tracepoint/syscalls/sys_enter_getpid")
int count_getpid(void *ctx)
{
	struct comm_key key = {};
	u64 one = 1, *count;

	bpf_get_current_comm(key.comm, sizeof(key.comm));
	count = bpf_map_lookup_elem(&getpid_calls_total, &key);
	if (count) {
		__sync_fetch_and_add(count, 1);
		return 0;
	}
	/* First call of this comm; another CPU may insert it at the same time. */
	if (bpf_map_update_elem(&getpid_calls_total, &key, &one, BPF_NOEXIST) == 0)
		return 0;
	count = bpf_map_lookup_elem(&getpid_calls_total, &key);
	if (count)
		__sync_fetch_and_add(count, 1);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
