// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * empty: the floor of probe overhead. An empty program on tp_btf/sys_enter,
 * the attach point of the `syscalls` built-in: what any program there costs
 * before it does anything. bpfsnap loads it as a user program (empty.toml);
 * its counter map is never written, so its metric has no series.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, u64);
} bench_never_total SEC(".maps");

SEC("tp_btf/sys_enter")
int bench_empty(void *ctx)
{
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
