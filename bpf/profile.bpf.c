// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * profile: on-CPU samples by thread name (comm), from a software cpu-clock
 * perf event at 99 Hz on every CPU (bpfsnap opens one per online CPU). At a
 * fixed 99 Hz, each sample stands for about 1/99 s ≈ 10.1 ms of CPU time.
 *
 * The idle task is not counted: samples are CPU time spent running
 * something. An interrupt or softirq that the timer catches is charged to
 * the thread it interrupted (as in `perf top`).
 *
 * 99 samples per second per CPU is too few for per-CPU counters to pay off:
 * a plain LRU hash with an atomic add keeps memory independent of the CPU
 * count.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#define TASK_COMM_LEN 16
/* Distinct thread names on CPU in one window; the LRU drops the coldest. */
#define MAX_COMMS 2048

struct comm {
	char name[TASK_COMM_LEN];
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, MAX_COMMS);
	__type(key, struct comm);
	__type(value, u64);
} cpu_samples_total SEC(".maps");

SEC("perf_event/type=1,config=0,frequency=99")
int profile_sample(struct bpf_perf_event_data *ctx)
{
	struct comm key = {};
	u64 one = 1, *count;

	if ((u32)bpf_get_current_pid_tgid() == 0)
		return 0; /* idle */
	bpf_get_current_comm(key.name, sizeof(key.name));
	count = bpf_map_lookup_elem(&cpu_samples_total, &key);
	if (count) {
		__sync_fetch_and_add(count, 1);
		return 0;
	}
	if (bpf_map_update_elem(&cpu_samples_total, &key, &one, BPF_NOEXIST)) {
		/* Another CPU inserted it first. */
		count = bpf_map_lookup_elem(&cpu_samples_total, &key);
		if (count)
			__sync_fetch_and_add(count, 1);
	}
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
