// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * struct_key: close(), dup() and fcntl() calls, by operation, process and the
 * size class of the file descriptor they were given.
 *
 * Its point is the key: a C struct with padding, as most real programs have.
 * The compiler aligns each field on its own size, so the 1-byte `op` is
 * followed by 3 bytes of padding before the 4-byte `pid`, and the struct is
 * rounded up to a multiple of 4 after the 2-byte `fd_bits`:
 *
 *   offset 0  u8  op        label op      size 1, padding 3
 *   offset 4  u32 pid       label pid     size 4
 *   offset 8  u16 fd_bits   label fd_bits size 2, padding 2
 *   sizeof = 12
 *
 * struct_key.yaml describes exactly this. Padding bytes are part of the key
 * the kernel hashes, so the key is zeroed before its fields are set.
 *
 * Three classic tracepoints, each firing only for its own system call, keep
 * every other system call free of cost.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

enum fd_op {
	FD_OP_CLOSE = 1,
	FD_OP_DUP = 2,
	FD_OP_FCNTL = 3,
};

struct fd_op_key {
	u8 op;       /* enum fd_op */
	/* 3 bytes of padding */
	u32 pid;     /* process (thread group) id */
	u16 fd_bits; /* bits in the fd: 0 for fd 0, else fd < 2^fd_bits */
	/* 2 bytes of padding */
};

_Static_assert(sizeof(struct fd_op_key) == 12, "struct_key.yaml describes a 12-byte key");

/* The map name is the metric name (bpfsnap_fd_syscalls_total). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 10240);
	__type(key, struct fd_op_key);
	__type(value, u64);
} fd_syscalls_total SEC(".maps");

/* Number of significant bits of v (0 for 0): branch-free, no loop. */
static __always_inline u16 bits(u32 v)
{
	u32 r, shift;

	if (!v)
		return 0;
	r = (v > 0xFFFF) << 4;
	v >>= r;
	shift = (v > 0xFF) << 3;
	v >>= shift;
	r |= shift;
	shift = (v > 0xF) << 2;
	v >>= shift;
	r |= shift;
	shift = (v > 0x3) << 1;
	v >>= shift;
	r |= shift;
	r |= (v >> 1);
	return r + 1;
}

static __always_inline int count(enum fd_op op, struct trace_event_raw_sys_enter *ctx)
{
	struct fd_op_key key;
	u64 one = 1, *value;

	__builtin_memset(&key, 0, sizeof(key));
	key.op = op;
	key.pid = bpf_get_current_pid_tgid() >> 32;
	/* The fd is the first argument of all three (an unsigned int). */
	key.fd_bits = bits((u32)ctx->args[0]);

	value = bpf_map_lookup_elem(&fd_syscalls_total, &key);
	if (value) {
		__sync_fetch_and_add(value, 1);
		return 0;
	}
	if (bpf_map_update_elem(&fd_syscalls_total, &key, &one, BPF_NOEXIST) == 0)
		return 0;
	/* Another CPU inserted the key first. */
	value = bpf_map_lookup_elem(&fd_syscalls_total, &key);
	if (value)
		__sync_fetch_and_add(value, 1);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_close")
int enter_close(struct trace_event_raw_sys_enter *ctx)
{
	return count(FD_OP_CLOSE, ctx);
}

SEC("tracepoint/syscalls/sys_enter_dup")
int enter_dup(struct trace_event_raw_sys_enter *ctx)
{
	return count(FD_OP_DUP, ctx);
}

SEC("tracepoint/syscalls/sys_enter_fcntl")
int enter_fcntl(struct trace_event_raw_sys_enter *ctx)
{
	return count(FD_OP_FCNTL, ctx);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
