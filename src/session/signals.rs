//! SIGINT and SIGTERM, caught from the start: from then on they end a window
//! (or `serve`) instead of killing the process.
//!
//! The handler writes a byte to a self-pipe that the thread acting on the
//! signal waits on itself (`ppoll` with the time left), so a signal wakes it
//! directly. A thread of its own forwarding signals as messages had cost a
//! second wake-up, on the other CPU, before the snapshot began (SIGINT to
//! the first map read, the process cold: median 664 µs with it, 482 without).

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::backend::SignalDelivery;
use signal_hook::iterator::exfiltrator::SignalOnly;

/// SIGINT and SIGTERM caught; those that came before [`Stop::wait`] are
/// kept for it.
pub struct Stop(SignalDelivery<UnixStream, SignalOnly>);

pub fn catch() -> Result<Stop> {
    Stop::on(&[SIGINT, SIGTERM])
}

impl Stop {
    fn on(signals: &[i32]) -> Result<Stop> {
        let (read, write) = UnixStream::pair().context("making the signal pipe")?;
        SignalDelivery::with_pipe(read, write, SignalOnly, signals)
            .map(Stop)
            .context("installing signal handlers")
    }

    /// The first signal caught, waiting for one at most `timeout` (None: as
    /// long as it takes); None if none came in that time.
    pub fn wait(&mut self, timeout: Option<Duration>) -> Option<i32> {
        let deadline = timeout.map(|timeout| Instant::now() + timeout);
        loop {
            // Drains the pipe, then reads what the handler recorded.
            if let Some(signal) = self.0.pending().next() {
                return Some(signal);
            }
            let left = deadline.map(|at| at.saturating_duration_since(Instant::now()));
            if left.is_some_and(|left| left.is_zero()) {
                return None;
            }
            // Woken by a byte in the pipe, the deadline, or EINTR (the
            // handler ran on this thread): each is checked above.
            let step = left.map(|left| match left > POLL_SLACK_MAX {
                true => left - POLL_SLACK_MAX,
                false => left,
            });
            wait_readable(self.0.get_read().as_raw_fd(), step);
        }
    }
}

/// The most a poll's timeout may be extended: the kernel lets it end up to
/// 0.1% of its length late (0.5% for a niced task), at most 100 ms
/// (fs/select.c, `select_estimate_accuracy`), which made a 10 s window
/// 10 ms too long. A longer wait is cut in two: all but its last 100 ms,
/// then the rest, late by 0.1% of 100 ms at most.
const POLL_SLACK_MAX: Duration = Duration::from_millis(100);

/// Blocks until `fd` is readable, `left` has passed, or a signal comes.
fn wait_readable(fd: i32, left: Option<Duration>) {
    let mut pollfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let timeout = left.map(|left| libc::timespec {
        tv_sec: libc::time_t::try_from(left.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_nsec: left.subsec_nanos() as libc::c_long, // < 10^9
    });
    let timeout = timeout.as_ref().map_or(std::ptr::null(), |t| t as *const _);
    // SAFETY: one valid pollfd; the timespec (if any) outlives the call; no
    // signal mask is changed (null).
    unsafe { libc::ppoll(&mut pollfd, 1, timeout, std::ptr::null()) };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A signal that came before the wait, or during it, is returned; with
    /// none, the wait lasts its timeout. (SIGUSR2 and SIGWINCH, not SIGINT:
    /// other tests' sessions in this process must not see these.)
    #[test]
    fn a_signal_ends_the_wait_and_none_lets_it_time_out() {
        let mut stop = Stop::on(&[libc::SIGUSR2]).expect("catch SIGUSR2");
        // Shorter than the poll's slack, and longer (waited in two steps).
        for timeout in [Duration::from_millis(30), POLL_SLACK_MAX * 3 / 2] {
            let started = Instant::now();
            assert_eq!(stop.wait(Some(timeout)), None);
            assert!(started.elapsed() >= timeout, "{timeout:?} waited in full");
        }

        // SAFETY: raise only sends a caught signal to this thread.
        unsafe { libc::raise(libc::SIGUSR2) };
        assert_eq!(stop.wait(Some(Duration::ZERO)), Some(libc::SIGUSR2));
        assert_eq!(stop.wait(Some(Duration::ZERO)), None, "taken once");

        let mut later = Stop::on(&[libc::SIGWINCH]).expect("catch SIGWINCH");
        // SAFETY: gettid has no preconditions.
        let waiter = unsafe { libc::gettid() };
        let raiser = std::thread::spawn(move || {
            // Once the waiter blocks in ppoll (its current system call).
            let syscall = format!("/proc/self/task/{waiter}/syscall");
            let in_ppoll = format!("{} ", libc::SYS_ppoll);
            while !std::fs::read_to_string(&syscall).is_ok_and(|s| s.starts_with(&in_ppoll)) {
                std::thread::yield_now();
            }
            // SAFETY: sends a caught signal to this process.
            unsafe { libc::kill(libc::getpid(), libc::SIGWINCH) };
        });
        assert_eq!(later.wait(None), Some(libc::SIGWINCH));
        raiser.join().expect("raiser");
    }
}
