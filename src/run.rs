//! `bpfsnap run`: sample windows and write each to a textfile or stdout.
//!
//! select programs, check files, output and host → take the output lock →
//! load + attach every program (or reuse a pinned set) → drop capabilities →
//! then per window: wait (or a signal) → snapshot maps → expose → write.
//! One window by default; `--interval` keeps the probes attached and rewrites
//! the output every interval. SIGINT and SIGTERM are caught from the very
//! start, so a signal at any point ends the current window early (it is still
//! written) instead of killing the process mid-write; every probe that is not
//! pinned is detached when this function returns, on success and on error.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};

use crate::exposition::self_metrics::{self, unix_seconds, Bookkeeping, SelfMetric};
use crate::exposition::{self, metric_name, Carried, Carry, Exposition, Family, OutputFormat};
use crate::log::Log;
use crate::privilege::{self, KeepCaps};
use crate::probe::pinning::Pinning;
use crate::probe::{self, Probe};
use crate::program::{Program, Selection};
use crate::session::{self, Failed};
use crate::sink::{self, collide::OUTPUT_LABEL, lock, Sink};
use crate::snapshot::{Counts, Deltas};

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub selection: Selection,
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
    /// Leave the programs attached and maps pinned under this bpffs directory.
    pub pin: Option<PathBuf>,
    pub keep_caps: KeepCaps,
    pub lock_timeout: Duration,
    pub allow_untrusted_files: bool,
    /// What each --interval window's counters and histograms cover.
    pub counts: Counts,
    /// A program that cannot attach fails its config (ebpf_exporter's
    /// --config.strict); otherwise the config's other programs run.
    pub strict: bool,
    /// The kernel's types in BTF, instead of /sys/kernel/btf/vmlinux.
    pub btf: Option<PathBuf>,
    pub log: Log,
}

pub fn run(options: &RunOptions) -> Result<()> {
    let mut pinning = None;
    let result = run_pinning(options, &mut pinning);
    match (result, &options.pin, pinning) {
        (Err(err), Some(_), Some(mut pinning)) => Err(with_note(err, &pinning.failed_note())),
        (Err(err), Some(_), None) => Err(with_note(err, "--pin: this run pinned nothing")),
        (result, _, _) => result,
    }
}

/// [`run`], with `--pin`'s changes to bpffs in `pinning` once they begin.
fn run_pinning(options: &RunOptions, pinning: &mut Option<Pinning>) -> Result<()> {
    let stop = session::stop_signals()?;
    let log = options.log;
    if options.interval.is_some() && options.window.is_some() {
        bail!(crate::BadInput::new(
            "--for and --interval exclude each other: --interval DUR gives windows of DUR"
        ));
    }
    let programs = select(options)?;
    let _lock = take_lock(options)?;
    options.sink.remove_leftovers()?;
    let counting = counting(options, &programs)?;
    probe::check_host()?;
    probe::capture_libbpf_log(log.libbpf);
    let programs = match &options.pin {
        Some(root) => {
            let (programs, begun) = begin_pinning(root, programs, log)?;
            *pinning = Some(begun);
            programs
        }
        None => programs,
    };
    let mut output = Output::new(options, counting);
    attach_and_sample(&mut output, &programs, pinning, &stop)
}

/// What the counts of an output cover, and the file they carry on from.
struct Counting {
    /// Cumulative (counters and histograms) or of one window (gauges).
    counts: Counts,
    /// Without --pin, into a textfile: the file this run replaces, and the
    /// families that carry on from it.
    carry: Option<(Carried, BTreeMap<String, Carry>)>,
}

/// How the counts of `options`' output are to be read over time:
/// cumulative where they carry on from one output to the next (--interval,
/// --pin, serve, or a textfile, whose counters carry on from the file they
/// replace), else counts of one window (standard output, a pipe, or
/// `--counts window`), which are gauges. Reads the file to replace, so call
/// it holding the output's lock.
fn counting(options: &RunOptions, programs: &[Program]) -> Result<Counting> {
    let continues = options.interval.is_some() || options.pin.is_some();
    let counts = match (options.counts, &options.sink) {
        (Counts::Window, _) => Counts::Window,
        (Counts::Cumulative, Sink::Textfile(_)) => Counts::Cumulative,
        (Counts::Cumulative, _) if continues => Counts::Cumulative,
        (Counts::Cumulative, _) => Counts::Window,
    };
    let carries = counts == Counts::Cumulative
        && options.pin.is_none()
        && options.format == OutputFormat::Text;
    let previous = match carries {
        true => options.sink.previous_text()?,
        false => None,
    };
    let carry = previous.map(|text| (Carried::parse(&text), carried(options, programs)));
    Ok(Counting { counts, carry })
}

/// The families a run without --pin carries on from the file it replaces:
/// every counter and histogram it can write, and when counting began.
fn carried(options: &RunOptions, programs: &[Program]) -> BTreeMap<String, Carry> {
    let ns = options.namespace.as_str();
    let mut carried: BTreeMap<String, Carry> = programs
        .iter()
        .flat_map(|p| p.plan.metrics.iter())
        .map(|m| (metric_name(ns, &m.name), Carry::Add { cap: m.max_series }))
        .collect();
    for metric in SelfMetric::ALL {
        if metric.kind != exposition::Kind::Gauge {
            let cap = usize::MAX;
            carried.insert(metric.name_in(ns), Carry::Add { cap });
        }
    }
    carried.insert(SelfMetric::COUNTERS_START.name_in(ns), Carry::Earliest);
    carried
}

/// Attaches, samples and writes every window: the run itself (see [`run`]);
/// `pinning` is committed once the first window is written with every
/// config running.
fn attach_and_sample(
    output: &mut Output<'_>,
    programs: &[Program],
    pinning: &mut Option<Pinning>,
    stop: &mpsc::Receiver<i32>,
) -> Result<()> {
    let options = output.options;
    let log = options.log;
    let (probes, failed) = attach(output, programs)?;
    if let Some(pinning) = pinning {
        for pinned in probes.iter().filter_map(Probe::pinned) {
            if pinning.is_earlier(&pinned.dir) {
                log.info(&format!(
                    "{}: counting on in the set pinned in {}",
                    pinned.dir.file_name().unwrap_or_default().to_string_lossy(),
                    pinned.dir.display()
                ));
            }
        }
    }
    let keep = session::keep_caps(&options.keep_caps, programs, log);
    privilege::drop_capabilities(&keep)?;
    if keep != KeepCaps::All {
        // Writing must still work without the dropped capabilities.
        options
            .sink
            .check()
            .context("after dropping capabilities (see --keep-caps)")?;
    }
    let unread = sample(output, probes, &failed, pinning, stop)?;
    let down: Vec<&str> = failed
        .iter()
        .map(|f| f.config.as_str())
        .chain(unread.iter().map(String::as_str))
        .collect();
    if let Some(first) = down.first() {
        bail!(
            "{} of {} configs failed (first: {first})",
            down.len(),
            programs.len(),
        );
    }
    Ok(())
}

/// The programs, checked for trust, and the output checked before anything
/// loads: writable, and no other output in its directory writing one of
/// the configs' metrics (node_exporter would drop series).
fn select(options: &RunOptions) -> Result<Vec<Program>> {
    if let Some(path) = &options.btf {
        probe::host::use_external_btf(path)?;
    }
    let programs = session::select(
        &options.selection,
        options.allow_untrusted_files,
        options.log,
    )?;
    options.sink.check()?;
    let metric_families: Vec<String> = programs
        .iter()
        .flat_map(|p| p.plan.metrics.iter())
        .map(|m| metric_name(&options.namespace, &m.name))
        .collect();
    let names: Vec<&str> = metric_families.iter().map(String::as_str).collect();
    options.sink.check_families(&names)?;
    Ok(programs)
}

/// Starts a pinned run: removes what an interrupted run left, checks that
/// every program can be pinned (before anything is), and notes what is
/// pinned already, so a failure can undo this run's pins.
fn begin_pinning(
    root: &std::path::Path,
    programs: Vec<Program>,
    log: Log,
) -> Result<(Vec<Program>, Pinning)> {
    let programs = session::fit_to_pin(programs, log)?;
    let names: Vec<&str> = programs.iter().map(|p| p.config.name.as_str()).collect();
    let (pinning, recovered) = Pinning::begin(root, &names)?;
    for line in recovered {
        log.info(&line);
    }
    Ok((programs, pinning))
}

/// `err` with `note` after it, still bad input if it was.
fn with_note(err: anyhow::Error, note: &str) -> anyhow::Error {
    let noted = anyhow::anyhow!("{err:#}; {note}");
    match crate::BadInput::is(&err) {
        true => crate::BadInput::wrap(noted),
        false => noted,
    }
}

/// Attaches what it can. When nothing attached the run fails, but a
/// textfile still says so: an alert on `up` fires now rather than when
/// last_success has aged. (On stdout the error says it.)
fn attach(output: &mut Output<'_>, programs: &[Program]) -> Result<(Vec<Probe>, Vec<Failed>)> {
    let options = output.options;
    let log = options.log;
    let (probes, failed) =
        session::attach_each(programs, options.pin.as_deref(), options.strict, log)?;
    if !probes.is_empty() {
        session::log_problems(&probes, &failed, log);
        return Ok((probes, failed));
    }
    if matches!(options.sink, Sink::Textfile(_)) && options.format == OutputFormat::Text {
        let now = SystemTime::now();
        let window = Window {
            start: now,
            end: now,
            measured: Duration::ZERO,
            attached_at: now,
        };
        if let Err(err) = output.snapshot_and_write(&mut [], &failed, &window, 0, None) {
            log.warn(&format!(
                "could not record the failure in the output: {err:#}"
            ));
        }
    }
    session::log_problems(&[], failed.get(1..).unwrap_or_default(), log);
    Err(session::first_error(failed))
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

/// Samples and writes every window; returns the configs whose maps could
/// not be read in some window.
fn sample(
    output: &mut Output<'_>,
    mut probes: Vec<Probe>,
    failed: &[Failed],
    pinning: &mut Option<Pinning>,
    stop: &mpsc::Receiver<i32>,
) -> Result<Vec<String>> {
    let options = output.options;
    let log = options.log;
    let length = window_length(options, &probes);
    say_sampling(options, &probes, length);
    let attached_at = SystemTime::now();
    let mut window_start = attached_at;
    let mut windows = 0u64;
    let mut write_failures = 0u64;
    let mut deltas = (options.counts == Counts::Window).then(Deltas::default);
    let mut unread: Vec<String> = Vec::new();
    loop {
        let started = Instant::now();
        let signalled = wait(stop, length, log);
        let ended_at = SystemTime::now();
        windows += 1;
        let window = Window {
            start: match probes.iter().all(Probe::outlives_process) {
                true => pinned_window_start(&probes).unwrap_or(window_start),
                false => window_start,
            },
            end: ended_at,
            measured: started.elapsed(),
            attached_at,
        };
        let written = output.snapshot_and_write(
            &mut probes,
            failed,
            &window,
            write_failures,
            deltas.as_mut(),
        );
        match written {
            Ok(unread_now) => {
                for failure in unread_now {
                    log.error(&format!("{:#}", failure.error));
                    if !unread.contains(&failure.config) {
                        unread.push(failure.config);
                    }
                }
                let all_ran = failed.is_empty() && unread.is_empty();
                let times = (ended_at, attached_at);
                record_pins(&mut probes, pinning, all_ran, times, log)?;
            }
            // In interval mode a failed write is logged and retried next window.
            Err(err) if options.interval.is_some() && !signalled => {
                write_failures += 1;
                log.error(&format!(
                    "{err:#} (retrying in {})",
                    humantime::format_duration(length)
                ));
            }
            Err(err) => return Err(err),
        }
        window_start = ended_at;
        if options.interval.is_none() || signalled || options.count.is_some_and(|n| windows >= n) {
            return Ok(unread);
        }
    }
}

/// Says what is sampled, and for how long.
fn say_sampling(options: &RunOptions, probes: &[Probe], length: Duration) {
    let names: Vec<&str> = probes.iter().map(|p| p.config().name.as_str()).collect();
    let names = names.join(", ");
    let pinned: usize = probes.iter().filter_map(Probe::pinned_links).sum();
    if length.is_zero() && options.interval.is_none() {
        let s = if pinned == 1 { "" } else { "s" };
        options.log.info(&format!(
            "reading {names} at once: its programs count through {pinned} pinned link{s}"
        ));
        return;
    }
    let attached: usize = probes
        .iter()
        .map(Probe::attached)
        .sum::<usize>()
        .max(pinned);
    options.log.info(&format!(
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

/// After a window is written: each pinned set records its snapshot time
/// (the next window starts there), and a pinned run in which every config
/// ran (`all_ran`) keeps what it pinned.
fn record_pins(
    probes: &mut [Probe],
    pinning: &mut Option<Pinning>,
    all_ran: bool,
    (written_at, attached_at): (SystemTime, SystemTime),
    log: Log,
) -> Result<()> {
    for probe in probes.iter_mut() {
        if let Some(pinned) = probe.pinned_mut() {
            pinned.record_snapshot(unix_seconds(written_at), unix_seconds(attached_at))?;
        }
    }
    if let (true, Some(pinning)) = (all_ran, pinning) {
        for line in pinning.commit()? {
            log.info(&line);
        }
    }
    Ok(())
}

/// The lock on the output file (and the pin directory), so overlapping runs
/// never interleave.
fn take_lock(options: &RunOptions) -> Result<Vec<lock::Lock>> {
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
            options.log.warn(&format!(
                "waited {:.1?} for another bpfsnap to release {}",
                lock.waited,
                lock.path.display()
            ));
        }
        locks.push(lock);
    }
    Ok(locks)
}

/// Waits `length` or until SIGINT/SIGTERM (true); on a terminal with a
/// countdown on stderr.
fn wait(stop: &mpsc::Receiver<i32>, length: Duration, log: Log) -> bool {
    let deadline = Instant::now() + length;
    let countdown = log.countdown() && length >= Duration::from_secs(2);
    let signalled = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break false;
        }
        if countdown {
            let _ = write!(
                std::io::stderr(),
                "\r\x1b[Kbpfsnap: sampling, {}s left",
                left.as_secs_f64().ceil()
            );
        }
        let step = if countdown {
            left.min(Duration::from_secs(1))
        } else {
            left
        };
        match stop.recv_timeout(step) {
            Ok(signal) => {
                if countdown {
                    let _ = write!(std::io::stderr(), "\r\x1b[K");
                }
                log.info(&format!("signal {signal}: ending the window early"));
                break true;
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break false,
        }
    };
    if countdown && !signalled {
        let _ = write!(std::io::stderr(), "\r\x1b[K");
    }
    signalled
}

/// What one output covers.
struct Window {
    start: SystemTime,
    end: SystemTime,
    measured: Duration,
    attached_at: SystemTime,
}

/// The last snapshot time of a pinned set: in pinned mode a window is "since
/// the last run".
fn pinned_window_start(probes: &[Probe]) -> Option<SystemTime> {
    let seconds = probes
        .iter()
        .filter_map(|p| p.pinned())
        .map(|p| p.manifest.last_snapshot.unwrap_or(p.manifest.attached_at))
        .reduce(f64::min)?;
    Some(UNIX_EPOCH + Duration::from_secs_f64(seconds.max(0.0)))
}

/// What writes each window's output: the run's options, what its counts
/// cover, and what gathering has left out so far.
struct Output<'a> {
    options: &'a RunOptions,
    counting: Counting,
    bookkeeping: Bookkeeping,
}

impl<'a> Output<'a> {
    fn new(options: &'a RunOptions, counting: Counting) -> Output<'a> {
        Output {
            options,
            counting,
            bookkeeping: Bookkeeping::default(),
        }
    }

    /// Snapshots the probes and writes the output; returns the configs whose
    /// maps could not be read (written as down, the others as usual).
    fn snapshot_and_write(
        &mut self,
        probes: &mut [Probe],
        failed: &[Failed],
        window: &Window,
        write_failures: u64,
        deltas: Option<&mut Deltas>,
    ) -> Result<Vec<Failed>> {
        let options = self.options;
        let snapshot_started = Instant::now();
        let mut output = Exposition::default().counting(self.counting.counts);
        let mut kept: Vec<Family> = Vec::new();
        let unread = self.gather(probes, failed, window, deltas, &mut output, &mut kept)?;
        let snapshot_duration = snapshot_started.elapsed();

        let up = failed.is_empty() && unread.is_empty();
        let ns = options.namespace.as_str();
        let mut run_families = window_families(options, probes, window, up);
        run_families.push(SelfMetric::SNAPSHOT_DURATION.value(ns, snapshot_duration.as_secs_f64()));
        let failures = options
            .interval
            .map(|_| SelfMetric::WRITE_FAILURES.value(ns, write_failures as f64));
        let pretty;
        let (text, written): (sink::Text, usize) = match options.format {
            OutputFormat::Text => {
                label_output(options, &mut run_families);
                output.add_all(&run_families)?;
                if let Some(mut failures) = failures {
                    label_output(options, std::slice::from_mut(&mut failures));
                    output.add_cumulative(&failures)?;
                }
                if let Some((previous, carried)) = &self.counting.carry {
                    output.carry_on(previous, carried);
                }
                // Written family by family, never joined: a big map's family is
                // most of the text, and joining would copy it.
                (output.parts().collect(), output.len())
            }
            OutputFormat::Pretty => {
                kept.extend(run_families);
                kept.extend(failures);
                pretty = window_heading(options, window) + &exposition::pretty::render(&kept);
                (sink::Text::whole(&pretty), kept.len())
            }
        };
        options.sink.write_parts(&text)?;
        if let Sink::Textfile(path) = &options.sink {
            options.log.info(&format!(
                "wrote {written} metric families to {}",
                path.display()
            ));
        }
        Ok(unread)
    }

    /// The configs' families and self metrics: in the text format into
    /// `output`, each config's encoded as it comes and freed (a large map's
    /// family is most of the text); for the terminal view into `kept`.
    fn gather(
        &mut self,
        probes: &mut [Probe],
        failed: &[Failed],
        window: &Window,
        deltas: Option<&mut Deltas>,
        output: &mut Exposition,
        kept: &mut Vec<Family>,
    ) -> Result<Vec<Failed>> {
        let options = self.options;
        let ns = options.namespace.as_str();
        let text_format = options.format == OutputFormat::Text;
        let unread = exposition::gather(probes, ns, deltas, &mut self.bookkeeping, |families| {
            match text_format {
                true => output.add_all(&families),
                false => {
                    kept.extend(families);
                    Ok(())
                }
            }
        })?;
        let down: Vec<&str> = failed
            .iter()
            .chain(&unread)
            .map(|f| f.config.as_str())
            .collect();
        let clock = self_metrics::Clock {
            attached_at: window.attached_at,
            counting_since: match self.counting.counts {
                Counts::Cumulative => window.attached_at,
                Counts::Window => window.start,
            },
            now: window.end,
            counts: self.counting.counts,
        };
        let mut families = self_metrics::configs(ns, probes, &down, &clock);
        families.extend(self.bookkeeping.families(ns));
        match text_format {
            true => {
                label_output(options, &mut families);
                output.add_all(&families)?;
            }
            false => kept.extend(families),
        }
        Ok(unread)
    }
}

/// In a textfile directory several outputs' self metrics meet: a label
/// keeps their series apart (sink::collide).
fn label_output(options: &RunOptions, families: &mut [Family]) {
    if let Some(output) = options.sink.output_label() {
        for family in families {
            family.add_label(OUTPUT_LABEL, &output);
        }
    }
}

/// The window's own families: its length and bounds, whether every config
/// ran and when that was last so.
fn window_families(
    options: &RunOptions,
    probes: &[Probe],
    window: &Window,
    up: bool,
) -> Vec<Family> {
    let ns = options.namespace.as_str();
    let window_seconds = match probes.iter().all(Probe::outlives_process) {
        true => window
            .end
            .duration_since(window.start)
            .unwrap_or_default()
            .as_secs_f64(),
        false => window.measured.as_secs_f64(),
    };
    let mut families = vec![
        SelfMetric::WINDOW.value(ns, window_seconds),
        SelfMetric::WINDOW_START.value(ns, unix_seconds(window.start)),
        SelfMetric::WINDOW_END.value(ns, unix_seconds(window.end)),
        SelfMetric::UP.value(ns, if up { 1.0 } else { 0.0 }),
    ];
    let last_success = match up {
        true => Some(unix_seconds(SystemTime::now())),
        false => previous_last_success(&options.sink, ns),
    };
    if let Some(last) = last_success {
        families.push(SelfMetric::LAST_SUCCESS.value(ns, last));
    }
    families
}

/// In --interval mode on a terminal, a line before each window's tables
/// saying when it ended, how long it was and what the counts cover.
fn window_heading(options: &RunOptions, window: &Window) -> String {
    if options.interval.is_none() {
        return String::new();
    }
    let covering = match options.counts {
        Counts::Window => "counts of this window",
        Counts::Cumulative => "counts since the start",
    };
    format!(
        "--- {} ({:.3} s window; {covering}) ---\n",
        humantime::format_rfc3339_seconds(window.end),
        window.measured.as_secs_f64()
    )
}

/// `last_success_timestamp_seconds` from the file we are about to replace, so
/// a partly failed run keeps telling when things last fully worked.
fn previous_last_success(sink: &Sink, ns: &str) -> Option<f64> {
    let Sink::Textfile(path) = sink else {
        return None;
    };
    let text = std::fs::read_to_string(path).ok()?;
    let name = metric_name(ns, "last_success_timestamp_seconds");
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(&name)?;
        // Its labels, if any (the output's), end at the last '}'.
        let value = match rest.strip_prefix('{') {
            Some(labelled) => labelled.rsplit_once("} ")?.1,
            None => rest.strip_prefix(' ')?,
        };
        value.trim().parse().ok()
    })
}
