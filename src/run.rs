//! `bpfsnap run`: the pipeline end to end.
//!
//! select programs, check files, output and host → take the output lock →
//! load + attach every program (or reuse a pinned set) → drop capabilities →
//! then per window: wait (or a signal) → snapshot maps → expose → write.
//! One window by default; `--interval` keeps the probes attached and rewrites
//! the output every interval. SIGINT and SIGTERM are caught from the very
//! start, so a signal at any point ends the current window early (it is still
//! written) instead of killing the process mid-write; every probe that is not
//! pinned is detached when this function returns, on success and on error.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use prometheus::proto::{MetricFamily, MetricType};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::expose::{self, metric_name, Exposition};
use crate::privilege::{self, KeepCaps};
use crate::probe::{self, Probe};
use crate::program::{self, ObjectSource, Program, Selection};
use crate::sink::{self, collide::OUTPUT_LABEL, lock, Sink};
use crate::snapshot::{self, Deltas};

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

/// What counters and histograms cover in `--interval` mode and `serve`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Counts {
    /// Everything since the programs were attached: Prometheus counters,
    /// for rate() and increase().
    Cumulative,
    /// The last window (or scrape) only: each snapshot minus the one before.
    Window,
}

/// How the metrics are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// Prometheus text exposition format 0.0.4 (for files, pipes, node_exporter).
    Text,
    /// Tables and histogram bars for a person at a terminal.
    Pretty,
}

/// Messages on stderr: errors always, warnings unless quiet, progress with
/// `-v` or on a terminal, libbpf's own messages with `-vv`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Log {
    pub verbose: bool,
    pub quiet: bool,
    /// Echo libbpf's debug messages (thousands of lines for the default set:
    /// formatting them costs a third of the start-up).
    pub libbpf: bool,
}

impl Log {
    /// From the number of `-v` given and `-q`.
    pub fn new(verbosity: u8, quiet: bool) -> Log {
        Log {
            verbose: verbosity >= 1,
            quiet,
            libbpf: verbosity >= 2,
        }
    }

    pub fn info(&self, message: &str) {
        if !self.quiet && (self.verbose || std::io::stderr().is_terminal()) {
            eprintln!("bpfsnap: {message}");
        }
    }

    pub fn warn(&self, message: &str) {
        if !self.quiet {
            eprintln!("bpfsnap: warning: {message}");
        }
    }

    pub fn error(&self, message: &str) {
        eprintln!("bpfsnap: error: {message}");
    }

    fn countdown(&self) -> bool {
        !self.quiet && std::io::stderr().is_terminal()
    }
}

/// A probe that failed while others ran: the run goes on without it and
/// reports it in `bpfsnap_config_up` and the exit status.
pub(crate) struct Failed {
    pub(crate) config: String,
    pub(crate) error: anyhow::Error,
}

pub fn run(options: &RunOptions) -> Result<()> {
    let stop = stop_signals()?;
    let log = options.log;
    if options.interval.is_some() && options.window.is_some() {
        bail!(crate::BadInput::new(
            "--for and --interval exclude each other: --interval DUR gives windows of DUR"
        ));
    }

    if let Some(path) = &options.btf {
        probe::host::use_external_btf(path)?;
    }
    let programs = select(&options.selection, options.allow_untrusted_files, log)?;
    options.sink.check()?;
    // Before the window: another output in the directory writing one of the
    // configs' metrics would make node_exporter drop series.
    let metric_families: Vec<String> = programs
        .iter()
        .flat_map(|p| {
            p.config
                .metrics()
                .map(|m| metric_name(&options.namespace, m.name))
        })
        .collect();
    options.sink.check_families(
        &metric_families
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    )?;
    let _lock = take_lock(options)?;
    options.sink.remove_leftovers()?;
    probe::check_host()?;
    probe::capture_libbpf_log(log.libbpf);
    if let Some(root) = &options.pin {
        probe::pin::ensure_bpffs(root)?;
        for stale in probe::pin::pinned_configs(root) {
            if !programs.iter().any(|p| p.config.name == stale) {
                log.info(&format!("unpinning {stale}: no longer selected"));
                probe::pin::remove(&root.join(&stale))?;
            }
        }
    }

    let (mut probes, failed) = attach_each(&programs, options.pin.as_deref(), options.strict, log)?;
    if probes.is_empty() {
        // Nothing to measure, but the file can still say so: an alert on
        // `up` fires now rather than when last_success has aged. (On stdout
        // the error says it.)
        if matches!(options.sink, Sink::Textfile(_)) && options.format == OutputFormat::Text {
            let now = SystemTime::now();
            let window = Window {
                start: now,
                end: now,
                measured: Duration::ZERO,
                attached_at: now,
            };
            if let Err(err) = snapshot_and_write(options, &mut [], &failed, &window, 0, None) {
                log.warn(&format!(
                    "could not record the failure in the output: {err:#}"
                ));
            }
        }
        log_problems(&[], failed.get(1..).unwrap_or_default(), log);
        return Err(first_error(failed));
    }
    log_problems(&probes, &failed, log);

    let keep = keep_caps(&options.keep_caps, &programs, log);
    privilege::drop_capabilities(&keep)?;
    if keep != KeepCaps::All {
        // Writing must still work without the dropped capabilities.
        options
            .sink
            .check()
            .context("after dropping capabilities (see --keep-caps)")?;
    }
    let attached: usize = probes.iter().map(Probe::attached).sum();
    let names: Vec<&str> = probes.iter().map(|p| p.config().name.as_str()).collect();
    // With every probe pinned for good, the window is the time since the
    // last run: no need to wait. Otherwise the probes count only while we do.
    let all_persist = options.pin.is_some() && probes.iter().all(Probe::outlives_process);
    if options.pin.is_some() && !all_persist {
        log.warn(
            "the kernel refuses to pin BPF links here (a security policy such as a BPF LSM), so the \
             programs cannot stay attached between runs: the pinned maps carry the counters on, \
             counting during each run's window only",
        );
    }
    let length = options
        .interval
        .or(options.window)
        .unwrap_or(if all_persist {
            Duration::ZERO
        } else {
            Duration::from_secs(10)
        });
    log.info(&format!(
        "sampling {} ({attached} BPF link{} attached) {} {}; Ctrl-C ends the window early",
        names.join(", "),
        if attached == 1 { "" } else { "s" },
        if options.interval.is_some() {
            "every"
        } else {
            "for"
        },
        humantime::format_duration(length)
    ));

    let attached_at = SystemTime::now();
    let mut window_start = attached_at;
    let mut windows = 0u64;
    let mut write_failures = 0u64;
    let mut deltas = (options.counts == Counts::Window).then(Deltas::default);
    // Configs whose maps could not be read in some window.
    let mut unread: Vec<String> = Vec::new();
    loop {
        let started = Instant::now();
        let signalled = wait(&stop, length, log);
        let ended_at = SystemTime::now();
        windows += 1;
        let since_last_run = probes.iter().all(Probe::outlives_process);
        let window = Window {
            start: if since_last_run {
                pinned_window_start(&probes).unwrap_or(window_start)
            } else {
                window_start
            },
            end: ended_at,
            measured: started.elapsed(),
            attached_at,
        };
        let result = snapshot_and_write(
            options,
            &mut probes,
            &failed,
            &window,
            write_failures,
            deltas.as_mut(),
        );
        match result {
            Ok(unread_now) => {
                for failure in unread_now {
                    log.error(&format!("{:#}", failure.error));
                    if !unread.contains(&failure.config) {
                        unread.push(failure.config);
                    }
                }
                for probe in &mut probes {
                    if let Some(pinned) = probe.pinned_mut() {
                        pinned.record_snapshot(unix_seconds(ended_at))?;
                    }
                }
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
        let done =
            options.interval.is_none() || signalled || options.count.is_some_and(|n| windows >= n);
        if done {
            break;
        }
    }
    drop(probes);
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

/// Attaches every program (pinned under `pin` if given). A program that
/// fails at run time is set aside (the others run); bad input fails at once,
/// and so does a run where nothing could attach.
pub(crate) fn attach_all(
    programs: &[Program],
    pin: Option<&Path>,
    strict: bool,
    log: Log,
) -> Result<(Vec<Probe>, Vec<Failed>)> {
    let (probes, failed) = attach_each(programs, pin, strict, log)?;
    if probes.is_empty() {
        return Err(first_error(failed));
    }
    log_problems(&probes, &failed, log);
    Ok((probes, failed))
}

/// Attaches what it can: bad input fails at once, a run-time failure of one
/// program is returned beside the probes that did attach.
fn attach_each(
    programs: &[Program],
    pin: Option<&Path>,
    strict: bool,
    log: Log,
) -> Result<(Vec<Probe>, Vec<Failed>)> {
    let kernel = probe::availability::KernelTypes::load();
    let (programs, mut failed) = fit_to_kernel(programs, &kernel, log);
    let programs = programs.as_slice();
    let attach = |program: &Program| match pin {
        Some(root) => Probe::attach_pinned(program, root),
        None => Probe::attach(program),
    };
    let groups = load_groups(programs, pin);
    let mut attached: Vec<(usize, Result<Probe>)> = in_parallel(&groups, |group| {
        if group.len() > 1 {
            let members: Vec<&Program> = group.iter().map(|&i| &programs[i]).collect();
            match Probe::attach_linked(&members) {
                Ok(probes) => {
                    return group
                        .iter()
                        .copied()
                        .zip(probes.into_iter().map(Ok))
                        .collect()
                }
                Err(err) => log.info(&format!(
                    "loading built-ins together failed ({err:#}): loading each on its own"
                )),
            }
        }
        group
            .iter()
            .map(|&i| (i, attach(&programs[i])))
            .collect::<Vec<_>>()
    })
    .into_iter()
    .flatten()
    .collect();
    attached.sort_by_key(|(index, _)| *index);

    let mut probes = Vec::with_capacity(programs.len());
    for (index, result) in attached {
        let program = &programs[index];
        match result {
            Ok(probe) => probes.push(probe),
            // The default set in --pin mode: a member the process itself
            // counts for cannot persist, and is left out (named, it fails).
            Err(err) if program.optional && is_not_pinnable(&err) => {
                log.info(&format!(
                    "built-in {} left out: its event-stream counters cannot be pinned (run it \
                     with --interval or serve)",
                    program.config.name
                ));
            }
            // Bad input is the user's to fix now, not a partial run.
            Err(err) if crate::BadInput::is(&err) => return Err(err),
            Err(err) => {
                let name = &program.config.name;
                match unavailable_builtin(program, &kernel) {
                    // The default set adapts to the kernel: a built-in whose
                    // attach point this kernel lacks is left out.
                    Some(reason) if program.optional => {
                        log.info(&format!("built-in {name} left out: {reason}"));
                    }
                    // Named, it fails with that reason rather than libbpf's.
                    Some(reason) => failed.push(Failed {
                        config: name.clone(),
                        error: anyhow::anyhow!("{name}: cannot run on this kernel: {reason}"),
                    }),
                    None => failed.push(Failed {
                        config: name.clone(),
                        error: err,
                    }),
                }
            }
        }
    }
    let probes = settle_attachments(probes, &mut failed, strict, log);
    Ok((probes, failed))
}

/// Configs some of whose programs did not attach: with `strict` each fails;
/// otherwise its other programs run, a warning names what did not attach
/// and `program_attached` says 0 (ebpf_exporter's default and its
/// `--config.strict`). Then bpfsnap's `post_attach_mark` is called, once,
/// for the uprobes waiting on it, as ebpf_exporter does once every config
/// is attached.
fn settle_attachments(
    probes: Vec<Probe>,
    failed: &mut Vec<Failed>,
    strict: bool,
    log: Log,
) -> Vec<Probe> {
    let mut kept = Vec::with_capacity(probes.len());
    for probe in probes {
        let config = probe.config().name.clone();
        match probe.unattached().first() {
            Some(first) if strict => failed.push(Failed {
                config,
                error: anyhow::anyhow!("{first:#} (--strict: the config fails)"),
            }),
            _ => {
                for err in probe.unattached() {
                    log.warn(&format!(
                        "{err:#}; the config's other programs run (--strict fails it instead)"
                    ));
                }
                kept.push(probe);
            }
        }
    }
    if kept.iter().any(Probe::waits_for_post_attach_mark) {
        probe::post_attach_mark();
    }
    kept
}

/// Whether `err` says a config cannot be pinned (it is bad input too).
fn is_not_pinnable(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.is::<probe::NotPinnable>()
            || e.downcast_ref::<crate::BadInput>()
                .is_some_and(|bad| bad.inner().is::<probe::NotPinnable>())
    })
}

/// Each program with the variant this kernel runs (see `probe::variants`).
/// A member of the default set none of whose variants can run here is left
/// out (said with -v); one selected by name fails with the reason.
fn fit_to_kernel(
    programs: &[Program],
    kernel: &probe::availability::KernelTypes,
    log: Log,
) -> (Vec<Program>, Vec<Failed>) {
    let mut fitted = Vec::with_capacity(programs.len());
    let mut failed = Vec::new();
    for program in programs {
        let name = &program.config.name;
        match probe::variants::fit(&program.config, kernel) {
            Ok(fit) => {
                for reason in &fit.passed_over {
                    log.info(&format!("{name}: {reason}: loading the next variant"));
                }
                fitted.push(Program {
                    left_out: fit.left_out,
                    ..program.clone()
                });
            }
            Err(reason) if program.optional => {
                log.info(&format!("built-in {name} left out: {reason}"));
            }
            Err(reason) => failed.push(Failed {
                config: name.clone(),
                error: anyhow::anyhow!("{name}: cannot run on this kernel: {reason}"),
            }),
        }
    }
    (fitted, failed)
}

/// Why `program`, a built-in or a member of the default set that failed to
/// load, cannot attach on this kernel at all, if that is why. Asked only
/// after a failure: reading tracefs and opening every object up front cost
/// every run ≈ 3 ms of start-up.
fn unavailable_builtin(
    program: &Program,
    kernel: &probe::availability::KernelTypes,
) -> Option<String> {
    if !program.optional && !matches!(program.object, ObjectSource::Embedded(_)) {
        return None; // a user program's own error says more
    }
    match probe::unavailable(program, kernel) {
        Ok(reason) => reason,
        Err(err) => Some(format!("{err:#}")),
    }
}

/// Which programs load together. Built-ins load from the object they are
/// linked into, in one group per CPU: the groups load in parallel, and each
/// load parses the kernel's BTF once and scans it once for each kernel type
/// its programs relocate against, so built-ins that share kernel types go
/// together (see [`group_by_cost`]). Anything else (user programs, and
/// everything in --pin mode, whose sets are pinned per config) loads alone.
fn load_groups(programs: &[Program], pin: Option<&Path>) -> Vec<Vec<usize>> {
    let (linked, alone): (Vec<usize>, Vec<usize>) = (0..programs.len())
        .partition(|&index| pin.is_none() && programs[index].linked_builtin().is_some());
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let load = |index: usize| {
        programs[index]
            .linked_builtin()
            .map_or((&[][..], 0), |source| (source.types, source.programs.len()))
    };
    let mut groups = group_by_cost(&linked, cpus.min(linked.len() / 2).max(1), load);
    groups.retain(|group| !group.is_empty());
    groups.extend(alone.into_iter().map(|index| vec![index]));
    groups
}

/// `items` in `count` groups of about equal loading time. An item brings
/// its programs (each loaded, verified and attached) and the kernel types
/// its relocations look up (each a scan of the kernel's BTF, once per
/// group however many members share it), all of about the same cost
/// (≈ 1 ms here). Greedily, the heaviest items first, each goes where the
/// longest group would end the soonest were the rest spread evenly (so a
/// first item's types draw the items sharing them instead of being
/// scanned twice); then where it adds the least; then the lighter group.
fn group_by_cost<'a>(
    items: &[usize],
    count: usize,
    load: impl Fn(usize) -> (&'a [&'a str], usize),
) -> Vec<Vec<usize>> {
    use std::collections::BTreeSet;
    let weight = |item: usize| {
        let (types, programs) = load(item);
        types.len() + programs
    };
    let mut order = items.to_vec();
    order.sort_by_key(|&item| std::cmp::Reverse(weight(item)));
    let mut unplaced: usize = order.iter().map(|&item| weight(item)).sum();
    let mut groups: Vec<(Vec<usize>, BTreeSet<&str>, usize)> =
        vec![Default::default(); count.max(1)];
    for item in order {
        let (types, programs) = load(item);
        unplaced -= weight(item);
        let placed: usize = groups.iter().map(|(_, _, cost)| cost).sum();
        let longest = groups.iter().map(|(_, _, cost)| *cost).max().unwrap_or(0);
        let choice = groups
            .iter()
            .enumerate()
            .map(|(index, (_, known, cost))| {
                let added = programs + types.iter().filter(|t| !known.contains(*t)).count();
                let ends = longest
                    .max(cost + added)
                    .max((placed + added + unplaced).div_ceil(groups.len()));
                ((ends, added, *cost), index)
            })
            .min();
        let Some(((_, added, _), index)) = choice else {
            break; // unreachable: there is at least one group
        };
        let (members, known, cost) = &mut groups[index];
        members.push(item);
        known.extend(types.iter().copied());
        *cost += added;
    }
    let mut groups: Vec<Vec<usize>> = groups
        .into_iter()
        .map(|(mut members, _, _)| {
            members.sort_unstable();
            members
        })
        .collect();
    groups.sort_by_key(|members| members.first().copied());
    groups
}

/// Says what failed, and what the attached probes warn about (e.g. a ring
/// buffer whose drops in the kernel are not counted).
fn log_problems(probes: &[Probe], failed: &[Failed], log: Log) {
    for failure in failed {
        log.error(&format!("{:#}", failure.error));
    }
    for probe in probes {
        for warning in probe.warnings() {
            log.warn(&format!("{}: {warning}", probe.config().name));
        }
    }
}

/// The error a run where nothing attached ends with: the first failure (the
/// others are logged).
fn first_error(failed: Vec<Failed>) -> anyhow::Error {
    let mut failures = failed.into_iter();
    match failures.next() {
        Some(first) => first.error,
        None => anyhow::anyhow!("no program to run"),
    }
}

/// `f` of every item, in order, computed on up to one thread per CPU. Loading
/// an object is CPU work of its own (libbpf parses the kernel's BTF for each,
/// then the verifier runs): the default set starts about twice as fast on
/// two CPUs.
fn in_parallel<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(items.len());
    if threads <= 1 {
        return items.iter().map(f).collect();
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let take = || next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut results: Vec<(usize, R)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let index = take();
                        let Some(item) = items.get(index) else {
                            return done;
                        };
                        done.push((index, f(item)));
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|worker| match worker.join() {
                Ok(done) => done,
                Err(panic) => std::panic::resume_unwind(panic),
            })
            .collect()
    });
    results.sort_by_key(|(index, _)| *index);
    results.into_iter().map(|(_, result)| result).collect()
}

/// The programs to run, checked for trust.
pub(crate) fn select(
    selection: &Selection,
    allow_untrusted_files: bool,
    log: Log,
) -> Result<Vec<Program>> {
    let mut programs = program::select(selection).map_err(crate::BadInput::wrap)?;
    for program in &mut programs {
        for warning in &program.config.warnings {
            log.warn(&format!("{}: {warning}", program.config.origin));
        }
        if !allow_untrusted_files {
            if let ObjectSource::File(object) = &program.object {
                // Checked and read through one descriptor: what was checked is
                // what gets loaded.
                let bytes = privilege::read_trusted(object).map_err(crate::BadInput::wrap)?;
                privilege::check_file_owner(std::path::Path::new(&program.config.origin))
                    .map_err(crate::BadInput::wrap)?;
                program.object = ObjectSource::Read {
                    path: object.clone(),
                    bytes,
                };
            }
        }
    }
    Ok(programs)
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

/// `--keep-caps`, plus what reading the maps after the drop needs: the
/// capability this kernel checks on every bpf() call, if it does, and
/// CAP_SYSLOG when a ksym/kstack decoder will read /proc/kallsyms.
pub(crate) fn keep_caps(keep: &KeepCaps, programs: &[Program], log: Log) -> KeepCaps {
    if *keep == KeepCaps::All {
        return KeepCaps::All;
    }
    let mut keep = keep_for_map_reads(keep.clone(), log);
    let uses_kallsyms = programs.iter().any(|p| {
        p.config.metrics().any(|m| {
            m.labels.iter().any(|l| {
                l.decoders
                    .iter()
                    .any(|d| d.name == "ksym" || d.name == "kstack")
            })
        })
    });
    if uses_kallsyms && !keep.keeps(privilege::CAP_SYSLOG) {
        log.info("keeping CAP_SYSLOG: the ksym/kstack decoders read kernel addresses from /proc/kallsyms");
        keep = keep.with(privilege::CAP_SYSLOG);
    }
    keep
}

/// `keep` plus the capability reading maps needs on this kernel, if any.
fn keep_for_map_reads(keep: KeepCaps, log: Log) -> KeepCaps {
    match privilege::capability_for_map_reads() {
        Ok(Some(cap)) if !keep.keeps(cap) => {
            let name = if cap == privilege::CAP_BPF {
                "CAP_BPF"
            } else {
                "CAP_SYS_ADMIN"
            };
            let sysctl = std::fs::read_to_string("/proc/sys/kernel/unprivileged_bpf_disabled")
                .map(|value| format!(" (kernel.unprivileged_bpf_disabled={})", value.trim()))
                .unwrap_or_default();
            log.info(&format!(
                "keeping {name}: this kernel checks it on every bpf() call{sysctl}, reading the maps included"
            ));
            keep.with(cap)
        }
        Ok(_) => keep,
        Err(err) => {
            log.warn(&format!(
                "cannot tell which capability reading maps needs here ({err:#}): keeping CAP_BPF and CAP_SYS_ADMIN"
            ));
            keep.with(privilege::CAP_BPF).with(privilege::CAP_SYS_ADMIN)
        }
    }
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

/// Snapshots the probes and writes the output; returns the configs whose
/// maps could not be read (written as down, the others as usual).
fn snapshot_and_write(
    options: &RunOptions,
    probes: &mut [Probe],
    failed: &[Failed],
    window: &Window,
    write_failures: u64,
    deltas: Option<&mut Deltas>,
) -> Result<Vec<Failed>> {
    let ns = options.namespace.as_str();
    let snapshot_started = Instant::now();
    // Encoding is part of the snapshot's cost; only the gauges below are
    // encoded after the measurement.
    let mut exposition = Exposition::default();
    let text_format = options.format == OutputFormat::Text;
    let (mut families, decode_errors, unread) =
        program_families(probes, ns, text_format.then_some(&mut exposition), deltas)?;
    let down: Vec<&str> = failed
        .iter()
        .chain(&unread)
        .map(|f| f.config.as_str())
        .collect();
    let counting_since = match options.counts {
        Counts::Cumulative => window.attached_at,
        Counts::Window => window.start,
    };
    families.extend(self_metrics(ns, probes, &down, counting_since));
    // In a textfile directory several outputs' self metrics meet: the label
    // keeps their series apart (sink::collide).
    let output_label = options.sink.output_label().filter(|_| text_format);
    if let Some(output) = &output_label {
        expose::label_every_series(&mut families, OUTPUT_LABEL, output);
    }
    if text_format {
        exposition.add_all_ref(&families)?;
    }
    let snapshot_duration = snapshot_started.elapsed();

    let window_seconds = match probes.iter().all(Probe::outlives_process) {
        true => window
            .end
            .duration_since(window.start)
            .unwrap_or_default()
            .as_secs_f64(),
        false => window.measured.as_secs_f64(),
    };
    let now = unix_seconds(SystemTime::now());
    let up = down.is_empty();
    let mut run_families = vec![
        expose::gauge(
            &metric_name(ns, "window_seconds"),
            "Length of the sampling window these metrics cover, as measured (shorter than requested when a signal ended it; since the last run in --pin mode).",
            window_seconds,
        ),
        expose::gauge(
            &metric_name(ns, "window_start_timestamp_seconds"),
            "Unix time at which the sampling window started.",
            unix_seconds(window.start),
        ),
        expose::gauge(
            &metric_name(ns, "window_end_timestamp_seconds"),
            "Unix time at which the sampling window ended.",
            unix_seconds(window.end),
        ),
        expose::gauge(
            &metric_name(ns, "snapshot_duration_seconds"),
            "Time taken to read the BPF maps and encode their metrics.",
            snapshot_duration.as_secs_f64(),
        ),
        expose::gauge(&metric_name(ns, "up"), "1 if every selected config ran, 0 if some failed.", if up { 1.0 } else { 0.0 }),
        expose::labelled(
            &metric_name(ns, "decoder_errors_total"),
            "Map keys skipped because a label decoder rejected them.",
            MetricType::COUNTER,
            &["config", "decoder"],
            decode_errors,
        ),
    ];
    if options.interval.is_some() {
        run_families.push(expose::labelled(
            &metric_name(ns, "write_failures_total"),
            "Outputs this process failed to write (interval mode; each is retried the next window).",
            MetricType::COUNTER,
            &[],
            vec![(Vec::new(), write_failures as f64)],
        ));
    }
    let last_success = if up {
        Some(now)
    } else {
        previous_last_success(&options.sink, ns)
    };
    if let Some(last) = last_success {
        run_families.push(expose::gauge(
            &metric_name(ns, "last_success_timestamp_seconds"),
            "Unix time of the last run in which every config ran: alert when it is old.",
            last,
        ));
    }
    if let Some(output) = &output_label {
        expose::label_every_series(&mut run_families, OUTPUT_LABEL, output);
    }
    let pretty;
    let (text, written): (sink::Text, usize) = match options.format {
        OutputFormat::Text => {
            exposition.add_all(run_families)?;
            // Written family by family, never joined: a big map's family is
            // most of the text, and joining would copy it.
            (exposition.parts().collect(), exposition.len())
        }
        OutputFormat::Pretty => {
            families.extend(run_families);
            pretty = window_heading(options, window) + &expose::pretty::render(&families);
            (sink::Text::whole(&pretty), families.len())
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

/// Snapshots every probe's maps. With `text` (the text format) their metrics
/// go straight into it, decoded and encoded without a `MetricFamily` per
/// series (for a large map that costs more than reading it); otherwise they
/// are returned as families (the terminal view). Returned either way: the
/// bookkeeping families (series dropped, events lost), (config, decoder) →
/// keys skipped by decoders, and the configs whose maps could not be read
/// (the others' metrics are there all the same).
pub(crate) fn program_families(
    probes: &mut [Probe],
    ns: &str,
    mut text: Option<&mut Exposition>,
    mut deltas: Option<&mut Deltas>,
) -> Result<(Vec<MetricFamily>, expose::Samples, Vec<Failed>)> {
    let mut families = Vec::new();
    let mut decode_errors = Vec::new();
    let mut events_lost = Vec::new();
    let mut events_dropped = Vec::new();
    let mut series_dropped = Vec::new();
    let mut unread = Vec::new();
    for probe in probes.iter_mut() {
        let mut snapshot = match probe.refresh_cgroups().and_then(|()| snapshot::take(probe)) {
            Ok(snapshot) => snapshot,
            Err(error) => {
                unread.push(Failed {
                    config: probe.config().name.clone(),
                    error,
                });
                continue;
            }
        };
        let config = probe.config();
        if let Some(deltas) = deltas.as_deref_mut() {
            deltas.apply(&config.name, &mut snapshot);
        }
        let added = match text.as_deref_mut() {
            Some(exposition) => exposition.add_snapshot(config, &snapshot, ns)?,
            None => {
                let (built, added) = expose::families(config, &snapshot, ns)?;
                families.extend(built);
                added
            }
        };
        let name = &config.name;
        for (metric, dropped) in added.series_dropped {
            series_dropped.push((vec![name.clone(), metric], dropped as f64));
        }
        for (decoder, count) in added.decode_errors {
            decode_errors.push((vec![name.clone(), decoder.to_string()], count as f64));
        }
        for stream in &snapshot.events_lost {
            let labels = vec![name.clone(), stream.map.clone()];
            events_lost.push((labels.clone(), stream.lost as f64));
            events_dropped.push((labels, stream.dropped as f64));
        }
        probe.refresh_stats();
    }
    families.push(expose::labelled(
        &metric_name(ns, "series_dropped_total"),
        "Series left out of this output because the metric has more than its max_series.",
        MetricType::COUNTER,
        &["config", "metric"],
        series_dropped,
    ));
    families.push(expose::labelled(
        &metric_name(ns, "events_lost_total"),
        "Events of event-stream counters lost before bpfsnap could count them (buffer full, or shorter than their labels).",
        MetricType::COUNTER,
        &["config", "map"],
        events_lost,
    ));
    families.push(expose::labelled(
        &metric_name(ns, "events_dropped_total"),
        "Events of event-stream counters not counted because their label set was new while the counter already counted max_series label sets.",
        MetricType::COUNTER,
        &["config", "map"],
        events_dropped,
    ));
    Ok((families, decode_errors, unread))
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

/// ebpf_exporter's self metrics: which configs and programs are loaded, and
/// (with kernel.bpf_stats_enabled=1) what the programs cost; plus when each
/// config's counters started and whether it is up.
pub(crate) fn self_metrics(
    ns: &str,
    probes: &[Probe],
    down: &[&str],
    counting_since: SystemTime,
) -> Vec<MetricFamily> {
    // ebpf_exporter's own names under its namespace, so its dashboards work.
    let names = if ns == EBPF_EXPORTER_NAMESPACE {
        ProgramMetricNames::EBPF_EXPORTER
    } else {
        ProgramMetricNames::BPFSNAP
    };
    let mut configs = Vec::new();
    let mut config_up = Vec::new();
    let mut started = Vec::new();
    let mut info = Vec::new();
    let mut attached = Vec::new();
    let mut run_time = Vec::new();
    let mut run_count = Vec::new();
    let mut recursion_misses = Vec::new();
    for probe in probes {
        let config = &probe.config().name;
        configs.push((vec![config.clone()], 1.0));
        if !down.contains(&config.as_str()) {
            config_up.push((vec![config.clone()], 1.0));
        }
        let since = probe
            .pinned()
            .map_or(unix_seconds(counting_since), |p| p.manifest.attached_at);
        started.push((vec![config.clone()], since));
        for program in probe.programs() {
            let id = program.id.to_string();
            let mut labels = vec![
                config.clone(),
                id.clone(),
                program.name.clone(),
                program.tag.clone(),
            ];
            if names.attach_label {
                labels.push(program.attach.clone());
            }
            info.push((labels, 1.0));
            attached.push((vec![id.clone()], if program.attached { 1.0 } else { 0.0 }));
            run_time.push((vec![id.clone()], program.run_time_ns as f64 / 1e9));
            run_count.push((vec![id.clone()], program.run_count as f64));
            recursion_misses.push((vec![id], program.recursion_misses as f64));
        }
    }
    for config in down {
        config_up.push((vec![config.to_string()], 0.0));
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
            &metric_name(ns, "config_up"),
            "1 if the config's programs were loaded and attached, 0 if that failed.",
            MetricType::GAUGE,
            &["config"],
            config_up,
        ),
        expose::labelled(
            &metric_name(ns, "counters_start_timestamp_seconds"),
            "Unix time from which the config's counters count (attach time, from which they are cumulative in --interval and --pin modes; with --counts window, the window's start).",
            MetricType::GAUGE,
            &["config"],
            started,
        ),
        expose::labelled(
            &metric_name(ns, names.info),
            "Every loaded BPF program: its config, kernel id, name, tag (and attach type).",
            MetricType::GAUGE,
            &["config", "id", "program", "tag", "attach"][..if names.attach_label { 5 } else { 4 }],
            info,
        ),
        expose::labelled(
            &metric_name(ns, names.attached),
            "Whether the BPF program with this id was attached.",
            MetricType::GAUGE,
            &["id"],
            attached,
        ),
        expose::labelled(
            &metric_name(ns, "program_recursion_misses_total"),
            "Events the BPF program missed because it was already running on that CPU (e.g. interrupted by a hardirq hitting the same hook): its counts fall short by this much.",
            MetricType::COUNTER,
            &["id"],
            recursion_misses,
        ),
    ];
    families.push(build_info(ns));
    if bpf_stats_enabled() {
        families.push(expose::labelled(
            &metric_name(ns, names.run_time),
            "Time the BPF program has run in the kernel (kernel.bpf_stats_enabled=1).",
            MetricType::COUNTER,
            &["id"],
            run_time,
        ));
        families.push(expose::labelled(
            &metric_name(ns, names.run_count),
            "Times the BPF program has run (kernel.bpf_stats_enabled=1).",
            MetricType::COUNTER,
            &["id"],
            run_count,
        ));
    }
    families
}

/// `NS_build_info{version,revision,libbpf} 1`, as ebpf_exporter exports
/// `ebpf_exporter_build_info` (its labels come from Go's build; these from
/// bpfsnap's).
fn build_info(ns: &str) -> MetricFamily {
    // SAFETY: libbpf returns a static NUL-terminated string.
    let libbpf = unsafe { std::ffi::CStr::from_ptr(libbpf_sys::libbpf_version_string()) };
    expose::labelled(
        &metric_name(ns, "build_info"),
        "The bpfsnap build running: its version, the commit it was built from and the libbpf it links.",
        MetricType::GAUGE,
        &["version", "revision", "libbpf"],
        vec![(
            vec![
                env!("CARGO_PKG_VERSION").to_string(),
                env!("BPFSNAP_REVISION").to_string(),
                libbpf.to_string_lossy().into_owned(),
            ],
            1.0,
        )],
    )
}

/// The namespace that asks for ebpf_exporter's metric names.
pub(crate) const EBPF_EXPORTER_NAMESPACE: &str = "ebpf_exporter";

/// Names of the per-program self metrics (without the namespace).
struct ProgramMetricNames {
    info: &'static str,
    /// `program_info` has an `attach` label (ebpf_exporter's has none).
    attach_label: bool,
    attached: &'static str,
    run_time: &'static str,
    run_count: &'static str,
}

impl ProgramMetricNames {
    const BPFSNAP: ProgramMetricNames = ProgramMetricNames {
        info: "program_info",
        attach_label: true,
        attached: "program_attached",
        run_time: "program_run_time_seconds_total",
        run_count: "program_run_count_total",
    };
    /// As ebpf_exporter's exporter.go names them; its run time is a counter
    /// without `_total`, which promtool flags, kept for its dashboards.
    const EBPF_EXPORTER: ProgramMetricNames = ProgramMetricNames {
        info: "ebpf_program_info",
        attach_label: false,
        attached: "ebpf_program_attached",
        run_time: "ebpf_program_run_time_seconds",
        run_count: "ebpf_program_run_count_total",
    };
}

fn bpf_stats_enabled() -> bool {
    std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled")
        .is_ok_and(|text| text.trim() == "1")
}

/// SIGINT and SIGTERM as messages; once this is set up they no longer kill the
/// process, they end the window.
pub(crate) fn stop_signals() -> Result<mpsc::Receiver<i32>> {
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

pub(crate) fn unix_seconds(time: SystemTime) -> f64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_share_types_and_balance_the_loading_work() {
        // The default set's relocated types and program counts (build.rs).
        let block: &[&str] = &[
            "gendisk",
            "req_op",
            "request",
            "request___old",
            "request_queue",
        ];
        let load: [(&[&str], usize); 13] = [
            (block, 2),                                           // 0 biolatency
            (block, 1),                                           // 1 biosize
            (&[], 1),                                             // 2 execs
            (&["task_struct"], 1),                                // 3 exits
            (&["task_struct"], 1),                                // 4 oomkill
            (&[], 1),                                             // 5 profile
            (&[], 1),                                             // 6 signals
            (&["sk_buff", "skb_drop_reason"], 1),                 // 7 skb_drops
            (&[], 2),                                             // 8 softirqs
            (&["pt_regs", "task_struct"], 1),                     // 9 syscall_errors
            (&["pt_regs", "task_struct"], 1),                     // 10 syscalls
            (&["sock", "trace_event_raw_tcp_retransmit_skb"], 1), // 11 tcp_retransmits
            (&["sock"], 1),                                       // 12 tcp_states
        ];
        let items: Vec<usize> = (0..load.len()).collect();
        let groups = group_by_cost(&items, 2, |i| load[i]);
        let cost = |group: &Vec<usize>| {
            let types: std::collections::BTreeSet<&str> = group
                .iter()
                .flat_map(|&i| load[i].0.iter().copied())
                .collect();
            types.len() + group.iter().map(|&i| load[i].1).sum::<usize>()
        };
        let mut placed: Vec<usize> = groups.concat();
        placed.sort_unstable();
        assert_eq!(placed, items, "{groups:?}");
        // Every type scanned once: the block pair, the task_struct four and
        // the sock pair each in one group...
        let with = |i: usize| groups.iter().position(|g| g.contains(&i));
        assert_eq!(with(0), with(1), "{groups:?}");
        assert!([4, 9, 10].iter().all(|&i| with(i) == with(3)), "{groups:?}");
        assert_eq!(with(11), with(12), "{groups:?}");
        // ... and the two about equal: 26 units of work, 13 each.
        assert_eq!(groups.iter().map(cost).collect::<Vec<_>>(), [13, 13]);

        // More groups than clusters of shared types still spread the work.
        let groups = group_by_cost(&items, 4, |i| load[i]);
        assert_eq!(groups.iter().map(Vec::len).sum::<usize>(), 13);
        assert!(groups.iter().all(|g| cost(g) <= 9), "{groups:?}");
        assert_eq!(
            group_by_cost(&[], 2, |i| load[i]),
            vec![Vec::<usize>::new(), vec![]]
        );
    }

    /// A default-set member whose attach point this kernel lacks (known only
    /// once it fails to load) is left out and the rest runs; the same program
    /// selected by name fails.
    #[test]
    fn a_default_set_member_the_kernel_cannot_attach_is_left_out() {
        if !crate::kernel_unit_test("a_default_set_member_the_kernel_cannot_attach_is_left_out") {
            return;
        }
        let spec = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/events.toml");
        let text = std::fs::read_to_string(spec).unwrap();
        let config = crate::config::Config::parse(
            "missing_tracepoint",
            spec,
            &text,
            crate::config::Format::Toml,
        )
        .unwrap();
        let object = Path::new(env!("BPFSNAP_FIXTURE_OBJECTS")).join("missing_tracepoint.bpf.o");
        let selection = Selection {
            builtins: vec!["syscalls".into(), "execs".into()],
            ..Selection::default()
        };
        let mut programs = program::select(&selection).unwrap();
        programs.push(Program {
            config,
            object: ObjectSource::File(object),
            optional: true,
            left_out: Default::default(),
        });
        for program in &mut programs {
            program.optional = true;
        }
        let names = |probes: &[Probe]| -> Vec<String> {
            probes.iter().map(|p| p.config().name.clone()).collect()
        };
        let (probes, failed) = attach_each(&programs, None, false, Log::new(0, true)).unwrap();
        assert_eq!(names(&probes), ["syscalls", "execs"]);
        assert!(failed.is_empty(), "{:?}", failed.first().map(|f| &f.error));
        drop(probes);

        programs[2].optional = false;
        let (probes, failed) = attach_each(&programs, None, false, Log::new(0, true)).unwrap();
        assert_eq!(names(&probes), ["syscalls", "execs"]);
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].config, "missing_tracepoint");
    }

    #[test]
    fn in_parallel_keeps_the_order_and_runs_each_item_once() {
        let calls = std::sync::atomic::AtomicUsize::new(0);
        for count in [0usize, 1, 2, 3, 17] {
            calls.store(0, std::sync::atomic::Ordering::SeqCst);
            let items: Vec<usize> = (0..count).collect();
            let squares = in_parallel(&items, |n| {
                calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                n * n
            });
            assert_eq!(squares, items.iter().map(|n| n * n).collect::<Vec<_>>());
            assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), count);
        }
    }
}
