//! The window loop: wait out each window (or a signal), collect and write
//! it, record it in the pinned sets; once by default, every `--interval`
//! until a signal or `--count`. A failed write in interval mode is counted
//! and retried the next window.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Result;

use super::countdown;
use super::output::{Output, Window};
use super::pinned::Pins;
use super::RunOptions;
use crate::probe::Probe;
use crate::session::Session;

/// Samples and writes every window; returns the configs that did not run
/// in some window (failed to attach, or maps not read).
pub(super) fn sample(
    session: Session,
    output: &mut Output,
    pins: &mut Pins,
) -> Result<Vec<String>> {
    let Session {
        mut probes,
        failed,
        mut stop,
        attached_at,
        ..
    } = session;
    let options = output.options();
    let log = options.session.log;
    let length = window_length(options, &probes);
    say_sampling(options, &probes, length);
    let mut down: Vec<String> = failed.iter().map(|f| f.config.clone()).collect();
    let mut window_start = attached_at;
    let mut windows = 0u64;
    let mut write_failures = 0u64;
    loop {
        let started = Instant::now();
        let signalled = countdown::wait(&mut stop, length, log);
        let ended_at = SystemTime::now();
        windows += 1;
        let window = Window {
            start: match probes.iter().all(Probe::outlives_process) {
                true => pinned_window_start(&probes).unwrap_or(window_start),
                false => window_start,
            },
            end: ended_at,
            measured: started.elapsed(),
        };
        let failures = options.interval.map(|_| write_failures);
        match output.snapshot_and_write(&mut probes, &failed, &window, failures) {
            Ok(unread) => {
                for failure in unread {
                    log.error(&format!("{:#}", failure.error));
                    if !down.contains(&failure.config) {
                        down.push(failure.config);
                    }
                }
                let times = (ended_at, attached_at);
                pins.written(&mut probes, down.is_empty(), times, log)?;
            }
            // In interval mode a failed write is logged and retried next window.
            Err(err) if options.interval.is_some() && !signalled => {
                write_failures += 1;
                let again = humantime::format_duration(length);
                log.error(&format!("{err:#} (retrying in {again})"));
            }
            Err(err) => return Err(err),
        }
        window_start = ended_at;
        if options.interval.is_none() || signalled || options.count.is_some_and(|n| windows >= n) {
            return Ok(down);
        }
    }
}

/// How long each window is: `--interval`, `--for`, or by default 10 s —
/// nothing with every probe pinned for good, where the window is the time
/// since the last run and the probes count without us. (A probe whose links
/// the kernel would not pin counts only in the window: its warning says why.)
fn window_length(options: &RunOptions, probes: &[Probe]) -> Duration {
    let all_persist = options.pin.is_some() && probes.iter().all(Probe::outlives_process);
    options
        .interval
        .or(options.window)
        .unwrap_or(if all_persist {
            Duration::ZERO
        } else {
            Duration::from_secs(10)
        })
}

/// Says what is sampled, and for how long.
fn say_sampling(options: &RunOptions, probes: &[Probe], length: Duration) {
    let names: Vec<&str> = probes.iter().map(|p| p.config().name.as_str()).collect();
    let names = names.join(", ");
    let pinned: usize = probes.iter().filter_map(Probe::pinned_links).sum();
    let log = options.session.log;
    if length.is_zero() && options.interval.is_none() {
        let s = if pinned == 1 { "" } else { "s" };
        log.info(&format!(
            "reading {names} at once: its programs count through {pinned} pinned link{s}"
        ));
        return;
    }
    let attached: usize = probes
        .iter()
        .map(Probe::attached)
        .sum::<usize>()
        .max(pinned);
    log.info(&format!(
        "sampling {names} ({attached} BPF link{} attached) {} {}; Ctrl-C ends the window early",
        if attached == 1 { "" } else { "s" },
        if options.interval.is_some() {
            "every"
        } else {
            "for"
        },
        humantime::format_duration(length)
    ));
}

/// The last snapshot time of the pinned sets: in pinned mode a window is
/// "since the last run".
fn pinned_window_start(probes: &[Probe]) -> Option<SystemTime> {
    let seconds = probes
        .iter()
        .filter_map(|p| p.pinned())
        .map(|p| p.manifest.last_snapshot.unwrap_or(p.manifest.attached_at))
        .reduce(f64::min)?;
    Some(UNIX_EPOCH + Duration::from_secs_f64(seconds.max(0.0)))
}
