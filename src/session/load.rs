//! Loading in parallel: which programs load together, and on how many
//! threads.

use std::path::Path;

use crate::program::Program;

/// Which programs load together. Built-ins load from the object they are
/// linked into, in one group per CPU: the groups load in parallel, each
/// load parses the kernel's BTF once (libbpf, for the tp_btf attach points)
/// and looks up each kernel type its programs relocate against once, so
/// built-ins that share kernel types go together (see [`group_by_cost`]). Anything else (user programs, and
/// everything in --pin mode, whose sets are pinned per config) loads alone.
pub(super) fn load_groups(programs: &[Program], pin: Option<&Path>) -> Vec<Vec<usize>> {
    let (linked, alone): (Vec<usize>, Vec<usize>) = (0..programs.len())
        .partition(|&index| pin.is_none() && programs[index].linked_builtin().is_some());
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let load = |index: usize| {
        programs[index]
            .linked_builtin()
            .map_or((&[][..], 0), |source| (source.types, source.programs.len()))
    };
    let mut groups = group_by_cost(&linked, cpus.min(linked.len() / 2).max(1), load);
    groups.retain(|group| !group.is_empty());
    groups.extend(alone.into_iter().map(|index| vec![index]));
    groups
}

/// `items` in `count` groups of about equal loading time. An item brings
/// its programs (each loaded, verified and attached) and the kernel types
/// its relocations look up (once per group however many members share
/// it), weighed alike. A type lookup was a scan of the kernel's 126k types
/// (≈ 1 ms) until the built-ins relocated against their own small BTF
/// (`probe::core_btf`); weighing programs alone since starts the default
/// set no faster (BENCHMARKS.md, 2026-12-07), so the weights stay. Greedily, the heaviest items first, each goes where the
/// longest group would end the soonest were the rest spread evenly (so a
/// first item's types draw the items sharing them instead of being
/// scanned twice); then where it adds the least; then the lighter group.
fn group_by_cost<'a>(
    items: &[usize],
    count: usize,
    load: impl Fn(usize) -> (&'a [&'a str], usize),
) -> Vec<Vec<usize>> {
    use std::collections::BTreeSet;
    let weight = |item: usize| {
        let (types, programs) = load(item);
        types.len() + programs
    };
    let mut order = items.to_vec();
    order.sort_by_key(|&item| std::cmp::Reverse(weight(item)));
    let mut unplaced: usize = order.iter().map(|&item| weight(item)).sum();
    let mut groups: Vec<(Vec<usize>, BTreeSet<&str>, usize)> =
        vec![Default::default(); count.max(1)];
    for item in order {
        let (types, programs) = load(item);
        unplaced -= weight(item);
        let placed: usize = groups.iter().map(|(_, _, cost)| cost).sum();
        let longest = groups.iter().map(|(_, _, cost)| *cost).max().unwrap_or(0);
        let choice = groups
            .iter()
            .enumerate()
            .map(|(index, (_, known, cost))| {
                let added = programs + types.iter().filter(|t| !known.contains(*t)).count();
                let ends = longest
                    .max(cost + added)
                    .max((placed + added + unplaced).div_ceil(groups.len()));
                ((ends, added, *cost), index)
            })
            .min();
        let Some(((_, added, _), index)) = choice else {
            break; // unreachable: there is at least one group
        };
        let (members, known, cost) = &mut groups[index];
        members.push(item);
        known.extend(types.iter().copied());
        *cost += added;
    }
    let mut groups: Vec<Vec<usize>> = groups
        .into_iter()
        .map(|(mut members, _, _)| {
            members.sort_unstable();
            members
        })
        .collect();
    groups.sort_by_key(|members| members.first().copied());
    groups
}

/// `f` of every item, in order, computed on up to one thread per CPU. Loading
/// an object is CPU work of its own (libbpf parses the kernel's BTF for each,
/// then the verifier runs): the default set starts about twice as fast on
/// two CPUs.
pub(super) fn in_parallel<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(items.len());
    if threads <= 1 {
        return items.iter().map(f).collect();
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let take = || next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut results: Vec<(usize, R)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let index = take();
                        let Some(item) = items.get(index) else {
                            return done;
                        };
                        done.push((index, f(item)));
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|worker| match worker.join() {
                Ok(done) => done,
                Err(panic) => std::panic::resume_unwind(panic),
            })
            .collect()
    });
    results.sort_by_key(|(index, _)| *index);
    results.into_iter().map(|(_, result)| result).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_share_types_and_balance_the_loading_work() {
        // The default set's relocated types and program counts (build.rs).
        let block: &[&str] = &[
            "gendisk",
            "req_op",
            "request",
            "request___old",
            "request_queue",
        ];
        let load: [(&[&str], usize); 13] = [
            (block, 2),                                           // 0 biolatency
            (block, 1),                                           // 1 biosize
            (&[], 1),                                             // 2 execs
            (&["task_struct"], 1),                                // 3 exits
            (&["task_struct"], 1),                                // 4 oomkill
            (&[], 1),                                             // 5 profile
            (&[], 1),                                             // 6 signals
            (&["sk_buff", "skb_drop_reason"], 1),                 // 7 skb_drops
            (&[], 2),                                             // 8 softirqs
            (&["pt_regs", "task_struct"], 1),                     // 9 syscall_errors
            (&["pt_regs", "task_struct"], 1),                     // 10 syscalls
            (&["sock", "trace_event_raw_tcp_retransmit_skb"], 1), // 11 tcp_retransmits
            (&["sock"], 1),                                       // 12 tcp_states
        ];
        let items: Vec<usize> = (0..load.len()).collect();
        let groups = group_by_cost(&items, 2, |i| load[i]);
        let cost = |group: &Vec<usize>| {
            let types: std::collections::BTreeSet<&str> = group
                .iter()
                .flat_map(|&i| load[i].0.iter().copied())
                .collect();
            types.len() + group.iter().map(|&i| load[i].1).sum::<usize>()
        };
        let mut placed: Vec<usize> = groups.concat();
        placed.sort_unstable();
        assert_eq!(placed, items, "{groups:?}");
        // Every type scanned once: the block pair, the task_struct four and
        // the sock pair each in one group...
        let with = |i: usize| groups.iter().position(|g| g.contains(&i));
        assert_eq!(with(0), with(1), "{groups:?}");
        assert!([4, 9, 10].iter().all(|&i| with(i) == with(3)), "{groups:?}");
        assert_eq!(with(11), with(12), "{groups:?}");
        // ... and the two about equal: 26 units of work, 13 each.
        assert_eq!(groups.iter().map(cost).collect::<Vec<_>>(), [13, 13]);

        // More groups than clusters of shared types still spread the work.
        let groups = group_by_cost(&items, 4, |i| load[i]);
        assert_eq!(groups.iter().map(Vec::len).sum::<usize>(), 13);
        assert!(groups.iter().all(|g| cost(g) <= 9), "{groups:?}");
        assert_eq!(
            group_by_cost(&[], 2, |i| load[i]),
            vec![Vec::<usize>::new(), vec![]]
        );
    }

    #[test]
    fn in_parallel_keeps_the_order_and_runs_each_item_once() {
        let calls = std::sync::atomic::AtomicUsize::new(0);
        for count in [0usize, 1, 2, 3, 17] {
            calls.store(0, std::sync::atomic::Ordering::SeqCst);
            let items: Vec<usize> = (0..count).collect();
            let squares = in_parallel(&items, |n| {
                calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                n * n
            });
            assert_eq!(squares, items.iter().map(|n| n * n).collect::<Vec<_>>());
            assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), count);
        }
    }
}
