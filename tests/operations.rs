//! Unattended operation on the real kernel: interval mode, persistent pinned
//! probes, the output lock, dropped capabilities, signals in interval mode.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use common::{path_str, Decoder, PinDir, Running, UserConfig};

/// What a reader polling the output saw: every distinct content and every
/// distinct modification time.
#[derive(Default)]
struct Seen {
    texts: BTreeSet<String>,
    mtimes: BTreeSet<SystemTime>,
}

/// Reads `path` as fast as it can until `done`, and panics at once if the
/// file is ever missing (after it first appeared) or not a complete
/// exposition.
fn watch_file(path: PathBuf, done: Arc<AtomicBool>) -> std::thread::JoinHandle<Seen> {
    std::thread::spawn(move || {
        let mut seen = Seen::default();
        let mut appeared = false;
        while !done.load(Ordering::Relaxed) {
            // The mtime first: a rename between the two reads then shows as
            // a newer text, never as a text with an older mtime missing.
            if let Ok(modified) = fs::metadata(&path).and_then(|m| m.modified()) {
                seen.mtimes.insert(modified);
            }
            match fs::read_to_string(&path) {
                Ok(text) => {
                    appeared = true;
                    assert!(
                        text.ends_with('\n')
                            && common::sample(&text, "bpfsnap_window_seconds").is_some(),
                        "a reader saw a partial file:\n{text}"
                    );
                    seen.texts.insert(text);
                }
                Err(err) => assert!(!appeared, "the file vanished between rewrites: {err}"),
            }
        }
        seen
    })
}

#[test]
fn interval_rewrites_the_file_and_readers_never_see_it_missing_or_partial() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    let dir = common::output_dir();
    let output = dir.path().join("bpfsnap.prom");
    let done = Arc::new(AtomicBool::new(false));
    let reader = watch_file(output.clone(), done.clone());
    let running = Running::spawn(&[
        "run",
        "-v",
        "-b",
        "syscalls",
        "--interval",
        "1s",
        "--count",
        "3",
        "--output",
        path_str(&output),
    ]);
    let (status, _, stderr) = running.finish();
    done.store(true, Ordering::Relaxed);
    let seen = reader.join().expect("reader");
    assert!(status.success(), "{stderr}");
    assert_eq!(
        stderr.matches("wrote ").count(),
        3,
        "three windows written: {stderr}"
    );

    // Each version stays for a whole second: the reader sees all three.
    let ends: BTreeSet<String> = seen
        .texts
        .iter()
        .filter_map(|text| {
            common::sample(text, "bpfsnap_window_end_timestamp_seconds").map(|v| v.to_string())
        })
        .collect();
    assert_eq!(ends.len(), 3, "one window end per rewrite: {ends:?}");
    assert_eq!(
        seen.mtimes.len(),
        3,
        "the file's mtime moved with each rewrite: {:?}",
        seen.mtimes
    );
    let text = fs::read_to_string(&output).unwrap();
    let window = common::sample(&text, "bpfsnap_window_seconds").unwrap();
    assert!(
        (1.0..5.0).contains(&window),
        "each file covers one interval: {window}"
    );
    let since = common::sample(
        &text,
        r#"bpfsnap_counters_start_timestamp_seconds{config="syscalls"}"#,
    )
    .unwrap();
    let start = common::sample(&text, "bpfsnap_window_start_timestamp_seconds").unwrap();
    assert!(
        since < start,
        "counters are cumulative from the first attach, before the last window"
    );
    assert_eq!(common::sample(&text, "bpfsnap_up"), Some(1.0));
    common::promtool_check(&text);
}

#[test]
fn sigterm_and_sigint_in_interval_mode_write_the_last_window_and_detach() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    for (signal, name) in [(libc::SIGTERM, "SIGTERM"), (libc::SIGINT, "SIGINT")] {
        let dir = common::output_dir();
        let output = dir.path().join("bpfsnap.prom");
        let before = common::loaded_program_ids();
        let mut running = Running::spawn(&[
            "run",
            "-v",
            "-b",
            "syscalls",
            "--interval",
            "60s",
            "--output",
            path_str(&output),
        ]);
        running.wait_for("sampling");
        let ours: BTreeSet<u64> = common::loaded_program_ids()
            .difference(&before)
            .copied()
            .collect();
        assert!(!ours.is_empty(), "{name}: no program of ours was loaded");
        common::getpid_calls(500);
        running.signal(signal);
        let (status, _, stderr) = running.finish();
        assert!(status.success(), "{name}: {stderr}");
        let text = fs::read_to_string(&output).expect("last window written");
        assert!(
            common::sample(&text, "bpfsnap_window_seconds").unwrap() < 60.0,
            "{name}"
        );
        assert!(
            common::sample(&text, r#"bpfsnap_syscalls_total{syscall="getpid"}"#).unwrap() >= 500.0,
            "{name}"
        );
        assert!(
            common::still_loaded_after_exit(&ours).is_empty(),
            "{name}: programs left loaded"
        );
    }
}

fn pinned_run(pin: &Path, output: &Path) -> String {
    let output_arg = path_str(output);
    let result = common::bpfsnap()
        .args([
            "run",
            "-b",
            "syscalls",
            "--for",
            "100ms",
            "--pin",
            path_str(pin),
            "--output",
            output_arg,
        ])
        .output()
        .expect("run bpfsnap");
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
    fs::read_to_string(output).expect("output")
}

/// A pinned run of `programs` during whose window the test makes `calls`
/// getpid calls.
fn pinned_run_with_load(programs: &[&str], pin: &Path, output: &Path, calls: u64) {
    let mut args = vec!["run", "-v"];
    args.extend_from_slice(programs);
    args.extend_from_slice(&[
        "--for",
        "60s",
        "--pin",
        path_str(pin),
        "--output",
        path_str(output),
    ]);
    let mut running = Running::spawn(&args);
    running.wait_for("sampling");
    common::getpid_calls(calls);
    running.signal(libc::SIGINT);
    let (status, _, stderr) = running.finish();
    assert!(status.success(), "{stderr}");
}

/// `--pin` with the default set: its event-stream member (exits), which the
/// process itself counts, cannot be pinned and is left out with a note; the
/// rest is pinned and the run succeeds. Named, it is refused as before.
#[test]
fn the_default_set_runs_pinned_leaving_out_what_cannot_be_pinned() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    let pin = PinDir::new(common::test_name!());
    let dir = common::output_dir();
    let output = dir.path().join("bpfsnap.prom");
    let run = |extra: &[&str]| {
        let mut args = vec!["run", "-v", "--pin", path_str(&pin.0), "--for", "100ms"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--output", path_str(&output)]);
        common::bpfsnap().args(&args).output().unwrap()
    };
    let ran = run(&[]);
    let stderr = String::from_utf8_lossy(&ran.stderr);
    assert!(ran.status.success(), "{stderr}");
    assert!(
        stderr.contains("built-in exits left out: its event-stream counters cannot be pinned"),
        "{stderr}"
    );
    let text = fs::read_to_string(&output).unwrap();
    assert_eq!(common::sample(&text, "bpfsnap_up"), Some(1.0), "{text}");
    assert_eq!(
        common::sample(&text, r#"bpfsnap_config_up{config="exits"}"#),
        None
    );
    assert_eq!(
        common::sample(&text, r#"bpfsnap_config_up{config="syscalls"}"#),
        Some(1.0)
    );
    assert!(!pin.0.join("exits").exists(), "nothing of exits is pinned");

    let named = run(&["--builtin", "exits"]);
    assert_eq!(named.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&named.stderr).contains("cannot be pinned"));
}

/// A config directory with tests/fixtures/between_runs: getppid() calls of
/// bpfsnap-br* threads, in a counter whose series is there from the start.
fn between_runs_config() -> (tempfile::TempDir, PathBuf) {
    let dir = common::config_dir();
    let config = dir.path().join("between_runs.yaml");
    fs::copy(
        common::source_file("tests/fixtures/between_runs.yaml"),
        &config,
    )
    .unwrap();
    fs::copy(
        common::fixture_object("between_runs"),
        dir.path().join("between_runs.bpf.o"),
    )
    .unwrap();
    (dir, config)
}

/// Pinned mode keeps the programs attached between runs: calls made only
/// while no bpfsnap runs are counted, exactly, by a program the test loads
/// (tests/fixtures/between_runs) and by the `syscalls` built-in (a system
/// call nothing else makes). A later run reads the pinned maps at once,
/// with no window of its own; `stop` detaches everything.
#[test]
fn pinned_probes_count_between_runs_and_stop_removes_them() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    let pin = PinDir::new(common::test_name!());
    let (_configs, config) = between_runs_config();
    let dir = common::output_dir();
    let output = dir.path().join("bpfsnap.prom");
    let before = common::loaded_program_ids();
    let run = || {
        let ran = common::bpfsnap()
            .args(["run", "-v", path_str(&config), "--builtin", "syscalls"])
            .args(["--pin", path_str(&pin.0), "--output", path_str(&output)])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&ran.stderr).into_owned();
        assert!(ran.status.success(), "{stderr}");
        assert!(
            stderr.contains("reading between_runs, syscalls at once"),
            "no window: the pinned programs count without bpfsnap\n{stderr}"
        );
        fs::read_to_string(&output).unwrap()
    };
    let value = |text: &str, series: &str| common::sample(text, series).unwrap_or(0.0);
    let calls = |text: &str| value(text, "bpfsnap_between_runs_calls_total");
    let rare = format!(
        "bpfsnap_syscalls_total{{syscall=\"{}\"}}",
        common::RARE_SYSCALL
    );

    let first = run();
    for config in ["between_runs", "syscalls"] {
        let links = format!("bpfsnap_pinned_links{{config=\"{config}\"}}");
        assert!(
            value(&first, &links) >= 1.0,
            "{config}'s links pinned\n{first}"
        );
    }
    assert_eq!(
        common::sample(&first, "bpfsnap_between_runs_calls_total"),
        Some(0.0)
    );
    let ours: BTreeSet<u64> = common::loaded_program_ids()
        .difference(&before)
        .copied()
        .collect();
    assert!(!ours.is_empty(), "the programs stay loaded after the run");

    // Only while no bpfsnap runs.
    common::named_thread("bpfsnap-br-1", || common::getppid_calls(1234));
    common::rare_syscalls(321);
    let second = run();
    assert_eq!(calls(&second) - calls(&first), 1234.0, "{second}");
    assert_eq!(
        value(&second, &rare) - value(&first, &rare),
        321.0,
        "{second}"
    );
    let start = "bpfsnap_counters_start_timestamp_seconds{config=\"syscalls\"}";
    assert_eq!(
        common::sample(&first, start),
        common::sample(&second, start),
        "the same pinned set, counting since the first run"
    );
    let window_start = value(&second, "bpfsnap_window_start_timestamp_seconds");
    let first_end = value(&first, "bpfsnap_window_end_timestamp_seconds");
    assert!(
        (window_start - first_end).abs() < 0.01,
        "a pinned window starts at the last run's snapshot"
    );
    let sampled = "bpfsnap_sampled_seconds_total{config=\"syscalls\"}";
    assert!(value(&second, sampled) > value(&first, sampled), "{second}");
    common::promtool_check(&second);

    pin.stop();
    assert!(!pin.0.exists(), "stop removes the pin directory");
    assert!(
        common::still_loaded_after_exit(&ours).is_empty(),
        "stop detaches the programs"
    );
}

#[test]
fn a_changed_selection_replaces_the_pinned_set() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    let pin = PinDir::new(common::test_name!());
    let dir = common::output_dir();
    let output = dir.path().join("bpfsnap.prom");
    let before = common::loaded_program_ids();
    pinned_run(&pin.0, &output);
    let syscalls: BTreeSet<u64> = common::loaded_program_ids()
        .difference(&before)
        .copied()
        .collect();
    let result = common::bpfsnap()
        .args([
            "run",
            "-b",
            "runqlat",
            "--for",
            "100ms",
            "--pin",
            path_str(&pin.0),
            "--output",
            path_str(&output),
        ])
        .output()
        .unwrap();
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
    assert!(
        !pin.0.join("syscalls").exists(),
        "the unselected config is unpinned"
    );
    assert!(pin.0.join("runqlat/state").exists());
    assert!(
        common::still_loaded_after_exit(&syscalls).is_empty(),
        "its programs are detached"
    );
}

/// The fingerprint marker of a pinned config: `fingerprint-HASH`.
fn pinned_fingerprint(config_dir: &Path) -> String {
    fs::read_dir(config_dir)
        .expect("pinned config directory")
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .find(|name| name.starts_with("fingerprint-"))
        .expect("a fingerprint marker")
}

#[test]
fn a_changed_config_replaces_its_pinned_set_and_an_unchanged_one_carries_on() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    let pin = PinDir::new(common::test_name!());
    let dir = common::output_dir();
    let output = dir.path().join("bpfsnap.prom");
    // Without a comm filter: every getpid counts.
    let counter = |help| {
        UserConfig::counter("getpid_calls_total", help).label("comm", 16, &[Decoder::String])
    };
    let configs = common::config_dir();
    let config = counter("getpid() calls.").install(
        configs.path(),
        "comm_getpid",
        &common::example_object("comm_getpid"),
    );
    let total = || -> f64 {
        let text = fs::read_to_string(&output).unwrap();
        common::samples(&text, "bpfsnap_getpid_calls_total")
            .iter()
            .map(|(_, value)| value)
            .sum()
    };
    let programs = [path_str(&config)];
    const CALLS: u64 = 5000;

    pinned_run_with_load(&programs, &pin.0, &output, CALLS);
    let first = total();
    let marker = pinned_fingerprint(&pin.0.join("comm_getpid"));
    assert!(first >= CALLS as f64, "{first}");
    pinned_run_with_load(&programs, &pin.0, &output, CALLS);
    let second = total();
    assert!(
        second >= first + CALLS as f64,
        "unchanged: counters carry on ({first} then {second})"
    );
    assert_eq!(pinned_fingerprint(&pin.0.join("comm_getpid")), marker);

    // Another help text is another config: its pinned set is replaced, so
    // its counters start again.
    fs::write(&config, counter("Calls of getpid().").to_toml()).unwrap();
    pinned_run_with_load(&programs, &pin.0, &output, CALLS);
    let third = total();
    assert!(
        (CALLS as f64..second).contains(&third),
        "changed: counters restart ({second} then {third})"
    );
    assert_ne!(pinned_fingerprint(&pin.0.join("comm_getpid")), marker);
}

#[test]
fn a_second_run_on_the_same_output_waits_for_the_lock() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    let dir = common::output_dir();
    let output = dir.path().join("bpfsnap.prom");
    let lock_path = bpfsnap::sink::lock::lock_path_for(&output);
    // The test plays the first run: it holds the lock.
    let held = bpfsnap::sink::lock::acquire(&lock_path, Duration::ZERO).unwrap();

    // A run that gives up quickly fails cleanly and writes nothing.
    let quick = common::bpfsnap()
        .args([
            "run",
            "-b",
            "syscalls",
            "--for",
            "100ms",
            "--lock-timeout",
            "200ms",
            "--output",
            path_str(&output),
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&quick.stderr);
    assert_eq!(quick.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("another bpfsnap has held"), "{stderr}");
    assert!(!output.exists());

    // A patient run waits: once it has the lock file open it is polling.
    let waiting = Running::spawn(&[
        "run",
        "-b",
        "syscalls",
        "--for",
        "100ms",
        "--output",
        path_str(&output),
    ]);
    let pid = waiting.child.id();
    let deadline = Instant::now() + common::PATIENCE;
    while !has_open(pid, &lock_path) {
        assert!(
            Instant::now() < deadline,
            "bpfsnap never opened {}",
            lock_path.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(300)); // let it wait measurably (what it reports)
    drop(held);
    let (status, _, stderr) = waiting.finish();
    assert!(status.success(), "{stderr}");
    assert!(
        stderr.contains("waited"),
        "the second run reports the wait: {stderr}"
    );
    common::promtool_check(&fs::read_to_string(&output).unwrap());
}

#[test]
fn two_runs_at_once_on_one_output_take_turns() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    let dir = common::output_dir();
    let output = dir.path().join("bpfsnap.prom");
    let done = Arc::new(AtomicBool::new(false));
    let reader = watch_file(output.clone(), done.clone());
    let args = [
        "run",
        "-b",
        "syscalls",
        "--for",
        "1s",
        "--output",
        path_str(&output),
    ];
    let runs = [Running::spawn(&args), Running::spawn(&args)];
    let results: Vec<_> = runs.into_iter().map(Running::finish).collect();
    done.store(true, Ordering::Relaxed);
    let seen = reader.join().expect("reader");
    for (status, _, stderr) in &results {
        assert!(status.success(), "{stderr}");
    }
    let waited: Vec<&String> = results
        .iter()
        .map(|(_, _, stderr)| stderr)
        .filter(|stderr| stderr.contains("waited"))
        .collect();
    assert_eq!(
        waited.len(),
        1,
        "exactly one run reports waiting for the other: {results:?}"
    );
    assert!(
        waited[0].contains("warning: waited") && waited[0].contains(".lock"),
        "{}",
        waited[0]
    );
    // Both wrote, one after the other: two whole versions, never a mix.
    assert_eq!(seen.texts.len(), 2, "one version per run");
    common::promtool_check(&fs::read_to_string(&output).unwrap());
}

fn has_open(pid: u32, path: &Path) -> bool {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .any(|fd| fs::read_link(fd.path()).is_ok_and(|target| target == path))
}

#[test]
fn capabilities_are_dropped_once_probes_are_attached() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    let dir = common::output_dir();
    let output = dir.path().join("bpfsnap.prom");
    let mut running = Running::spawn(&[
        "run",
        "-v",
        "-b",
        "syscalls",
        "--for",
        "60s",
        "--keep-caps",
        "none",
        "--output",
        path_str(&output),
    ]);
    running.wait_for("sampling");
    let status = fs::read_to_string(format!("/proc/{}/status", running.child.id())).unwrap();
    let cap_eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .unwrap()
        .trim()
        .to_string();
    assert_eq!(cap_eff, "0000000000000000", "CapEff after attach");
    running.signal(libc::SIGINT);
    let (exit, _, stderr) = running.finish();
    assert!(
        exit.success(),
        "still writes without capabilities: {stderr}"
    );
    assert!(fs::read_to_string(&output)
        .unwrap()
        .contains("bpfsnap_syscalls_total"));
}

/// Each thread of process `pid` (name, CapEff, CapPrm), from
/// /proc/PID/task: capabilities are per thread.
fn thread_capabilities(pid: u32) -> Vec<(String, u64, u64)> {
    let mut threads = Vec::new();
    for task in fs::read_dir(format!("/proc/{pid}/task")).unwrap().flatten() {
        let Ok(status) = fs::read_to_string(task.path().join("status")) else {
            continue; // ended meanwhile
        };
        let field = |name: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .map(|value| value.trim().to_string())
                .unwrap_or_default()
        };
        let caps = |name: &str| u64::from_str_radix(&field(name), 16).unwrap();
        threads.push((field("Name:"), caps("CapEff:"), caps("CapPrm:")));
    }
    threads
}

/// Once attached, no thread of bpfsnap holds a capability it dropped: not
/// the event consumer (the `exits` built-in's) that started before the
/// drop, nor serve's connection and scrape threads.
/// What is kept (nothing, or CAP_BPF/CAP_SYS_ADMIN where this kernel checks
/// it on every map read) is the same in every thread.
#[test]
fn every_thread_drops_the_capabilities_in_run_and_serve() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    const PERFMON: u64 = 1 << 38;
    const KEPT_FOR_READS: u64 = 1 << 39 | 1 << 21;
    // Threads at least: run has the main thread and the event consumer;
    // serve has its connection and scrape threads besides.
    let check = |pid: u32, mode: &str, at_least: usize| {
        let threads = thread_capabilities(pid);
        assert!(threads.len() >= at_least, "{mode}: threads {threads:?}");
        let (_, main_eff, main_prm) = threads[0].clone();
        for (name, eff, prm) in &threads {
            assert!(
                *eff == main_eff && *prm == main_prm && eff & PERFMON == 0 && eff & !KEPT_FOR_READS == 0,
                "{mode}: thread {name} holds CapEff {eff:016x} CapPrm {prm:016x} (the process kept {main_eff:016x}): {threads:?}"
            );
        }
    };
    let dir = common::output_dir();
    let output = dir.path().join("bpfsnap.prom");
    let args = ["-b", "syscalls,exits", "--keep-caps", "none"];
    let mut running = Running::spawn(
        &[
            &["run", "-v"][..],
            &args,
            &["--for", "60s", "--output", path_str(&output)],
        ]
        .concat(),
    );
    running.wait_for("sampling");
    check(running.child.id(), "run", 2);
    running.signal(libc::SIGINT);
    let (exit, _, stderr) = running.finish();
    assert!(exit.success(), "{stderr}");

    let listen = format!("127.0.0.1:{}", common::free_port());
    let mut server =
        Running::spawn(&[&["serve", "-v"][..], &args, &["--listen", &listen]].concat());
    server.wait_for("serving http://");
    let url = format!("http://{listen}/metrics");
    let (status, _, _) = common::curl_url(&url, &[]).expect("scrape");
    assert_eq!(status, 200);
    check(server.child.id(), "serve", 3);
    server.signal(libc::SIGTERM);
    let (exit, _, stderr) = server.finish();
    assert!(exit.success(), "{stderr}");
}

/// `bpfsnap ARGS` on a pseudo-terminal (util-linux's `script`); returns its
/// exit status and everything it printed there.
fn on_terminal(args: &[String]) -> (std::process::ExitStatus, String) {
    let output = terminal_command(args)
        .output()
        .expect("run script (util-linux)");
    (
        output.status,
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

/// `script` running `bpfsnap ARGS` on a pseudo-terminal (whose size is
/// unset: bpfsnap then takes its width from `COLUMNS`).
fn terminal_command(args: &[String]) -> std::process::Command {
    let command: Vec<String> = std::iter::once(env!("CARGO_BIN_EXE_bpfsnap"))
        .chain(args.iter().map(String::as_str))
        .map(|arg| format!("'{arg}'"))
        .collect();
    let mut script = std::process::Command::new("script");
    script
        .args([
            "--quiet",
            "--return",
            "--command",
            &command.join(" "),
            "/dev/null",
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped());
    script
}

/// On a terminal `run` shows its window as tables fitted to the width, the
/// user's metrics first (one aligned column per label, at most `--top` rows)
/// and bpfsnap's own as one summary line at the end; `-v` adds them all.
#[test]
fn the_terminal_view_fits_the_width_and_sums_up_bpfsnaps_own_metrics() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    for (extra, all) in [(&[][..], false), (&["-v"][..], true)] {
        let args: Vec<String> = ["run", "-b", "syscalls,execs", "--for", "1s", "--top", "4"]
            .iter()
            .chain(extra)
            .map(|arg| arg.to_string())
            .collect();
        let mut child = terminal_command(&args)
            .env("COLUMNS", "72")
            .spawn()
            .unwrap();
        // Load until the window ends: execs of `true`, which also call getpid-free
        // syscalls; the view must hold them whatever their number.
        while child.try_wait().unwrap().is_none() {
            let _ = std::process::Command::new("true").status();
        }
        let output = child.wait_with_output().unwrap();
        let shown = String::from_utf8_lossy(&output.stdout).replace("\r\n", "\n");
        assert!(output.status.success(), "{shown}");
        // The view: from the first table on (stderr's progress comes before).
        let start = shown.find("bpfsnap_execs_total\n").expect("execs table");
        let view = &shown[start..];
        for line in view.lines() {
            assert!(
                line.chars().count() <= 72,
                "wider than 72: {line:?}\n{view}"
            );
        }
        let execs = view.find("bpfsnap_execs_total\n").expect("execs table");
        let syscalls = view
            .find("bpfsnap_syscalls_total\n")
            .expect("syscalls table");
        let summary = view
            .find("bpfsnap: 2 of 2 configs up; window 1")
            .expect("summary");
        assert!(execs < syscalls && syscalls < summary, "{view}");
        assert!(
            view.contains("\n  comm  ") && view.contains("\n  true  "),
            "{view}"
        );
        assert!(
            view.contains("more rows; "),
            "--top 4 leaves some out: {view}"
        );
        assert_eq!(view.contains("bpfsnap_program_info"), all, "{view}");
    }
}

#[test]
fn progress_on_a_terminal_only_and_quiet_and_verbose_do_what_they_say() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    let dir = common::output_dir();
    let output = dir.path().join("bpfsnap.prom");
    let run = |extra: &[&'static str]| -> Vec<String> {
        ["run", "-b", "syscalls", "--output", path_str(&output)]
            .iter()
            .chain(extra)
            .map(|arg| arg.to_string())
            .collect()
    };

    // A terminal gets the countdown, rewritten in place, then cleared.
    let (status, shown) = on_terminal(&run(&["--for", "2s"]));
    assert!(status.success(), "{shown}");
    assert!(
        shown.contains("\r\x1b[Kbpfsnap: sampling, 2s left") && shown.contains("sampling, 1s left"),
        "countdown on a terminal: {shown:?}"
    );
    // -q: nothing but errors, even on a terminal.
    let (status, shown) = on_terminal(&run(&["--for", "2s", "-q"]));
    assert!(status.success(), "{shown}");
    assert!(shown.trim().is_empty(), "quiet on a terminal: {shown:?}");

    // In a pipe (cron): silent when all is well, no countdown even with -v.
    let piped = common::bpfsnap()
        .args(run(&["--for", "100ms"]))
        .output()
        .unwrap();
    assert!(piped.status.success());
    assert!(
        piped.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&piped.stderr)
    );
    let verbose = common::bpfsnap()
        .args(run(&["--for", "2s", "-v"]))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&verbose.stderr);
    assert!(verbose.status.success(), "{stderr}");
    assert!(
        stderr.contains("bpfsnap: sampling syscalls")
            && stderr.contains("bpfsnap: wrote ")
            && !stderr.contains("left")
            && !stderr.contains('\x1b'),
        "{stderr}"
    );
    common::promtool_check(&fs::read_to_string(&output).unwrap());
}
