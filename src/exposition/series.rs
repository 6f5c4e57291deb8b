//! Decoding a whole map into series, fast: what `counters` and the text
//! encoder share.
//!
//! Each label's decoder chain runs once per distinct label bytes, not once
//! per key (a map of a million `{pid, syscall}` keys has a few hundred
//! distinct syscalls): the label bytes are looked up in a per-label cache
//! that holds the decoded value's index. A series is then a row of small
//! integers, one per label, ranked so that integer order is the order of the
//! label values as strings; rows are sorted (packed into one `u64` when they
//! fit) and rows with equal values merged, their values added in map order —
//! exactly the series, order and sums a `BTreeMap<Vec<String>, f64>` over
//! the decoded keys gives, without a string or a vector per key.

use std::collections::BTreeMap;

use super::labels::{LabelCache, Values, REJECTED};
use crate::plan::Label;
use crate::snapshot::MapData;

/// Decoded series of one map, in label-value order; keys with equal label
/// values are merged as the series are read.
pub struct Table {
    /// Per label: its distinct values, sorted (or, after a first label
    /// whose values are all distinct, in the order they came).
    pub values: Vec<Values>,
    labels: usize,
    sorted: Sorted,
    /// Set by [`Table::cap`]: the smallest value kept, and how many series
    /// of exactly that value are kept.
    threshold: Option<(f64, usize)>,
    /// Series kept at most.
    cap: usize,
}

enum Sorted {
    /// Each key's label ranks packed into one u64 (the first label in the
    /// highest bits, `bits` each), with the key's value; sorted by the
    /// packed ranks, keys with equal ranks in map order.
    Packed {
        keys: Vec<(u64, f64)>,
        bits: Vec<u32>,
    },
    /// Too many labels to pack: rows of ranks (`labels` per key) and values
    /// in map order, and the order of the keys.
    Rows {
        rows: Vec<u32>,
        totals: Vec<f64>,
        order: Vec<u32>,
    },
}

impl Table {
    /// Whether there is no series.
    pub fn is_empty(&self) -> bool {
        self.keys() == 0
    }

    /// Number of keys (series before merging).
    fn keys(&self) -> usize {
        match &self.sorted {
            Sorted::Packed { keys, .. } => keys.len(),
            Sorted::Rows { order, .. } => order.len(),
        }
    }

    /// Keeps at most `cap` series: those with the largest values (on equal
    /// values, the first in label order). Returns how many are left out.
    pub fn cap(&mut self, cap: usize) -> usize {
        let mut totals = Vec::new();
        self.for_each_merged(|_, value| totals.push(value));
        let series = totals.len();
        if series <= cap {
            return 0;
        }
        let cap = cap.max(1);
        let (_, nth, _) = totals.select_nth_unstable_by(cap - 1, |a, b| b.total_cmp(a));
        let nth = *nth;
        let above = totals.iter().filter(|v| v.total_cmp(&nth).is_gt()).count();
        self.threshold = Some((nth, cap - above));
        self.cap = cap;
        series - cap
    }

    /// Calls `f` with (label value indices, value) of every series kept (see
    /// [`Table::cap`]), in order; the values of keys with equal labels added
    /// in map order.
    pub fn for_each_series(&self, mut f: impl FnMut(&[u32], f64)) {
        let Some((nth, mut room)) = self.threshold else {
            return self.for_each_merged(f);
        };
        self.for_each_merged(|row, value| {
            let kept = match value.total_cmp(&nth) {
                std::cmp::Ordering::Greater => true,
                std::cmp::Ordering::Equal if room > 0 => {
                    room -= 1;
                    true
                }
                _ => false,
            };
            if kept {
                f(row, value);
            }
        });
    }

    /// [`Table::for_each_series`] of every series, cap or not.
    fn for_each_merged(&self, mut f: impl FnMut(&[u32], f64)) {
        let width = self.labels;
        match &self.sorted {
            Sorted::Packed { keys, bits } => {
                let mut row = vec![0u32; width];
                let mut at = 0;
                while at < keys.len() {
                    let (packed, value) = keys[at];
                    let mut total = 0.0 + value;
                    at += 1;
                    while at < keys.len() && keys[at].0 == packed {
                        total += keys[at].1;
                        at += 1;
                    }
                    let mut rest = packed;
                    for (rank, &b) in row.iter_mut().zip(bits).rev() {
                        *rank = (rest & ((1u64 << b) - 1)) as u32;
                        rest = rest.checked_shr(b).unwrap_or(0);
                    }
                    f(&row, total);
                }
            }
            Sorted::Rows {
                rows,
                totals,
                order,
            } => {
                let row_of = |key: u32| &rows[key as usize * width..(key as usize + 1) * width];
                let mut at = 0;
                while at < order.len() {
                    let first = order[at];
                    let row = row_of(first);
                    let mut total = 0.0 + totals[first as usize];
                    at += 1;
                    while at < order.len() && row_of(order[at]) == row {
                        total += totals[order[at] as usize];
                        at += 1;
                    }
                    f(row, total);
                }
            }
        }
    }

    /// Appends the samples in the text format: `name{a="x",b="y"} value`
    /// per series kept. Text values are escaped once per distinct value
    /// (numbers are written straight in), and the line up to the last
    /// label is kept from one series to the next (sorted series share it in
    /// runs).
    pub fn encode_samples(&self, name: &str, label_names: &[&str], out: &mut String) {
        let width = self.labels;
        let escaped: Vec<Escaped> = self.values.iter().map(Escaped::of).collect();
        let (prefixes, tails) = line_pieces(label_names, &escaped);
        // `line`: the name and every label but the last; `marks[l]`: its
        // length before label l.
        let mut line = String::from(name);
        let mut marks = vec![name.len(); width];
        let mut previous: Vec<Option<u32>> = vec![None; width];
        let start = out.len();
        let keys = self.keys();
        let series = keys.min(self.cap);
        let mut first = true;
        self.for_each_series(|row, value| {
            if let Some((&last, leading)) = row.split_last() {
                if let Some(changed) = (0..leading.len()).find(|&l| previous[l] != Some(row[l])) {
                    line.truncate(marks[changed]);
                    for l in changed..leading.len() {
                        marks[l] = line.len();
                        line.push_str(&prefixes[l]);
                        escaped[l].push(&self.values[l], row[l], &mut line);
                        previous[l] = Some(row[l]);
                    }
                }
                out.push_str(&line);
                match tails.get(last as usize) {
                    Some(tail) => out.push_str(tail),
                    None => {
                        out.push_str(&prefixes[width - 1]);
                        escaped[width - 1].push(&self.values[width - 1], last, out);
                        out.push_str("\"} ");
                    }
                }
            } else {
                out.push_str(name);
                out.push(' ');
            }
            super::text::push_float(out, value);
            out.push('\n');
            // Room for every key's line (merged keys only leave some over).
            if first && series > 1 {
                out.reserve((out.len() - start + 2) * (series - 1));
            }
            first = false;
        });
    }
}

/// The pieces of a sample's line: each label's `{name="` or `",name="`, and
/// for text values of the last label, each value's text with the line's
/// end (a number's is written each time).
fn line_pieces(label_names: &[&str], escaped: &[Escaped]) -> (Vec<String>, Vec<String>) {
    let prefixes: Vec<String> = label_names
        .iter()
        .enumerate()
        .map(|(i, label)| match i {
            0 => format!("{{{label}=\""),
            _ => format!("\",{label}=\""),
        })
        .collect();
    let tails: Vec<String> = match (prefixes.last(), escaped.last()) {
        (Some(prefix), Some(Escaped::Text(values))) => values
            .iter()
            .map(|value| format!("{prefix}{value}\"}} "))
            .collect(),
        _ => Vec::new(),
    };
    (prefixes, tails)
}

/// A label's values as the encoder writes them: text escaped once per
/// value, numbers written as they come.
enum Escaped {
    Text(Vec<String>),
    Direct,
}

impl Escaped {
    fn of(values: &Values) -> Escaped {
        if values.writes_directly() {
            return Escaped::Direct;
        }
        Escaped::Text(
            (0..values.len())
                .map(|index| {
                    let mut text = String::new();
                    values.push_escaped(index, &mut text);
                    text
                })
                .collect(),
        )
    }

    /// Appends value `index` of `values`, escaped.
    fn push(&self, values: &Values, index: u32, out: &mut String) {
        match self {
            Escaped::Text(escaped) => out.push_str(&escaped[index as usize]),
            Escaped::Direct => values.push_escaped(index as usize, out),
        }
    }
}

/// Bytes of CPU number `cpu` as a label of `size` bytes (host-endian), as
/// the key of a per-CPU map gets them; None when no such label can be
/// read (more than 8 bytes: the key would be too short).
pub(crate) fn cpu_bytes(cpu: usize, size: usize) -> Option<([u8; 8], usize)> {
    let cpu = cpu as u64;
    let mut bytes = [0u8; 8];
    match size {
        1 => bytes[0] = cpu as u8,
        2 => bytes[..2].copy_from_slice(&(cpu as u16).to_ne_bytes()),
        4 => bytes[..4].copy_from_slice(&(cpu as u32).to_ne_bytes()),
        size if size <= 8 => bytes[..size].copy_from_slice(&cpu.to_ne_bytes()[..size]),
        _ => return None,
    }
    Some((bytes, size))
}

/// Decodes every counter series of `map`: values summed over CPUs (or split
/// by CPU into the last label `cpu`), zero entries of arrays left out, keys
/// a decoder rejects skipped and counted in `errors`.
pub(crate) fn counter_table(
    labels: &[Label],
    cpu_label: Option<usize>,
    map: &MapData,
    errors: &mut BTreeMap<&'static str, u64>,
) -> Table {
    let width = labels.len();
    let mut rows = Rows {
        labels,
        // The `cpu` label's size: its bytes come from the CPU number.
        cpu_size: cpu_label.map(|index| labels[index].size),
        caches: labels
            .iter()
            .map(|label| LabelCache::new(&label.decoders, label.size))
            .collect(),
        rows: Vec::with_capacity(map.len() * width),
        totals: Vec::with_capacity(map.len()),
    };
    for (key, per_cpu) in map.entries() {
        if rows.cpu_size.is_some() {
            for (cpu, value) in per_cpu.iter().enumerate().filter(|(_, v)| **v != 0) {
                rows.add(key, Some(cpu), *value, errors);
            }
            continue;
        }
        let total: u64 = per_cpu.iter().fold(0u64, |sum, v| sum.wrapping_add(*v));
        if map.is_array && total == 0 {
            continue;
        }
        rows.add(key, None, total, errors);
    }
    let (values, sorted) = order(rows.caches, rows.rows, rows.totals, width);
    Table {
        values,
        labels: width,
        sorted,
        threshold: None,
        cap: usize::MAX,
    }
}

/// A map's keys decoded into rows of value ids (one per label), with their
/// values, in map order.
struct Rows<'l> {
    labels: &'l [Label],
    /// With a `cpu` label: its size.
    cpu_size: Option<usize>,
    caches: Vec<LabelCache<'l>>,
    rows: Vec<u32>,
    totals: Vec<f64>,
}

impl Rows<'_> {
    /// Adds the row of `key` (with `cpu` for the last label, if split by
    /// CPU) and `value`; nothing if a label's bytes are missing or a decoder
    /// rejects them (an error counted in `errors`, a skip not).
    fn add(
        &mut self,
        key: &[u8],
        cpu: Option<usize>,
        value: u64,
        errors: &mut BTreeMap<&'static str, u64>,
    ) {
        let width = self.labels.len();
        let mut offset = 0;
        for (i, label) in self.labels.iter().enumerate() {
            let cpu_field = match (cpu, self.cpu_size) {
                (Some(cpu), Some(size)) if i + 1 == width => Some(cpu_bytes(cpu, size)),
                _ => None,
            };
            let bytes = match &cpu_field {
                Some(field) => field.as_ref().map(|(bytes, size)| &bytes[..*size]),
                None => key.get(offset..offset + label.size),
            };
            let id = bytes.map(|bytes| self.caches[i].id(bytes));
            let Some(id) = id.filter(|id| id & REJECTED == 0) else {
                if let Some((decoder, false)) = id.and_then(|id| self.caches[i].rejection(id)) {
                    *errors.entry(decoder).or_default() += 1;
                }
                self.rows.truncate(self.totals.len() * width);
                return;
            };
            self.rows.push(id);
            offset += label.span();
        }
        self.totals.push(value as f64);
    }
}

/// Ranks each label's values and orders the keys by them: (per label its
/// values, the keys in order). When the first label's values are all
/// distinct (an address, a thread's comm and id), they alone give the
/// order: the other labels keep their values in the order they came (their
/// ids are their indices) and no sort of the rows is needed.
fn order(
    caches: Vec<LabelCache>,
    mut rows: Vec<u32>,
    totals: Vec<f64>,
    width: usize,
) -> (Vec<Values>, Sorted) {
    let mut values = Vec::with_capacity(width);
    let mut caches = caches.into_iter();
    let Some(first) = caches.next() else {
        return (values, sort(rows, totals, width, &[]));
    };
    let (ranks, sorted) = first.ranks();
    for id in rows.iter_mut().step_by(width) {
        *id = ranks[*id as usize];
    }
    drop(ranks);
    let in_order = match sorted.len() == totals.len() {
        true => in_first_label_order(&rows, &totals, width),
        false => None,
    };
    values.push(sorted);
    if let Some(in_order) = in_order {
        values.extend(caches.map(LabelCache::into_values));
        return (values, in_order);
    }
    for (label, cache) in caches.enumerate() {
        let (ranks, sorted) = cache.ranks();
        for id in rows.iter_mut().skip(label + 1).step_by(width) {
            *id = ranks[*id as usize];
        }
        values.push(sorted);
    }
    let sorted = sort(rows, totals, width, &values);
    (values, sorted)
}

/// The keys in the order of their first label's ranks, when those are a
/// permutation of the keys (as many values as keys is not enough: a value
/// may be left only by keys another label rejected): the rows and values
/// moved into that order, to be read in order later.
fn in_first_label_order(rows: &[u32], totals: &[f64], width: usize) -> Option<Sorted> {
    let mut order = vec![u32::MAX; totals.len()];
    for (key, row) in rows.chunks_exact(width).enumerate() {
        let place = order.get_mut(row[0] as usize)?;
        if *place != u32::MAX {
            return None;
        }
        *place = key as u32;
    }
    let row = |key: u32| &rows[key as usize * width..(key as usize + 1) * width];
    Some(Sorted::Rows {
        rows: order.iter().flat_map(|&key| row(key)).copied().collect(),
        totals: order.iter().map(|&key| totals[key as usize]).collect(),
        order: (0..totals.len() as u32).collect(),
    })
}

/// Sorts the keys by their rows of ranks, keeping keys with equal rows in
/// map order.
fn sort(rows: Vec<u32>, totals: Vec<f64>, width: usize, values: &[Values]) -> Sorted {
    // Bits each label's rank needs: when they fit in 64, one u64 per key is
    // the whole sort key, sorted by a (stable) radix sort.
    let bits: Vec<u32> = values.iter().map(|v| bits_for(v.len())).collect();
    let label_bits: u32 = bits.iter().sum();
    if label_bits <= 64 {
        let mut keys: Vec<(u64, f64)> = totals
            .iter()
            .enumerate()
            .map(|(i, &total)| {
                let packed = bits.iter().zip(&rows[i * width..(i + 1) * width]).fold(
                    0u64,
                    |key, (&b, &rank)| match b {
                        0 => key,
                        b => key.checked_shl(b).unwrap_or(0) | u64::from(rank),
                    },
                );
                (packed, total)
            })
            .collect();
        drop(rows);
        drop(totals);
        radsort::sort_by_key(&mut keys, |(key, _)| *key);
        return Sorted::Packed { keys, bits };
    }
    let mut order: Vec<u32> = (0..totals.len() as u32).collect();
    order.sort_by(|&a, &b| {
        let (a, b) = (a as usize, b as usize);
        rows[a * width..(a + 1) * width].cmp(&rows[b * width..(b + 1) * width])
    });
    Sorted::Rows {
        rows,
        totals,
        order,
    }
}

/// Bits that numbers below `n` need.
fn bits_for(n: usize) -> u32 {
    usize::BITS - n.saturating_sub(1).leading_zeros()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_for_counts() {
        assert_eq!(bits_for(0), 0);
        assert_eq!(bits_for(1), 0);
        assert_eq!(bits_for(2), 1);
        assert_eq!(bits_for(256), 8);
        assert_eq!(bits_for(257), 9);
    }
}
