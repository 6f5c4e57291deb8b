//! `bpfsnap run`: the pipeline end to end, once.
//!
//! select programs, check output and host → load + attach every program →
//! wait for the window (or a signal) → snapshot maps → expose → write → detach
//! (drop). SIGINT and SIGTERM are caught from the very start, so a signal at
//! any point ends the window early instead of killing the process mid-write;
//! every probe is detached when this function returns, on success and on error.

use std::io::IsTerminal;
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use prometheus::proto::MetricType;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::expose::{self, metric_name, Exposition};
use crate::probe::{self, Probe};
use crate::program::{self, Selection};
use crate::sink::Sink;
use crate::snapshot;

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub selection: Selection,
    pub window: Duration,
    pub sink: Sink,
    /// Prefix of every metric name (`bpfsnap`).
    pub namespace: String,
    pub format: OutputFormat,
    pub verbose: bool,
}

/// How the metrics are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// Prometheus text exposition format 0.0.4 (for files, pipes, node_exporter).
    Text,
    /// Tables and histogram bars for a person at a terminal.
    Pretty,
}

pub fn run(options: &RunOptions) -> Result<()> {
    let stop = stop_signals()?;
    let say = |message: &str| {
        if options.verbose || std::io::stderr().is_terminal() {
            eprintln!("bpfsnap: {message}");
        }
    };

    let mut programs = program::select(&options.selection)?;
    if options.selection.is_empty() {
        // The default set adapts to the kernel: a built-in that cannot attach
        // here is left out, not fatal.
        let kernel = probe::availability::KernelTypes::load();
        programs.retain(|program| match probe::unavailable(program, &kernel) {
            Ok(None) => true,
            Ok(Some(reason)) => {
                eprintln!("bpfsnap: warning: built-in {} left out: {reason}", program.config.name);
                false
            }
            Err(err) => {
                eprintln!("bpfsnap: warning: built-in {} left out: {err:#}", program.config.name);
                false
            }
        });
    }
    for program in &programs {
        for warning in &program.config.warnings {
            eprintln!("bpfsnap: warning: {}: {warning}", program.config.origin);
        }
    }
    options.sink.check()?;
    probe::check_host()?;
    probe::capture_libbpf_log(options.verbose);

    let mut probes = Vec::with_capacity(programs.len());
    for program in &programs {
        probes.push(Probe::attach(program)?);
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

    let ns = options.namespace.as_str();
    let snapshot_started = Instant::now();
    let mut families = Vec::new();
    let mut decode_errors = Vec::new();
    for probe in &mut probes {
        let snapshot = snapshot::take(probe)?;
        let mut exposed = expose::counters(probe.config(), &snapshot, ns)?;
        expose::histograms(probe.config(), &snapshot, ns, &mut exposed)?;
        families.extend(exposed.families);
        for (decoder, count) in exposed.decode_errors {
            decode_errors.push((vec![probe.config().name.clone(), decoder.to_string()], count as f64));
        }
        probe.refresh_stats();
    }
    families.extend(self_metrics(ns, &probes));
    // Encoding is part of the snapshot's cost; only the gauges below are
    // encoded after the measurement.
    let mut exposition = Exposition::default();
    if options.format == OutputFormat::Text {
        exposition.add_all(families.clone())?;
    }
    let snapshot_duration = snapshot_started.elapsed();

    let run_families = vec![
        expose::gauge(
            &metric_name(ns, "window_seconds"),
            "Length of the sampling window these metrics cover, as measured (shorter than requested when a signal ended it).",
            window.as_secs_f64(),
        ),
        expose::gauge(
            &metric_name(ns, "window_start_timestamp_seconds"),
            "Unix time at which the sampling window started (all programs attached).",
            unix_seconds(started_at),
        ),
        expose::gauge(
            &metric_name(ns, "window_end_timestamp_seconds"),
            "Unix time at which the sampling window ended.",
            unix_seconds(ended_at),
        ),
        expose::gauge(
            &metric_name(ns, "snapshot_duration_seconds"),
            "Time taken to read the BPF maps and encode their metrics.",
            snapshot_duration.as_secs_f64(),
        ),
        expose::labelled(
            &metric_name(ns, "decoder_errors_total"),
            "Map keys skipped because a label decoder rejected them.",
            MetricType::COUNTER,
            &["config", "decoder"],
            decode_errors,
        ),
    ];
    let text = match options.format {
        OutputFormat::Text => {
            exposition.add_all(run_families)?;
            exposition.text()
        }
        OutputFormat::Pretty => {
            families.extend(run_families);
            expose::pretty::render(&families)
        }
    };
    options.sink.write(text.as_bytes())?;
    if let Sink::Textfile(path) = &options.sink {
        say(&format!("wrote {} metric families to {}", exposition.len(), path.display()));
    }
    drop(probes);
    Ok(())
}

/// ebpf_exporter's self metrics: which configs and programs are loaded, and
/// (with kernel.bpf_stats_enabled=1) what the programs cost.
fn self_metrics(ns: &str, probes: &[Probe]) -> Vec<prometheus::proto::MetricFamily> {
    let mut configs = Vec::new();
    let mut info = Vec::new();
    let mut attached = Vec::new();
    let mut run_time = Vec::new();
    let mut run_count = Vec::new();
    for probe in probes {
        let config = &probe.config().name;
        configs.push((vec![config.clone()], 1.0));
        for program in probe.programs() {
            let id = program.id.to_string();
            info.push((
                vec![
                    config.clone(),
                    id.clone(),
                    program.name.clone(),
                    program.tag.clone(),
                    program.attach.clone(),
                ],
                1.0,
            ));
            attached.push((vec![id.clone()], 1.0));
            run_time.push((vec![id.clone()], program.run_time_ns as f64 / 1e9));
            run_count.push((vec![id], program.run_count as f64));
        }
    }
    let mut families = vec![
        expose::labelled(
            &metric_name(ns, "enabled_configs"),
            "The configs (programs) this run loaded.",
            MetricType::GAUGE,
            &["name"],
            configs,
        ),
        expose::labelled(
            &metric_name(ns, "program_info"),
            "Every loaded BPF program: its config, kernel id, name, tag and attach type.",
            MetricType::GAUGE,
            &["config", "id", "program", "tag", "attach"],
            info,
        ),
        expose::labelled(
            &metric_name(ns, "program_attached"),
            "Whether the BPF program with this id was attached.",
            MetricType::GAUGE,
            &["id"],
            attached,
        ),
    ];
    if bpf_stats_enabled() {
        families.push(expose::labelled(
            &metric_name(ns, "program_run_time_seconds_total"),
            "Time the BPF program has run in the kernel (kernel.bpf_stats_enabled=1).",
            MetricType::COUNTER,
            &["id"],
            run_time,
        ));
        families.push(expose::labelled(
            &metric_name(ns, "program_run_count_total"),
            "Times the BPF program has run (kernel.bpf_stats_enabled=1).",
            MetricType::COUNTER,
            &["id"],
            run_count,
        ));
    }
    families
}

fn bpf_stats_enabled() -> bool {
    std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled")
        .is_ok_and(|text| text.trim() == "1")
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
