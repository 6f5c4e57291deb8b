//! `bpfsnap run`: the pipeline end to end, once.
//!
//! check output and host → load + attach every program → wait for the window
//! (or a signal) → snapshot maps → expose → write → detach (drop).
//! SIGINT and SIGTERM are caught from the very start, so a signal at any point
//! ends the window early instead of killing the process mid-write; every
//! probe is detached when this function returns, on success and on error.

use std::io::IsTerminal;
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::builtin;
use crate::expose::{self, Exposition};
use crate::probe::{self, Probe};
use crate::sink::Sink;
use crate::snapshot;

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub window: Duration,
    pub sink: Sink,
    /// Built-ins to run; empty: the default set.
    pub builtins: Vec<String>,
    pub verbose: bool,
}

pub fn run(options: &RunOptions) -> Result<()> {
    let stop = stop_signals()?;
    let say = |message: &str| {
        if options.verbose || std::io::stderr().is_terminal() {
            eprintln!("bpfsnap: {message}");
        }
    };

    let programs = builtin::select(&options.builtins)?;
    let configs = programs
        .iter()
        .map(|p| p.config())
        .collect::<Result<Vec<_>>>()?;
    options.sink.check()?;
    probe::check_host()?;
    probe::capture_libbpf_log(options.verbose);

    let mut probes = Vec::with_capacity(programs.len());
    for (program, config) in programs.iter().zip(configs) {
        probes.push(Probe::attach(config, program.object)?);
    }
    let names: Vec<&str> = probes.iter().map(|p| p.config().name.as_str()).collect();
    let attached: usize = probes.iter().map(Probe::attached).sum();
    say(&format!(
        "sampling {} ({attached} BPF program{} attached) for {}; Ctrl-C ends the window early",
        names.join(", "),
        if attached == 1 { "" } else { "s" },
        humantime::format_duration(options.window)
    ));

    let started_at = SystemTime::now();
    let started = Instant::now();
    if let Ok(signal) = stop.recv_timeout(options.window) {
        say(&format!("signal {signal}: ending the window early"));
    }
    let window = started.elapsed();
    let ended_at = SystemTime::now();

    let snapshot_started = Instant::now();
    let mut exposition = Exposition::default();
    let mut decode_errors = Vec::new();
    for probe in &probes {
        let snapshot = snapshot::take(probe)?;
        let exposed = expose::counters(probe.config(), &snapshot)?;
        exposition.add_all(exposed.families)?;
        for (decoder, count) in exposed.decode_errors {
            decode_errors.push((
                vec![probe.config().name.clone(), decoder.to_string()],
                count as f64,
            ));
        }
    }
    let snapshot_duration = snapshot_started.elapsed();

    exposition.add_all(vec![
        expose::gauge(
            "bpfsnap_window_seconds",
            "Length of the sampling window these metrics cover, as measured (shorter than requested when a signal ended it).",
            window.as_secs_f64(),
        ),
        expose::gauge(
            "bpfsnap_window_start_timestamp_seconds",
            "Unix time at which the sampling window started (all programs attached).",
            unix_seconds(started_at),
        ),
        expose::gauge("bpfsnap_window_end_timestamp_seconds", "Unix time at which the sampling window ended.", unix_seconds(ended_at)),
        expose::gauge(
            "bpfsnap_snapshot_duration_seconds",
            "Time taken to read the BPF maps and encode their metrics.",
            snapshot_duration.as_secs_f64(),
        ),
        expose::labelled_counter(
            "bpfsnap_decoder_errors_total",
            "Map keys skipped because a label decoder rejected them.",
            &["config", "decoder"],
            decode_errors,
        ),
    ])?;

    options.sink.write(exposition.text().as_bytes())?;
    if let Sink::Textfile(path) = &options.sink {
        say(&format!(
            "wrote {} metric families to {}",
            exposition.len(),
            path.display()
        ));
    }
    drop(probes);
    Ok(())
}

/// SIGINT and SIGTERM as messages; once this is set up they no longer kill the
/// process, they end the window.
fn stop_signals() -> Result<mpsc::Receiver<i32>> {
    let mut signals = Signals::new([SIGINT, SIGTERM]).context("installing signal handlers")?;
    let (sender, receiver) = mpsc::channel();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                if sender.send(signal).is_err() {
                    break;
                }
            }
        })
        .context("starting the signal thread")?;
    Ok(receiver)
}

fn unix_seconds(time: SystemTime) -> f64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}
