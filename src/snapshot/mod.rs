//! Snapshots: copy a probe's maps out of the kernel into plain data.
//!
//! Maps are read with `BPF_MAP_LOOKUP_BATCH` in a loop until the kernel says
//! ENOENT. libbpf-rs's own `lookup_batch` is not used: its iterator stops at the
//! first short batch and swallows errors, silently returning part of a large
//! map, and it refuses per-CPU maps. Kernels or map types without batch
//! support fall back to key-by-key iteration, chosen once per map: its first
//! read finds out which works, later ones use only that.
//!
//! A counter's map is not read whole before it is decoded: its [`Unread`]
//! reads it on a thread of its own and hands each batch to the exposition
//! as it comes, so that decoding one batch and the kernel copying out the
//! next happen at once, and the map is never held whole (three batches
//! are). Histograms, and every map with `--counts window` (which subtracts
//! the previous snapshot key by key), are read whole.
//!
//! Takes the session's attached [`Probe`]s; hands on a [`Snapshot`] per
//! probe (with `--counts window`, less the previous one: [`Deltas`]) to the
//! exposition stage.

mod batch;
mod delta;

use std::os::fd::{AsFd, AsRawFd};
use std::sync::{Arc, OnceLock};

use anyhow::{bail, Context, Result};
use libbpf_rs::{MapCore, MapFlags, MapHandle, MapType};

use batch::Batch;

use crate::probe::Probe;
use crate::program::Failed;

/// Entries of a map read whole handed on at a time (tests of the stages
/// after this one make maps of several batches).
#[cfg(test)]
pub(crate) use batch::ENTRIES as BATCH_ENTRIES;
pub use delta::Deltas;

/// What counters and histograms cover in `--interval` mode and `serve`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Counts {
    /// Everything since the programs were attached: Prometheus counters,
    /// for rate() and increase().
    #[default]
    Cumulative,
    /// The last window (or scrape) only: each snapshot minus the one before.
    Window,
}

/// The contents of one map at one instant: `len()` keys of `key_size` bytes,
/// each with `values_per_key` u64 values (one per possible CPU for per-CPU maps).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MapData {
    pub name: String,
    pub key_size: usize,
    pub values_per_key: usize,
    /// Arrays have every key from creation: a zero there means "never happened".
    pub is_array: bool,
    /// Values are per CPU (one per possible CPU, in CPU order).
    pub per_cpu: bool,
    pub keys: Vec<u8>,
    pub values: Vec<u64>,
}

impl MapData {
    pub fn len(&self) -> usize {
        self.keys.len() / self.key_size.max(1)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Calls `each` with the entries (keys, values) in batches of at most
    /// [`batch::ENTRIES`], as a map read batch by batch comes: a consumer
    /// that works per batch (orders it, say) works on a whole map the same.
    pub fn each_batch(&self, each: &mut dyn FnMut(&[u8], &[u64])) {
        let keys = self.keys.chunks(batch::ENTRIES * self.key_size.max(1));
        let values = self
            .values
            .chunks(batch::ENTRIES * self.values_per_key.max(1));
        for (keys, values) in keys.zip(values) {
            each(keys, values);
        }
    }

    /// The map's name and shape, without its entries.
    pub fn clone_empty(&self) -> MapData {
        MapData {
            name: self.name.clone(),
            keys: Vec::new(),
            values: Vec::new(),
            ..*self
        }
    }

    /// (key bytes, values) of every entry.
    pub fn entries(&self) -> impl Iterator<Item = (&[u8], &[u64])> {
        self.keys
            .chunks_exact(self.key_size.max(1))
            .zip(self.values.chunks_exact(self.values_per_key.max(1)))
    }
}

/// Everything a probe's metrics need: maps read, and counters' maps left
/// for the exposition to read batch by batch ([`Unread`]).
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub maps: Vec<MapData>,
    pub unread: Vec<Unread>,
    /// What each event-stream counter could not count so far.
    pub events_lost: Vec<StreamLoss>,
}

/// A map read whole, or one still to read.
pub enum Source {
    Read(MapData),
    Unread(Unread),
}

impl Source {
    /// The map's name and shape (and, read, its entries).
    pub fn header(&self) -> &MapData {
        match self {
            Source::Read(map) => map,
            Source::Unread(unread) => &unread.header,
        }
    }

    /// How many rows its entries may make, to make room for: a read map's
    /// entries, or an unread one's most (up to 4M: room past what a map
    /// holds costs address space only, but not without bound).
    pub fn rows_hint(&self) -> usize {
        match self {
            Source::Read(map) => map.len(),
            Source::Unread(unread) => unread.sizes.max_entries.min(1 << 22),
        }
    }

    /// Calls `each` with the map's entries (keys, values), batch by batch
    /// as they are read for a map still to read ([`Unread::read`]), in
    /// batches of the same size for one read ([`MapData::each_batch`]).
    pub fn read(self, each: &mut dyn FnMut(&[u8], &[u64])) -> Result<(), ReadError> {
        match self {
            Source::Read(map) => {
                map.each_batch(each);
                Ok(())
            }
            Source::Unread(unread) => unread.read(each),
        }
    }

    /// The map read whole.
    pub fn into_whole(self) -> Result<MapData, ReadError> {
        let mut whole = self.header().clone_empty();
        self.read(&mut |keys, values| {
            whole.keys.extend_from_slice(keys);
            whole.values.extend_from_slice(values);
        })?;
        Ok(whole)
    }
}

/// A counter's map not read yet: [`Unread::read`] reads it on a thread of
/// its own and hands each batch on as it comes, so that the batches before
/// are decoded while the kernel copies out the next one (a million-key map
/// spends about half its snapshot in the kernel).
#[derive(Debug, Clone)]
pub struct Unread {
    /// The map's name and shape, without entries.
    pub header: MapData,
    handle: Arc<MapHandle>,
    batched: Arc<OnceLock<bool>>,
    sizes: batch::Sizes,
    /// The config it belongs to, for errors.
    config: String,
}

/// Why a map could not be read: its probe is reported failed (config_up 0)
/// and the others are written all the same.
#[derive(Debug)]
pub struct ReadError(anyhow::Error);

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#}", self.0)
    }
}

impl std::error::Error for ReadError {}

impl Unread {
    /// Calls `each` with every batch of the map's entries (keys, values),
    /// read as [`read_map_as`] reads them; a map the kernel has no batch
    /// lookups for comes whole, key by key.
    pub fn read(self, each: &mut dyn FnMut(&[u8], &[u64])) -> Result<(), ReadError> {
        let Unread {
            header,
            handle,
            batched,
            sizes,
            config,
        } = self;
        let name = header.name.clone();
        let read = || -> Result<()> {
            if batched.get() != Some(&false) {
                let batch = batch::stream(handle.as_fd().as_raw_fd(), sizes, each)?;
                let done = matches!(batch, Batch::Done);
                let _ = batched.set(done);
                if done {
                    return Ok(());
                }
            }
            let mut data = header;
            read_by_key(handle.as_ref(), &mut data)?;
            data.each_batch(each);
            Ok(())
        };
        read()
            .with_context(|| reading_map(&config, &name))
            .map_err(ReadError)
    }
}

/// Events of one event-stream counter's map not counted, so far.
#[derive(Debug, Clone)]
pub struct StreamLoss {
    pub map: String,
    /// Lost before bpfsnap could count them (buffer full, or too short).
    pub lost: u64,
    /// Not counted: a new label set with the counter's table full.
    pub dropped: u64,
}

impl Snapshot {
    pub fn map(&self, name: &str) -> Option<&MapData> {
        self.maps.iter().find(|map| map.name == name)
    }

    /// Takes map `name`'s data out of the snapshot, if it was read.
    pub fn take_map(&mut self, name: &str) -> Option<MapData> {
        let at = self.maps.iter().position(|map| map.name == name)?;
        Some(self.maps.swap_remove(at))
    }

    /// Takes map `name` out of the snapshot, read or not.
    pub fn take_source(&mut self, name: &str) -> Option<Source> {
        if let Some(map) = self.take_map(name) {
            return Some(Source::Read(map));
        }
        let at = self.unread.iter().position(|map| map.header.name == name)?;
        Some(Source::Unread(self.unread.swap_remove(at)))
    }
}

/// Snapshots every probe in order, its cgroup id map brought up to date
/// first (with `deltas`, less the previous snapshot, every map read first;
/// without, counters' maps are read as `each` decodes them, see
/// [`Unread`]), and hands each to `each`; its program statistics are
/// refreshed after. A probe whose maps cannot be read is returned as
/// failed (`each` failing with a [`ReadError`]); the others are read all
/// the same. Any other error of `each` ends it.
pub fn take_each(
    probes: &mut [Probe],
    mut deltas: Option<&mut Deltas>,
    mut each: impl FnMut(&Probe, Snapshot) -> Result<()>,
) -> Result<Vec<Failed>> {
    let mut unread = Vec::new();
    for probe in probes.iter_mut() {
        let taken = probe
            .refresh_cgroups()
            .and_then(|()| take(probe, deltas.is_none()));
        let mut snapshot = match taken {
            Ok(snapshot) => snapshot,
            Err(error) => {
                unread.push(Failed {
                    config: probe.config().name.clone(),
                    error,
                });
                continue;
            }
        };
        if let Some(deltas) = deltas.as_deref_mut() {
            deltas.apply(&probe.config().name, &mut snapshot);
        }
        match each(probe, snapshot).map_err(anyhow::Error::downcast::<ReadError>) {
            Ok(()) => probe.refresh_stats(),
            // Said as the read said it, without the exposition's context.
            Err(Ok(ReadError(error))) => unread.push(Failed {
                config: probe.config().name.clone(),
                error,
            }),
            Err(Err(error)) => return Err(error),
        }
    }
    Ok(unread)
}

/// Reads every map the probe's metrics refer to (counters' maps only when
/// not `lazily`: see [`Unread`]); event-stream counters come as the counts
/// their consumer thread has made so far, shaped like a map.
pub fn take(probe: &Probe, lazily: bool) -> Result<Snapshot> {
    let config = probe.config();
    let mut snapshot = Snapshot::default();
    for counter in config.map_counters() {
        if let Some(stream) = probe.event_stream(&counter.name) {
            let counts = stream.snapshot();
            snapshot.events_lost.push(StreamLoss {
                map: counter.name.clone(),
                lost: counts.lost,
                dropped: counts.dropped,
            });
            snapshot.maps.push(MapData {
                name: counter.name.clone(),
                key_size: stream.key_size(),
                values_per_key: 1,
                is_array: false,
                per_cpu: false,
                keys: counts.keys,
                values: counts.counts,
            });
        } else if lazily {
            snapshot
                .unread
                .push(unread_metric_map(probe, &counter.name)?);
        } else {
            snapshot.maps.push(read_metric_map(probe, &counter.name)?);
        }
    }
    for histogram in &config.metrics.histograms {
        snapshot.maps.push(read_metric_map(probe, &histogram.name)?);
    }
    Ok(snapshot)
}

/// What an error reading map `name` of `config` was doing.
fn reading_map(config: &str, name: &str) -> String {
    format!("{config}: reading map {name}")
}

/// The map of metric `name`, to read later ([`Unread`]).
fn unread_metric_map(probe: &Probe, name: &str) -> Result<Unread> {
    let map = probe.map(name)?;
    Unread::of_map(&map.handle, name, &probe.config().name, &map.batched)
}

impl Unread {
    /// `map`, metric `name`'s map of `config`, to read when its entries are
    /// asked for ([`Source::read`]): decoded batch by batch as it is read,
    /// which is how `bpfsnap run` reads a counter's map. `batched` says,
    /// once known, whether the kernel has batch lookups for it (shared by
    /// every read of the map).
    pub fn of_map(
        map: &MapHandle,
        name: &str,
        config: &str,
        batched: &Arc<OnceLock<bool>>,
    ) -> Result<Unread> {
        let context = || reading_map(config, name);
        let (mut header, sizes) = header_of(map).with_context(context)?;
        header.name = name.to_string();
        let handle = MapHandle::try_from(map).with_context(context)?;
        Ok(Unread {
            header,
            handle: Arc::new(handle),
            batched: Arc::clone(batched),
            sizes,
            config: config.to_string(),
        })
    }
}

/// The map of metric `name`, named after it: the kernel keeps only the
/// first 15 bytes of a map's name, which is all a map opened from its pin
/// (an earlier run's) knows.
fn read_metric_map(probe: &Probe, name: &str) -> Result<MapData> {
    let map = probe.map(name)?;
    let mut data = read_map_as(&map.handle, &map.batched)
        .with_context(|| reading_map(&probe.config().name, name))?;
    data.name = name.to_string();
    Ok(data)
}

/// Reads a map of u64 values (per-CPU or not).
pub fn read_map<M: MapCore>(map: &M) -> Result<MapData> {
    read_map_as(map, &OnceLock::new())
}

/// [`read_map`], the way `batched` says: batch lookups if true, key by key if
/// false; unset, batch lookups are tried and `batched` records whether the
/// kernel did them (it refuses a map type it has none for at the first call).
pub fn read_map_as<M: MapCore>(map: &M, batched: &OnceLock<bool>) -> Result<MapData> {
    let (mut data, sizes) = header_of(map)?;
    let batch_done = match batched.get() {
        Some(false) => false,
        _ => {
            let mut whole = batch::Whole::new(&mut data, sizes.max_entries);
            let batch = batch::read_batched(map.as_fd().as_raw_fd(), sizes, &mut whole)?;
            whole.finish(&batch);
            matches!(batch, Batch::Done)
        }
    };
    let _ = batched.set(batch_done);
    if !batch_done {
        read_by_key(map, &mut data)?;
    }
    Ok(data)
}

/// A map's [`MapData`] without entries, and its sizes for the batch loop;
/// refuses values that are not u64.
fn header_of<M: MapCore>(map: &M) -> Result<(MapData, batch::Sizes)> {
    let map_type = map.map_type();
    let per_cpu = map_type.is_percpu();
    let values_per_key = if per_cpu {
        libbpf_rs::num_possible_cpus().context("counting possible CPUs")?
    } else {
        1
    };
    if map.value_size() != 8 {
        bail!("values are {} bytes, not u64", map.value_size());
    }
    let data = MapData {
        name: map.name().to_string_lossy().into_owned(),
        key_size: map.key_size() as usize,
        values_per_key,
        is_array: matches!(map_type, MapType::Array | MapType::PercpuArray),
        per_cpu,
        keys: Vec::new(),
        values: Vec::new(),
    };
    let sizes = batch::Sizes {
        key_size: data.key_size,
        stride: values_per_key,
        max_entries: map.max_entries() as usize,
    };
    Ok((data, sizes))
}

/// Key-by-key iteration for kernels without batch lookups (before 5.6).
fn read_by_key<M: MapCore>(map: &M, data: &mut MapData) -> Result<()> {
    for key in map.keys() {
        let values: Vec<Vec<u8>> = if data.values_per_key > 1 || map.map_type().is_percpu() {
            match map.lookup_percpu(&key, MapFlags::ANY).context("lookup")? {
                Some(values) => values,
                None => continue, // deleted since the key was listed
            }
        } else {
            match map.lookup(&key, MapFlags::ANY).context("lookup")? {
                Some(value) => vec![value],
                None => continue,
            }
        };
        data.keys.extend_from_slice(&key);
        for value in values {
            let bytes: [u8; 8] = value
                .get(..8)
                .and_then(|v| v.try_into().ok())
                .context("short value")?;
            data.values.push(u64::from_ne_bytes(bytes));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::collections::BTreeMap;

    use libbpf_rs::MapHandle;

    /// A `map_type` map of u32 keys `0..entries` (room for `max_entries`);
    /// key n holds n × 7 + 1, plus the CPU number on a per-CPU map.
    fn filled_map(map_type: MapType, entries: u32, max_entries: u32, cpus: usize) -> MapHandle {
        let opts = libbpf_sys::bpf_map_create_opts {
            sz: std::mem::size_of::<libbpf_sys::bpf_map_create_opts>() as _,
            ..Default::default()
        };
        let map = MapHandle::create(map_type, Some("batch_test"), 4, 8, max_entries, &opts)
            .expect("create map");
        for n in 0..entries {
            let value = |cpu: usize| (u64::from(n) * 7 + 1 + cpu as u64).to_ne_bytes().to_vec();
            if map_type.is_percpu() {
                let values: Vec<Vec<u8>> = (0..cpus).map(value).collect();
                map.update_percpu(&n.to_ne_bytes(), &values, MapFlags::ANY)
            } else {
                map.update(&n.to_ne_bytes(), &value(0), MapFlags::ANY)
            }
            .expect("fill map");
        }
        map
    }

    /// A map read whole is handed on in batches of at most batch::ENTRIES
    /// entries, each key with its own values, every entry once.
    #[test]
    fn a_map_read_whole_comes_in_batches() {
        for (entries, want) in [
            (0, vec![]),
            (1, vec![1]),
            (batch::ENTRIES, vec![batch::ENTRIES]),
            (
                20_000,
                vec![batch::ENTRIES, batch::ENTRIES, 20_000 - 2 * batch::ENTRIES],
            ),
        ] {
            let data = MapData {
                key_size: 4,
                values_per_key: 2,
                keys: (0..entries as u32).flat_map(u32::to_ne_bytes).collect(),
                values: (0..2 * entries as u64).collect(),
                ..MapData::default()
            };
            let mut sizes = Vec::new();
            let mut seen = 0u32;
            data.each_batch(&mut |keys, values| {
                sizes.push(keys.len() / 4);
                for (key, values) in keys.chunks_exact(4).zip(values.chunks_exact(2)) {
                    let key = u32::from_ne_bytes(key.try_into().unwrap());
                    assert_eq!(key, seen);
                    assert_eq!(values, [2 * u64::from(key), 2 * u64::from(key) + 1]);
                    seen += 1;
                }
            });
            assert_eq!(sizes, want, "{entries} entries");
            assert_eq!(seen as usize, entries);
        }
    }

    fn by_key(data: &MapData) -> BTreeMap<Vec<u8>, Vec<u64>> {
        data.entries()
            .map(|(key, values)| (key.to_vec(), values.to_vec()))
            .collect()
    }

    /// Maps far larger than one batch (8192 entries) are read whole and
    /// exactly by the batch loop, and key by key alike; a map's first read
    /// records that the kernel does batch lookups on it (every kernel of the
    /// matrix does, for these types), and a map recorded as without them is
    /// read key by key.
    #[test]
    fn batch_and_key_by_key_reads_return_every_entry_exactly() {
        if !crate::kernel_unit_test("batch_and_key_by_key_reads_return_every_entry_exactly") {
            return;
        }
        let cpus = libbpf_rs::num_possible_cpus().unwrap();
        for (map_type, entries, max_entries) in [
            (MapType::Hash, 50_000, 65_536),
            (MapType::Hash, 20_000, 20_000),
            (MapType::PercpuHash, 20_000, 32_768),
        ] {
            let what = format!("{map_type:?} of {entries} in {max_entries}");
            let map = filled_map(map_type, entries, max_entries, cpus);
            let method = OnceLock::new();
            let batched = read_map_as(&map, &method).expect("read_map");
            assert_eq!(method.get(), Some(&true), "{what}: read in batches");
            let stride = if map_type.is_percpu() { cpus } else { 1 };
            assert_eq!(batched.values_per_key, stride, "{what}");
            assert_eq!(batched.len(), entries as usize, "{what}");
            let batched_entries = by_key(&batched);
            assert_eq!(
                batched_entries.len(),
                entries as usize,
                "{what}: no key twice"
            );
            for n in 0..entries {
                let want: Vec<u64> = (0..stride)
                    .map(|cpu| u64::from(n) * 7 + 1 + cpu as u64)
                    .collect();
                assert_eq!(
                    batched_entries.get(n.to_ne_bytes().as_slice()),
                    Some(&want),
                    "{what}: key {n}"
                );
            }

            let iterated = read_map_as(&map, &OnceLock::from(false)).expect("read_by_key");
            assert_eq!(iterated.len(), entries as usize, "{what}");
            assert_eq!(by_key(&iterated), batched_entries, "{what}");
        }
    }

    /// A map streamed to a consumer (what `Unread::read` does) comes in
    /// batches, each while the reader thread reads the next, with every
    /// entry exactly once: the same entries as the map read whole.
    #[test]
    fn a_streamed_map_comes_batch_by_batch_with_every_entry_once() {
        if !crate::kernel_unit_test("a_streamed_map_comes_batch_by_batch_with_every_entry_once") {
            return;
        }
        let cpus = libbpf_rs::num_possible_cpus().unwrap();
        for (map_type, entries, max_entries) in [
            (MapType::Hash, 50_000, 65_536),
            (MapType::PercpuHash, 20_000, 32_768),
        ] {
            let what = format!("{map_type:?} of {entries} in {max_entries}");
            let map = filled_map(map_type, entries, max_entries, cpus);
            let (header, sizes) = header_of(&map).expect("a map of u64 values");
            let mut streamed = header.clone_empty();
            let mut batches = 0;
            let mut each = |keys: &[u8], values: &[u64]| {
                batches += 1;
                streamed.keys.extend_from_slice(keys);
                streamed.values.extend_from_slice(values);
            };
            let batch = batch::stream(map.as_fd().as_raw_fd(), sizes, &mut each).expect("stream");
            assert!(matches!(batch, Batch::Done), "{what}");
            assert!(batches > 1, "{what}: {batches} batch");
            assert_eq!(streamed.len(), entries as usize, "{what}");
            let whole = read_map(&map).expect("read_map");
            assert_eq!(by_key(&streamed), by_key(&whole), "{what}");
        }
    }

    #[test]
    fn iterates_entries_with_their_values() {
        let data = MapData {
            name: "m".into(),
            key_size: 2,
            values_per_key: 2,
            is_array: false,
            per_cpu: true,
            keys: vec![1, 0, 2, 0],
            values: vec![10, 11, 20, 21],
        };
        assert_eq!(data.len(), 2);
        let entries: Vec<_> = data.entries().collect();
        assert_eq!(
            entries,
            [
                (&[1u8, 0][..], &[10u64, 11][..]),
                (&[2, 0][..], &[20, 21][..])
            ]
        );
    }
}
