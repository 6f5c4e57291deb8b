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

#define MAX_BUCKET 26 /* 2^26 µs ≈ 67 s */
#define REQ_OP_MASK ((1U << 8) - 1) /* REQ_OP_BITS = 8 since Linux 4.10 */
#define MAX_INFLIGHT 10240

/* Stable operation numbers, named by the spec's static_map. */
enum bio_op {
	BIO_OP_READ,
	BIO_OP_WRITE,
	BIO_OP_FLUSH,
	BIO_OP_DISCARD,
	BIO_OP_WRITE_ZEROES,
	BIO_OP_OTHER,
};

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

/* Kernels before 5.17 kept the disk in the request itself. */
struct request___old {
	struct gendisk *rq_disk;
} __attribute__((preserve_access_index));

static __always_inline u32 request_dev(struct request *rq)
{
	struct gendisk *disk;
	u32 major, minor;

	/* tp_btf arguments are BTF pointers: plain loads, no probe_read calls. */
	if (bpf_core_field_exists(((struct request___old *)0)->rq_disk))
		disk = ((struct request___old *)rq)->rq_disk;
	else
		disk = rq->q->disk;
	if (!disk)
		return 0;
	major = disk->major;
	minor = disk->first_minor;
	/* new_encode_dev(): what stat(2) and /proc/partitions say. */
	return (minor & 0xff) | (major << 8) | ((minor & ~0xffU) << 12);
}

static __always_inline u32 request_op(struct request *rq)
{
	u32 op = rq->cmd_flags & REQ_OP_MASK;

	if (op == bpf_core_enum_value(enum req_op, REQ_OP_READ))
		return BIO_OP_READ;
	if (op == bpf_core_enum_value(enum req_op, REQ_OP_WRITE))
		return BIO_OP_WRITE;
	if (op == bpf_core_enum_value(enum req_op, REQ_OP_FLUSH))
		return BIO_OP_FLUSH;
	if (op == bpf_core_enum_value(enum req_op, REQ_OP_DISCARD))
		return BIO_OP_DISCARD;
	if (op == bpf_core_enum_value(enum req_op, REQ_OP_WRITE_ZEROES))
		return BIO_OP_WRITE_ZEROES;
	return BIO_OP_OTHER;
}

static __always_inline void hist_add(struct hist_key *key, u64 n)
{
	u64 zero = 0;
	u64 *slot = bpf_map_lookup_elem(&block_io_latency_seconds, key);

	if (!slot) {
		bpf_map_update_elem(&block_io_latency_seconds, key, &zero, BPF_NOEXIST);
		slot = bpf_map_lookup_elem(&block_io_latency_seconds, key);
		if (!slot)
			return;
	}
	*slot += n;
}

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
	hist_add(&hist, 1);
	hist.bucket = MAX_BUCKET + 1;
	hist_add(&hist, latency_us);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
