// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * percpu: programs executed (successful execve/execveat), by the new
 * program's command name, counted per CPU.
 *
 * A per-CPU hash gives each CPU its own copy of every value, so the increment
 * is a plain add on this CPU's memory: no atomic, no shared cache line. The
 * key holds only the comm; the CPU is not part of it. bpfsnap reads one value
 * per CPU and either sums them (percpu.yaml) or, when the config's last label
 * is named `cpu`, makes the CPU number that label (percpu_cpu.toml).
 *
 * tp_btf/sched_process_exec runs once per exec, after the kernel has set the
 * new comm (the basename of the executed path, at most 15 bytes).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#define TASK_COMM_LEN 16

struct comm_key {
	char comm[TASK_COMM_LEN];
};

/* The map name is the metric name (bpfsnap_execs_total). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct comm_key);
	__type(value, u64);
} execs_total SEC(".maps");

SEC("tp_btf/sched_process_exec")
int BPF_PROG(count_exec, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	struct comm_key key = {};
	u64 one = 1, *count;

	bpf_get_current_comm(key.comm, sizeof(key.comm));
	/* This CPU's copy of the value: only this CPU writes it. */
	count = bpf_map_lookup_elem(&execs_total, &key);
	if (count) {
		*count += 1;
		return 0;
	}
	/* A new comm: insert it (zero on every other CPU, one on this one). */
	if (bpf_map_update_elem(&execs_total, &key, &one, BPF_NOEXIST) == 0)
		return 0;
	/* Another CPU inserted it first. */
	count = bpf_map_lookup_elem(&execs_total, &key);
	if (count)
		*count += 1;
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
