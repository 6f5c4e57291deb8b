//! The `BPF_MAP_LOOKUP_BATCH` loop, and where its entries land: in one
//! buffer for the whole map ([`Whole`]), or in a few buffers handed one by
//! one to a consumer on another thread ([`stream`]), which decodes a batch
//! while the kernel copies out the next.

use std::sync::mpsc::{self, Receiver, SyncSender};

use anyhow::{Context, Result};

use super::MapData;

/// A map's shape as the batch loop needs it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Sizes {
    pub key_size: usize,
    /// u64 values per key (one per possible CPU for per-CPU maps).
    pub stride: usize,
    pub max_entries: usize,
}

/// Where the batch loop's entries go.
pub(super) trait Landing {
    /// Key and value buffers for `chunk` more entries; None stops reading.
    fn room(&mut self, chunk: usize) -> Option<(&mut [u8], &mut [u64])>;
    /// The last room holds `count` entries now; false stops reading.
    fn landed(&mut self, count: usize) -> bool;
}

/// How the batch loop ended.
pub(super) enum Batch {
    Done,
    /// The kernel has no batch lookups for this map: nothing landed.
    Unsupported,
}

/// Entries asked of the kernel per BPF_MAP_LOOKUP_BATCH (more only when
/// one hash bucket holds more), and the most in one batch handed on from a
/// map read whole ([`MapData::each_batch`]).
pub(crate) const ENTRIES: usize = 8192;

/// The kernel's own "not supported" errno, which leaks to user space from
/// some bpf() commands (include/linux/errno.h; no libc name).
const ENOTSUPP: i32 = 524;

/// Reads map `fd` with `BPF_MAP_LOOKUP_BATCH` until the kernel says ENOENT,
/// its entries landing in `landing`.
pub(super) fn read_batched(fd: i32, sizes: Sizes, landing: &mut dyn Landing) -> Result<Batch> {
    // The resume token is a bucket index for hashes and a key for arrays.
    let token_size = sizes.key_size.max(8);
    let mut in_token = vec![0u8; token_size];
    let mut out_token = vec![0u8; token_size];
    let mut chunk = sizes.max_entries.clamp(1, ENTRIES);
    let mut first = true;
    loop {
        let Some((keys, values)) = landing.room(chunk) else {
            return Ok(Batch::Done);
        };
        let resume = (!first).then_some(in_token.as_mut_slice());
        let (rc, count) = lookup_batch(fd, (resume, &mut out_token), (keys, values), chunk);
        let errno = if rc < 0 { -rc } else { 0 };
        if (errno == 0 || errno == libc::ENOENT) && !landing.landed(count as usize) {
            return Ok(Batch::Done);
        }
        match errno {
            0 => {
                first = false;
                std::mem::swap(&mut in_token, &mut out_token);
            }
            libc::ENOENT => return Ok(Batch::Done),
            // One hash bucket holds more entries than fit: retry larger.
            libc::ENOSPC if chunk < (1 << 24) => chunk *= 2,
            // ENOTSUPP (524, kernel-internal) is what e.g. 5.10 answers for
            // per-CPU arrays.
            libc::EINVAL | libc::ENOTSUP | libc::EOPNOTSUPP | ENOTSUPP if first => {
                return Ok(Batch::Unsupported);
            }
            _ => {
                return Err(std::io::Error::from_raw_os_error(errno))
                    .context("BPF_MAP_LOOKUP_BATCH");
            }
        }
    }
}

/// One BPF_MAP_LOOKUP_BATCH of at most `chunk` entries into the buffers,
/// resuming at the first token (None: from the start) and leaving the next
/// in the second: libbpf's return (0, or -errno) and the entries read.
fn lookup_batch(
    fd: i32,
    (resume, next): (Option<&mut [u8]>, &mut [u8]),
    (keys, values): (&mut [u8], &mut [u64]),
    chunk: usize,
) -> (i32, u32) {
    let opts = libbpf_sys::bpf_map_batch_opts {
        sz: std::mem::size_of::<libbpf_sys::bpf_map_batch_opts>() as _,
        elem_flags: 0,
        flags: 0,
    };
    let mut count = u32::try_from(chunk).unwrap_or(u32::MAX);
    let resume = resume.map_or(std::ptr::null_mut(), |token| token.as_mut_ptr().cast());
    // SAFETY: the landing gave buffers for `chunk` entries (Landing::room);
    // the tokens are large enough for a bucket index or a key; `opts`
    // outlives the call.
    let rc = unsafe {
        libbpf_sys::bpf_map_lookup_batch(
            fd,
            resume,
            next.as_mut_ptr().cast(),
            keys.as_mut_ptr().cast(),
            values.as_mut_ptr().cast(),
            &mut count,
            &opts,
        )
    };
    (rc, count)
}

/// Entries landing one after another in a [`MapData`]'s buffers.
pub(super) struct Whole<'d> {
    data: &'d mut MapData,
    filled: usize,
}

impl<'d> Whole<'d> {
    pub fn new(data: &'d mut MapData, max_entries: usize) -> Whole<'d> {
        // Room for a full map (up to 256 MiB of it) up front: the buffers
        // never move while growing, and pages past what the map holds are
        // never touched, so they cost address space, not memory.
        let row = data.key_size + 8 * data.values_per_key;
        let room = max_entries.min((256 << 20) / row.max(1));
        data.keys.reserve_exact(room * data.key_size);
        data.values.reserve_exact(room * data.values_per_key);
        Whole { data, filled: 0 }
    }

    /// The entries landed (none if the batch loop found it unsupported).
    pub fn finish(self, batch: &Batch) {
        let filled = match batch {
            Batch::Done => self.filled,
            Batch::Unsupported => 0,
        };
        self.data.keys.truncate(filled * self.data.key_size);
        self.data.values.truncate(filled * self.data.values_per_key);
    }
}

impl Landing for Whole<'_> {
    fn room(&mut self, chunk: usize) -> Option<(&mut [u8], &mut [u64])> {
        let (key_size, stride) = (self.data.key_size, self.data.values_per_key);
        let end = self.filled + chunk;
        self.data.keys.resize(end * key_size, 0);
        self.data.values.resize(end * stride, 0);
        Some((
            &mut self.data.keys[self.filled * key_size..],
            &mut self.data.values[self.filled * stride..],
        ))
    }

    fn landed(&mut self, count: usize) -> bool {
        self.filled += count;
        true
    }
}

/// A batch's entries: the first `len` keys and their values.
struct Chunk {
    keys: Vec<u8>,
    values: Vec<u64>,
    len: usize,
}

/// Buffers that come back empty from the consumer and go to it full.
struct Handing {
    sizes: Sizes,
    current: Option<Chunk>,
    empty: Receiver<Chunk>,
    full: SyncSender<Chunk>,
}

impl Landing for Handing {
    fn room(&mut self, chunk: usize) -> Option<(&mut [u8], &mut [u64])> {
        if self.current.is_none() {
            self.current = Some(self.empty.recv().ok()?);
        }
        let buffer = self.current.as_mut()?;
        buffer.keys.resize(chunk * self.sizes.key_size, 0);
        buffer.values.resize(chunk * self.sizes.stride, 0);
        Some((&mut buffer.keys, &mut buffer.values))
    }

    fn landed(&mut self, count: usize) -> bool {
        match self.current.take() {
            Some(mut buffer) if count > 0 => {
                buffer.len = count;
                self.full.send(buffer).is_ok()
            }
            buffer => {
                self.current = buffer;
                true
            }
        }
    }
}

/// Buffers in flight between the reader and the consumer: one being
/// filled, one being consumed, one waiting.
const IN_FLIGHT: usize = 3;

/// [`read_batched`] on a thread of its own ("bpfsnap-read"), `each` called
/// here with every batch's keys and values as they come: the kernel copies
/// out the next batch while `each` works on this one, and the map is never
/// held whole. Where no thread can be started, the loop runs here.
pub(super) fn stream(fd: i32, sizes: Sizes, each: &mut dyn FnMut(&[u8], &[u64])) -> Result<Batch> {
    let (full_tx, full_rx) = mpsc::sync_channel::<Chunk>(IN_FLIGHT);
    let (empty_tx, empty_rx) = mpsc::channel::<Chunk>();
    for _ in 0..IN_FLIGHT {
        let chunk = Chunk {
            keys: Vec::new(),
            values: Vec::new(),
            len: 0,
        };
        let _ = empty_tx.send(chunk);
    }
    let mut handing = Handing {
        sizes,
        current: None,
        empty: empty_rx,
        full: full_tx,
    };
    std::thread::scope(|scope| {
        let reader = std::thread::Builder::new()
            .name("bpfsnap-read".into())
            .spawn_scoped(scope, move || read_batched(fd, sizes, &mut handing));
        let reader = match reader {
            Ok(reader) => reader,
            Err(_) => return read_here(fd, sizes, each),
        };
        for chunk in full_rx {
            let keys = &chunk.keys[..chunk.len * sizes.key_size];
            each(keys, &chunk.values[..chunk.len * sizes.stride]);
            let _ = empty_tx.send(chunk);
        }
        reader
            .join()
            .map_err(|_| anyhow::anyhow!("the map reader thread panicked"))?
    })
}

/// [`stream`] without a thread: each batch read, then handed to `each`.
fn read_here(fd: i32, sizes: Sizes, each: &mut dyn FnMut(&[u8], &[u64])) -> Result<Batch> {
    let mut data = MapData {
        key_size: sizes.key_size,
        values_per_key: sizes.stride,
        ..MapData::default()
    };
    let mut whole = Whole::new(&mut data, sizes.max_entries);
    let batch = read_batched(fd, sizes, &mut whole)?;
    whole.finish(&batch);
    if matches!(batch, Batch::Done) {
        data.each_batch(each);
    }
    Ok(batch)
}
