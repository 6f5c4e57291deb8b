/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Block-layer helpers shared by biolatency and biosize: a request's disk as
 * a userspace dev_t (what the majorminor decoder, stat(2) and
 * /proc/partitions use) and its operation as a stable small number.
 */
#ifndef BPFSNAP_BLOCK_H
#define BPFSNAP_BLOCK_H

#include <bpf/bpf_core_read.h>

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

/* Kernels before 5.17 kept the disk in the request itself. */
struct request___old {
	struct gendisk *rq_disk;
} __attribute__((preserve_access_index));

static __always_inline u32 request_dev(struct request *rq)
{
	struct gendisk *disk;
	u32 major, minor;

	/* Read, not loaded through the BTF pointers: the verifier looks each
	 * pointer load up in the kernel's BTF by name (≈ 1 ms per load per
	 * path, a quarter of the default set's start-up), while these reads
	 * add ≈ 50 ns to an I/O that takes microseconds. */
	if (bpf_core_field_exists(((struct request___old *)0)->rq_disk))
		disk = BPF_CORE_READ((struct request___old *)rq, rq_disk);
	else
		disk = BPF_CORE_READ(rq, q, disk);
	if (!disk)
		return 0;
	major = BPF_CORE_READ(disk, major);
	minor = BPF_CORE_READ(disk, first_minor);
	/* new_encode_dev(): what stat(2) and /proc/partitions say. */
	return (minor & 0xff) | (major << 8) | ((minor & ~0xffU) << 12);
}

/* The operation enum was `enum req_opf` before Linux 6.0 named it
 * `enum req_op`; its values are looked up by name in whichever the kernel
 * has (the other branch is dead code after CO-RE relocation). */
enum req_opf___before_6_0 {
	REQ_OP_READ___before_6_0,
	REQ_OP_WRITE___before_6_0,
	REQ_OP_FLUSH___before_6_0,
	REQ_OP_DISCARD___before_6_0,
	REQ_OP_WRITE_ZEROES___before_6_0,
};

#define REQ_OP_VALUE(op)                                                        \
	(bpf_core_type_exists(enum req_op) ? bpf_core_enum_value(enum req_op, REQ_OP_##op) \
					   : bpf_core_enum_value(enum req_opf___before_6_0, \
								 REQ_OP_##op##___before_6_0))

static __always_inline u32 request_op(struct request *rq)
{
	u32 op = rq->cmd_flags & REQ_OP_MASK;

	if (op == REQ_OP_VALUE(READ))
		return BIO_OP_READ;
	if (op == REQ_OP_VALUE(WRITE))
		return BIO_OP_WRITE;
	if (op == REQ_OP_VALUE(FLUSH))
		return BIO_OP_FLUSH;
	if (op == REQ_OP_VALUE(DISCARD))
		return BIO_OP_DISCARD;
	if (op == REQ_OP_VALUE(WRITE_ZEROES))
		return BIO_OP_WRITE_ZEROES;
	return BIO_OP_OTHER;
}

#endif
