//! A counter map's keys decoded into rows as they are read: per label the
//! id of each row's value (see `labels`), each row's value, and its sort
//! bytes (see `keys`). Rows become a [`Table`]'s series once ordered.
//!
//! A row is a key, unless keys fold. When a label's decoder gives different
//! bytes one value (`ksym`: many addresses in one function) and at least a
//! quarter of a batch's keys bring no value unseen, the next keys are
//! looked up by their labels' value ids and added into the row that has
//! them, which keeps the least sort bytes of its keys. Memory then follows
//! the series the text will have rather than the keys (a million addresses
//! in 95,000 functions: 95,000 rows), in the order keeping every key as a
//! row gives. A key with a value never seen before is a new row without a
//! lookup (maps whose keys are distinct never fold), and keys stop folding
//! for good after a batch of which less than a quarter folded (values seen
//! before but new together: a cgroup and a function per address).

use std::collections::hash_map::Entry;
use std::collections::BTreeMap;
use std::hash::BuildHasher;

use rustc_hash::{FxBuildHasher, FxHashMap};

use super::keys::SortKeys;
use super::labels::{LabelCache, REJECTED};
use super::series::{Series, Table};
use crate::plan::Label;

/// One label's value id for each row. A label whose values are all
/// distinct and decoded in row order (a pid, an address, a string per key:
/// most of a big map's labels) has each row's own index as its id: nothing
/// is stored for it, 4 bytes less per key and label.
#[derive(Debug, PartialEq)]
pub(super) enum Ids {
    /// Row `n`'s id is `n`, for this many rows.
    Row(usize),
    Stored(Vec<u32>),
}

impl Ids {
    fn push(&mut self, id: u32, capacity: usize) {
        match self {
            Ids::Row(rows) if id as usize == *rows => *rows += 1,
            Ids::Row(rows) => {
                let mut ids = Vec::with_capacity(capacity.max(*rows + 1));
                ids.extend(0..*rows as u32);
                ids.push(id);
                *self = Ids::Stored(ids);
            }
            Ids::Stored(ids) => ids.push(id),
        }
    }

    pub(super) fn get(&self, row: usize) -> u32 {
        match self {
            Ids::Row(_) => row as u32,
            Ids::Stored(ids) => ids[row],
        }
    }

    /// Row `row`'s value id of each label of `ids` (one per label).
    pub(super) fn of_row(ids: &[Ids], row: usize) -> impl Iterator<Item = u32> + '_ {
        ids.iter().map(move |label_ids| label_ids.get(row))
    }

    /// How many rows there are.
    #[cfg(test)]
    pub(super) fn rows(&self) -> usize {
        match self {
            Ids::Row(rows) => *rows,
            Ids::Stored(ids) => ids.len(),
        }
    }
}

/// Keys decoded as they are read, batch by batch ([`Rows::start_batch`],
/// [`Rows::add`], [`Rows::end_batch`]), then ordered into a table
/// ([`Rows::into_table`]).
pub(super) struct Rows<'l> {
    labels: &'l [Label],
    cpu_label: Option<usize>,
    caches: Vec<LabelCache<'l>>,
    ids: Vec<Ids>,
    /// Each row's value, by row.
    values: Vec<u64>,
    /// The most rows expected (room for stored ids).
    capacity: usize,
    /// Each row's sort bytes and row, in a run per batch; unused once keys
    /// fold (each row's least sort bytes are then in [`Folding`]).
    sort_keys: SortKeys,
    sort_len: usize,
    folding: Option<Folding>,
    /// Whether the keys of the next batch fold.
    fold_next: bool,
    /// Whether keys folded and stopped (they do not start again).
    fold_stopped: bool,
    /// This batch's keys, those whose every label value was seen before,
    /// and those added into a row (folding).
    batch_keys: usize,
    batch_known: usize,
    batch_folded: usize,
    /// The value ids of the key being added, label by label.
    key_ids: Vec<u32>,
}

impl<'l> Rows<'l> {
    /// Rows of keys labelled by `labels` (the last one from the CPU number
    /// when `cpu_label` is set), ordered by sort bytes of `sort_len` bytes;
    /// room for `capacity`.
    pub fn new(
        labels: &'l [Label],
        cpu_label: Option<usize>,
        sort_len: usize,
        capacity: usize,
    ) -> Rows<'l> {
        Rows {
            labels,
            cpu_label,
            caches: labels
                .iter()
                .map(|label| LabelCache::new(&label.decoders))
                .collect(),
            ids: labels.iter().map(|_| Ids::Row(0)).collect(),
            values: Vec::with_capacity(capacity),
            capacity,
            sort_keys: SortKeys::new(sort_len, capacity),
            sort_len,
            folding: None,
            fold_next: false,
            fold_stopped: false,
            batch_keys: 0,
            batch_known: 0,
            batch_folded: 0,
            key_ids: Vec::with_capacity(labels.len()),
        }
    }

    /// Starts a batch of keys: folding them if the batch before says so.
    pub fn start_batch(&mut self) {
        if std::mem::take(&mut self.fold_next) {
            self.start_folding();
        }
        (self.batch_keys, self.batch_known, self.batch_folded) = (0, 0, 0);
    }

    /// Ends a batch, whose keys came in the order of their sort bytes.
    /// The next batch folds if keys can be one series without being equal
    /// and at least a quarter of this one's keys brought no value unseen.
    /// Keys stop folding for good when less than a quarter of a batch's
    /// did (values seen before, but together new: a lookup for nothing,
    /// and a row each all the same).
    pub fn end_batch(&mut self) {
        if self.folding.is_some() {
            if self.batch_folded * 4 < self.batch_keys {
                self.stop_folding();
            }
            return;
        }
        self.sort_keys.end_run();
        self.fold_next = !self.fold_stopped
            && self.batch_keys > 0
            && self.batch_known * 4 >= self.batch_keys
            && self.caches.iter().any(LabelCache::merged);
    }

    /// Adds `key` (of CPU `cpu`, as the `cpu` label's bytes) with sort
    /// bytes `sort` and value `value`: as a row, or into the row of its
    /// labels' values when keys fold. A key a decoder rejected (counted in
    /// `errors`) or asked to skip is left out.
    pub fn add(
        &mut self,
        key: &[u8],
        cpu: &[u8],
        sort: &[u8],
        value: u64,
        errors: &mut BTreeMap<&'static str, u64>,
    ) {
        let Some(known) = self.decode(key, cpu, errors) else {
            return;
        };
        self.batch_keys += 1;
        self.batch_known += usize::from(known);
        let Some(folding) = self.folding.as_mut() else {
            let row = self.push_row(value);
            self.sort_keys.push(sort, row as u64);
            return;
        };
        // Only a key whose every value was seen before can have a row.
        let found = known
            .then(|| folding.find(&self.key_ids, &self.ids))
            .flatten();
        // (A sum past u64 starts another row; the table adds them.)
        let sum = found.and_then(|row| Some((row, self.values[row].checked_add(value)?)));
        match sum {
            Some((row, sum)) => {
                self.values[row] = sum;
                folding.lower(row, sort);
                self.batch_folded += 1;
            }
            None => {
                folding.insert(&self.key_ids, &self.ids, self.values.len());
                folding.least.extend_from_slice(sort);
                self.push_row(value);
            }
        }
    }

    /// Decodes the labels of `key` into `key_ids`: whether every value was
    /// seen before, or None when a decoder rejected one (counted in
    /// `errors`) or asked to skip it.
    fn decode(
        &mut self,
        key: &[u8],
        cpu: &[u8],
        errors: &mut BTreeMap<&'static str, u64>,
    ) -> Option<bool> {
        self.key_ids.clear();
        let mut known = true;
        for (index, (label, cache)) in self.labels.iter().zip(&mut self.caches).enumerate() {
            let bytes = match self.cpu_label == Some(index) {
                true => cpu,
                // The key's size was checked against its labels': always Some.
                false => key.get(label.offset..label.offset + label.size)?,
            };
            let values = cache.len();
            let id = cache.id(bytes);
            if id & REJECTED != 0 {
                let (decoder, skip) = cache.rejection(id).unwrap_or(("", true));
                if !skip {
                    *errors.entry(decoder).or_default() += 1;
                }
                return None;
            }
            known &= cache.len() == values;
            self.key_ids.push(id);
        }
        Some(known)
    }

    /// A row of `key_ids` and `value`: its index.
    fn push_row(&mut self, value: u64) -> usize {
        for (ids, &id) in self.ids.iter_mut().zip(&self.key_ids) {
            ids.push(id, self.capacity);
        }
        self.values.push(value);
        self.values.len() - 1
    }

    /// Moves every row's sort bytes into a [`Folding`] that finds rows by
    /// their ids (rows with equal ids, made before, stay apart: the table
    /// adds them).
    fn start_folding(&mut self) {
        let len = self.sort_len;
        let mut least = vec![0; self.values.len() * len];
        // Each record names its row: read in any order, nothing to sort.
        self.sort_keys.for_each(|sort, row, _| {
            let at = row as usize * len;
            least[at..at + len].copy_from_slice(sort);
        });
        self.sort_keys.clear();
        let mut folding = Folding {
            rows: FxHashMap::default(),
            collided: FxHashMap::default(),
            least,
            len,
        };
        let mut ids = Vec::with_capacity(self.ids.len());
        for row in 0..self.values.len() {
            ids.clear();
            ids.extend(Ids::of_row(&self.ids, row));
            folding.insert(&ids, &self.ids, row);
        }
        self.folding = Some(folding);
    }

    /// Gives every row its least sort bytes as a sort record again, sorted
    /// into one run (the batches after it merge with it as they come), and
    /// stops folding.
    fn stop_folding(&mut self) {
        if let Some(Folding { least, len, .. }) = self.folding.take() {
            for row in 0..self.values.len() {
                let sort = &least[row * len..(row + 1) * len];
                self.sort_keys.push(sort, row as u64);
            }
            self.sort_keys.sort();
            self.sort_keys.end_run();
        }
        self.fold_stopped = true;
    }

    /// The rows in the order of their sort bytes as series, merged where
    /// their keys are equal, and where their labels' values are.
    pub fn into_table(mut self) -> Table {
        let merges = self.caches.iter().any(LabelCache::merged);
        // The labels' lookup tables go before the rows are sorted.
        let caches = std::mem::take(&mut self.caches);
        let values = caches.into_iter().map(LabelCache::into_values).collect();
        self.stop_folding();
        self.sort_keys.sort();
        let mut series: Vec<Series> = Vec::with_capacity(self.values.len());
        self.sort_keys.for_each(|_, row, same| {
            let value = self.values[row as usize];
            match (same, series.last_mut()) {
                (true, Some(last)) => last.add(value),
                _ => series.push(Series::new(row as u32, value)),
            }
        });
        let mut table = Table::new(values, self.ids, series);
        if merges {
            table.merge();
        }
        table
    }
}

/// Rows found by their labels' value ids, and the least sort bytes of the
/// keys added into each, once keys fold.
struct Folding {
    /// Rows by their ids' key ([`ids_key`]).
    rows: FxHashMap<u64, usize>,
    /// Rows whose ids' hash another row's ids had, by their ids (three
    /// labels or more: rare).
    collided: FxHashMap<Box<[u32]>, usize>,
    /// Each row's least sort bytes, `len` a row.
    least: Vec<u8>,
    len: usize,
}

impl Folding {
    /// The row whose ids are `ids` (every row's ids in `rows_ids`).
    fn find(&self, ids: &[u32], rows_ids: &[Ids]) -> Option<usize> {
        let (key, exact) = ids_key(ids);
        let &row = self.rows.get(&key)?;
        if exact || has_ids(rows_ids, row, ids) {
            return Some(row);
        }
        self.collided.get(ids).copied()
    }

    /// Makes `row` the one found by `ids`.
    fn insert(&mut self, ids: &[u32], rows_ids: &[Ids], row: usize) {
        let (key, exact) = ids_key(ids);
        match self.rows.entry(key) {
            Entry::Vacant(entry) => drop(entry.insert(row)),
            Entry::Occupied(mut entry) if exact || has_ids(rows_ids, *entry.get(), ids) => {
                entry.insert(row);
            }
            Entry::Occupied(_) => drop(self.collided.insert(ids.into(), row)),
        }
    }

    /// Keeps `sort` as the sort bytes of `row` if they come before its own.
    fn lower(&mut self, row: usize, sort: &[u8]) {
        let least = &mut self.least[row * self.len..(row + 1) * self.len];
        if sort < &*least {
            least.copy_from_slice(sort);
        }
    }
}

/// A number that finds a row by its ids: the ids themselves up to two
/// labels (exact), else their hash.
fn ids_key(ids: &[u32]) -> (u64, bool) {
    match *ids {
        [] => (0, true),
        [id] => (u64::from(id), true),
        [first, second] => ((u64::from(first) << 32) | u64::from(second), true),
        _ => (FxBuildHasher.hash_one(ids), false),
    }
}

/// Whether row `row` has the ids `ids`.
fn has_ids(rows_ids: &[Ids], row: usize, ids: &[u32]) -> bool {
    Ids::of_row(rows_ids, row).eq(ids.iter().copied())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exposition::series::counter_table;
    use crate::exposition::series::tests::{map, plan, series};
    use crate::snapshot::{Source, BATCH_ENTRIES};

    /// The table of `entries` (keys of `key_size` bytes) under `labels`
    /// (name, size, decoders), read in batches as a map is, and its rows.
    fn table_of(
        labels: &[(&str, usize, &str)],
        key_size: usize,
        entries: &[(Vec<u8>, u64)],
    ) -> (Table, usize) {
        let plan = plan(labels);
        let mut errors = BTreeMap::new();
        let source = Source::Read(map(key_size, entries));
        let table = counter_table(&plan.metrics[0].labels, None, source, &mut errors).unwrap();
        assert!(errors.is_empty(), "{errors:?}");
        let rows = table.ids[0].rows();
        (table, rows)
    }

    /// A label's (name, size, decoders).
    type LabelSpec = (&'static str, usize, &'static str);

    /// A 5-byte `string` label `name` of ten values, each from 4,096 byte
    /// strings (two bytes after the NUL), and `width` - 1 one-byte `uint`
    /// labels of 4 values: 40,960 keys, every one distinct, in a shuffled
    /// order.
    fn folding_entries(width: usize) -> (Vec<LabelSpec>, Vec<(Vec<u8>, u64)>) {
        let mut labels = vec![("name", 5, "{ name = \"string\" }")];
        labels.extend(
            ["a", "b"][..width - 1]
                .iter()
                .map(|name| (*name, 1, "{ name = \"uint\" }")),
        );
        let mut entries: Vec<(Vec<u8>, u64)> = (0..40_960usize)
            .map(|n| {
                let (name, rest) = (n % 10, n / 10);
                let mut key = vec![
                    b'w',
                    b'0' + name as u8,
                    0,
                    (rest % 256) as u8,
                    (rest / 256) as u8,
                ];
                key.extend([7, 13][..width - 1].iter().map(|step| (n / step % 4) as u8));
                (key, n as u64 + 1)
            })
            .collect();
        // A fixed shuffle: keys of every series in every batch.
        let count = entries.len();
        for at in 0..count {
            entries.swap(at, at * 7919 % count);
        }
        (labels, entries)
    }

    /// Keys of one series fold into one row past the first batch, the
    /// series in the order their least keys give, their sums exact.
    #[test]
    fn keys_of_one_series_fold_into_one_row_in_key_order() {
        // Two labels (a row found by its ids exactly), three (by hash).
        for width in [2, 3] {
            let (labels, entries) = folding_entries(width);
            let key_size = 5 + width - 1;
            // Per series (its values' text): its least key's sort bytes
            // (the key's bytes: the name as bytes, then one-byte numbers)
            // and its sum.
            let mut want: BTreeMap<String, (Vec<u8>, u64)> = BTreeMap::new();
            for (key, value) in &entries {
                let mut text = vec![String::from_utf8_lossy(&key[..2]).into_owned()];
                text.extend(key[5..].iter().map(u8::to_string));
                let series = want.entry(text.join(",")).or_insert((key.clone(), 0));
                series.0 = series.0.clone().min(key.clone());
                series.1 += value;
            }
            let mut want: Vec<(Vec<u8>, String, u64)> = want
                .into_iter()
                .map(|(text, (least, sum))| (least, text, sum))
                .collect();
            want.sort();
            let want: Vec<(String, f64)> =
                want.into_iter().map(|(_, t, v)| (t, v as f64)).collect();
            let (table, rows) = table_of(&labels, key_size, &entries);
            assert_eq!(series(&table), want, "width {width}");
            // The first batch's keys as rows, then one row per series.
            assert!(entries.len() > 2 * BATCH_ENTRIES);
            assert!(
                rows <= BATCH_ENTRIES + want.len(),
                "width {width}: {rows} rows"
            );
        }
    }

    /// Keys whose values were all seen before but whose labels together
    /// are new stop folding after one batch: they would be a row each all
    /// the same, and a lookup for nothing. The table is the same.
    #[test]
    fn folding_that_does_not_pay_stops() {
        // Key i: name i % 10 (a byte after the NUL that varies), n i %
        // 4096: the first batch brings most values, the second only pairs
        // not seen yet (folding then stops), the third pairs of the first
        // batch again (which would fold, were it not stopped).
        let entries: Vec<(Vec<u8>, u64)> = (0..3 * BATCH_ENTRIES)
            .map(|i| {
                let mut key = vec![b'w', b'0' + (i % 10) as u8, 0, (i % 7) as u8, 0];
                key.extend_from_slice(&((i % 4096) as u16).to_ne_bytes());
                (key, i as u64 + 1)
            })
            .collect();
        let labels = [
            ("name", 5, "{ name = \"string\" }"),
            ("n", 2, "{ name = \"uint\" }"),
        ];
        // Per series: its least key's sort bytes (the name's bytes, then n
        // as a number) and its sum; in the order of those bytes.
        let mut want: BTreeMap<(Vec<u8>, u16), (Vec<u8>, u64)> = BTreeMap::new();
        for (key, value) in &entries {
            let n = u16::from_ne_bytes([key[5], key[6]]);
            let sort = [&key[..5], &n.to_be_bytes()[..]].concat();
            let series = want
                .entry((key[..2].to_vec(), n))
                .or_insert((sort.clone(), 0));
            series.0 = series.0.clone().min(sort);
            series.1 += value;
        }
        let mut want: Vec<(Vec<u8>, String, u64)> = want
            .into_iter()
            .map(|((name, n), (least, sum))| {
                (
                    least,
                    format!("{},{n}", String::from_utf8_lossy(&name)),
                    sum,
                )
            })
            .collect();
        want.sort();
        let want: Vec<(String, f64)> = want.into_iter().map(|(_, t, v)| (t, v as f64)).collect();
        let (table, rows) = table_of(&labels, 7, &entries);
        assert_eq!(series(&table), want);
        // Every key a row: none of the third batch folded.
        assert_eq!(rows, entries.len());
    }

    /// A folded row whose sum would pass u64 starts another; the table
    /// adds them exactly.
    #[test]
    fn folded_sums_past_u64_are_exact() {
        let entries: Vec<(Vec<u8>, u64)> = (0..3 * BATCH_ENTRIES)
            .map(|n| (vec![b'a', 0, (n % 256) as u8, (n / 256) as u8], 1 << 60))
            .collect();
        let labels = [("name", 4, "{ name = \"string\" }")];
        let (table, rows) = table_of(&labels, 4, &entries);
        let exact = ((3 * BATCH_ENTRIES) as u128) << 60;
        assert_eq!(series(&table), [("a".to_string(), exact as f64)]);
        // 15 keys a row past the first batch.
        assert!(
            rows <= BATCH_ENTRIES + 2 * BATCH_ENTRIES / 15 + 1,
            "{rows} rows"
        );
    }

    /// A label whose ids are its rows' indices stores none; the first id
    /// that is not stores them all from there.
    #[test]
    fn ids_are_stored_only_when_they_are_not_the_row() {
        // (ids pushed, what is kept)
        let cases: [(&[u32], Ids); 3] = [
            (&[0, 1, 2], Ids::Row(3)),
            (&[0, 0, 1], Ids::Stored(vec![0, 0, 1])),
            (&[0, 2], Ids::Stored(vec![0, 2])),
        ];
        for (pushed, want) in cases {
            let mut ids = Ids::Row(0);
            for &id in pushed {
                ids.push(id, 4);
            }
            assert_eq!(ids, want, "{pushed:?}");
            for (row, &id) in pushed.iter().enumerate() {
                assert_eq!(ids.get(row), id);
            }
        }
    }
}
