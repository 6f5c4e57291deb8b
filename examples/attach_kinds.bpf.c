// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * attach_kinds: one program per attach convention bpfsnap handles beyond
 * tp_btf, each counting into a slot of one array:
 *   0  uprobe on bpfsnap's own post_attach_mark (ebpf_exporter's convention:
 *      runs once, right after everything is attached)
 *   1  raw_tp/sys_enter, for getppid calls of threads named "bpfsnap-kind"
 *   2  tp_btf/hrtimer_expire_entry, for timers whose callback is the kernel
 *      function whose address bpfsnap wrote into kaddr_hrtimer_wakeup (kaddrs)
 *   3  a uretprobe on bpfsnap's post_attach_mark
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#if defined(__TARGET_ARCH_x86)
#define NR_GETPPID 110
#elif defined(__TARGET_ARCH_arm64)
#define NR_GETPPID 173
#endif

/* Set by bpfsnap from /proc/kallsyms before load (config key `kaddrs`). */
const volatile u64 kaddr_hrtimer_wakeup = 0;

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4);
	__type(key, u32);
	__type(value, u64);
} attach_kind_hits_total SEC(".maps");

static __always_inline void hit(u32 slot)
{
	u64 *count = bpf_map_lookup_elem(&attach_kind_hits_total, &slot);

	if (count)
		__sync_fetch_and_add(count, 1);
}

SEC("uprobe//proc/self/exe:post_attach_mark")
int BPF_UPROBE(kinds_post_attach)
{
	hit(0);
	return 0;
}

SEC("uretprobe//proc/self/exe:post_attach_mark")
int BPF_URETPROBE(kinds_post_attach_ret)
{
	hit(3);
	return 0;
}

SEC("raw_tp/sys_enter")
int BPF_PROG(kinds_raw_tp, struct pt_regs *regs, long id)
{
	char comm[16];

	if (id != NR_GETPPID)
		return 0;
	bpf_get_current_comm(comm, sizeof(comm));
	if (comm[0] == 'b' && comm[8] == 'k' && comm[11] == 'd')
		hit(1);
	return 0;
}

SEC("tp_btf/hrtimer_expire_entry")
int BPF_PROG(kinds_kaddr, struct hrtimer *timer, ktime_t *now)
{
	if (kaddr_hrtimer_wakeup && (u64)timer->function == kaddr_hrtimer_wakeup)
		hit(2);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
