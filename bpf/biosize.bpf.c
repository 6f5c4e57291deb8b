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

#define MIN_BUCKET 9  /* 512 B: smaller requests count in the first bucket */
#define MAX_BUCKET 30 /* 1 GiB (large discards) */
#define REQ_OP_MASK ((1U << 8) - 1) /* REQ_OP_BITS = 8 since Linux 4.10 */

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

/* Keys (disk, op, MIN_BUCKET..MAX_BUCKET): counts; bucket MAX_BUCKET + 1:
 * sum of bytes; MAX_BUCKET + 2: above range. 24 keys per (disk, operation). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 8192);
	__type(key, struct hist_key);
	__type(value, u64);
} block_io_size_bytes SEC(".maps");

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
	u64 *slot = bpf_map_lookup_elem(&block_io_size_bytes, key);

	if (!slot) {
		bpf_map_update_elem(&block_io_size_bytes, key, &zero, BPF_NOEXIST);
		slot = bpf_map_lookup_elem(&block_io_size_bytes, key);
		if (!slot)
			return;
	}
	*slot += n;
}

SEC("tp_btf/block_rq_issue")
int BPF_PROG(biosize_issue, struct request *rq)
{
	u64 bytes = rq->__data_len; /* blk_rq_bytes() */
	struct hist_key hist;
	u32 bucket;

	if (!bytes)
		return 0;
	bucket = exp2_bucket(bytes, MAX_BUCKET);
	hist.dev = request_dev(rq);
	hist.op = request_op(rq);
	hist.bucket = bucket < MIN_BUCKET ? MIN_BUCKET : bucket;
	hist_add(&hist, 1);
	hist.bucket = MAX_BUCKET + 1;
	hist_add(&hist, bytes);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
