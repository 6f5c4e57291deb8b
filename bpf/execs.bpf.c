// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * execs: successful execve/execveat calls, by the command name (comm) of the
 * new program.
 *
 * tp_btf/sched_process_exec fires once the new program is committed to, after
 * the kernel has set comm from its file name, so bpf_get_current_comm() is
 * the new program's name. Counts live in a per-CPU hash keyed by comm,
 * bounded at MAX_COMMS names: once it is full, programs not yet in it are
 * counted under the all-zero (empty) comm, which the spec names
 * "[other programs]". Exec itself costs tens to hundreds of microseconds, so
 * a hash lookup here is noise.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#define TASK_COMM_LEN 16
#define MAX_COMMS 1024
#define EEXIST 17

struct comm_key {
	char name[TASK_COMM_LEN];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	/* The names, plus the empty name that counts the rest. */
	__uint(max_entries, MAX_COMMS + 1);
	__type(key, struct comm_key);
	__type(value, u64);
} execs_total SEC(".maps");

/* Adds one to `key`'s count if it is in the map or can be inserted. */
static __always_inline bool count(struct comm_key *key)
{
	u64 one = 1, *n;
	long err;

	n = bpf_map_lookup_elem(&execs_total, key);
	if (n) {
		*n += 1;
		return true;
	}
	err = bpf_map_update_elem(&execs_total, key, &one, BPF_NOEXIST);
	if (err != -EEXIST)
		return err == 0;
	/* Another CPU inserted it meanwhile: count on this CPU's slot. */
	n = bpf_map_lookup_elem(&execs_total, key);
	if (n)
		*n += 1;
	return true;
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(execs_exec, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	struct comm_key key = {}, other = {};
	u64 zero = 0, *n;

	bpf_get_current_comm(&key.name, sizeof(key.name));
	/* An exec'd program's comm is a file name's last component: never
	 * empty, so the empty comm is free to stand for "other". */
	if (!key.name[0])
		key.name[0] = '?';
	n = bpf_map_lookup_elem(&execs_total, &key);
	if (n) {
		*n += 1;
		return 0;
	}
	/* A new name: make sure "other" has its slot before any name can
	 * take the last one, then try to add the name. */
	bpf_map_update_elem(&execs_total, &other, &zero, BPF_NOEXIST);
	if (!count(&key))
		count(&other);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
