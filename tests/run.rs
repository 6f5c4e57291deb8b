//! `bpfsnap run` end to end on the real kernel: the syscall counter sees the
//! load the test makes, the file is what node_exporter and promtool accept,
//! signals end the window cleanly, and nothing stays loaded.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use common::{path_str, Running};

const GETPID_CALLS: u64 = 100_000;

/// Runs `bpfsnap run -v ARGS`, makes `GETPID_CALLS` getpid calls once every
/// probe is attached, and checks the programs it loaded are gone after exit.
fn run_with_getpid_load(args: &[&str]) -> (String, String) {
    let before = common::loaded_program_ids();
    let mut argv = vec!["run", "-v"];
    argv.extend_from_slice(args);
    let mut running = Running::spawn(&argv);
    running.wait_for("sampling");
    let ours: BTreeSet<u64> = common::loaded_program_ids()
        .difference(&before)
        .copied()
        .collect();
    assert!(
        !ours.is_empty(),
        "bpfsnap said it is sampling, but no new BPF program is loaded"
    );
    common::getpid_calls(GETPID_CALLS);
    let (status, stdout, stderr) = running.finish();
    assert!(status.success(), "bpfsnap failed: {status}\n{stderr}");
    let left = common::still_loaded_after_exit(&ours);
    assert!(
        left.is_empty(),
        "programs {left:?} still loaded after bpfsnap exited"
    );
    (stdout, stderr)
}

/// [`run_with_getpid_load`] for a 1 s window into `DIR/bpfsnap.prom`.
fn one_second_into_textfile() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = common::output_dir();
    let output = dir.path().join("bpfsnap.prom");
    run_with_getpid_load(&["--for", "1s", "--output", path_str(&output)]);
    (dir, output)
}

#[test]
fn counts_getpid_calls_into_a_0644_textfile_promtool_accepts() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    let (dir, output) = one_second_into_textfile();

    let text = fs::read_to_string(&output).expect("output file");
    let getpid = common::sample(&text, r#"bpfsnap_syscalls_total{syscall="getpid"}"#)
        .expect("getpid series");
    assert!(
        getpid >= GETPID_CALLS as f64,
        "counted {getpid} getpid calls, made {GETPID_CALLS}\n{text}"
    );
    assert_eq!(fs::metadata(&output).unwrap().mode() & 0o777, 0o644);
    let window = common::sample(&text, "bpfsnap_window_seconds").expect("window gauge");
    assert!(
        (1.0..10.0).contains(&window),
        "window {window} s for --for 1s"
    );
    let start = common::sample(&text, "bpfsnap_window_start_timestamp_seconds").unwrap();
    let end = common::sample(&text, "bpfsnap_window_end_timestamp_seconds").unwrap();
    assert!(
        (end - start - window).abs() < 0.1,
        "start {start} end {end} window {window}"
    );
    assert!(common::sample(&text, "bpfsnap_snapshot_duration_seconds").unwrap() > 0.0);
    common::promtool_check(&text);
    assert_eq!(
        common::files_in(dir.path()),
        [output],
        "only the output file, no temp file"
    );
}

#[test]
fn node_exporter_serves_the_file_without_scrape_errors() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    let (dir, _output) = one_second_into_textfile();

    let exporter = common::NodeExporter::start(dir.path());
    let body = exporter.scrape();
    let getpid = common::sample(&body, r#"bpfsnap_syscalls_total{syscall="getpid"}"#);
    assert!(
        getpid.is_some_and(|n| n >= GETPID_CALLS as f64),
        "getpid series in node_exporter: {getpid:?}"
    );
    assert_eq!(
        common::sample(&body, "node_textfile_scrape_error"),
        Some(0.0),
        "{body}"
    );
    assert!(
        body.contains(r#"node_textfile_mtime_seconds{file=""#),
        "textfile collector read the file"
    );
}

/// `--interval` in the pretty format shows each window's own counts, as BCC
/// tools do, under a heading with its time; `--counts cumulative` says so.
#[test]
fn pretty_interval_windows_are_headed_and_count_per_window() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    for (extra, covering) in [
        (&[][..], "counts of this window"),
        (&["--counts", "cumulative"][..], "counts since the start"),
    ] {
        let mut args = vec![
            "run",
            "-b",
            "syscalls",
            "--interval",
            "200ms",
            "--count",
            "2",
        ];
        args.extend_from_slice(&["--format", "pretty", "--output", "-"]);
        args.extend_from_slice(extra);
        let output = common::bpfsnap().args(&args).output().unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let stdout = String::from_utf8_lossy(&output.stdout);
        let headings: Vec<&str> = stdout.lines().filter(|l| l.starts_with("--- ")).collect();
        assert_eq!(headings.len(), 2, "{stdout}");
        for heading in headings {
            assert!(
                heading.contains("s window; ") && heading.ends_with(&format!("{covering}) ---")),
                "{heading}"
            );
        }
    }
}

#[test]
fn writes_to_stdout_with_dash() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    let (stdout, _) = run_with_getpid_load(&["--for", "500ms", "--output", "-"]);
    // One window's counts, which no output after it carries on: gauges,
    // named without `_total`.
    let getpid = common::sample(&stdout, r#"bpfsnap_syscalls{syscall="getpid"}"#);
    assert!(getpid.is_some_and(|n| n >= GETPID_CALLS as f64), "{stdout}");
    assert!(
        stdout.contains("# TYPE bpfsnap_syscalls gauge\n"),
        "{stdout}"
    );
    assert!(!stdout.contains(" counter\n"), "{stdout}");
    common::promtool_check(&stdout);
}

#[test]
fn sigterm_mid_window_writes_what_was_gathered_and_detaches() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    let dir = common::output_dir();
    let output = dir.path().join("bpfsnap.prom");
    let before = common::loaded_program_ids();
    let mut running = Running::spawn(&["run", "-v", "--for", "60s", "--output", path_str(&output)]);
    running.wait_for("sampling");
    let ours: BTreeSet<u64> = common::loaded_program_ids()
        .difference(&before)
        .copied()
        .collect();
    assert!(!ours.is_empty());
    common::getpid_calls(1000);

    let signalled = Instant::now();
    running.signal(libc::SIGTERM);
    let status = common::wait_bounded(&mut running.child, Duration::from_secs(1));
    let took = signalled.elapsed();
    assert!(
        status.is_some_and(|s| s.success()),
        "exit after SIGTERM: {status:?} after {took:?}"
    );

    let text = fs::read_to_string(&output).expect("file written after SIGTERM");
    let window = common::sample(&text, "bpfsnap_window_seconds").expect("window gauge");
    assert!(
        window < 60.0,
        "window gauge {window} shows the real, shorter window"
    );
    assert!(
        common::sample(&text, r#"bpfsnap_syscalls_total{syscall="getpid"}"#)
            .is_some_and(|n| n >= 1000.0)
    );
    let left = common::still_loaded_after_exit(&ours);
    assert!(
        left.is_empty(),
        "programs {left:?} still loaded after SIGTERM"
    );
}

#[test]
fn sigint_works_like_sigterm() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    let mut running = Running::spawn(&["run", "-v", "--for", "60s", "--output", "-"]);
    running.wait_for("sampling");
    running.signal(libc::SIGINT);
    let (status, stdout, stderr) = running.finish();
    assert!(status.success(), "{stderr}");
    assert!(
        common::sample(&stdout, "bpfsnap_window_seconds").is_some_and(|w| w < 60.0),
        "{stdout}"
    );
}

/// Several built-ins load from the object they are linked into (one libbpf
/// load per CPU instead of one per built-in): only their own programs are
/// loaded, each counts what it should, and all are gone after exit.
#[test]
fn builtins_loaded_together_load_only_their_programs_and_count() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    let selected = ["syscalls", "execs", "signals", "syscall_errors"];
    let expected: BTreeSet<String> = selected
        .iter()
        .flat_map(|name| bpfsnap::builtin::find(name).expect("built-in").programs)
        .map(|program| program.to_string())
        .collect();
    let before = common::loaded_program_ids();
    let mut running = Running::spawn(&[
        "run",
        "-v",
        "--builtin",
        &selected.join(","),
        "--for",
        "60s",
        "--output",
        "-",
    ]);
    running.wait_for("sampling");
    let held = common::programs_held_by(running.child.id());
    let ours: BTreeSet<u64> = common::loaded_program_ids()
        .difference(&before)
        .copied()
        .collect();
    common::getpid_calls(1000);
    for _ in 0..3 {
        let status = std::process::Command::new("true").status().unwrap();
        assert!(status.success());
    }
    // A failing system call: close(-1) is EBADF.
    for _ in 0..5 {
        assert_eq!(unsafe { libc::close(-1) }, -1);
    }
    running.signal(libc::SIGINT);
    let (status, text, stderr) = running.finish();
    assert!(status.success(), "{stderr}");
    assert!(
        !stderr.contains("loading each on its own"),
        "the linked load fell back: {stderr}"
    );
    common::promtool_check(&text);

    let loaded: BTreeSet<String> = common::samples(&text, "bpfsnap_program_info")
        .iter()
        .filter_map(|(labels, _)| {
            let program = labels.split("program=\"").nth(1)?;
            Some(program.split('"').next()?.to_string())
        })
        .collect();
    assert_eq!(loaded, expected, "exactly the selected built-ins' programs");
    assert_eq!(held.len(), expected.len(), "programs held: {held:?}");
    assert!(held.is_subset(&ours));
    // One window on standard output: gauges, named without `_total`.
    assert!(common::sample(&text, r#"bpfsnap_syscalls{syscall="getpid"}"#).unwrap() >= 1000.0);
    assert!(common::sample(&text, r#"bpfsnap_execs{comm="true"}"#).unwrap() >= 3.0);
    assert!(
        common::sample(
            &text,
            r#"bpfsnap_syscall_errors{syscall="close",errno="EBADF"}"#
        )
        .unwrap()
            >= 5.0,
        "{text}"
    );
    assert!(common::samples(&text, "bpfsnap_signals")
        .iter()
        .any(|(_, v)| *v >= 1.0));
    assert!(
        common::still_loaded_after_exit(&ours).is_empty(),
        "programs left loaded"
    );
}

/// `--output /dev/null` (or any device or FIFO) is written in place: the
/// atomic rename a textfile gets would replace the device with a file.
#[test]
fn output_to_dev_null_leaves_it_a_device() {
    use std::os::unix::fs::FileTypeExt;
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    /// Puts /dev/null back if a regression replaced it, so the failure
    /// does not spread to everything after (cargo reads it as stdin).
    struct RestoreDevNull;
    impl Drop for RestoreDevNull {
        fn drop(&mut self) {
            if !fs::metadata("/dev/null").is_ok_and(|m| m.file_type().is_char_device()) {
                let _ = fs::remove_file("/dev/null");
                let path = c"/dev/null";
                unsafe { libc::mknod(path.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3)) };
                // mknod's mode passes through the umask.
                use std::os::unix::fs::PermissionsExt;
                let _ = fs::set_permissions("/dev/null", fs::Permissions::from_mode(0o666));
            }
        }
    }
    let _restore = RestoreDevNull;
    let result = common::bpfsnap()
        .args([
            "run",
            "-b",
            "syscalls",
            "--for",
            "100ms",
            "--output",
            "/dev/null",
        ])
        .output()
        .unwrap();
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
    let null = fs::metadata("/dev/null").unwrap();
    assert!(null.file_type().is_char_device(), "/dev/null was replaced");
    assert_eq!(null.rdev(), libc::makedev(1, 3));
}

/// The samples of tests/fixtures/many_keys' family in `text`, by key,
/// after checking the family is in one piece: its HELP and TYPE once,
/// then every sample of it, none twice.
fn many_keys_samples(text: &str) -> std::collections::BTreeMap<u64, f64> {
    let name = "bpfsnap_many_keys_total";
    let lines: Vec<&str> = text.lines().collect();
    let ours = |line: &&str| line.contains(name);
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.starts_with('#') && ours(l))
            .count(),
        2
    );
    let first = lines
        .iter()
        .position(|l| l.starts_with(name))
        .expect("samples");
    let count = lines.iter().filter(|l| l.starts_with(name)).count();
    assert!(
        lines[first..first + count]
            .iter()
            .all(|l| l.starts_with(name)),
        "the family's samples are together"
    );
    let mut samples = std::collections::BTreeMap::new();
    for line in &lines[first..first + count] {
        let (series, value) = line.rsplit_once(' ').expect("a sample");
        let key = series
            .strip_prefix(&format!("{name}{{n=\""))
            .and_then(|rest| rest.strip_suffix("\"}"))
            .and_then(|key| key.parse().ok())
            .unwrap_or_else(|| panic!("a key: {line}"));
        let value = value.parse().expect("a value");
        assert_eq!(samples.insert(key, value), None, "{line} twice");
    }
    samples
}

/// A family many times the size of the buffer it is written through
/// (the text is spilled into the file while it is encoded) comes out whole,
/// and the next run into the file carries each of its series on: the keys
/// both runs counted add up, those of one run alone keep their count.
#[test]
fn a_large_family_is_written_whole_and_the_next_run_carries_it_on() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    let configs = tempfile::tempdir().unwrap();
    let config = common::many_keys_config(configs.path());
    let dir = common::output_dir();
    let output = dir.path().join("bpfsnap.prom");
    let run = |keys: std::ops::Range<u64>| {
        let args = ["--for", "1h", "--output", path_str(&output)];
        let mut running = Running::spawn(&[&["run", "-v", path_str(&config)], &args[..]].concat());
        running.wait_for("sampling");
        common::many_keys(keys);
        running.signal(libc::SIGINT);
        let (status, _, stderr) = running.finish();
        assert!(status.success(), "bpfsnap failed: {status}\n{stderr}");
        let text = fs::read_to_string(&output).expect("the output");
        common::promtool_check(&text);
        text
    };
    let first = run(0..20_000);
    assert!(
        first.len() > 2 * (256 << 10),
        "spilled twice or more: {}",
        first.len()
    );
    let once = |keys: std::ops::Range<u64>| keys.map(|n| (n, 1.0));
    assert_eq!(many_keys_samples(&first), once(0..20_000).collect());

    let second = run(10_000..30_000);
    let want = once(0..30_000)
        .map(|(n, one)| {
            (
                n,
                if (10_000..20_000).contains(&n) {
                    2.0
                } else {
                    one
                },
            )
        })
        .collect();
    assert_eq!(many_keys_samples(&second), want);
}
