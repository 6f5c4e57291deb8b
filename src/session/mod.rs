//! Session: what `run` and `serve` share between choosing programs and
//! reading their maps, opened once in two steps. [`Session::select`] catches
//! SIGINT and SIGTERM, captures libbpf's log, reads external BTF, chooses the
//! programs and checks their files for trust; the mode then checks what it
//! must before anything is loaded (an output, listen addresses).
//! [`Selected::open`] checks the host, attaches (built-ins loaded together, in
//! parallel; the variants this kernel runs; a config that attached in part),
//! and drops capabilities in every thread of the process; the signals are
//! waited for by the thread that acts on them ([`Stop::wait`]).
//!
//! Takes [`SessionOptions`]; hands on a [`Session`]: attached [`Probe`]s,
//! the configs that [`Failed`], and the signals that end a window or a
//! server.

mod capabilities;
mod load;
mod signals;

pub use signals::Stop;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Result};

use crate::log::Log;
use crate::privilege::{self, KeepCaps};
use crate::probe::{self, Probe};
pub use crate::program::Failed;
use crate::program::{self, ObjectSource, Program, Selection};

use load::{in_parallel, load_groups};

/// How programs are chosen, loaded and run with least privilege: what `run`
/// and `serve` take alike.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    pub selection: Selection,
    /// The kernel's types in BTF, instead of /sys/kernel/btf/vmlinux.
    pub btf: Option<PathBuf>,
    /// A program that cannot attach fails its config (ebpf_exporter's
    /// --config.strict); otherwise the config's other programs run.
    pub strict: bool,
    /// Capabilities kept once attached.
    pub keep_caps: KeepCaps,
    pub allow_untrusted_files: bool,
    pub log: Log,
}

/// Programs chosen and checked, signals caught: nothing loaded yet.
pub struct Selected<'a> {
    options: &'a SessionOptions,
    programs: Vec<Program>,
    signals: Stop,
    /// The built-ins' CO-RE types being made, joined before loading; it
    /// gives the kernel's types, held until everything is loaded.
    core_btf: Option<std::thread::JoinHandle<probe::KernelBtf>>,
}

/// Attached probes, running with the capabilities kept.
pub struct Session {
    pub probes: Vec<Probe>,
    /// Configs that failed while others ran.
    pub failed: Vec<Failed>,
    /// SIGINT and SIGTERM: they no longer kill the process.
    pub stop: Stop,
    /// When the probes were attached.
    pub attached_at: SystemTime,
    /// The capabilities the process kept.
    pub kept: KeepCaps,
}

/// How long a thread that started before the capability drop may take to
/// apply it to itself (event consumers poll every 25 ms).
const FOLLOW_DROP: Duration = Duration::from_secs(10);

impl Session {
    /// Catches SIGINT and SIGTERM (from here on they end a window instead
    /// of killing the process), reads external BTF, chooses the programs and
    /// checks their files.
    pub fn select(options: &SessionOptions) -> Result<Selected<'_>> {
        let signals = signals::catch()?;
        // Before anything calls libbpf (reading --btf may), for this and
        // every later step: a Selected comes only from here.
        probe::capture_libbpf_log(options.log.libbpf);
        if let Some(path) = &options.btf {
            probe::host::use_external_btf(path)?;
        }
        // Made while the specs are read, off start-up's path (≈ 1.5 ms).
        let core_btf = match options.btf {
            None => probe::make_core_btf_for_builtins(),
            Some(_) => None,
        };
        let programs = select(
            &options.selection,
            options.allow_untrusted_files,
            options.log,
        )?;
        Ok(Selected {
            options,
            programs,
            signals,
            core_btf,
        })
    }

    /// The error a session where nothing attached ends with: the first
    /// failure (the others are logged).
    pub fn nothing_attached(self) -> anyhow::Error {
        first_error(self.failed)
    }
}

impl Selected<'_> {
    pub fn programs(&self) -> &[Program] {
        &self.programs
    }

    /// For `--pin`: each program checked before anything is pinned (see
    /// [`probe::check_pinnable`]); a member of the default set that cannot
    /// be pinned is left out (said with -v), any other problem fails.
    pub fn fit_to_pin(&mut self) -> Result<()> {
        let programs = std::mem::take(&mut self.programs);
        self.programs = fit_to_pin(programs, self.options.log)?;
        Ok(())
    }

    /// Attaches every program (pinned under `pin` if given), drops the
    /// capabilities not kept in every thread, and hands on the signals. A
    /// program that fails at run time is set aside in `failed` (the others
    /// run; there may be none left); bad input fails at once.
    pub fn open(self, pin: Option<&Path>) -> Result<Session> {
        let options = self.options;
        let log = options.log;
        probe::check_host()?;
        // Its thread gone before capabilities drop; loading would wait for
        // what it makes anyway.
        let kernel_btf = self.core_btf.and_then(|making| making.join().ok());
        let (probes, failed) = attach_each(&self.programs, pin, options.strict, log)?;
        drop(kernel_btf);
        let attached_at = SystemTime::now();
        match probes.is_empty() {
            false => log_problems(&probes, &failed, log),
            true => log_problems(&[], failed.get(1..).unwrap_or_default(), log),
        }
        let kept = capabilities::keep_caps(&options.keep_caps, &self.programs, log);
        privilege::drop_capabilities(&kept)?;
        follow_drop(&probes)?;
        for program in &self.programs {
            program.plan.prepare();
        }
        Ok(Session {
            probes,
            failed,
            stop: self.signals,
            attached_at,
            kept,
        })
    }
}

/// Waits until every thread the probes started before the drop (event
/// consumers) has dropped what the main thread dropped.
fn follow_drop(probes: &[Probe]) -> Result<()> {
    let deadline = Instant::now() + FOLLOW_DROP;
    probes.iter().for_each(Probe::wake_threads);
    while !probes.iter().all(Probe::threads_follow_drop) {
        if Instant::now() >= deadline {
            bail!("an event consumer thread did not drop its capabilities within {FOLLOW_DROP:?}");
        }
        // Woken, a thread follows within microseconds.
        std::thread::sleep(Duration::from_micros(100));
    }
    Ok(())
}

/// The programs to run, checked for trust.
fn select(selection: &Selection, allow_untrusted_files: bool, log: Log) -> Result<Vec<Program>> {
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
    let mut probes = Vec::with_capacity(programs.len());
    for (index, result) in attach_in_groups(&programs, pin, log) {
        let program = &programs[index];
        match result {
            Ok(probe) => probes.push(probe),
            // Bad input is the user's to fix now, not a partial run.
            Err(err) if crate::BadInput::is(&err) => return Err(err),
            Err(err) => failed.extend(failure(program, err, &kernel, log)),
        }
    }
    let probes = settle_attachments(probes, &mut failed, strict, log);
    Ok((probes, failed))
}

/// Each program attached (pinned under `pin` if given), by its index:
/// built-ins that load together, in parallel (see [`load_groups`]), and if
/// that fails, each on its own.
fn attach_in_groups(
    programs: &[Program],
    pin: Option<&Path>,
    log: Log,
) -> Vec<(usize, Result<Probe>)> {
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
    attached
}

/// What `program`'s run-time failure `err` makes of it: a member of the
/// default set whose attach point this kernel lacks is left out (the set
/// adapts to the kernel); one named fails with that reason rather than
/// libbpf's; anything else fails with `err`.
fn failure(
    program: &Program,
    err: anyhow::Error,
    kernel: &probe::availability::KernelTypes,
    log: Log,
) -> Option<Failed> {
    let name = &program.config.name;
    let error = match unavailable_builtin(program, kernel) {
        Some(reason) if program.optional => {
            log.info(&format!("built-in {name} left out: {reason}"));
            return None;
        }
        Some(reason) => anyhow::anyhow!("{name}: cannot run on this kernel: {reason}"),
        None => err,
    };
    Some(Failed {
        config: name.clone(),
        error,
    })
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

/// A pinned run's programs, each checked before anything is pinned (see
/// [`probe::check_pinnable`]): a member of the default set that cannot be
/// pinned is left out (said with -v); any other problem fails the run.
fn fit_to_pin(programs: Vec<Program>, log: Log) -> Result<Vec<Program>> {
    let mut kept = Vec::with_capacity(programs.len());
    for program in programs {
        match probe::check_pinnable(&program) {
            Ok(()) => kept.push(program),
            Err(err) if program.optional && is_not_pinnable(&err) => log.info(&format!(
                "built-in {} left out: its event-stream counters cannot be pinned (run it \
                 with --interval or serve)",
                program.config.name
            )),
            Err(err) => return Err(err),
        }
    }
    Ok(kept)
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

#[cfg(test)]
mod tests {
    use super::*;

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
        let (config, plan) =
            crate::plan::parse("missing_tracepoint", spec, &text, crate::spec::Format::Toml)
                .unwrap();
        let object = Path::new(env!("BPFSNAP_FIXTURE_OBJECTS")).join("missing_tracepoint.bpf.o");
        let selection = Selection {
            builtins: vec!["syscalls".into(), "execs".into()],
            ..Selection::default()
        };
        let mut programs = program::select(&selection).unwrap();
        programs.push(Program {
            config,
            plan: std::sync::Arc::new(plan),
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
}
