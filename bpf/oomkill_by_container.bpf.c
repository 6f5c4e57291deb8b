// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * oomkill_by_container: OOM killer victims by the victim's cgroup and
 * command name (tp_btf/mark_victim); the cgroup id is named by the
 * container decoders (namespace, pod, container), as oomkill.bpf.c's comm.
 *
 * The cgroup is the victim's, read from the task mark_victim passes: the
 * task running when the OOM killer picks it is the one that asked for
 * memory, often another process, so bpf_get_current_cgroup_id() would
 * name the wrong container.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include "bpfsnap.h"

#define TASK_COMM_LEN 16
/* (cgroup, comm) pairs kept: an LRU hash evicts the least recently killed. */
#define MAX_VICTIMS 4096

struct victim_key {
	u64 cgroup_id;
	char comm[TASK_COMM_LEN];
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, MAX_VICTIMS);
	__type(key, struct victim_key);
	__type(value, u64);
} container_oom_kills_total SEC(".maps");

SEC("tp_btf/mark_victim")
int BPF_PROG(oomkill_by_container_mark_victim, struct task_struct *task)
{
	struct victim_key key = {};
	u64 one = 1, *count;

	key.cgroup_id = task_cgroup_id(task);
	bpf_probe_read_kernel_str(key.comm, sizeof(key.comm), task->comm);
	count = bpf_map_lookup_elem(&container_oom_kills_total, &key);
	if (count)
		__sync_fetch_and_add(count, 1);
	else
		bpf_map_update_elem(&container_oom_kills_total, &key, &one, BPF_NOEXIST);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
