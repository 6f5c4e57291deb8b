// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * skb_drops: packets the kernel dropped, by drop reason and protocol
 * (tp_btf/kfree_skb, Linux 5.17+ which passes the reason).
 *
 * The values of enum skb_drop_reason change between kernels (reasons are
 * added in the middle), so the common reasons are mapped here, through
 * CO-RE enum relocations, to the stable numbers of enum drop_slot, which
 * the spec names with a static_map; the others count as "other". A reason
 * this kernel does not have is skipped at load time. Freeing with reason
 * SKB_CONSUMED is not a drop: such kernels report it here only before the
 * consume_skb split (6.2), and it is not counted.
 *
 * Before 6.2 some paths still freed packets that were not dropped with
 * kfree_skb(), so "not_specified" also holds some non-drops there.
 *
 * Key byte 0: the reason slot; byte 1: the protocol (0 = ipv4, 1 = ipv6,
 * 2 = other, from skb->protocol). One per-CPU array increment per drop
 * after at most ~40 compares against load-time constants.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "bpfsnap.h"

#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD

/* Stable numbers of the reasons counted on their own (skb_drops.toml names
 * them); new reasons are appended, numbers are never reused. */
enum drop_slot {
	DROP_OTHER = 0,
	DROP_NOT_SPECIFIED = 1,
	DROP_NO_SOCKET = 2,
	DROP_SOCKET_CLOSE = 3,
	DROP_SOCKET_FILTER = 4,
	DROP_SOCKET_RCVBUFF = 5,
	DROP_SOCKET_BACKLOG = 6,
	DROP_PKT_TOO_SMALL = 7,
	DROP_TCP_CSUM = 8,
	DROP_UDP_CSUM = 9,
	DROP_IP_CSUM = 10,
	DROP_NETFILTER_DROP = 11,
	DROP_OTHERHOST = 12,
	DROP_IP_NOPROTO = 13,
	DROP_PROTO_MEM = 14,
	DROP_TCP_FLAGS = 15,
	DROP_TCP_ZEROWINDOW = 16,
	DROP_TCP_OLD_DATA = 17,
	DROP_TCP_OVERWINDOW = 18,
	DROP_TCP_OFOMERGE = 19,
	DROP_TCP_OLD_SEQUENCE = 20,
	DROP_TCP_INVALID_SEQUENCE = 21,
	DROP_TCP_RESET = 22,
	DROP_TCP_LISTEN_OVERFLOW = 23,
	DROP_TCP_CLOSE = 24,
	DROP_TCP_RFC7323_PAWS = 25,
	DROP_IP_INHDR = 26,
	DROP_IP_RPFILTER = 27,
	DROP_IP_INADDRERRORS = 28,
	DROP_IP_INNOROUTES = 29,
	DROP_IP_OUTNOROUTES = 30,
	DROP_UNHANDLED_PROTO = 31,
	DROP_NEIGH_FAILED = 32,
	DROP_QDISC_DROP = 33,
	DROP_CPU_BACKLOG = 34,
	DROP_XDP = 35,
	DROP_TC_INGRESS = 36,
	DROP_TC_EGRESS = 37,
	DROP_FRAG_REASM_TIMEOUT = 38,
	DROP_QUEUE_PURGE = 39,
	DROP_NOMEM = 40,
	DROP_SLOTS = 48, /* room to append */
};

/* Skipped (dead code after relocation) on kernels without the reason. */
#define MAP_REASON(name)                                                          \
	if (bpf_core_enum_value_exists(enum skb_drop_reason, SKB_DROP_REASON_##name) && \
	    reason == bpf_core_enum_value(enum skb_drop_reason, SKB_DROP_REASON_##name)) \
		return DROP_##name

/* Reasons newer than some vmlinux.h bpfsnap builds with (Debian's arm64
 * 6.12, bpf/vmlinux/aarch64, lacks TCP_LISTEN_OVERFLOW): named in a local
 * flavor of the enum, which libbpf matches by the names before "___". */
enum skb_drop_reason___newer {
	SKB_DROP_REASON_TCP_LISTEN_OVERFLOW___newer,
};

#define MAP_NEWER_REASON(name)                                                        \
	if (bpf_core_enum_value_exists(enum skb_drop_reason___newer,                   \
				       SKB_DROP_REASON_##name##___newer) &&            \
	    reason == bpf_core_enum_value(enum skb_drop_reason___newer,                \
					  SKB_DROP_REASON_##name##___newer))           \
		return DROP_##name

static __always_inline u32 drop_slot(u32 reason)
{
	MAP_REASON(NOT_SPECIFIED);
	MAP_REASON(NO_SOCKET);
	MAP_REASON(SOCKET_CLOSE);
	MAP_REASON(SOCKET_FILTER);
	MAP_REASON(SOCKET_RCVBUFF);
	MAP_REASON(SOCKET_BACKLOG);
	MAP_REASON(PKT_TOO_SMALL);
	MAP_REASON(TCP_CSUM);
	MAP_REASON(UDP_CSUM);
	MAP_REASON(IP_CSUM);
	MAP_REASON(NETFILTER_DROP);
	MAP_REASON(OTHERHOST);
	MAP_REASON(IP_NOPROTO);
	MAP_REASON(PROTO_MEM);
	MAP_REASON(TCP_FLAGS);
	MAP_REASON(TCP_ZEROWINDOW);
	MAP_REASON(TCP_OLD_DATA);
	MAP_REASON(TCP_OVERWINDOW);
	MAP_REASON(TCP_OFOMERGE);
	MAP_REASON(TCP_OLD_SEQUENCE);
	MAP_REASON(TCP_INVALID_SEQUENCE);
	MAP_REASON(TCP_RESET);
	MAP_NEWER_REASON(TCP_LISTEN_OVERFLOW);
	MAP_REASON(TCP_CLOSE);
	MAP_REASON(TCP_RFC7323_PAWS);
	MAP_REASON(IP_INHDR);
	MAP_REASON(IP_RPFILTER);
	MAP_REASON(IP_INADDRERRORS);
	MAP_REASON(IP_INNOROUTES);
	MAP_REASON(IP_OUTNOROUTES);
	MAP_REASON(UNHANDLED_PROTO);
	MAP_REASON(NEIGH_FAILED);
	MAP_REASON(QDISC_DROP);
	MAP_REASON(CPU_BACKLOG);
	MAP_REASON(XDP);
	MAP_REASON(TC_INGRESS);
	MAP_REASON(TC_EGRESS);
	MAP_REASON(FRAG_REASM_TIMEOUT);
	MAP_REASON(QUEUE_PURGE);
	MAP_REASON(NOMEM);
	return DROP_OTHER;
}

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, INET_FAMILY_OTHER * 256 + DROP_SLOTS);
	__type(key, u32);
	__type(value, u64);
} skb_drops_total SEC(".maps");

SEC("tp_btf/kfree_skb")
int BPF_PROG(skb_drop, struct sk_buff *skb, void *location, enum skb_drop_reason reason)
{
	u32 key, protocol;
	u64 *count;

	if (bpf_core_enum_value_exists(enum skb_drop_reason, SKB_CONSUMED) &&
	    reason == bpf_core_enum_value(enum skb_drop_reason, SKB_CONSUMED))
		return 0;
	switch (skb->protocol) {
	case bpf_htons(ETH_P_IP):
		protocol = INET_FAMILY_IPV4;
		break;
	case bpf_htons(ETH_P_IPV6):
		protocol = INET_FAMILY_IPV6;
		break;
	default:
		protocol = INET_FAMILY_OTHER;
	}
	key = drop_slot(reason) | protocol << 8;
	count = bpf_map_lookup_elem(&skb_drops_total, &key);
	if (count)
		*count += 1;
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
