// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * tcp_states: TCP state transitions, by address family, old state and new
 * state (tp_btf/inet_sock_set_state, TCP sockets only).
 *
 * Every connection makes a handful of transitions (an active open and close:
 * CLOSE -> SYN_SENT -> ESTABLISHED -> FIN_WAIT1 -> FIN_WAIT2 -> CLOSE; a
 * passive one: LISTEN -> SYN_RECV -> ESTABLISHED -> CLOSE_WAIT -> LAST_ACK
 * -> CLOSE). Three labels do not fit the byte layout of an array index
 * compactly, so the counts live in a per-CPU hash keyed by the (family,
 * old, new) triple: a bounded domain of 3 x 16 x 16 keys, of which a
 * machine uses a few dozen. One hash lookup and a per-CPU increment per
 * transition, no atomics.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include "bpfsnap.h"

#define IPPROTO_TCP 6
/* States are the uapi-stable TCP_ESTABLISHED = 1 .. TCP_BOUND_INACTIVE = 13
 * (include/net/tcp_states.h); 15 stands for anything above. */
#define STATE_SLOTS 16

struct transition {
	u8 family;	/* inet_family_slot() */
	u8 old_state;
	u8 new_state;
	u8 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, (INET_FAMILY_OTHER + 1) * STATE_SLOTS * STATE_SLOTS);
	__type(key, struct transition);
	__type(value, u64);
} tcp_state_transitions_total SEC(".maps");

static __always_inline u8 state_slot(int state)
{
	return state >= 0 && state < STATE_SLOTS ? state : STATE_SLOTS - 1;
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(tcp_set_state, const struct sock *sk, const int oldstate, const int newstate)
{
	struct transition key = {};
	u64 one = 1, *count;

	if (sk->sk_protocol != IPPROTO_TCP)
		return 0;
	key.family = inet_family_slot(sk->__sk_common.skc_family);
	key.old_state = state_slot(oldstate);
	key.new_state = state_slot(newstate);
	count = bpf_map_lookup_elem(&tcp_state_transitions_total, &key);
	if (count) {
		*count += 1;
		return 0;
	}
	/* First time on any CPU: the new element holds 1 on this CPU and 0 on
	 * the others. If another CPU inserted it meanwhile, count on it. */
	if (bpf_map_update_elem(&tcp_state_transitions_total, &key, &one, BPF_NOEXIST) == 0)
		return 0;
	count = bpf_map_lookup_elem(&tcp_state_transitions_total, &key);
	if (count)
		*count += 1;
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
