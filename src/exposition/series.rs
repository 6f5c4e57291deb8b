//! Decoding a whole map into series, fast: what counters and the text
//! encoder share.
//!
//! Each key becomes a row as it is read, batch by batch (the kernel copies
//! out the next batch meanwhile, see `snapshot::Unread`): per label the id
//! of its decoded value (a label's decoders run once per distinct label
//! bytes while they repeat, see `labels`); keys that fold share a row (see
//! `rows`). Rows are then ordered by their keys' bytes (`keys`): each batch
//! sorted as fixed-size numbers and the batches merged, whichever decoders
//! the labels use. Keys whose labels are all equal become one series,
//! their values added: keys equal but for padding are next to each other
//! once sorted; keys whose bytes differ can only be equal where a decoder
//! gives different bytes one value (a `string` with bytes after its NUL,
//! `ksym`), and only then are series compared, by their values' text.

use std::collections::hash_map::Entry;
use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};

use rustc_hash::{FxHashMap, FxHasher};

use super::carry::Theirs;
use super::keys::{KeyOrder, SortKeys};
use super::labels::{Span, Values};
use super::rows::{Ids, Rows};
use super::spill::Spilling;
use crate::plan::Label;
use crate::snapshot::{ReadError, Source};

/// Decoded series of one map, in the order of their keys.
pub struct Table {
    /// Per label: its distinct values, by id.
    pub values: Vec<Values>,
    /// Per label: each row's value id.
    pub(super) ids: Vec<Ids>,
    /// The series in order.
    series: Vec<Series>,
    /// Set by [`Table::cap`]: the smallest value kept, and how many series
    /// of exactly that value are kept.
    threshold: Option<(f64, usize)>,
}

/// A series: its first row, and the values of its rows added, exactly
/// (`f64` additions would round differently as the map's order changes,
/// and a counter that did not change could then go down: a reset to
/// `rate()`).
#[derive(Clone, Copy)]
pub(super) struct Series {
    row: u32,
    /// Bits 64 and up of the sum.
    high: u32,
    low: u64,
}

impl Series {
    pub(super) fn new(row: u32, value: u64) -> Series {
        Series {
            row,
            high: 0,
            low: value,
        }
    }

    pub(super) fn add(&mut self, value: u64) {
        let (low, carry) = self.low.overflowing_add(value);
        self.low = low;
        self.high = self.high.wrapping_add(u32::from(carry));
    }

    fn merge(&mut self, other: &Series) {
        self.add(other.low);
        self.high = self.high.wrapping_add(other.high);
    }

    fn total(&self) -> f64 {
        match self.high {
            // Nearly always: a u64's conversion is one instruction, a
            // u128's a call.
            0 => self.low as f64,
            high => ((u128::from(high) << 64) | u128::from(self.low)) as f64,
        }
    }
}

impl Table {
    /// The table of `series` (in order), their rows' value `ids` of each
    /// label's `values`.
    pub(super) fn new(values: Vec<Values>, ids: Vec<Ids>, series: Vec<Series>) -> Table {
        Table {
            values,
            ids,
            series,
            threshold: None,
        }
    }

    /// Whether there is no series.
    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }

    /// Keeps at most `cap` series: those with the largest values (on equal
    /// values, the first in order). Returns how many are left out.
    pub fn cap(&mut self, cap: usize) -> usize {
        let series = self.series.len();
        if series <= cap {
            return 0;
        }
        let cap = cap.max(1);
        let mut totals: Vec<f64> = self.series.iter().map(Series::total).collect();
        let (_, nth, _) = totals.select_nth_unstable_by(cap - 1, |a, b| b.total_cmp(a));
        let nth = *nth;
        let above = totals.iter().filter(|v| v.total_cmp(&nth).is_gt()).count();
        self.threshold = Some((nth, cap - above));
        series - cap
    }

    /// The series kept (see [`Table::cap`]), in order.
    fn kept(&self) -> impl Iterator<Item = &Series> + '_ {
        let mut room = self.threshold.map_or(0, |(_, room)| room);
        self.series
            .iter()
            .filter(move |series| match self.threshold {
                None => true,
                Some((nth, _)) => match series.total().total_cmp(&nth) {
                    std::cmp::Ordering::Greater => true,
                    std::cmp::Ordering::Equal if room > 0 => {
                        room -= 1;
                        true
                    }
                    _ => false,
                },
            })
    }

    /// Calls `f` with (label value ids, value) of every series kept (see
    /// [`Table::cap`]), in order.
    pub fn for_each_series(&self, mut f: impl FnMut(&[u32], f64)) {
        let mut row_ids = Vec::with_capacity(self.ids.len());
        for series in self.kept() {
            row_ids.clear();
            row_ids.extend(self.row_ids(series));
            f(&row_ids, series.total());
        }
    }

    /// The value ids of `series`' row, label by label.
    fn row_ids<'t>(&'t self, series: &Series) -> impl Iterator<Item = u32> + 't {
        Ids::of_row(&self.ids, series.row as usize)
    }

    /// Appends the samples in the text format: `name{a="x",b="y"} value`
    /// per series kept, each value plus that of the same series in
    /// `previous` (the file a run replaces: see `carry`) if given. Returns
    /// how many series it wrote.
    pub(super) fn encode_samples(
        &self,
        name: &str,
        label_names: &[&str],
        mut previous: Option<&mut Theirs<'_>>,
        out: &mut String,
        mut spill: Option<&mut Spilling<'_>>,
    ) -> usize {
        let prefixes: Vec<String> = label_names
            .iter()
            .enumerate()
            .map(|(i, label)| match i {
                0 => format!("{{{label}=\""),
                _ => format!("\",{label}=\""),
            })
            .collect();
        let end = if prefixes.is_empty() { " " } else { "\"} " };
        let width = self.ids.len();
        let mut kept = self.kept();
        let mut batch: Vec<Series> = Vec::with_capacity(AHEAD);
        let mut spans = Vec::with_capacity(AHEAD * width);
        let start = out.len();
        let mut reserve = true;
        let mut written = 0;
        loop {
            batch.clear();
            batch.extend(kept.by_ref().take(AHEAD));
            if batch.is_empty() {
                return written;
            }
            written += batch.len();
            self.load(&batch, &mut spans);
            for (series, spans) in batch.iter().zip(spans.chunks_exact(width.max(1))) {
                let line = out.len();
                out.push_str(name);
                for ((prefix, values), &span) in prefixes.iter().zip(&self.values).zip(spans) {
                    out.push_str(prefix);
                    values.push_escaped(span, out);
                }
                out.push_str(end);
                let carried = match previous.as_deref_mut() {
                    // The series as written: the line up to its value's space.
                    Some(previous) => previous.take(&out[line..out.len() - 1]).unwrap_or(0.0),
                    None => 0.0,
                };
                super::text::push_float(out, series.total() + carried);
                out.push('\n');
            }
            if let Some(spill) = spill.as_deref_mut() {
                spill.maybe(out);
                continue;
            }
            // Room for every series' line, from the first ones' length.
            if reserve {
                let per_line = (out.len() - start) / batch.len() + 2;
                out.reserve(per_line * self.series.len().saturating_sub(AHEAD));
                reserve = false;
            }
        }
    }

    /// The spans of the values of `batch`'s series (`labels` per series),
    /// their text loaded: each step a loop of loads independent of each
    /// other, so that the cache misses of many series overlap (rows are in
    /// key order, their ids and values in map order: nearly every load
    /// misses in a large map).
    fn load(&self, batch: &[Series], spans: &mut Vec<Span>) {
        let width = self.ids.len();
        spans.clear();
        for series in batch {
            spans.extend(self.row_ids(series).map(|id| (id as usize, 0)));
        }
        if width == 0 {
            // One (empty) row per series, for the writer's chunks.
            spans.resize(batch.len(), (0, 0));
            return;
        }
        for (at, span) in spans.iter_mut().enumerate() {
            *span = self.values[at % width].span(span.0);
        }
        let mut first_bytes = 0u8;
        for (at, &span) in spans.iter().enumerate() {
            first_bytes ^= self.values[at % width].first_byte(span);
        }
        std::hint::black_box(first_bytes);
    }
}

/// Series whose values [`Table::load`] loads ahead of writing them.
const AHEAD: usize = 64;

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
///
/// Keys are decoded as they are read, batch by batch (each batch in key
/// order, see [`OrderedBatch`]): a map still to read ([`Source::Unread`]) is read
/// on another thread meanwhile, so decoding costs next to nothing beside
/// the kernel's copying. Only then are the rows ordered, by their keys'
/// sort bytes, into series.
pub(crate) fn counter_table(
    labels: &[Label],
    cpu_label: Option<usize>,
    map: Source,
    errors: &mut BTreeMap<&'static str, u64>,
) -> Result<Table, ReadError> {
    let header = map.header();
    let (key_size, stride) = (header.key_size.max(1), header.values_per_key.max(1));
    let rows_hint = map.rows_hint();
    let mut batch = OrderedBatch::new(labels, cpu_label, header.is_array);
    let mut rows = Rows::new(labels, cpu_label, batch.order.len(), rows_hint);
    map.read(&mut |keys, values| {
        rows.start_batch();
        batch.order_entries(keys.chunks_exact(key_size), values.chunks_exact(stride));
        batch.for_each_in_order(|sort, at, cpu, value| {
            let key = &keys[at * key_size..(at + 1) * key_size];
            rows.add(key, cpu, sort, value, errors);
        });
        rows.end_batch();
    })?;
    Ok(rows.into_table())
}

/// One batch of a map's entries ordered by their keys before they are
/// decoded: the rows of each batch then come in key order, so that their
/// values, written later in the order of every key, are read as one
/// stream per batch rather than all over memory, and decoders that look
/// things up (kernel symbols) look up neighbours one after another.
struct OrderedBatch {
    order: KeyOrder,
    cpu_size: Option<usize>,
    is_array: bool,
    sort_keys: SortKeys,
    /// (entry, CPU of a map split by CPU, value) by sort record.
    entries: Vec<(usize, usize, u64)>,
    sort_bytes: Vec<u8>,
}

impl OrderedBatch {
    fn new(labels: &[Label], cpu_label: Option<usize>, is_array: bool) -> OrderedBatch {
        let order = KeyOrder::new(labels, cpu_label);
        OrderedBatch {
            cpu_size: cpu_label.map(|index| labels[index].size),
            is_array,
            sort_keys: SortKeys::new(order.len(), 0),
            entries: Vec::new(),
            sort_bytes: vec![0; order.len()],
            order,
        }
    }

    /// Orders the batch's entries (keys, and values by CPU): values summed
    /// over CPUs (or one record per CPU with a value, for a map split by
    /// CPU), zero entries of arrays left out.
    fn order_entries<'b>(
        &mut self,
        keys: impl Iterator<Item = &'b [u8]>,
        values: impl Iterator<Item = &'b [u64]>,
    ) {
        self.sort_keys.clear();
        self.entries.clear();
        for (at, (key, per_cpu)) in keys.zip(values).enumerate() {
            if let Some(size) = self.cpu_size {
                for (cpu, value) in per_cpu.iter().enumerate().filter(|(_, v)| **v != 0) {
                    // A `cpu` label of more than 8 bytes cannot be read.
                    if let Some((bytes, size)) = cpu_bytes(cpu, size) {
                        self.push(key, &bytes[..size], (at, cpu, *value));
                    }
                }
                continue;
            }
            let total: u64 = per_cpu.iter().fold(0u64, |sum, v| sum.wrapping_add(*v));
            if !(self.is_array && total == 0) {
                self.push(key, &[], (at, 0, total));
            }
        }
        self.sort_keys.sort();
    }

    fn push(&mut self, key: &[u8], cpu: &[u8], entry: (usize, usize, u64)) {
        self.order.write(key, cpu, &mut self.sort_bytes);
        self.sort_keys
            .push(&self.sort_bytes, self.entries.len() as u64);
        self.entries.push(entry);
    }

    /// Calls `f` with each record's sort bytes, entry, CPU label bytes
    /// (empty unless split by CPU) and value, in key order.
    fn for_each_in_order(&self, mut f: impl FnMut(&[u8], usize, &[u8], u64)) {
        self.sort_keys.for_each(|sort, record, _| {
            let (at, cpu, value) = self.entries[record as usize];
            match self.cpu_size.and_then(|size| cpu_bytes(cpu, size)) {
                Some((bytes, size)) => f(sort, at, &bytes[..size], value),
                None => f(sort, at, &[], value),
            }
        });
    }
}

impl Table {
    /// Merges series whose labels' values are all equal into the first of
    /// them, their values added. Their ids may differ (a label whose values
    /// are nearly all distinct is decoded key by key): values are compared
    /// as text, by hash.
    pub(super) fn merge(&mut self) {
        let text = |series: &Series| {
            self.row_ids(series)
                .zip(&self.values)
                .map(|(id, values)| values.get(id as usize))
        };
        let mut first_of: FxHashMap<u64, usize> = FxHashMap::default();
        let mut collided: FxHashMap<Vec<&str>, usize> = FxHashMap::default();
        let mut kept: Vec<Series> = Vec::with_capacity(self.series.len());
        for one in &self.series {
            let mut hasher = FxHasher::default();
            text(one).for_each(|value| value.hash(&mut hasher));
            let into = match first_of.entry(hasher.finish()) {
                Entry::Vacant(entry) => {
                    entry.insert(kept.len());
                    None
                }
                Entry::Occupied(entry) if text(&kept[*entry.get()]).eq(text(one)) => {
                    Some(*entry.get())
                }
                // Another row's values had this hash: rare enough to key by them.
                Entry::Occupied(_) => match collided.entry(text(one).collect()) {
                    Entry::Occupied(entry) => Some(*entry.get()),
                    Entry::Vacant(entry) => {
                        entry.insert(kept.len());
                        None
                    }
                },
            };
            match into {
                Some(index) => kept[index].merge(one),
                None => kept.push(*one),
            }
        }
        self.series = kept;
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::plan::Plan;
    use crate::snapshot::MapData;
    use crate::spec::{Config, Format};

    /// A counter `x_total` with one label per (name, size, decoders).
    pub(crate) fn plan(labels: &[(&str, usize, &str)]) -> Plan {
        let mut spec = String::from("[[metrics.counters]]\nname = \"x_total\"\nhelp = \"X.\"\n");
        for (name, size, decoders) in labels {
            spec.push_str(&format!(
                "[[metrics.counters.labels]]\nname = \"{name}\"\nsize = {size}\ndecoders = [{decoders}]\n"
            ));
        }
        Plan::compile(&Config::parse("t", "t", &spec, Format::Toml).unwrap()).unwrap()
    }

    pub(crate) fn map(key_size: usize, entries: &[(Vec<u8>, u64)]) -> MapData {
        MapData {
            name: "x_total".into(),
            key_size,
            values_per_key: 1,
            is_array: false,
            per_cpu: false,
            keys: entries.iter().flat_map(|(key, _)| key.clone()).collect(),
            values: entries.iter().map(|(_, value)| *value).collect(),
        }
    }

    /// (label values joined by ",", value) of every series, in order.
    pub(crate) fn series(table: &Table) -> Vec<(String, f64)> {
        let mut out = Vec::new();
        table.for_each_series(|ids, value| {
            let values: Vec<&str> = ids
                .iter()
                .zip(&table.values)
                .map(|(&id, values)| values.get(id as usize))
                .collect();
            out.push((values.join(","), value));
        });
        out
    }

    /// Distinct keys store no ids; a key a decoder rejects in the middle
    /// makes the next rows' ids differ from their indices, and every
    /// series still names its own values.
    #[test]
    fn distinct_keys_store_no_ids_and_rejected_keys_keep_the_rows_right() {
        let distinct_plan = plan(&[
            ("id", 4, "{ name = \"uint\" }"),
            ("name", 4, "{ name = \"string\" }"),
        ]);
        let key = |id: u32, name: &[u8; 4]| {
            let mut key = id.to_ne_bytes().to_vec();
            key.extend_from_slice(name);
            key
        };
        let labels = &distinct_plan.metrics[0].labels;
        let mut errors = BTreeMap::new();
        let distinct = [(key(1, b"a\0\0\0"), 10), (key(2, b"b\0\0\0"), 20)];
        let table =
            counter_table(labels, None, Source::Read(map(8, &distinct)), &mut errors).unwrap();
        assert_eq!(table.ids, [Ids::Row(2), Ids::Row(2)]);
        assert_eq!(
            series(&table),
            [("1,a".to_string(), 10.0), ("2,b".to_string(), 20.0)]
        );
        // The regexp drops b after 2 took id 1 of label `id`: the rows
        // after it store their ids.
        let filtered_plan = plan(&[
            ("id", 4, "{ name = \"uint\" }"),
            (
                "name",
                4,
                "{ name = \"string\" }, { name = \"regexp\", regexps = [\"^[ac]$\"] }",
            ),
        ]);
        let labels = &filtered_plan.metrics[0].labels;
        let entries = [
            (key(1, b"a\0\0\0"), 1),
            (key(2, b"b\0\0\0"), 2),
            (key(3, b"c\0\0\0"), 3),
        ];
        let table =
            counter_table(labels, None, Source::Read(map(8, &entries)), &mut errors).unwrap();
        assert_eq!(table.ids, [Ids::Stored(vec![0, 2]), Ids::Row(2)]);
        assert_eq!(
            series(&table),
            [("1,a".to_string(), 1.0), ("3,c".to_string(), 3.0)]
        );
    }

    #[test]
    fn merged_sums_are_exact() {
        let plan = plan(&[("name", 4, "{ name = \"string\" }")]);
        // Three byte strings of one value: u64::MAX + 1 + 1 = 2^64 + 1,
        // which f64 additions in some orders would round to 2^64.
        let entries = [
            (b"a\0x\0".to_vec(), u64::MAX),
            (b"a\0\0\0".to_vec(), 1),
            (b"a\0y\0".to_vec(), 1),
            (b"b\0\0\0".to_vec(), 5),
        ];
        let mut errors = BTreeMap::new();
        let table = counter_table(
            &plan.metrics[0].labels,
            None,
            Source::Read(map(4, &entries)),
            &mut errors,
        )
        .unwrap();
        let exact = (u128::from(u64::MAX) + 2) as f64;
        assert_eq!(
            series(&table),
            [("a".to_string(), exact), ("b".to_string(), 5.0)]
        );
    }

    #[test]
    fn keys_merge_past_the_point_where_lookups_stop() {
        // 40,000 keys {id, name}: ids nearly all distinct (so the id's
        // lookup stops and later ids are decoded key by key), but every
        // eighth key has the id of the one before it and its name differs
        // only after the NUL: the two are one series.
        let entries: Vec<(Vec<u8>, u64)> = (0..40_000u32)
            .map(|n| {
                let twin = n % 8 == 7;
                let mut key = (if twin { n - 1 } else { n }).to_ne_bytes().to_vec();
                key.extend_from_slice(&[b'n', 0, 1 + u8::from(twin), 0]);
                (key, u64::from(n))
            })
            .collect();
        let want: Vec<(String, f64)> = (0..40_000u32)
            .filter(|n| n % 8 != 7)
            .map(|n| {
                let value = if n % 8 == 6 { 2 * n + 1 } else { n };
                (format!("{n},n"), f64::from(value))
            })
            .collect();
        assert_eq!(id_and_name_series(&entries), want);
    }

    #[test]
    fn keys_of_one_series_merge_across_batches() {
        // 20,000 keys, last first: key n and key n + 10,000 are one series
        // (one id, names alike up to the NUL), 10,000 entries apart, so
        // never in one batch of a map read whole.
        let entries: Vec<(Vec<u8>, u64)> = (0..20_000u32)
            .rev()
            .map(|n| {
                let mut key = (n % 10_000).to_ne_bytes().to_vec();
                key.extend_from_slice(&[b'n', 0, 1 + (n / 10_000) as u8, 0]);
                (key, u64::from(n))
            })
            .collect();
        let want: Vec<(String, f64)> = (0..10_000u32)
            .map(|n| (format!("{n},n"), f64::from(2 * n + 10_000)))
            .collect();
        assert_eq!(id_and_name_series(&entries), want);
    }

    /// The series of a map of keys {id: uint, name: 4-byte string}.
    fn id_and_name_series(entries: &[(Vec<u8>, u64)]) -> Vec<(String, f64)> {
        let plan = plan(&[
            ("id", 4, "{ name = \"uint\" }"),
            ("name", 4, "{ name = \"string\" }"),
        ]);
        let mut errors = BTreeMap::new();
        let table = counter_table(
            &plan.metrics[0].labels,
            None,
            Source::Read(map(8, entries)),
            &mut errors,
        )
        .unwrap();
        series(&table)
    }
}
