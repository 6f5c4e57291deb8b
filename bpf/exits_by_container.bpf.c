// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * exits_by_container: processes that ended, by their cgroup (named by the
 * container decoders) and how (exit code or the signal that killed them):
 * exits.bpf.c keyed by the cgroup id instead of the command name, sent as
 * events through a ring buffer and counted by bpfsnap.
 *
 * sched_process_exit runs in the exiting task, so its cgroup is the
 * current one.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

struct container_exit_event {
	u64 cgroup_id;
	u8 how;  /* 0: exited with code, 1: killed by signal */
	u8 code; /* exit code, or signal number */
	u8 pad[6];
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} container_process_exits_total SEC(".maps");

/* Events the ring buffer had no room for (bpfsnap reads NAME_lost). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, u64);
} container_process_exits_total_lost SEC(".maps");

static __always_inline int record_exit(struct task_struct *task)
{
	struct container_exit_event *event;
	u32 zero = 0;
	u64 *lost;
	int status;

	event = bpf_ringbuf_reserve(&container_process_exits_total, sizeof(*event), 0);
	if (!event) {
		lost = bpf_map_lookup_elem(&container_process_exits_total_lost, &zero);
		if (lost)
			*lost += 1;
		return 0;
	}
	event->cgroup_id = bpf_get_current_cgroup_id();
	status = task->exit_code;
	event->how = (status & 0x7f) != 0;
	event->code = event->how ? status & 0x7f : (status >> 8) & 0xff;
	__builtin_memset(event->pad, 0, sizeof(event->pad));
	bpf_ringbuf_submit(event, 0);
	return 0;
}

/* When the process's last thread goes (see exits.bpf.c for both kinds of
 * kernels). */
SEC("tp_btf/sched_process_exit")
int BPF_PROG(exits_by_container_exit, struct task_struct *task, bool group_dead)
{
	if (!group_dead)
		return 0;
	return record_exit(task);
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(exits_by_container_exit_legacy, struct task_struct *task)
{
	if (BPF_CORE_READ(task, signal, live.counter) != 0)
		return 0;
	return record_exit(task);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
