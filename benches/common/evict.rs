//! Asking bench.py's evictor (`load evictor`, one buffer for the whole
//! bench) to push what a map held out of the CPU caches before a timed run.
//! The program is given the evictor's two pipe ends as `EVICT_FDS`, "W,R".
//! An own buffer would be freed at exit, and this VM hands freed memory
//! back to its host: the next process touching fresh memory paid for it.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::FromRawFd;

pub struct Evictor {
    request: File,
    done: File,
}

impl Evictor {
    /// From "W,R": the evictor's stdin (to write) and stdout (to read).
    pub fn from_fds(fds: &str) -> Option<Evictor> {
        let (write, read) = fds.split_once(',')?;
        let (write, read): (i32, i32) = (write.parse().ok()?, read.parse().ok()?);
        // SAFETY: bench.py passes these two pipe ends to this process alone.
        let (request, done) = unsafe { (File::from_raw_fd(write), File::from_raw_fd(read)) };
        Some(Evictor { request, done })
    }

    /// Returns once the evictor has swept its buffer.
    pub fn evict(&mut self) {
        let mut answer = [0u8];
        self.request.write_all(b"e").expect("asking the evictor");
        self.done
            .read_exact(&mut answer)
            .expect("the evictor's answer");
    }
}
