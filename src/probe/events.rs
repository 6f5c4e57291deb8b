//! Event-stream counters: a counter whose map is a ring buffer or a perf
//! event array (ebpf_exporter's `perf_event_array: true`) is fed event by
//! event. A thread of its own consumes the stream and counts each event's
//! leading bytes — the labels' bytes, decoded later like any map key — so the
//! snapshot stage sees the counts as if they came from a hash map.
//!
//! Lost events never block the probe: perf event arrays report them to the
//! consumer; for a ring buffer the BPF program counts failed reservations in
//! an array map named `MAP_lost` (bpfsnap reads it if present). Both end up
//! in `bpfsnap_events_lost_total{config,map}`. Events shorter than the labels
//! are counted there too.
//!
//! `flush_interval`: a series not seen for that long is dropped from the
//! output (ebpf_exporter reset such counters; dropping keeps them monotonic
//! while they live and bounds memory).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use libbpf_rs::{MapCore, MapFlags, MapHandle, MapType, PerfBufferBuilder, RingBufferBuilder};

/// How often the consumer thread checks for a stop or a drain request: a
/// snapshot waits at most this long for the events already in the buffer.
const POLL: Duration = Duration::from_millis(25);

struct Seen {
    count: u64,
    last: Instant,
}

/// Counts per label bytes, shared with the consumer thread.
type Counts = Arc<Mutex<HashMap<Vec<u8>, Seen>>>;

pub struct EventStream {
    pub map: String,
    key_size: usize,
    flush: Option<Duration>,
    counts: Counts,
    lost: Arc<AtomicU64>,
    lost_map: Option<MapHandle>,
    stop: Arc<AtomicBool>,
    /// Asks the consumer to drain the buffer now; it answers when done.
    drain: Mutex<mpsc::Sender<mpsc::Sender<()>>>,
    thread: Option<JoinHandle<()>>,
}

/// What a snapshot takes of a stream.
pub struct StreamSnapshot {
    /// `len × key_size` bytes of label keys.
    pub keys: Vec<u8>,
    pub counts: Vec<u64>,
    pub lost: u64,
}

/// Whether a map of this type is consumed as an event stream.
pub fn is_stream(map_type: MapType) -> bool {
    matches!(map_type, MapType::RingBuf | MapType::PerfEventArray)
}

impl EventStream {
    /// Starts consuming `map`; `key_size` leading bytes of each event are
    /// its labels.
    pub fn start(
        name: &str,
        map: MapHandle,
        key_size: usize,
        flush: Option<Duration>,
        lost_map: Option<MapHandle>,
    ) -> Result<EventStream> {
        let counts: Counts = Arc::new(Mutex::new(HashMap::new()));
        let lost = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (ready, started) = mpsc::channel::<Result<()>>();
        let (drain, drains) = mpsc::channel::<mpsc::Sender<()>>();
        let thread = {
            let (counts, lost, stop) = (counts.clone(), lost.clone(), stop.clone());
            std::thread::Builder::new()
                .name(format!("events-{name}"))
                .spawn(move || consume(&map, key_size, &counts, &lost, &stop, &ready, &drains))
                .context("starting an event consumer thread")?
        };
        started
            .recv()
            .map_err(|_| anyhow!("the event consumer for map {name} stopped before starting"))?
            .with_context(|| format!("consuming events from map {name}"))?;
        Ok(EventStream {
            map: name.to_string(),
            key_size,
            flush,
            counts,
            lost,
            lost_map,
            stop,
            drain: Mutex::new(drain),
            thread: Some(thread),
        })
    }

    pub fn key_size(&self) -> usize {
        self.key_size
    }

    /// The counts so far, including every event already in the buffer
    /// (series idle longer than the flush interval dropped).
    pub fn snapshot(&self) -> StreamSnapshot {
        let (done, drained) = mpsc::channel();
        if self
            .drain
            .lock()
            .is_ok_and(|drain| drain.send(done).is_ok())
        {
            let _ = drained.recv_timeout(Duration::from_secs(1));
        }
        let mut keys = Vec::new();
        let mut counts = Vec::new();
        if let Ok(mut seen) = self.counts.lock() {
            if let Some(flush) = self.flush {
                seen.retain(|_, entry| entry.last.elapsed() < flush);
            }
            for (key, entry) in seen.iter() {
                keys.extend_from_slice(key);
                counts.push(entry.count);
            }
        }
        let in_kernel = self.lost_map.as_ref().map_or(0, lost_in_map);
        StreamSnapshot {
            keys,
            counts,
            lost: self.lost.load(Ordering::Relaxed) + in_kernel,
        }
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Sum of every slot (and CPU) of a `MAP_lost` array.
fn lost_in_map(map: &MapHandle) -> u64 {
    let mut total = 0u64;
    for key in map.keys() {
        let values = if map.map_type().is_percpu() {
            map.lookup_percpu(&key, MapFlags::ANY)
                .ok()
                .flatten()
                .unwrap_or_default()
        } else {
            map.lookup(&key, MapFlags::ANY)
                .ok()
                .flatten()
                .into_iter()
                .collect()
        };
        for value in values {
            if let Some(bytes) = value.get(..8).and_then(|b| <[u8; 8]>::try_from(b).ok()) {
                total = total.wrapping_add(u64::from_ne_bytes(bytes));
            }
        }
    }
    total
}

fn record(data: &[u8], key_size: usize, counts: &Counts, lost: &AtomicU64) {
    let Some(key) = data.get(..key_size) else {
        lost.fetch_add(1, Ordering::Relaxed);
        return;
    };
    if let Ok(mut seen) = counts.lock() {
        let now = Instant::now();
        match seen.get_mut(key) {
            Some(entry) => {
                entry.count += 1;
                entry.last = now;
            }
            None => {
                seen.insert(
                    key.to_vec(),
                    Seen {
                        count: 1,
                        last: now,
                    },
                );
            }
        }
    }
}

/// The consumer thread: set up, say so on `ready`, poll until `stop`, drain
/// on request.
fn consume(
    map: &MapHandle,
    key_size: usize,
    counts: &Counts,
    lost: &Arc<AtomicU64>,
    stop: &AtomicBool,
    ready: &mpsc::Sender<Result<()>>,
    drains: &mpsc::Receiver<mpsc::Sender<()>>,
) {
    // (poll with timeout, consume what is there now)
    type Poll<'a> = (
        Box<dyn Fn() -> Result<()> + 'a>,
        Box<dyn Fn() -> Result<()> + 'a>,
    );
    let (poll, drain): Poll<'_> = match map.map_type() {
        MapType::RingBuf => {
            let mut builder = RingBufferBuilder::new();
            let added = builder
                .add(map, |data| {
                    record(data, key_size, counts, lost);
                    0
                })
                .map(|_| ())
                .map_err(anyhow::Error::from);
            match added.and_then(|()| builder.build().map_err(anyhow::Error::from)) {
                Ok(ring) => {
                    let ring = std::rc::Rc::new(ring);
                    let again = ring.clone();
                    (
                        Box::new(move || ring.poll(POLL).map_err(anyhow::Error::from)),
                        Box::new(move || again.consume().map_err(anyhow::Error::from)),
                    )
                }
                Err(err) => {
                    let _ = ready.send(Err(err));
                    return;
                }
            }
        }
        _ => {
            let lost_events = lost.clone();
            let built = PerfBufferBuilder::new(map)
                .sample_cb(|_cpu, data: &[u8]| record(data, key_size, counts, lost))
                .lost_cb(move |_cpu, n| {
                    lost_events.fetch_add(n, Ordering::Relaxed);
                })
                .build();
            match built {
                Ok(perf) => {
                    let perf = std::rc::Rc::new(perf);
                    let again = perf.clone();
                    (
                        Box::new(move || perf.poll(POLL).map_err(anyhow::Error::from)),
                        Box::new(move || again.consume().map_err(anyhow::Error::from)),
                    )
                }
                Err(err) => {
                    let _ = ready.send(Err(err.into()));
                    return;
                }
            }
        }
    };
    let _ = ready.send(Ok(()));
    while !stop.load(Ordering::Relaxed) {
        // EINTR from a signal is not an error worth stopping for.
        let _ = poll();
        while let Ok(done) = drains.try_recv() {
            let _ = drain();
            let _ = done.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_leading_bytes_and_counts_short_events_as_lost() {
        let counts: Counts = Arc::new(Mutex::new(HashMap::new()));
        let lost = AtomicU64::new(0);
        record(b"abcdXX", 4, &counts, &lost);
        record(b"abcdYY", 4, &counts, &lost);
        record(b"efgh", 4, &counts, &lost);
        record(b"ab", 4, &counts, &lost);
        let seen = counts.lock().unwrap();
        assert_eq!(seen[&b"abcd"[..]].count, 2);
        assert_eq!(seen[&b"efgh"[..]].count, 1);
        assert_eq!(lost.load(Ordering::Relaxed), 1);
    }
}
