//! A textfile being written while its text is still being encoded.
//!
//! The exposition hands over a large family's text a buffer at a time
//! ([`Spill`]); a thread of its own writes each into the temporary file
//! while the next is encoded, and starts its writeback every few MB. On a
//! machine of two CPUs, copying the text into the page cache then costs
//! the encoder nothing, and the final fsync waits for the last part only
//! (6.7 of the 45 ms from SIGINT to exit of a 100k-key run was that fsync
//! when the file was written whole at the end).

use std::fs::{File, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::thread::JoinHandle;

use anyhow::{Context, Result};

use super::{split, write_all_parts, FILE_MODE};
use crate::exposition::Spill;

/// A textfile being written: its temporary file, holding what was spilled
/// so far. Dropped without [`super::Sink::finish`], the file is removed.
#[derive(Debug)]
pub struct Partial {
    pub(super) temp: tempfile::NamedTempFile,
    writer: Option<Writer>,
    /// An error before the writer's (its thread could not start): the
    /// text is then abandoned, and finishing reports it.
    pub(super) error: Option<io::Error>,
}

/// The thread writing spilled text, and the buffers going to it and back.
#[derive(Debug)]
struct Writer {
    to_write: SyncSender<String>,
    written: Receiver<String>,
    thread: JoinHandle<io::Result<()>>,
}

/// Bytes written between two starts of writeback: large enough for few
/// calls, small enough that little is left for the final fsync.
const WRITEBACK_STEP: u64 = 4 << 20;

impl Partial {
    pub(super) fn new(temp: tempfile::NamedTempFile) -> Partial {
        Partial {
            temp,
            writer: None,
            error: None,
        }
    }

    /// Writes the parts after what was spilled, makes the file 0644,
    /// fsyncs it, renames it over `path` and fsyncs the directory.
    pub(super) fn commit<'p>(
        mut self,
        path: &Path,
        parts: impl IntoIterator<Item = &'p [u8]>,
    ) -> Result<()> {
        let (dir, _) = split(path)?;
        let spilled = self.finish_spilling();
        let temp = &mut self.temp;
        let written = spilled.and_then(|()| {
            write_all_parts(temp, parts)?;
            temp.as_file()
                .set_permissions(Permissions::from_mode(FILE_MODE))?;
            temp.as_file().sync_all()
        });
        written.with_context(|| format!("cannot write {}", temp.path().display()))?;
        self.temp
            .persist(path)
            .map_err(|err| err.error)
            .with_context(|| format!("cannot replace {}", path.display()))?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("cannot sync directory {}", dir.display()))?;
        Ok(())
    }

    /// Waits for the writer to write what it was given; its first error,
    /// or the error that kept it from starting.
    fn finish_spilling(&mut self) -> io::Result<()> {
        if let Some(err) = self.error.take() {
            return Err(err);
        }
        let Some(Writer {
            to_write, thread, ..
        }) = self.writer.take()
        else {
            return Ok(());
        };
        drop(to_write);
        thread
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the writing thread panicked")))
    }

    /// The writer, started at the first spill.
    fn writer(&mut self) -> io::Result<&mut Writer> {
        let writer = match self.writer.take() {
            Some(writer) => writer,
            None => Writer::start(self.temp.as_file())?,
        };
        Ok(self.writer.insert(writer))
    }
}

impl Writer {
    fn start(file: &File) -> io::Result<Writer> {
        let file = file.try_clone()?;
        // Two buffers queued at most: one written, one waiting, while the
        // encoder fills a third.
        let (to_write, to_write_rx) = mpsc::sync_channel(1);
        let (written_tx, written) = mpsc::sync_channel(2);
        let thread = std::thread::Builder::new()
            .name("bpfsnap-write".into())
            .spawn(move || write_out(&file, to_write_rx, written_tx))?;
        Ok(Writer {
            to_write,
            written,
            thread,
        })
    }
}

impl Spill for Partial {
    fn spill(&mut self, text: &mut String) {
        if self.error.is_some() {
            text.clear();
            return;
        }
        let writer = match self.writer() {
            Ok(writer) => writer,
            Err(err) => {
                self.error = Some(err);
                text.clear();
                return;
            }
        };
        // A buffer back from the writer, so the encoder's pages stay the
        // same few: fresh pages cost a fault each.
        let spare =
            (writer.written.try_recv()).unwrap_or_else(|_| String::with_capacity(text.capacity()));
        let full = std::mem::replace(text, spare);
        // Fails only if the thread panicked, which finishing reports.
        let _ = writer.to_write.send(full);
    }
}

/// The writer thread: writes each buffer in order, starting writeback
/// every [`WRITEBACK_STEP`] bytes, and hands the buffers back emptied.
/// After an error it only empties them.
fn write_out(file: &File, texts: Receiver<String>, back: SyncSender<String>) -> io::Result<()> {
    let (mut written, mut unsubmitted) = (0u64, 0u64);
    let mut result = Ok(());
    let mut out = file;
    for mut text in texts {
        if result.is_ok() {
            result = out.write_all(text.as_bytes());
            written += text.len() as u64;
        }
        if result.is_ok() && written - unsubmitted >= WRITEBACK_STEP {
            start_writeback(file, unsubmitted, written - unsubmitted);
            unsubmitted = written;
        }
        text.clear();
        // Kept only while the encoder has room for it.
        let _ = back.try_send(text);
    }
    result
}

/// Starts writing back `len` bytes of `file` from `from`, without waiting.
fn start_writeback(file: &File, from: u64, len: u64) {
    use std::os::fd::AsRawFd;
    // SAFETY: a plain syscall on an open file. Its result is only a hint's:
    // a failure shows again at the fsync, which reports it.
    unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            from as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}
