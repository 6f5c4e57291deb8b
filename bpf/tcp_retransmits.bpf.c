// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * tcp_retransmits: TCP retransmissions, by address family and by the state
 * of the socket when it retransmitted (tp_btf/tcp_retransmit_skb).
 *
 * The tracepoint fires once per retransmitted skb (a TSO skb may carry
 * several segments, so this counts packets handed to the IP layer again,
 * not MSS-sized segments like the kernel's RetransSegs), timeouts, fast
 * retransmits and tail loss probes that resend the last segment alike.
 * Since Linux 6.17 it also fires for attempts that failed (third argument
 * `err`, e.g. -EBUSY while the original is still in a host queue): those
 * sent nothing and are not counted, so old and new kernels count the same.
 *
 * Retransmissions are rare next to the packets sent, and each costs one
 * per-CPU array increment: the key packs the state into byte 0 and the
 * family into byte 1 so that the spec can split it into two labels.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "bpfsnap.h"

/* Key byte 0: the TCP state (include/net/tcp_states.h, uapi-stable numbers
 * TCP_ESTABLISHED = 1 .. TCP_BOUND_INACTIVE = 13; 15 stands for anything
 * above). Key byte 1: the family, see inet_family_slot(). */
#define STATE_SLOTS 16

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, INET_FAMILY_OTHER * 256 + STATE_SLOTS);
	__type(key, u32);
	__type(value, u64);
} tcp_retransmits_total SEC(".maps");

/* The event's record as of 6.17, which added `err`; a local flavor of the
 * kernel's type (libbpf matches it by the name before "___"), so the program
 * also compiles against the vmlinux.h of a kernel whose BTF lacks the type
 * (Debian's arm64 6.12, bpf/vmlinux/aarch64). */
struct trace_event_raw_tcp_retransmit_skb___err {
	int err;
} __attribute__((preserve_access_index));

SEC("tp_btf/tcp_retransmit_skb")
int BPF_PROG(tcp_retransmit, const struct sock *sk)
{
	u32 key, state;
	u64 *count;

	/* The third argument came with the event's `err` field (6.17). On
	 * older kernels ctx[2] does not exist: the relocation turns the check
	 * into a constant 0, and the verifier never walks the dead branch. */
	if (bpf_core_field_exists(struct trace_event_raw_tcp_retransmit_skb___err, err) &&
	    (int)ctx[2] != 0)
		return 0;
	state = sk->__sk_common.skc_state;
	if (state >= STATE_SLOTS)
		state = STATE_SLOTS - 1;
	key = state | inet_family_slot(sk->__sk_common.skc_family) << 8;
	count = bpf_map_lookup_elem(&tcp_retransmits_total, &key);
	if (count)
		*count += 1;
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
