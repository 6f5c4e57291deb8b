// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * hrtimers: high-resolution timers fired, counted by callback function
 * (hrtimer_wakeup for sleeps, tick_nohz_handler for the tick,
 * tcp_pace_kick, it_real_fn, ...).
 *
 * The key is the timer's function pointer, named by the ksym decoder. Counts
 * are per-CPU values (the tick timer fires on every CPU: a shared counter
 * would bounce between them) in an LRU hash whose bound caps the series.
 *
 * A hard timer that expires while this program runs for a soft one on the
 * same CPU is not counted (the kernel does not nest a program): it shows as
 * bpfsnap_program_recursion_misses_total, a few per million under load.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

/* A kernel has a few hundred hrtimer callbacks, and a machine uses a few
 * dozen of them: 512 never evicts in practice, yet bounds the series. */
#define MAX_FUNCTIONS 512

struct {
	__uint(type, BPF_MAP_TYPE_LRU_PERCPU_HASH);
	__uint(max_entries, MAX_FUNCTIONS);
	__type(key, u64);
	__type(value, u64);
} hrtimer_expirations_total SEC(".maps");

SEC("tp_btf/hrtimer_expire_entry")
int BPF_PROG(hrtimers_expire, struct hrtimer *timer, ktime_t *now)
{
	u64 function = (u64)timer->function;
	u64 one = 1, *count;

	/* Two tries: an insert that fails for another reason than -EEXIST (a
	 * bucket lock the kernel gave up on, no free LRU node for a moment)
	 * would otherwise lose this event without a trace. */
	for (int try = 0; try < 2; try++) {
		count = bpf_map_lookup_elem(&hrtimer_expirations_total, &function);
		if (count) {
			*count += 1;
			return 0;
		}
		/* First sight: a new element's other CPUs' values start at
		 * zero. If another CPU inserted it meanwhile (-EEXIST), the
		 * next lookup adds to this CPU's value instead. */
		if (!bpf_map_update_elem(&hrtimer_expirations_total, &function, &one, BPF_NOEXIST))
			return 0;
	}
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
