//! Snapshots: copy a probe's maps out of the kernel into plain data.
//!
//! Maps are read with `BPF_MAP_LOOKUP_BATCH` in a loop until the kernel says
//! ENOENT. libbpf-rs's own `lookup_batch` is not used: its iterator stops at the
//! first short batch and swallows errors, silently returning part of a large
//! map, and it refuses per-CPU maps. Kernels or map types without batch
//! support fall back to key-by-key iteration, chosen once per map: its first
//! read finds out which works, later ones use only that.
//!
//! Takes the session's attached [`Probe`]s; hands on a [`Snapshot`] per
//! probe (with `--counts window`, less the previous one: [`Deltas`]) to the
//! exposition stage.

mod delta;

use std::os::fd::AsRawFd;
use std::sync::OnceLock;

use anyhow::{bail, Context, Result};
use libbpf_rs::{MapCore, MapFlags, MapType};

use crate::probe::Probe;
use crate::program::Failed;

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

    /// (key bytes, values) of every entry.
    pub fn entries(&self) -> impl Iterator<Item = (&[u8], &[u64])> {
        self.keys
            .chunks_exact(self.key_size.max(1))
            .zip(self.values.chunks_exact(self.values_per_key.max(1)))
    }
}

/// Everything a probe's metrics need, read in one go.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub maps: Vec<MapData>,
    /// What each event-stream counter could not count so far.
    pub events_lost: Vec<StreamLoss>,
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

    /// Takes map `name`'s data out of the snapshot: the exposition frees a
    /// map's keys once it has sorted them, before it decodes them.
    pub fn take_map(&mut self, name: &str) -> Option<MapData> {
        let at = self.maps.iter().position(|map| map.name == name)?;
        Some(self.maps.swap_remove(at))
    }
}

/// Snapshots every probe in order, its cgroup id map brought up to date
/// first (with `deltas`, less the previous snapshot), and hands each to
/// `each`; its program statistics are refreshed after. A probe whose maps
/// cannot be read is returned as failed; the others are read all the same.
/// An error of `each` ends it.
pub fn take_each(
    probes: &mut [Probe],
    mut deltas: Option<&mut Deltas>,
    mut each: impl FnMut(&Probe, Snapshot) -> Result<()>,
) -> Result<Vec<Failed>> {
    let mut unread = Vec::new();
    for probe in probes.iter_mut() {
        let mut snapshot = match probe.refresh_cgroups().and_then(|()| take(probe)) {
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
        each(probe, snapshot)?;
        probe.refresh_stats();
    }
    Ok(unread)
}

/// Reads every map the probe's metrics refer to; event-stream counters come
/// as the counts their consumer thread has made so far, shaped like a map.
pub fn take(probe: &Probe) -> Result<Snapshot> {
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
            continue;
        }
        snapshot.maps.push(read_metric_map(probe, &counter.name)?);
    }
    for histogram in &config.metrics.histograms {
        snapshot.maps.push(read_metric_map(probe, &histogram.name)?);
    }
    Ok(snapshot)
}

/// The map of metric `name`, named after it: the kernel keeps only the
/// first 15 bytes of a map's name, which is all a map opened from its pin
/// (an earlier run's) knows.
fn read_metric_map(probe: &Probe, name: &str) -> Result<MapData> {
    let map = probe.map(name)?;
    let mut data = read_map_as(&map.handle, &map.batched)
        .with_context(|| format!("{}: reading map {name}", probe.config().name))?;
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
    let mut data = MapData {
        name: map.name().to_string_lossy().into_owned(),
        key_size: map.key_size() as usize,
        values_per_key,
        is_array: matches!(map_type, MapType::Array | MapType::PercpuArray),
        per_cpu,
        keys: Vec::new(),
        values: Vec::new(),
    };
    let batch_done = match batched.get() {
        Some(false) => false,
        _ => matches!(read_batched(map, &mut data)?, Batch::Done),
    };
    let _ = batched.set(batch_done);
    if !batch_done {
        read_by_key(map, &mut data)?;
    }
    Ok(data)
}

/// The kernel's own "not supported" errno, which leaks to user space from
/// some bpf() commands (include/linux/errno.h; no libc name).
const ENOTSUPP: i32 = 524;

enum Batch {
    Done,
    Unsupported,
}

/// The batch loop; entries land directly in `data`'s buffers.
fn read_batched<M: MapCore>(map: &M, data: &mut MapData) -> Result<Batch> {
    let fd = map.as_fd().as_raw_fd();
    let key_size = data.key_size;
    let stride = data.values_per_key;
    let max_entries = map.max_entries() as usize;
    // The resume token is a bucket index for hashes and a key for arrays.
    let token_size = key_size.max(8);
    let mut in_token = vec![0u8; token_size];
    let mut out_token = vec![0u8; token_size];
    let mut chunk = max_entries.clamp(1, 8192);
    let mut filled = 0usize;
    // Room for a full map (up to 256 MiB of it) up front: the buffers never
    // move while growing, and pages past what the map holds are never
    // touched, so they cost address space, not memory.
    let room = max_entries.min((256 << 20) / (key_size + 8 * stride).max(1));
    data.keys.reserve_exact(room * key_size);
    data.values.reserve_exact(room * stride);
    let mut first = true;
    loop {
        data.keys.resize((filled + chunk) * key_size, 0);
        data.values.resize((filled + chunk) * stride, 0);
        let resume = (!first).then_some(in_token.as_mut_slice());
        let (rc, count) = lookup_batch(fd, (resume, &mut out_token), data, filled, chunk);
        let errno = if rc < 0 { -rc } else { 0 };
        if errno == 0 || errno == libc::ENOENT {
            filled += count as usize;
        }
        match errno {
            0 => {
                first = false;
                std::mem::swap(&mut in_token, &mut out_token);
            }
            libc::ENOENT => break,
            // One hash bucket holds more entries than fit: retry larger.
            libc::ENOSPC if chunk < (1 << 24) => chunk *= 2,
            // ENOTSUPP (524, kernel-internal) is what e.g. 5.10 answers for
            // per-CPU arrays.
            libc::EINVAL | libc::ENOTSUP | libc::EOPNOTSUPP | ENOTSUPP if first => {
                data.keys.clear();
                data.values.clear();
                return Ok(Batch::Unsupported);
            }
            _ => {
                return Err(std::io::Error::from_raw_os_error(errno))
                    .context("BPF_MAP_LOOKUP_BATCH");
            }
        }
    }
    data.keys.truncate(filled * key_size);
    data.values.truncate(filled * stride);
    Ok(Batch::Done)
}

/// One BPF_MAP_LOOKUP_BATCH of at most `chunk` entries into `data`'s
/// buffers past its first `filled` entries, resuming at the first token
/// (None: from the start) and leaving the next in the second: libbpf's
/// return (0, or -errno) and the entries read.
fn lookup_batch(
    fd: i32,
    (resume, next): (Option<&mut [u8]>, &mut [u8]),
    data: &mut MapData,
    filled: usize,
    chunk: usize,
) -> (i32, u32) {
    let opts = libbpf_sys::bpf_map_batch_opts {
        sz: std::mem::size_of::<libbpf_sys::bpf_map_batch_opts>() as _,
        elem_flags: 0,
        flags: 0,
    };
    let mut count = u32::try_from(chunk).unwrap_or(u32::MAX);
    let resume = resume.map_or(std::ptr::null_mut(), |token| token.as_mut_ptr().cast());
    // SAFETY: the caller sized the key and value buffers for `chunk` more
    // entries past `filled`; the tokens are large enough for a bucket index
    // or a key; `opts` outlives the call.
    let rc = unsafe {
        libbpf_sys::bpf_map_lookup_batch(
            fd,
            resume,
            next.as_mut_ptr().cast(),
            data.keys.as_mut_ptr().add(filled * data.key_size).cast(),
            data.values
                .as_mut_ptr()
                .add(filled * data.values_per_key)
                .cast(),
            &mut count,
            &opts,
        )
    };
    (rc, count)
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
