//! `bpfsnap run`: sample windows and write each to a textfile or stdout.
//!
//! A session is selected (signals caught from here on) → the output is
//! checked and locked, and what its counts carry on from read ([`output`])
//! → with `--pin`, what is pinned already noted ([`pinned`]) → the session
//! opens (probes attached, capabilities dropped) → every window is waited
//! for, collected and written ([`window`]), with a countdown on a terminal
//! ([`countdown`]). One window by default; `--interval` keeps the probes
//! attached and rewrites the output every interval. A signal at any point
//! ends the current window early (it is still written) instead of killing
//! the process mid-write; every probe that is not pinned is detached when
//! [`run`] returns, on success and on error.

mod countdown;
mod output;
mod pinned;
mod window;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::exposition::{metric_name, OutputFormat};
use crate::privilege::KeepCaps;
use crate::program::Program;
use crate::session::{Session, SessionOptions};
use crate::sink::{lock, Sink};
use crate::snapshot::Counts;

use output::{Counting, Output};
use pinned::Pins;

#[derive(Debug, Clone)]
pub struct RunOptions {
    /// What to load and how (shared with `serve`).
    pub session: SessionOptions,
    /// The sampling window of a one-shot run; None: 10 s, or 0 with `pin`.
    pub window: Option<Duration>,
    /// Rewrite the output every interval instead of once.
    pub interval: Option<Duration>,
    /// Stop after this many windows (interval mode).
    pub count: Option<u64>,
    pub sink: Sink,
    /// Prefix of every metric name (`bpfsnap`).
    pub namespace: String,
    pub format: OutputFormat,
    /// How the terminal view (the pretty format) is laid out.
    pub view: crate::exposition::pretty::View,
    /// Leave the programs attached and maps pinned under this bpffs directory.
    pub pin: Option<PathBuf>,
    pub lock_timeout: Duration,
    /// What each --interval window's counters and histograms cover.
    pub counts: Counts,
}

pub fn run(options: &RunOptions) -> Result<()> {
    let mut pins = Pins::new(options.pin.as_deref());
    attach_and_sample(options, &mut pins).map_err(|err| pins.failed(err))
}

/// The run itself (see [`run`]); `pins` holds `--pin`'s changes to bpffs.
fn attach_and_sample(options: &RunOptions, pins: &mut Pins) -> Result<()> {
    let mut selected = Session::select(&options.session)?;
    check_output(options, selected.programs())?;
    let _locks = take_locks(options)?;
    options.sink.remove_leftovers()?;
    let counting = Counting::of(options, selected.programs())?;
    pins.begin(&mut selected, options.session.log)?;
    let configs = selected.programs().len();
    let session = selected.open(options.pin.as_deref())?;
    let mut output = Output::new(options, counting, session.attached_at);
    if session.probes.is_empty() {
        output.write_failure(&session.failed);
        return Err(session.nothing_attached());
    }
    pins.say_adopted(&session.probes, options.session.log);
    if session.kept != KeepCaps::All {
        // Writing must still work without the dropped capabilities.
        options
            .sink
            .check()
            .context("after dropping capabilities (see --keep-caps)")?;
    }
    let down = window::sample(session, &mut output, pins)?;
    if let Some(first) = down.first() {
        bail!(
            "{} of {configs} configs failed (first: {first})",
            down.len()
        );
    }
    Ok(())
}

/// Before anything loads: the output can be written, and no other output
/// in its directory writes one of the configs' metrics (node_exporter would
/// drop series).
fn check_output(options: &RunOptions, programs: &[Program]) -> Result<()> {
    options.sink.check()?;
    let families: Vec<String> = programs
        .iter()
        .flat_map(|p| p.plan.metrics.iter())
        .map(|m| metric_name(&options.namespace, &m.name))
        .collect();
    let names: Vec<&str> = families.iter().map(String::as_str).collect();
    options.sink.check_families(&names)
}

/// The lock on the output file (and the pin directory), so overlapping runs
/// never interleave.
fn take_locks(options: &RunOptions) -> Result<Vec<lock::Lock>> {
    let mut targets = Vec::new();
    if let Sink::Textfile(path) = &options.sink {
        targets.push(lock::lock_path_for(path));
    }
    if let Some(root) = &options.pin {
        targets.push(lock::lock_path_for(root));
    }
    let mut locks = Vec::new();
    for path in targets {
        let lock = lock::acquire(&path, options.lock_timeout)?;
        // Overlapping runs mean the schedule is tighter than a run: worth a
        // warning (so cron mails it), unless -q asked for errors only.
        if lock.waited > Duration::from_millis(100) {
            options.session.log.warn(&format!(
                "waited {:.1?} for another bpfsnap to release {}",
                lock.waited,
                lock.path.display()
            ));
        }
        locks.push(lock);
    }
    Ok(locks)
}
