//! The order of a family's series: by the bytes of their keys, each
//! integer label read as a number (so `pid="9"` comes before `pid="10"`,
//! and an address or a CPU number in numeric order).
//!
//! Any stable order serves the text format (node_exporter, diffs and tests
//! need the same order for the same series, not a particular one), and this
//! one is known before a value is decoded: sorting a million keys is one
//! radix sort of fixed-size numbers, whichever decoders their labels use,
//! with no string compared.

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

/// A longer key's first 24 sort bytes, and where the whole is: keys that
/// share their first 16 bytes (a pid and a comm) are ordered by the next 8
/// without reading the whole key from elsewhere.
#[derive(Clone, Copy)]
#[repr(C, packed)]
pub(super) struct Prefixed {
    prefix: u128,
    next: u64,
    row: u32,
}

/// Every key's sort bytes and value, as keys are read; then sorted
/// ([`SortKeys::sort`], [`SortKeys::for_each`]).
pub(super) enum SortKeys {
    /// Keys of up to 8 bytes, as big-endian numbers.
    Narrow { keys: Vec<Keyed<u64>>, len: usize },
    /// Keys of up to 16 bytes.
    Medium { keys: Vec<Keyed<u128>>, len: usize },
    /// Keys of up to 24 bytes (a `string` and an integer, an address and a
    /// port): whole, with their values, as the shorter ones.
    Long { keys: Vec<Keyed24>, len: usize },
    /// Longer keys: their first 16 bytes, and every key's whole bytes and
    /// value by row (once sorted, in order).
    Wide {
        prefixes: Vec<Prefixed>,
        bytes: Vec<u8>,
        values: Vec<u64>,
        len: usize,
    },
}

impl SortKeys {
    /// Sort keys of `len` bytes, room for `rows`.
    pub fn new(len: usize, rows: usize) -> SortKeys {
        match len {
            0..=8 => SortKeys::Narrow {
                keys: Vec::with_capacity(rows),
                len,
            },
            9..=16 => SortKeys::Medium {
                keys: Vec::with_capacity(rows),
                len,
            },
            17..=24 => SortKeys::Long {
                keys: Vec::with_capacity(rows),
                len,
            },
            _ => SortKeys::Wide {
                prefixes: Vec::with_capacity(rows),
                bytes: Vec::with_capacity(rows * len),
                values: Vec::with_capacity(rows),
                len,
            },
        }
    }

    /// Adds a key's sort bytes and its value.
    pub fn push(&mut self, key: &[u8], value: u64) {
        match self {
            SortKeys::Narrow { keys, .. } => keys.push(Keyed {
                key: be_number(key) as u64,
                value,
            }),
            SortKeys::Medium { keys, .. } => keys.push(Keyed {
                key: be_number(key),
                value,
            }),
            SortKeys::Long { keys, .. } => keys.push(Keyed24 {
                prefix: be_number(&key[..16]),
                next: next_number(key),
                value,
            }),
            SortKeys::Wide {
                prefixes,
                bytes,
                values,
                ..
            } => {
                let row = prefixes.len() as u32;
                prefixes.push(Prefixed {
                    prefix: be_number(&key[..16]),
                    next: next_number(key),
                    row,
                });
                bytes.extend_from_slice(key);
                values.push(value);
            }
        }
    }

    /// Forgets every key, keeping the room made for them.
    pub fn clear(&mut self) {
        match self {
            SortKeys::Narrow { keys, .. } => keys.clear(),
            SortKeys::Medium { keys, .. } => keys.clear(),
            SortKeys::Long { keys, .. } => keys.clear(),
            SortKeys::Wide {
                prefixes,
                bytes,
                values,
                ..
            } => {
                prefixes.clear();
                bytes.clear();
                values.clear();
            }
        }
    }

    /// Sorts the keys (equal keys stay in the order they were added).
    pub fn sort(&mut self) {
        match self {
            SortKeys::Narrow { keys, .. } => radsort::sort_by_key(keys, |keyed| keyed.key),
            SortKeys::Medium { keys, .. } => radsort::sort_by_key(keys, |keyed| keyed.key),
            SortKeys::Long { keys, .. } => sort_by_prefix(
                keys,
                |keyed| keyed.prefix,
                |x, y| {
                    let (x, y) = (x.next, y.next);
                    x.cmp(&y)
                },
            ),
            SortKeys::Wide {
                prefixes,
                bytes,
                values,
                len,
            } => {
                let whole = |row: u32| &bytes[row as usize * *len..(row as usize + 1) * *len];
                let order = sorted_wide(std::mem::take(prefixes), &whole);
                // Moved into order once, in loops of independent loads, so
                // that reading them in order reads memory front to back.
                let mut sorted = Vec::with_capacity(bytes.len());
                for &row in &order {
                    sorted.extend_from_slice(whole(row));
                }
                *values = order.iter().map(|&row| values[row as usize]).collect();
                *bytes = sorted;
            }
        }
    }

    /// Calls `f` with each key's sort bytes, its value, and whether its
    /// bytes are the previous key's (a key read twice from a map that
    /// changed as it was read, or keys equal but for padding), in order
    /// once sorted.
    pub fn for_each(&self, mut f: impl FnMut(&[u8], u64, bool)) {
        match self {
            SortKeys::Narrow { keys, len } => {
                let mut previous = None;
                for &Keyed { key, value } in keys {
                    f(&key.to_be_bytes()[8 - len..], value, previous == Some(key));
                    previous = Some(key);
                }
            }
            SortKeys::Medium { keys, len } => {
                let mut previous = None;
                for &Keyed { key, value } in keys {
                    f(&key.to_be_bytes()[16 - len..], value, previous == Some(key));
                    previous = Some(key);
                }
            }
            SortKeys::Long { keys, len } => {
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
            SortKeys::Wide {
                bytes, values, len, ..
            } => {
                let mut previous: Option<&[u8]> = None;
                for (key, &value) in bytes.chunks_exact(*len).zip(values) {
                    f(key, value, previous == Some(key));
                    previous = Some(key);
                }
            }
        }
    }
}

/// The rows of longer keys in order: by their first 16 bytes, then the
/// next 8 and the rest (stable).
fn sorted_wide<'b>(mut prefixes: Vec<Prefixed>, whole: &impl Fn(u32) -> &'b [u8]) -> Vec<u32> {
    // Bytes past the 24th are read from the whole key, rarely.
    let rest = |row: u32| {
        let key = whole(row);
        &key[key.len().min(24)..]
    };
    sort_by_prefix(
        &mut prefixes,
        |keyed| keyed.prefix,
        |x, y| {
            let (x_next, y_next) = (x.next, y.next);
            x_next
                .cmp(&y_next)
                .then_with(|| rest(x.row).cmp(rest(y.row)))
        },
    );
    prefixes.iter().map(|keyed| keyed.row).collect()
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
