/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Helpers shared by bpfsnap's BPF programs (built-ins and examples).
 */
#ifndef BPFSNAP_H
#define BPFSNAP_H

/* floor(log2(v)) for v > 0, in six branch-free steps (BPF has no clz). */
static __always_inline u32 log2_floor(u64 v)
{
	u32 r, shift;

	r = (v > 0xFFFFFFFFULL) << 5;
	v >>= r;
	shift = (v > 0xFFFF) << 4;
	v >>= shift;
	r |= shift;
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
	return r;
}

/*
 * The exp2 bucket key of v: ceil(log2(v)), so that v <= 2^key and the
 * bucket's `le` is a true upper bound (bcc/libbpf-tools use floor, whose
 * buckets are lower bounds). Keys above max go to max + 2, which bpfsnap
 * counts in +Inf only; max + 1 is the sum key.
 */
static __always_inline u32 exp2_bucket(u64 v, u32 max)
{
	u32 key = v <= 1 ? 0 : log2_floor(v - 1) + 1;

	return key > max ? max + 2 : key;
}

#endif
