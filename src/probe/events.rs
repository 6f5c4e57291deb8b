//! Event-stream counters: a counter whose map is a ring buffer or a perf
//! event array (ebpf_exporter's `perf_event_array: true`) is fed event by
//! event. A thread of its own consumes the stream and counts each event's
//! leading bytes — the labels' bytes, decoded later like any map key — so the
//! snapshot stage sees the counts as if they came from a hash map.
//!
//! Lost events never block the probe: perf event arrays report them to the
//! consumer (the kernel does so with the next event it can write to that
//! CPU's buffer); for a ring buffer the BPF program counts failed
//! reservations in an array map named `MAP_lost` (bpfsnap reads it if
//! present, and warns at load if not: such drops go uncounted). Both end up
//! in `bpfsnap_events_lost_total{config,map}`. Events shorter than the labels
//! are counted there too.
//!
//! The counts table holds at most the counter's `max_series` label sets: an
//! event with a new label set once it is full is not counted but counted in
//! `bpfsnap_events_dropped_total{config,map}`, so no stream of new labels can
//! grow bpfsnap's memory without bound.
//!
//! `flush_interval`: at each snapshot, a series whose last event was counted
//! that long ago or longer is dropped from the table and the output
//! (ebpf_exporter reset such counters; dropping keeps them monotonic while
//! they live and bounds memory). If its label set comes back it starts again
//! from its first event, as a new series: a counter reset.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use libbpf_rs::{MapCore, MapFlags, MapHandle, MapType, PerfBufferBuilder, RingBufferBuilder};

/// How long the consumer thread waits for events before looking at its
/// flags again; every request (stop, drain, the capability drop) also
/// wakes it at once through its [`Wake`] descriptor.
const IDLE: Duration = Duration::from_secs(1);

struct Seen {
    count: u64,
    last: Instant,
}

/// Counts per label bytes, shared with the consumer thread.
type Counts = Arc<Mutex<HashMap<Vec<u8>, Seen>>>;

/// What the consumer thread counts into.
#[derive(Clone)]
struct Tally {
    /// Leading bytes of an event that are its labels.
    key_size: usize,
    /// Most label sets in `counts`.
    max_series: usize,
    counts: Counts,
    /// Events lost (perf arrays) or shorter than the labels.
    lost: Arc<AtomicU64>,
    /// Events not counted: a new label set with `counts` full.
    dropped: Arc<AtomicU64>,
}

pub struct EventStream {
    pub map: String,
    flush: Option<Duration>,
    tally: Tally,
    lost_map: Option<MapHandle>,
    /// Set for a ring buffer without a `MAP_lost` companion.
    uncounted_drops: bool,
    stop: Arc<AtomicBool>,
    /// Set once the consumer thread has dropped the capabilities the process
    /// dropped (it started before the drop, with all of them).
    dropped: Arc<AtomicBool>,
    /// Asks the consumer to drain the buffer now; it answers when done.
    drain: Mutex<mpsc::Sender<mpsc::Sender<()>>>,
    /// Wakes the consumer to look at its requests.
    wake: Arc<Wake>,
    thread: Option<JoinHandle<()>>,
}

/// What a snapshot takes of a stream.
pub struct StreamSnapshot {
    /// `len × key_size` bytes of label keys.
    pub keys: Vec<u8>,
    pub counts: Vec<u64>,
    pub lost: u64,
    /// Events not counted because the table was full (see `max_series`).
    pub dropped: u64,
}

/// Whether a map of this type is consumed as an event stream.
pub fn is_stream(map_type: MapType) -> bool {
    matches!(map_type, MapType::RingBuf | MapType::PerfEventArray)
}

impl EventStream {
    /// Starts consuming `map`; `key_size` leading bytes of each event are
    /// its labels, counted for at most `max_series` label sets.
    pub fn start(
        name: &str,
        map: MapHandle,
        key_size: usize,
        max_series: usize,
        flush: Option<Duration>,
        lost_map: Option<MapHandle>,
    ) -> Result<EventStream> {
        let tally = Tally {
            key_size,
            max_series,
            counts: Arc::new(Mutex::new(HashMap::new())),
            lost: Arc::new(AtomicU64::new(0)),
            dropped: Arc::new(AtomicU64::new(0)),
        };
        let uncounted_drops = lost_map.is_none() && map.map_type() == MapType::RingBuf;
        let stop = Arc::new(AtomicBool::new(false));
        let dropped = Arc::new(AtomicBool::new(false));
        let (ready, started) = mpsc::channel::<Result<()>>();
        let (drain, drains) = mpsc::channel::<mpsc::Sender<()>>();
        let wake = Arc::new(Wake::new().context("creating an event consumer's wake-up")?);
        let thread = {
            let (tally, stop) = (tally.clone(), stop.clone());
            let flags = Flags {
                stop: stop.clone(),
                dropped: dropped.clone(),
                wake: wake.clone(),
            };
            std::thread::Builder::new()
                .name(format!("events-{name}"))
                .spawn(move || consume(&map, &tally, &flags, &ready, &drains))
                .context("starting an event consumer thread")?
        };
        started
            .recv()
            .map_err(|_| anyhow!("the event consumer for map {name} stopped before starting"))?
            .with_context(|| format!("consuming events from map {name}"))?;
        Ok(EventStream {
            map: name.to_string(),
            flush,
            tally,
            lost_map,
            uncounted_drops,
            stop,
            dropped,
            drain: Mutex::new(drain),
            wake,
            thread: Some(thread),
        })
    }

    /// Has the consumer thread look at its requests now (after the
    /// capability drop: to follow it).
    pub fn wake(&self) {
        self.wake.signal();
    }

    /// Whether its consumer thread holds no more capabilities than the
    /// process kept.
    pub fn follows_drop(&self) -> bool {
        self.dropped.load(Ordering::SeqCst)
    }

    pub fn key_size(&self) -> usize {
        self.tally.key_size
    }

    /// What a user should know at load: drops this stream cannot count.
    pub fn warning(&self) -> Option<String> {
        self.uncounted_drops.then(|| {
            format!(
                "ring buffer {map} has no {map}_lost map: events dropped in the kernel when it is \
                 full are not counted (bpfsnap_events_lost_total shows only events too short for \
                 the labels); see examples/events.bpf.c",
                map = self.map
            )
        })
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
            self.wake.signal();
            let _ = drained.recv_timeout(Duration::from_secs(1));
        }
        let mut keys = Vec::new();
        let mut counts = Vec::new();
        if let Ok(mut seen) = self.tally.counts.lock() {
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
            lost: self.tally.lost.load(Ordering::Relaxed) + in_kernel,
            dropped: self.tally.dropped.load(Ordering::Relaxed),
        }
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.wake.signal();
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

fn record(data: &[u8], tally: &Tally) {
    let Some(key) = data.get(..tally.key_size) else {
        tally.lost.fetch_add(1, Ordering::Relaxed);
        return;
    };
    if let Ok(mut seen) = tally.counts.lock() {
        let now = Instant::now();
        let full = seen.len() >= tally.max_series;
        match seen.get_mut(key) {
            Some(entry) => {
                entry.count += 1;
                entry.last = now;
            }
            None if full => {
                tally.dropped.fetch_add(1, Ordering::Relaxed);
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

/// What a consumer thread and its stream share: whether to stop, and
/// whether it has followed the capability drop.
struct Flags {
    stop: Arc<AtomicBool>,
    dropped: Arc<AtomicBool>,
    wake: Arc<Wake>,
}

/// A stream's buffer, as its consumer uses it: the epoll descriptor that is
/// readable when events are waiting, and what consumes them.
type Buffer<'a> = (RawFd, Box<dyn Fn() -> Result<()> + 'a>);

/// An eventfd that wakes a consumer thread out of its wait.
struct Wake(OwnedFd);

impl Wake {
    fn new() -> std::io::Result<Wake> {
        // SAFETY: eventfd takes no pointers; a descriptor it returns is ours.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor, owned by nothing else.
        Ok(Wake(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    fn signal(&self) {
        let one = 1u64.to_ne_bytes();
        // SAFETY: writes 8 bytes from a live buffer. It cannot block
        // (EFD_NONBLOCK); a counter already at its maximum is awake anyway.
        unsafe { libc::write(self.0.as_raw_fd(), one.as_ptr().cast(), one.len()) };
    }

    /// Resets the counter, so that the next wait sleeps until a new signal.
    fn clear(&self) {
        let mut count = [0u8; 8];
        // SAFETY: reads at most 8 bytes into a live buffer; EAGAIN when unset.
        unsafe { libc::read(self.0.as_raw_fd(), count.as_mut_ptr().cast(), count.len()) };
    }
}

/// One epoll over a buffer's descriptor and its consumer's [`Wake`].
struct Waiter(OwnedFd);

/// The tokens of [`Waiter`]'s two descriptors.
const EVENTS: u64 = 0;
const WOKEN: u64 = 1;

impl Waiter {
    fn new(buffer: RawFd, wake: &Wake) -> std::io::Result<Waiter> {
        // SAFETY: no pointers; a descriptor it returns is ours.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor, owned by nothing else.
        let waiter = Waiter(unsafe { OwnedFd::from_raw_fd(fd) });
        waiter.add(buffer, EVENTS)?;
        waiter.add(wake.0.as_raw_fd(), WOKEN)?;
        Ok(waiter)
    }

    fn add(&self, fd: RawFd, token: u64) -> std::io::Result<()> {
        let mut event = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: token,
        };
        // SAFETY: both descriptors are open; `event` lives across the call.
        let done =
            unsafe { libc::epoll_ctl(self.0.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut event) };
        match done {
            0 => Ok(()),
            _ => Err(std::io::Error::last_os_error()),
        }
    }

    /// Waits up to `timeout`; says whether events are waiting and whether
    /// it was woken (EINTR: neither).
    fn wait(&self, timeout: Duration) -> (bool, bool) {
        let mut ready = [libc::epoll_event { events: 0, u64: 0 }; 2];
        let millis = timeout.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: `ready` has room for the 2 events asked for.
        let n = unsafe { libc::epoll_wait(self.0.as_raw_fd(), ready.as_mut_ptr(), 2, millis) };
        let ready = ready.get(..n.max(0) as usize).unwrap_or_default();
        let has = |token: u64| ready.iter().any(|event| event.u64 == token);
        (has(EVENTS), has(WOKEN))
    }
}

/// The consumer thread: set up, say so on `ready`, consume events as they
/// come until `stop`, drain on request, and drop the capabilities the
/// process drops.
fn consume(
    map: &MapHandle,
    tally: &Tally,
    flags: &Flags,
    ready: &mpsc::Sender<Result<()>>,
    drains: &mpsc::Receiver<mpsc::Sender<()>>,
) {
    let built = match map.map_type() {
        MapType::RingBuf => ring_buffer(map, tally),
        _ => perf_buffer(map, tally),
    };
    let waiter = built.and_then(|(fd, consume)| {
        let waiter = Waiter::new(fd, &flags.wake).context("waiting for events")?;
        Ok((waiter, consume))
    });
    let (waiter, consume) = match waiter {
        Ok(buffer) => buffer,
        Err(err) => {
            let _ = ready.send(Err(err));
            return;
        }
    };
    let _ = ready.send(Ok(()));
    while !flags.stop.load(Ordering::Relaxed) {
        if !flags.dropped.load(Ordering::Relaxed)
            && crate::privilege::follow_drop().unwrap_or(false)
        {
            flags.dropped.store(true, Ordering::SeqCst);
        }
        let (events, woken) = waiter.wait(IDLE);
        if woken {
            flags.wake.clear();
        }
        if events {
            let _ = consume();
        }
        while let Ok(done) = drains.try_recv() {
            let _ = consume();
            let _ = done.send(());
        }
    }
}

/// A ring buffer's consumer, each event recorded in `tally`.
fn ring_buffer<'a>(map: &'a MapHandle, tally: &'a Tally) -> Result<Buffer<'a>> {
    let mut builder = RingBufferBuilder::new();
    builder.add(map, |data| {
        record(data, tally);
        0
    })?;
    let ring = builder.build()?;
    Ok((
        ring.epoll_fd(),
        Box::new(move || ring.consume().map_err(anyhow::Error::from)),
    ))
}

/// A perf event array's consumer, each event recorded in `tally` and each
/// loss counted.
fn perf_buffer<'a>(map: &'a MapHandle, tally: &'a Tally) -> Result<Buffer<'a>> {
    let lost_events = tally.lost.clone();
    let perf = PerfBufferBuilder::new(map)
        .sample_cb(|_cpu, data: &[u8]| record(data, tally))
        .lost_cb(move |_cpu, n| {
            lost_events.fetch_add(n, Ordering::Relaxed);
        })
        .build()?;
    Ok((
        perf.epoll_fd(),
        Box::new(move || perf.consume().map_err(anyhow::Error::from)),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tally(key_size: usize, max_series: usize) -> Tally {
        Tally {
            key_size,
            max_series,
            counts: Arc::new(Mutex::new(HashMap::new())),
            lost: Arc::new(AtomicU64::new(0)),
            dropped: Arc::new(AtomicU64::new(0)),
        }
    }

    #[test]
    fn records_leading_bytes_and_counts_short_events_as_lost() {
        let tally = tally(4, 10);
        record(b"abcdXX", &tally);
        record(b"abcdYY", &tally);
        record(b"efgh", &tally);
        record(b"ab", &tally);
        let seen = tally.counts.lock().unwrap();
        assert_eq!(seen[&b"abcd"[..]].count, 2);
        assert_eq!(seen[&b"efgh"[..]].count, 1);
        assert_eq!(tally.lost.load(Ordering::Relaxed), 1);
        assert_eq!(tally.dropped.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_full_table_counts_known_label_sets_and_drops_new_ones() {
        let tally = tally(1, 2);
        for event in [&b"a"[..], b"b", b"c", b"a", b"d", b"b", b"c"] {
            record(event, &tally);
        }
        let seen = tally.counts.lock().unwrap();
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[&b"a"[..]].count, 2);
        assert_eq!(seen[&b"b"[..]].count, 2);
        // c, d, c: new label sets while full.
        assert_eq!(tally.dropped.load(Ordering::Relaxed), 3);
        assert_eq!(tally.lost.load(Ordering::Relaxed), 0);
    }
}
