// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * exits: processes that ended, by command name and how (exit code or the
 * signal that killed them), sent as events through a ring buffer and counted
 * by bpfsnap — an event-stream counter: no map of comm names grows in the
 * kernel, and a full buffer loses events (counted) instead of blocking.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

struct exit_event {
	char comm[16];
	u8 how;  /* 0: exited with code, 1: killed by signal */
	u8 code; /* exit code, or signal number */
	u8 pad[2];
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} process_exits_total SEC(".maps");

/* Events the ring buffer had no room for (bpfsnap reads NAME_lost). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, u64);
} process_exits_total_lost SEC(".maps");

static __always_inline int record_exit(struct task_struct *task)
{
	struct exit_event *event;
	u32 zero = 0;
	u64 *lost;
	int status;

	event = bpf_ringbuf_reserve(&process_exits_total, sizeof(*event), 0);
	if (!event) {
		lost = bpf_map_lookup_elem(&process_exits_total_lost, &zero);
		if (lost)
			*lost += 1;
		return 0;
	}
	bpf_probe_read_kernel_str(event->comm, sizeof(event->comm), task->comm);
	status = task->exit_code;
	if (status & 0x7f) {
		event->how = 1;
		event->code = status & 0x7f;
	} else {
		event->how = 0;
		event->code = (status >> 8) & 0xff;
	}
	event->pad[0] = 0;
	event->pad[1] = 0;
	bpf_ringbuf_submit(event, 0);
	return 0;
}

/* One event per process, when its last thread goes: kernels that pass
 * group_dead say so. */
SEC("tp_btf/sched_process_exit")
int BPF_PROG(exits_exit, struct task_struct *task, bool group_dead)
{
	if (!group_dead)
		return 0;
	return record_exit(task);
}

/*
 * Kernels whose tracepoint passes only the task (group_dead came later): do_exit()
 * has taken the thread off signal->live before this tracepoint, so the
 * process's last thread sees 0. (Two of its threads exiting at the very same
 * time may both see 0 and count the process twice.) exits.toml's
 * [[builtin.variants]] choose between the two from the kernel's BTF.
 */
SEC("tp_btf/sched_process_exit")
int BPF_PROG(exits_exit_legacy, struct task_struct *task)
{
	if (BPF_CORE_READ(task, signal, live.counter) != 0)
		return 0;
	return record_exit(task);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
