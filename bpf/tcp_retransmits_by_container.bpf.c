// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * tcp_retransmits_by_container: TCP retransmissions by the socket's cgroup
 * (named by the container decoders), address family and state
 * (tp_btf/tcp_retransmit_skb): tcp_retransmits.bpf.c with the cgroup id in
 * the key.
 *
 * The cgroup is the socket's (where it was created), not the current
 * task's: most retransmissions are sent from the retransmit timer, in
 * softirq context, on behalf of whatever happened to run.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "bpfsnap.h"

#define STATE_SLOTS 16
/* (cgroup, state, family) triples kept; new ones are not counted once it
 * is full. */
#define MAX_KEYS 16384

struct container_retransmit_key {
	u64 cgroup_id;
	u8 state;
	u8 family;
	u8 pad[6];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, MAX_KEYS);
	__type(key, struct container_retransmit_key);
	__type(value, u64);
} container_tcp_retransmits_total SEC(".maps");

/* The event's record as of 6.17, which added `err` (see tcp_retransmits.bpf.c). */
struct trace_event_raw_tcp_retransmit_skb___err {
	int err;
} __attribute__((preserve_access_index));

SEC("tp_btf/tcp_retransmit_skb")
int BPF_PROG(tcp_retransmit_by_container, const struct sock *sk)
{
	struct container_retransmit_key key = {};
	u32 state;

	/* Failed attempts (6.17+) sent nothing: not counted. */
	if (bpf_core_field_exists(struct trace_event_raw_tcp_retransmit_skb___err, err) &&
	    (int)ctx[2] != 0)
		return 0;
	state = sk->__sk_common.skc_state;
	key.cgroup_id = sock_cgroup_id(sk);
	key.state = state < STATE_SLOTS ? state : STATE_SLOTS - 1;
	key.family = inet_family_slot(sk->__sk_common.skc_family);
	hash_add(&container_tcp_retransmits_total, &key, 1);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
