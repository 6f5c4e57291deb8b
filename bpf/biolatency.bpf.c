// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * biolatency: block I/O latency, from the request's issue to the device
 * (block_rq_issue) to its completion (block_rq_complete), by disk and
 * operation.
 *
 * The issue time is kept in an LRU hash keyed by the request's address: a
 * request whose completion is never seen (issued before a queue went away,
 * say) is evicted instead of filling the map. The histogram is a per-CPU
 * hash keyed by (disk, operation, bucket), so the completion path costs two
 * hash lookups and a delete, and no atomic operation.
 *
 * Only request-based (blk-mq) devices have these tracepoints: the physical
 * disks. Stacked bio-based devices (device-mapper, md) are seen through the
 * disks under them. The device is the whole disk (`vda`, `nvme0n1`), as in
 * the kernel's own block tracepoints, not the partition. A request the
 * driver completes in parts is timed to its first part.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "bpfsnap.h"
#include "block.h"

#define MAX_BUCKET 26 /* 2^26 µs ≈ 67 s */
#define MAX_INFLIGHT 10240

struct hist_key {
	u32 dev;	/* userspace dev_t encoding (majorminor decoder) */
	u32 op;		/* enum bio_op */
	u32 bucket;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, MAX_INFLIGHT);
	__type(key, u64);	/* struct request * */
	__type(value, u64);	/* issue time, ns */
} issued_at SEC(".maps");

/* Keys (disk, op, 0..MAX_BUCKET): counts; bucket MAX_BUCKET + 1: sum of µs;
 * MAX_BUCKET + 2: above range. 29 keys per (disk, operation) in use. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 8192);
	__type(key, struct hist_key);
	__type(value, u64);
} block_io_latency_seconds SEC(".maps");

SEC("tp_btf/block_rq_issue")
int BPF_PROG(biolatency_issue, struct request *rq)
{
	u64 key = (u64)rq, now = bpf_ktime_get_ns();

	bpf_map_update_elem(&issued_at, &key, &now, BPF_ANY);
	return 0;
}

SEC("tp_btf/block_rq_complete")
int BPF_PROG(biolatency_complete, struct request *rq, blk_status_t error, unsigned int nr_bytes)
{
	u64 key = (u64)rq, *at, latency_us;
	struct hist_key hist;

	at = bpf_map_lookup_elem(&issued_at, &key);
	if (!at)
		return 0;
	latency_us = (bpf_ktime_get_ns() - *at) / 1000;
	bpf_map_delete_elem(&issued_at, &key);

	hist.dev = request_dev(rq);
	hist.op = request_op(rq);
	hist.bucket = exp2_bucket(latency_us, MAX_BUCKET);
	hash_add(&block_io_latency_seconds, &hist, 1);
	hist.bucket = MAX_BUCKET + 1;
	hash_add(&block_io_latency_seconds, &hist, latency_us);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
