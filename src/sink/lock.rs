//! A lock so overlapping runs (a slow cron job and the next one) never
//! interleave on one output: `flock` on a lock file named after the output's
//! absolute path, in /run/lock (so the textfile directory holds only metrics;
//! a lock file is never deleted, as deleting one under flock races). The
//! second run waits, polling, up to a bound, then gives up with a clear
//! message.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Held until dropped (closing the file releases the flock).
#[derive(Debug)]
pub struct Lock {
    _file: File,
    pub path: PathBuf,
    /// How long we waited for another holder.
    pub waited: Duration,
}

/// Where lock files live; tests point it elsewhere.
const LOCK_DIR: &str = "/run/lock";

/// The lock file for an output file or pin directory: one per absolute path.
pub fn lock_path_for(target: &Path) -> PathBuf {
    lock_path_in(Path::new(LOCK_DIR), target)
}

fn lock_path_in(dir: &Path, target: &Path) -> PathBuf {
    let absolute = std::path::absolute(target).unwrap_or_else(|_| target.to_path_buf());
    let text = absolute.to_string_lossy();
    // Readable enough to find by hand, unique by the hash of the whole path.
    let readable: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let tail = &readable[readable.len().saturating_sub(60)..];
    // FNV-1a: every bpfsnap, of any version, names a path's lock alike.
    let mut hash = fnv::FnvHasher::default();
    std::hash::Hasher::write(&mut hash, text.as_bytes());
    std::hash::Hasher::write(&mut hash, &[0xff]);
    let hash = format!("{:016x}", std::hash::Hasher::finish(&hash));
    dir.join(format!("bpfsnap-{tail}-{}.lock", &hash[..8]))
}

/// Takes the lock at `path`, waiting at most `limit`.
pub fn acquire(path: &Path, limit: Duration) -> Result<Lock> {
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("cannot open lock file {}", path.display()))?;
    let started = Instant::now();
    loop {
        // SAFETY: a valid descriptor.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(Lock {
                _file: file,
                path: path.to_path_buf(),
                waited: started.elapsed(),
            });
        }
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(err).with_context(|| format!("locking {}", path.display()));
        }
        if started.elapsed() >= limit {
            bail!(
                "another bpfsnap has held {} for {:.0?}: not starting a second run on the same output \
                 (raise --lock-timeout, or space the runs further apart)",
                path.display(),
                started.elapsed()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_waits_then_gives_up() {
        let dir = tempfile::tempdir().unwrap();
        let path = lock_path_in(dir.path(), &dir.path().join("bpfsnap.prom"));
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            name.starts_with("bpfsnap-")
                && name.contains("bpfsnap.prom-")
                && name.ends_with(".lock"),
            "{name}"
        );
        assert_ne!(
            path,
            lock_path_in(dir.path(), &dir.path().join("other.prom"))
        );
        let first = acquire(&path, Duration::ZERO).unwrap();
        let err = acquire(&path, Duration::from_millis(100))
            .unwrap_err()
            .to_string();
        assert!(err.contains("another bpfsnap has held"), "{err}");
        drop(first);
        let second = acquire(&path, Duration::ZERO).unwrap();
        assert!(second.waited < Duration::from_secs(1));
    }
}
