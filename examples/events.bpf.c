// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * events: event-stream counters both ways. Threads whose name starts with
 * "bpfsnap-ev" send one event per getpid call through a deliberately small
 * ring buffer, and one per getppid call through a perf event array; the
 * event carries the thread's name, which becomes the label. The small buffer
 * lets a test overflow it and check that every event is either counted or
 * counted as lost.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#if defined(__TARGET_ARCH_x86)
#define NR_GETPID 39
#define NR_GETPPID 110
#elif defined(__TARGET_ARCH_arm64)
#define NR_GETPID 172
#define NR_GETPPID 173
#endif

struct event {
	char comm[16];
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4096);
} getpid_events_total SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, u64);
} getpid_events_total_lost SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(key_size, sizeof(u32));
	__uint(value_size, sizeof(u32));
} getppid_events_total SEC(".maps");

/* Whether a thread name starts with "bpfsnap-ev" (BPF has no memcmp). */
static __always_inline bool has_prefix(const char *comm)
{
	const char prefix[] = "bpfsnap-ev";

	for (int i = 0; i < sizeof(prefix) - 1; i++)
		if (comm[i] != prefix[i])
			return false;
	return true;
}

SEC("tp_btf/sys_enter")
int BPF_PROG(events_enter, struct pt_regs *regs, long id)
{
	struct event local = {}, *event;
	u32 zero = 0;
	u64 *lost;

	if (id != NR_GETPID && id != NR_GETPPID)
		return 0;
	bpf_get_current_comm(local.comm, sizeof(local.comm));
	if (!has_prefix(local.comm))
		return 0;
	if (id == NR_GETPPID) {
		bpf_perf_event_output(ctx, &getppid_events_total, BPF_F_CURRENT_CPU, &local, sizeof(local));
		return 0;
	}
	event = bpf_ringbuf_reserve(&getpid_events_total, sizeof(*event), 0);
	if (!event) {
		lost = bpf_map_lookup_elem(&getpid_events_total_lost, &zero);
		if (lost)
			*lost += 1;
		return 0;
	}
	__builtin_memcpy(event->comm, local.comm, sizeof(event->comm));
	bpf_ringbuf_submit(event, 0);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
