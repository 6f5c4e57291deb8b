//! The order of a family's series: by the bytes of their keys, each
//! integer label read as a number (so `pid="9"` comes before `pid="10"`,
//! and an address or a CPU number in numeric order).
//!
//! Any stable order serves the text format (node_exporter, diffs and tests
//! need the same order for the same series, not a particular one), and this
//! one is known before a value is decoded: sorting a million keys is a
//! radix sort of fixed-size numbers per batch read and a merge of the
//! batches, whichever decoders their labels use, with no string compared.

use crate::plan::Label;

/// Where a key's sort bytes come from, label by label.
pub(super) struct KeyOrder {
    fields: Vec<Field>,
    /// Sort bytes per key.
    len: usize,
}

struct Field {
    /// Offset of the label in the key; None for the `cpu` label of a map
    /// split by CPU (its bytes are the CPU number).
    offset: Option<usize>,
    size: usize,
    /// A host-endian integer of 1, 2, 4 or 8 bytes, sorted as a number.
    integer: bool,
}

impl KeyOrder {
    /// The order of keys labelled by `labels`, the last one from the CPU
    /// number when `cpu_label` is set.
    pub fn new(labels: &[Label], cpu_label: Option<usize>) -> KeyOrder {
        let fields: Vec<Field> = labels
            .iter()
            .enumerate()
            .map(|(index, label)| {
                let from_cpu = cpu_label == Some(index);
                Field {
                    offset: (!from_cpu).then_some(label.offset),
                    size: label.size,
                    integer: matches!(label.size, 1 | 2 | 4 | 8)
                        && (from_cpu || label.decoders.reads_integer()),
                }
            })
            .collect();
        let len = fields.iter().map(|field| field.size).sum();
        KeyOrder { fields, len }
    }

    /// Sort bytes per key.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Writes the sort bytes of `key` (split by CPU: of CPU `cpu`, as
    /// `cpu_bytes` gives it) into `out`, which holds [`KeyOrder::len`].
    pub fn write(&self, key: &[u8], cpu: &[u8], out: &mut [u8]) {
        let mut at = 0;
        for field in &self.fields {
            let bytes = match field.offset {
                Some(offset) => &key[offset..offset + field.size],
                None => cpu,
            };
            let out = &mut out[at..at + field.size];
            out.copy_from_slice(bytes);
            // Big-endian sorts as a number.
            if field.integer && cfg!(target_endian = "little") {
                out.reverse();
            }
            at += field.size;
        }
    }
}

/// A key's sort bytes (as a number) and its row, packed: a million of
/// them, and as many again while they are sorted.
#[derive(Clone, Copy)]
#[repr(C, packed)]
pub(super) struct Keyed<K: Copy> {
    key: K,
    value: u64,
}

/// A key of 17 to 24 sort bytes, whole, and its value: its first 16 bytes
/// as a number, the rest zero-padded on the right (the bytes' order).
#[derive(Clone, Copy)]
#[repr(C, packed)]
pub(super) struct Keyed24 {
    prefix: u128,
    next: u64,
    value: u64,
}

/// A longer key's first 24 sort bytes, and its row (where its other bytes
/// and its value are): keys that share their first 16 bytes (a pid and a
/// comm) are ordered by the next 8 without reading the rest from elsewhere.
#[derive(Clone, Copy)]
#[repr(C, packed)]
pub(super) struct Prefixed {
    prefix: u128,
    next: u64,
    row: u32,
}

/// Every key's sort bytes and value, as keys are read; then sorted
/// ([`SortKeys::sort`], [`SortKeys::for_each`]).
///
/// Keys read batch by batch, each batch in order, come as runs
/// ([`SortKeys::end_run`]): runs are merged as they come, while the next
/// batch is read, so that sorting after the last one is a few merges rather
/// than a radix sort of every key (16 passes over a million 16-byte keys).
pub(super) struct SortKeys {
    records: Records,
    runs: Runs,
}

/// The records of each size of sort key, and room to merge them.
enum Records {
    /// Keys of up to 8 bytes, as big-endian numbers.
    Narrow {
        keys: Vec<Keyed<u64>>,
        scratch: Vec<Keyed<u64>>,
        len: usize,
    },
    /// Keys of up to 16 bytes.
    Medium {
        keys: Vec<Keyed<u128>>,
        scratch: Vec<Keyed<u128>>,
        len: usize,
    },
    /// Keys of up to 24 bytes (a `string` and an integer, an address and a
    /// port): whole, with their values, as the shorter ones.
    Long {
        keys: Vec<Keyed24>,
        scratch: Vec<Keyed24>,
        len: usize,
    },
    /// Longer keys: their first 24 bytes as the shorter ones, and each
    /// key's bytes past the 24th and its value by row, which records
    /// compare only when their first 24 bytes are equal.
    Wide {
        prefixes: Vec<Prefixed>,
        scratch: Vec<Prefixed>,
        tails: Vec<u8>,
        values: Vec<u64>,
        len: usize,
    },
}

impl SortKeys {
    /// Sort keys of `len` bytes, room for `rows`.
    pub fn new(len: usize, rows: usize) -> SortKeys {
        let records = match len {
            0..=8 => Records::Narrow {
                keys: Vec::with_capacity(rows),
                scratch: Vec::new(),
                len,
            },
            9..=16 => Records::Medium {
                keys: Vec::with_capacity(rows),
                scratch: Vec::new(),
                len,
            },
            17..=24 => Records::Long {
                keys: Vec::with_capacity(rows),
                scratch: Vec::new(),
                len,
            },
            _ => Records::Wide {
                prefixes: Vec::with_capacity(rows),
                scratch: Vec::new(),
                tails: Vec::with_capacity(rows * (len - 24)),
                values: Vec::with_capacity(rows),
                len,
            },
        };
        SortKeys {
            records,
            runs: Runs::default(),
        }
    }

    /// Adds a key's sort bytes and its value.
    pub fn push(&mut self, key: &[u8], value: u64) {
        match &mut self.records {
            Records::Narrow { keys, .. } => keys.push(Keyed {
                key: be_number(key) as u64,
                value,
            }),
            Records::Medium { keys, .. } => keys.push(Keyed {
                key: be_number(key),
                value,
            }),
            Records::Long { keys, .. } => keys.push(Keyed24 {
                prefix: be_number(&key[..16]),
                next: next_number(key),
                value,
            }),
            Records::Wide {
                prefixes,
                tails,
                values,
                ..
            } => {
                prefixes.push(Prefixed {
                    prefix: be_number(&key[..16]),
                    next: next_number(key),
                    row: values.len() as u32,
                });
                tails.extend_from_slice(&key[24..]);
                values.push(value);
            }
        }
    }

    /// Forgets every key, keeping the room made for them.
    pub fn clear(&mut self) {
        self.runs = Runs::default();
        match &mut self.records {
            Records::Narrow { keys, .. } => keys.clear(),
            Records::Medium { keys, .. } => keys.clear(),
            Records::Long { keys, .. } => keys.clear(),
            Records::Wide {
                prefixes,
                tails,
                values,
                ..
            } => {
                prefixes.clear();
                tails.clear();
                values.clear();
            }
        }
    }

    /// Ends a run: the keys pushed since the last run ended, which are
    /// merged with the runs before (as they come) if they are in order.
    pub fn end_run(&mut self) {
        let runs = &mut self.runs;
        match &mut self.records {
            Records::Narrow { keys, scratch, .. } => runs.end(keys, scratch, |k| k.key),
            Records::Medium { keys, scratch, .. } => runs.end(keys, scratch, |k| k.key),
            Records::Long { keys, scratch, .. } => runs.end(keys, scratch, Keyed24::order),
            Records::Wide {
                prefixes,
                scratch,
                tails,
                len,
                ..
            } => runs.end(prefixes, scratch, Prefixed::order(tails, *len)),
        }
    }

    /// Sorts the keys (equal keys stay in the order they were added): the
    /// runs merged if every key came in a run in order, else a radix sort.
    pub fn sort(&mut self) {
        let runs = &mut self.runs;
        match &mut self.records {
            Records::Narrow { keys, scratch, .. } => {
                if !runs.merge_all(keys, scratch, |k| k.key) {
                    radsort::sort_by_key(keys, |keyed| keyed.key);
                }
            }
            Records::Medium { keys, scratch, .. } => {
                if !runs.merge_all(keys, scratch, |k| k.key) {
                    radsort::sort_by_key(keys, |keyed| keyed.key);
                }
            }
            Records::Long { keys, scratch, .. } => {
                if !runs.merge_all(keys, scratch, Keyed24::order) {
                    sort_by_prefix(
                        keys,
                        |keyed| keyed.prefix,
                        |x, y| {
                            let (x, y) = (x.next, y.next);
                            x.cmp(&y)
                        },
                    );
                }
            }
            Records::Wide {
                prefixes,
                scratch,
                tails,
                len,
                ..
            } => {
                let order = Prefixed::order(tails, *len);
                if !runs.merge_all(prefixes, scratch, order) {
                    sort_by_prefix(
                        prefixes,
                        |keyed| keyed.prefix,
                        |x, y| order(x).cmp(&order(y)),
                    );
                }
            }
        }
        self.runs = Runs::default();
    }

    /// Calls `f` with each key's sort bytes, its value, and whether its
    /// bytes are the previous key's (a key read twice from a map that
    /// changed as it was read, or keys equal but for padding), in order
    /// once sorted.
    pub fn for_each(&self, mut f: impl FnMut(&[u8], u64, bool)) {
        match &self.records {
            Records::Narrow { keys, len, .. } => {
                let mut previous = None;
                for &Keyed { key, value } in keys {
                    f(&key.to_be_bytes()[8 - len..], value, previous == Some(key));
                    previous = Some(key);
                }
            }
            Records::Medium { keys, len, .. } => {
                let mut previous = None;
                for &Keyed { key, value } in keys {
                    f(&key.to_be_bytes()[16 - len..], value, previous == Some(key));
                    previous = Some(key);
                }
            }
            Records::Long { keys, len, .. } => {
                let mut previous = None;
                let mut sort = [0u8; 24];
                for &Keyed24 {
                    prefix,
                    next,
                    value,
                } in keys
                {
                    sort[..16].copy_from_slice(&prefix.to_be_bytes());
                    sort[16..].copy_from_slice(&next.to_be_bytes());
                    f(&sort[..*len], value, previous == Some((prefix, next)));
                    previous = Some((prefix, next));
                }
            }
            Records::Wide {
                prefixes,
                tails,
                values,
                len,
                ..
            } => {
                let order = Prefixed::order(tails, *len);
                let mut sort = vec![0u8; *len];
                let mut previous = None;
                for keyed in prefixes {
                    let (prefix, next, tail) = order(keyed);
                    sort[..16].copy_from_slice(&prefix.to_be_bytes());
                    sort[16..24].copy_from_slice(&next.to_be_bytes());
                    sort[24..].copy_from_slice(tail);
                    let same = previous == Some((prefix, next, tail));
                    f(&sort, values[keyed.row as usize], same);
                    previous = Some((prefix, next, tail));
                }
            }
        }
    }
}

impl Keyed24 {
    /// What orders it: its 24 sort bytes as two numbers.
    fn order(&self) -> (u128, u64) {
        (self.prefix, self.next)
    }
}

impl Prefixed {
    /// What orders a longer key of `len` bytes whose bytes past the 24th
    /// are in `tails` by row: its first 24 as two numbers, then the rest.
    fn order<'t>(
        tails: &'t [u8],
        len: usize,
    ) -> impl Fn(&Prefixed) -> (u128, u64, &'t [u8]) + Copy + 't {
        let tail = len - 24;
        move |keyed| {
            let row = keyed.row as usize;
            (
                keyed.prefix,
                keyed.next,
                &tails[row * tail..(row + 1) * tail],
            )
        }
    }
}

/// Runs of records, each in order, merged as they come.
struct Runs {
    /// Where each run not merged yet ends, the first from the start.
    ends: Vec<usize>,
    /// Whether every run ended so far was in order.
    in_order: bool,
}

impl Default for Runs {
    fn default() -> Runs {
        Runs {
            ends: Vec::new(),
            in_order: true,
        }
    }
}

impl Runs {
    /// Ends the run of `records` after the last one ended, and merges runs
    /// while the one below is no longer than the one above: runs then
    /// halve in size from the bottom, so that each record is merged about
    /// log2(runs) times and the merges after the last run are few.
    fn end<T: Copy, K: Ord>(
        &mut self,
        records: &mut [T],
        scratch: &mut Vec<T>,
        order: impl Fn(&T) -> K + Copy,
    ) {
        let start = self.ends.last().copied().unwrap_or(0);
        if !self.in_order || start == records.len() {
            return;
        }
        if !records[start..].is_sorted_by_key(order) {
            self.in_order = false;
            return;
        }
        self.ends.push(records.len());
        while let Some((below, top, end)) = self.top_two() {
            if top - below > end - top {
                break;
            }
            self.merge_top(records, scratch, order);
        }
    }

    /// The two runs on top, if there are two: where the one below starts,
    /// where the top one starts, and where it ends.
    fn top_two(&self) -> Option<(usize, usize, usize)> {
        match self.ends[..] {
            [.., below, top, end] => Some((below, top, end)),
            [top, end] => Some((0, top, end)),
            _ => None,
        }
    }

    /// Merges every run: false (nothing done) unless every record pushed
    /// is in a run that was in order.
    fn merge_all<T: Copy, K: Ord>(
        &mut self,
        records: &mut [T],
        scratch: &mut Vec<T>,
        order: impl Fn(&T) -> K + Copy,
    ) -> bool {
        if !self.in_order || self.ends.last().copied().unwrap_or(0) != records.len() {
            return false;
        }
        while self.ends.len() > 1 {
            self.merge_top(records, scratch, order);
        }
        true
    }

    /// Merges the two runs on top into one.
    fn merge_top<T: Copy, K: Ord>(
        &mut self,
        records: &mut [T],
        scratch: &mut Vec<T>,
        order: impl Fn(&T) -> K,
    ) {
        if let Some((start, middle, end)) = self.top_two() {
            merge(&mut records[start..end], middle - start, scratch, order);
            self.ends.remove(self.ends.len() - 2);
        }
    }
}

/// Merges `run[..middle]` and `run[middle..]`, each in order, keeping equal
/// records in the order they were in.
fn merge<T: Copy, K: Ord>(
    run: &mut [T],
    middle: usize,
    scratch: &mut Vec<T>,
    order: impl Fn(&T) -> K,
) {
    if middle == 0 || middle == run.len() || order(&run[middle - 1]) <= order(&run[middle]) {
        return;
    }
    // The upper run (never the longer) set aside, the two merged from
    // their ends: the larger record goes last, the upper run's on a tie.
    scratch.clear();
    scratch.extend_from_slice(&run[middle..]);
    let (mut lower, mut upper) = (middle, scratch.len());
    while lower > 0 && upper > 0 {
        if order(&scratch[upper - 1]) >= order(&run[lower - 1]) {
            upper -= 1;
            run[lower + upper] = scratch[upper];
        } else {
            lower -= 1;
            run[lower + upper] = run[lower];
        }
    }
    // What is left of the lower run is in place already.
    run[..upper].copy_from_slice(&scratch[..upper]);
}

/// Sorts `records` by a 16-byte prefix (a radix sort), then each run of
/// equal prefixes by `rest` (stable: equal records keep their order).
fn sort_by_prefix<T: Copy>(
    records: &mut [T],
    prefix: impl Fn(&T) -> u128 + Copy,
    mut rest: impl FnMut(&T, &T) -> std::cmp::Ordering,
) {
    radsort::sort_by_key(records, prefix);
    let mut start = 0;
    for at in 1..=records.len() {
        let first = prefix(&records[start]);
        if records.get(at).map(prefix) != Some(first) {
            if at - start > 1 {
                records[start..at].sort_by(&mut rest);
            }
            start = at;
        }
    }
}

/// A key's bytes 16 to 24 as a number, zero-padded on the right (the
/// bytes' order).
fn next_number(key: &[u8]) -> u64 {
    let next = &key[16.min(key.len())..key.len().min(24)];
    (be_number(next) as u64) << (8 * (8 - next.len()))
}

/// Up to 16 bytes as a big-endian number.
fn be_number(bytes: &[u8]) -> u128 {
    bytes
        .iter()
        .fold(0u128, |number, &byte| (number << 8) | u128::from(byte))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_come_out_in_the_order_of_their_bytes() {
        // Keys of 1 to 30 bytes: each kind of sort key at its edges, and
        // keys longer than what a wide key's record holds.
        for len in [1usize, 12, 17, 20, 24, 30] {
            let mut state = 0x2545_f491_4f6c_dd1du64;
            let keys: Vec<Vec<u8>> = (0..3000)
                .map(|_| {
                    (0..len)
                        .map(|_| {
                            state ^= state << 13;
                            state ^= state >> 7;
                            state ^= state << 17;
                            // Few distinct bytes: long runs of equal prefixes.
                            (state % 3) as u8
                        })
                        .collect()
                })
                .collect();
            let mut sort_keys = SortKeys::new(len, keys.len());
            for (row, key) in keys.iter().enumerate() {
                sort_keys.push(key, row as u64);
            }
            let mut got = Vec::new();
            sort_keys.sort();
            sort_keys.for_each(|key, row, same| got.push((key.to_vec(), row, same)));
            // Stable: equal keys keep the order they were added in.
            let mut want: Vec<(Vec<u8>, u64)> = keys.iter().cloned().zip(0..).collect();
            want.sort();
            let same: Vec<bool> = (0..want.len())
                .map(|at| at > 0 && want[at - 1].0 == want[at].0)
                .collect();
            let want: Vec<(Vec<u8>, u64, bool)> = want
                .into_iter()
                .zip(same)
                .map(|((k, r), s)| (k, r, s))
                .collect();
            assert_eq!(got, want, "{len} bytes");
        }
    }

    /// Keys pushed in runs, each in order or not, of sizes that make runs
    /// merge at every depth, come out as if sorted whole (stable).
    #[test]
    fn runs_merge_into_the_order_of_a_whole_sort() {
        for len in [1usize, 12, 20, 30] {
            for unordered_run in [None, Some(3)] {
                let mut state = 0x9e37_79b9_7f4a_7c15u64;
                let mut random = || {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state
                };
                let mut pushed: Vec<(Vec<u8>, u64)> = Vec::new();
                let mut sort_keys = SortKeys::new(len, 0);
                for (run, size) in [1usize, 7, 300, 1000, 0, 50, 2, 640, 1, 1, 999]
                    .into_iter()
                    .enumerate()
                {
                    let mut keys: Vec<Vec<u8>> = (0..size)
                        .map(|_| (0..len).map(|_| (random() % 3) as u8).collect())
                        .collect();
                    if unordered_run != Some(run) {
                        keys.sort();
                    }
                    for key in keys {
                        let row = pushed.len() as u64;
                        sort_keys.push(&key, row);
                        pushed.push((key, row));
                    }
                    sort_keys.end_run();
                }
                sort_keys.sort();
                let mut got = Vec::new();
                sort_keys.for_each(|key, row, _| got.push((key.to_vec(), row)));
                pushed.sort();
                assert_eq!(got, pushed, "{len} bytes, unordered run {unordered_run:?}");
            }
        }
    }

    #[test]
    fn integers_sort_as_numbers_and_bytes_as_bytes() {
        let spec = "[[metrics.counters]]\nname = \"x_total\"\nhelp = \"X.\"\n\
            [[metrics.counters.labels]]\nname = \"n\"\nsize = 4\npadding = 4\ndecoders = [{ name = \"uint\" }]\n\
            [[metrics.counters.labels]]\nname = \"h\"\nsize = 2\ndecoders = [{ name = \"hex\" }]\n";
        let config = crate::spec::Config::parse("t", "t", spec, crate::spec::Format::Toml).unwrap();
        let plan = crate::plan::Plan::compile(&config).unwrap();
        let order = KeyOrder::new(&plan.metrics[0].labels, None);
        assert_eq!(order.len(), 6);
        let mut key = Vec::new();
        key.extend_from_slice(&258u32.to_ne_bytes());
        key.extend_from_slice(&[9, 9, 9, 9, 0xab, 0x01]);
        let mut out = [0u8; 6];
        order.write(&key, &[], &mut out);
        assert_eq!(out, [0, 0, 1, 2, 0xab, 0x01]);
    }
}
