// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * biosize: sizes of the block I/O requests issued to devices, by disk and
 * operation (tp_btf/block_rq_issue).
 *
 * One per-CPU hash increment per request (keyed by disk, operation and exp2
 * bucket of the byte count) plus one for the byte sum; no start state, no
 * atomics. Requests that move no data (flushes) are not counted. Like the
 * kernel's block tracepoints, the device is the whole disk, not the
 * partition, and only request-based (blk-mq) devices are seen: the physical
 * disks under device-mapper or md.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "bpfsnap.h"
#include "block.h"

#define MIN_BUCKET 9  /* 512 B: smaller requests count in the first bucket */
#define MAX_BUCKET 30 /* 1 GiB (large discards) */

struct hist_key {
	u32 dev;	/* userspace dev_t encoding (majorminor decoder) */
	u32 op;		/* enum bio_op */
	u32 bucket;
};

/* Keys (disk, op, MIN_BUCKET..MAX_BUCKET): counts; bucket MAX_BUCKET + 1:
 * sum of bytes; MAX_BUCKET + 2: above range. 24 keys per (disk, operation). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 8192);
	__type(key, struct hist_key);
	__type(value, u64);
} block_io_size_bytes SEC(".maps");

SEC("tp_btf/block_rq_issue")
int BPF_PROG(biosize_issue, struct request *rq)
{
	u64 bytes = rq->__data_len; /* blk_rq_bytes() */
	struct hist_key hist;
	u32 bucket;

	/* The request's fields first, before any branch: the verifier checks
	 * each load through a BTF pointer with a search of the kernel's BTF,
	 * once per path that reaches it (after the branches below it took
	 * 8 ms of the load instead of 2). */
	hist.dev = request_dev(rq);
	hist.op = request_op(rq);
	if (!bytes)
		return 0;
	bucket = exp2_bucket(bytes, MAX_BUCKET);
	hist.bucket = bucket < MIN_BUCKET ? MIN_BUCKET : bucket;
	hash_add(&block_io_size_bytes, &hist, 1);
	hist.bucket = MAX_BUCKET + 1;
	hash_add(&block_io_size_bytes, &hist, bytes);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
