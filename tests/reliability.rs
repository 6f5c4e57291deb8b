//! Reliability on the real kernel: faults on the output path (a full disk, a
//! read-only filesystem, planted symlinks, missing permissions), readers and
//! node_exporter during many rewrites, and signals — SIGINT, SIGTERM and
//! SIGKILL — at exact points of a run (the first program load, the first
//! attach, the window, the rename that publishes the file), held there by a
//! seccomp gate instead of timing. Every case ends with the same checks: a
//! clear error or a clean exit, the output either the old file byte for byte
//! or a complete new one, no temporary file, and nothing of ours loaded.
//!
//! RELIABILITY.md lists what is covered and what is not.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use common::{path_str, Mount, PinDir, Running, SyscallGate, Trap, Trapped};

/// The previous output every fault case starts from.
const OLD: &[u8] =
    b"# HELP old_metric Written before the fault.\n# TYPE old_metric gauge\nold_metric 1\n";

/// Says something in the test's output even when it passes (libtest
/// captures `eprintln!`, not the stream itself).
fn note(text: &str) {
    let _ = writeln!(std::io::stderr(), "{text}");
}

/// Fills the filesystem of `dir` with `dir/filler` until ENOSPC.
fn fill(dir: &Path) -> PathBuf {
    let filler = dir.join("filler");
    let mut file = fs::File::create(&filler).unwrap();
    let chunk = [0xaau8; 512];
    loop {
        match file.write(&chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(err) if err.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(err) => panic!("filling {}: {err}", dir.display()),
        }
    }
    let _ = file.sync_all();
    filler
}

// --- what every case checks ---------------------------------------------------

/// Our temporary files left in the output's directory.
fn temp_files(output: &Path) -> Vec<PathBuf> {
    let name = output.file_name().unwrap().to_string_lossy().into_owned();
    bpfsnap::sink::leftover_temp_files(output.parent().unwrap(), &name)
}

/// The output is the old file byte for byte, and no temporary file is left.
fn assert_untouched(output: &Path) {
    assert_eq!(
        fs::read(output).expect("the old output"),
        OLD,
        "the previous file is byte-for-byte intact"
    );
    assert_eq!(
        temp_files(output),
        Vec::<PathBuf>::new(),
        "no temp file left"
    );
}

/// `output` holds a complete new exposition (promtool-clean); returns it.
fn assert_complete(output: &Path) -> String {
    let text = fs::read_to_string(output).expect("output");
    assert_ne!(text.as_bytes(), OLD, "a new file was written");
    common::assert_complete_exposition(&text);
    assert!(
        common::sample(&text, "bpfsnap_window_seconds").is_some()
            && common::sample(&text, "bpfsnap_up").is_some(),
        "the run's own gauges are there: {text}"
    );
    common::promtool_check(&text);
    text
}

/// A run that failed: exit status `code` and a single `bpfsnap: error:`
/// line containing every `expected` text.
fn assert_one_line_error(
    status: std::process::ExitStatus,
    stderr: &str,
    code: i32,
    expected: &[&str],
) {
    assert_eq!(status.code(), Some(code), "exit status: {stderr}");
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("bpfsnap: error: "))
        .collect();
    assert_eq!(errors.len(), 1, "one error line: {stderr}");
    for text in expected {
        assert!(
            errors[0].contains(text),
            "the error says {text:?}: {stderr}"
        );
    }
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// Every BPF program loaded since `before` is gone (bounded poll).
fn assert_nothing_left_loaded(before: &BTreeSet<u64>) {
    let new: BTreeSet<u64> = common::loaded_program_ids()
        .difference(before)
        .copied()
        .collect();
    let left = common::still_loaded_after_exit(&new);
    assert!(left.is_empty(), "programs {left:?} still loaded");
}

/// `bpfsnap ARGS` to completion: (status, stderr).
fn run(args: &[&str]) -> (std::process::ExitStatus, String) {
    let output = common::bpfsnap().args(args).output().expect("run bpfsnap");
    (
        output.status,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// [`run`], counting the programs bpfsnap tries to load (its
/// `bpf(BPF_PROG_LOAD)` calls, through the gate): immune to programs other
/// processes load meanwhile.
fn run_counting_loads(args: &[&str]) -> (std::process::ExitStatus, String, usize) {
    let mut command = common::bpfsnap();
    command.args(args);
    let socket = SyscallGate::arm(
        &mut command,
        &[Trap::Arg0(libc::SYS_bpf, common::BPF_PROG_LOAD)],
    );
    let running = Running::spawn_command(command);
    let gate = socket.connect();
    let mut loads = 0;
    while let Some(call) = gate.next() {
        loads += 1;
        gate.resume(&call);
    }
    let (status, _, stderr) = running.finish();
    (status, stderr, loads)
}

/// A directory with `bpfsnap.prom` holding [`OLD`].
fn dir_with_old_output() -> (tempfile::TempDir, PathBuf) {
    let dir = common::output_dir();
    let output = dir.path().join("bpfsnap.prom");
    fs::write(&output, OLD).unwrap();
    (dir, output)
}

// --- readers during many rewrites ---------------------------------------------

const REWRITES: usize = 1000;

/// 1,000 rewrites 10 ms apart of the default set's file, read in a tight loop
/// by one thread and scraped through node_exporter by another: the reader
/// never finds the file missing, empty or cut short (every version is a
/// complete exposition with the last family present), and every scrape says
/// `node_textfile_scrape_error 0` and carries bpfsnap's series.
#[test]
fn readers_and_node_exporter_never_see_a_missing_empty_or_partial_file() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    let dir = common::output_dir();
    let output = dir.path().join("bpfsnap.prom");
    let exporter = Arc::new(common::NodeExporter::start(dir.path()));
    let done = Arc::new(AtomicBool::new(false));

    let reader = {
        let (path, done) = (output.clone(), done.clone());
        std::thread::spawn(move || {
            let (mut reads, mut versions, mut appeared) = (0usize, BTreeSet::new(), false);
            while !done.load(Ordering::Relaxed) {
                match fs::read_to_string(&path) {
                    Ok(text) => {
                        appeared = true;
                        reads += 1;
                        assert!(
                            text.starts_with("# HELP ")
                                && common::sample(&text, "bpfsnap_write_failures_total").is_some(),
                            "a reader saw an empty or partial file:\n{text}"
                        );
                        let end = common::sample(&text, "bpfsnap_window_end_timestamp_seconds");
                        if versions.insert(end.map(f64::to_bits)) {
                            common::assert_complete_exposition(&text);
                        }
                    }
                    Err(err) => assert!(!appeared, "the file went missing between rewrites: {err}"),
                }
            }
            (reads, versions.len())
        })
    };
    let scraper = {
        let (exporter, done) = (exporter.clone(), done.clone());
        std::thread::spawn(move || {
            let (mut scrapes, mut with_file) = (0usize, false);
            while !done.load(Ordering::Relaxed) {
                let body = exporter.scrape();
                scrapes += 1;
                assert_eq!(
                    common::sample(&body, "node_textfile_scrape_error"),
                    Some(0.0),
                    "scrape {scrapes}:\n{body}"
                );
                let has = common::sample(&body, "bpfsnap_up").is_some();
                assert!(
                    has || !with_file,
                    "bpfsnap's series vanished from scrape {scrapes}"
                );
                with_file |= has;
            }
            scrapes
        })
    };

    let before = common::loaded_program_ids();
    let started = Instant::now();
    let count = REWRITES.to_string();
    let running = Running::spawn(&[
        "run",
        "-v",
        "--interval",
        "10ms",
        "--count",
        &count,
        "--output",
        path_str(&output),
    ]);
    let (status, _, stderr) = running.finish();
    let took = started.elapsed();
    done.store(true, Ordering::Relaxed);
    let (reads, versions) = reader.join().expect("reader");
    let scrapes = scraper.join().expect("scraper");
    assert!(status.success(), "{stderr}");
    assert_eq!(
        stderr.matches("bpfsnap: wrote ").count(),
        REWRITES,
        "every window written: {stderr}"
    );
    assert!(
        reads > REWRITES && scrapes > 10,
        "reads {reads}, scrapes {scrapes}"
    );
    assert_complete(&output);
    assert_eq!(temp_files(&output), Vec::<PathBuf>::new());
    assert_nothing_left_loaded(&before);
    note(&format!(
        "FIGURES rewrites={REWRITES} reads={reads} distinct_versions={versions} scrapes={scrapes} took={took:.1?}"
    ));
}

// --- faults on the output path ------------------------------------------------

/// A full filesystem at write time (a tmpfs of 64 KiB, filled): the run
/// fails with ENOSPC named, exit 1, the old file intact, no temp file left,
/// every program detached.
#[test]
fn full_disk_fails_cleanly_and_keeps_the_old_file() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mount = Mount::tmpfs(&dir.path().join("out"), "64k");
    let output = mount.0.join("bpfsnap.prom");
    fs::write(&output, OLD).unwrap();
    fill(&mount.0);
    let before = common::loaded_program_ids();
    let (status, stderr) = run(&[
        "run",
        "-b",
        "syscalls",
        "--for",
        "100ms",
        "--output",
        path_str(&output),
    ]);
    assert_one_line_error(
        status,
        &stderr,
        1,
        &["No space left on device", "bpfsnap.prom"],
    );
    assert_untouched(&output);
    assert_nothing_left_loaded(&before);
}

/// A disk that fills while a large family is written into the temporary
/// file, before the rest of the text is even encoded: the same one-line
/// error, naming that file, and the old file intact.
#[test]
fn full_disk_while_a_large_family_is_written_keeps_the_old_file() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mount = Mount::tmpfs(&dir.path().join("out"), "512k");
    let output = mount.0.join("bpfsnap.prom");
    fs::write(&output, OLD).unwrap();
    let config = common::many_keys_config(dir.path());
    let before = common::loaded_program_ids();
    let args = ["run", "-v", path_str(&config), "--for", "1h", "--output"];
    let mut running = Running::spawn(&[&args[..], &[path_str(&output)]].concat());
    running.wait_for("sampling");
    // About 900 kB of text: past the file system's 512 kB before its end.
    common::many_keys(0..20_000);
    running.signal(libc::SIGINT);
    let (status, _, stderr) = running.finish();
    assert_one_line_error(
        status,
        &stderr,
        1,
        &["No space left on device", ".bpfsnap.prom."],
    );
    assert_untouched(&output);
    assert_nothing_left_loaded(&before);
}

/// In interval mode a full disk is logged, retried each window and counted;
/// once space is freed the next window is written and says how many failed.
#[test]
fn full_disk_in_interval_mode_is_retried_and_counted() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mount = Mount::tmpfs(&dir.path().join("out"), "64k");
    let output = mount.0.join("bpfsnap.prom");
    fs::write(&output, OLD).unwrap();
    let filler = fill(&mount.0);
    let before = common::loaded_program_ids();
    let mut running = Running::spawn(&[
        "run",
        "-v",
        "-b",
        "syscalls",
        "--interval",
        "100ms",
        "--output",
        path_str(&output),
    ]);
    running.wait_for("retrying in");
    assert!(
        running
            .stderr
            .last()
            .unwrap()
            .contains("No space left on device"),
        "{:?}",
        running.stderr
    );
    assert_eq!(
        fs::read(&output).unwrap(),
        OLD,
        "old file intact while the disk is full"
    );
    fs::remove_file(filler).unwrap();
    running.wait_for("bpfsnap: wrote ");
    running.signal(libc::SIGTERM);
    let (status, _, stderr) = running.finish();
    assert!(status.success(), "{stderr}");
    let text = assert_complete(&output);
    let failures = common::sample(&text, "bpfsnap_write_failures_total").unwrap();
    assert!(failures >= 1.0, "failed writes counted: {failures}\n{text}");
    assert_eq!(temp_files(&output), Vec::<PathBuf>::new());
    assert_nothing_left_loaded(&before);
}

/// A read-only filesystem is found before anything is loaded.
#[test]
fn read_only_filesystem_is_refused_before_loading() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    let (dir, output) = dir_with_old_output();
    let _read_only = Mount::read_only(dir.path());
    let (status, stderr, loads) = run_counting_loads(&[
        "run",
        "-b",
        "syscalls",
        "--for",
        "100ms",
        "--output",
        path_str(&output),
    ]);
    assert_one_line_error(
        status,
        &stderr,
        1,
        &["cannot create a file in", "Read-only file system"],
    );
    assert_untouched(&output);
    assert_eq!(loads, 0, "nothing was loaded");
}

/// The filesystem turns read-only during the window (a remount): the write
/// fails, exit 1, the old file is intact and nothing stays loaded.
#[test]
fn filesystem_turning_read_only_during_the_window_keeps_the_old_file() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    let (dir, output) = dir_with_old_output();
    let before = common::loaded_program_ids();
    let mut running = Running::spawn(&[
        "run",
        "-v",
        "-b",
        "syscalls",
        "--for",
        "60s",
        "--output",
        path_str(&output),
    ]);
    running.wait_for("sampling");
    let read_only = Mount::read_only(dir.path());
    running.signal(libc::SIGTERM);
    let (status, _, stderr) = running.finish();
    drop(read_only);
    assert_one_line_error(status, &stderr, 1, &["Read-only file system"]);
    assert_untouched(&output);
    assert_nothing_left_loaded(&before);
}

/// Mistakes in the path: a missing directory, a directory as the target
/// (kept with its contents), a file as the directory.
#[test]
fn output_path_mistakes_are_refused_before_loading() {
    let dir = common::output_dir();
    let missing = dir.path().join("no/such/bpfsnap.prom");
    let (status, stderr) = run(&["run", "--for", "100ms", "--output", path_str(&missing)]);
    assert_one_line_error(status, &stderr, 1, &["does not exist: create it"]);
    assert!(!missing.exists());

    let target = dir.path().join("d.prom");
    fs::create_dir(&target).unwrap();
    fs::write(target.join("inside"), "x").unwrap();
    let (status, stderr) = run(&["run", "--for", "100ms", "--output", path_str(&target)]);
    assert_one_line_error(status, &stderr, 1, &["is a directory"]);
    assert_eq!(fs::read_to_string(target.join("inside")).unwrap(), "x");

    let file = dir.path().join("file");
    fs::write(&file, "f").unwrap();
    let (status, stderr) = run(&[
        "run",
        "--for",
        "100ms",
        "--output",
        path_str(&file.join("x.prom")),
    ]);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert_eq!(fs::read_to_string(&file).unwrap(), "f");
    assert_eq!(
        common::files_in(dir.path()),
        [target, file],
        "nothing else created"
    );
}

/// As nobody with CAP_BPF + CAP_PERFMON (so privileges are not what stops
/// it), a directory nobody may not write to: refused before loading.
#[test]
fn directory_without_write_permission_is_refused() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let output = dir.path().join("bpfsnap.prom");
    fs::write(&output, OLD).unwrap();
    let result = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all,+bpf,+perfmon",
            "--ambient-caps=-all,+bpf,+perfmon",
        ])
        .arg(env!("CARGO_BIN_EXE_bpfsnap"))
        .args([
            "run",
            "-b",
            "syscalls",
            "--for",
            "100ms",
            "--output",
            path_str(&output),
        ])
        .output()
        .expect("setpriv");
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert_one_line_error(
        result.status,
        &stderr,
        1,
        &["cannot create a file in", "Permission denied"],
    );
    assert_untouched(&output);
}

/// Root writing into a directory owned by another user (0755) can do so
/// only through CAP_DAC_OVERRIDE, which bpfsnap drops after attaching: the
/// run must fail before the window, not after it, and detach.
#[test]
fn dropping_capabilities_that_the_write_needs_fails_before_the_window() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("foreign");
    fs::create_dir(&out).unwrap();
    let output = out.join("bpfsnap.prom");
    fs::write(&output, OLD).unwrap();
    std::os::unix::fs::chown(&out, Some(65534), Some(65534)).unwrap();
    fs::set_permissions(&out, fs::Permissions::from_mode(0o755)).unwrap();
    let before = common::loaded_program_ids();
    let started = Instant::now();
    let (status, stderr) = run(&[
        "run",
        "-b",
        "syscalls",
        "--for",
        "30s",
        "--output",
        path_str(&output),
    ]);
    assert_one_line_error(
        status,
        &stderr,
        1,
        &["after dropping capabilities", "--keep-caps"],
    );
    assert!(
        started.elapsed().as_secs() < 30,
        "failed before the 30 s window, not after it"
    );
    assert_untouched(&output);
    assert_nothing_left_loaded(&before);
}

/// A symlink at the target path is replaced by the new file (rename replaces
/// the link itself); the file it pointed to is never written.
#[test]
fn a_symlink_at_the_target_is_replaced_not_followed() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    let dir = common::output_dir();
    let elsewhere = tempfile::tempdir().unwrap();
    let victim = elsewhere.path().join("victim");
    fs::write(&victim, OLD).unwrap();
    let output = dir.path().join("bpfsnap.prom");
    std::os::unix::fs::symlink(&victim, &output).unwrap();
    let (status, stderr) = run(&[
        "run",
        "-b",
        "syscalls",
        "--for",
        "100ms",
        "--output",
        path_str(&output),
    ]);
    assert!(status.success(), "{stderr}");
    assert_eq!(
        fs::read(&victim).unwrap(),
        OLD,
        "the symlink's target is untouched"
    );
    assert!(
        fs::symlink_metadata(&output).unwrap().file_type().is_file(),
        "the symlink was replaced by a regular file"
    );
    assert_eq!(fs::metadata(&output).unwrap().mode() & 0o777, 0o644);
    assert_complete(&output);
    assert_eq!(temp_files(&output), Vec::<PathBuf>::new());
}

/// An attacker who can write the output directory plants a symlink at the
/// exact temporary name bpfsnap is about to create — the name is read from
/// the stopped `openat` call, so every creation is hit, not guessed — and at
/// the guessable names. O_EXCL refuses each planted name, bpfsnap takes
/// another, the symlinks' target is never written, the output is complete.
#[test]
fn symlinks_planted_at_the_temp_names_are_never_followed() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    let dir = common::output_dir();
    let elsewhere = tempfile::tempdir().unwrap();
    let victim = elsewhere.path().join("victim");
    fs::write(&victim, OLD).unwrap();
    let output = dir.path().join("bpfsnap.prom");
    let mut planted = BTreeSet::new();
    for name in [
        ".bpfsnap.prom.tmp",
        "bpfsnap.prom.tmp",
        ".bpfsnap.prom.XXXXXX.tmp",
        ".bpfsnap.prom.000000.tmp",
    ] {
        std::os::unix::fs::symlink(&victim, dir.path().join(name)).unwrap();
        planted.insert(dir.path().join(name));
    }

    let mut command = common::bpfsnap();
    command.args([
        "run",
        "-b",
        "syscalls",
        "--for",
        "100ms",
        "--output",
        path_str(&output),
    ]);
    let socket = SyscallGate::arm(
        &mut command,
        &[Trap::Arg2Bits(libc::SYS_openat, libc::O_EXCL as u32)],
    );
    let running = Running::spawn_command(command);
    let gate = socket.connect();
    // Two plants per temporary file, then one attempt goes through: an
    // attacker planting at every attempt only denies service (tempfile gives
    // up after its retries, a clean error), which is not what this tests.
    let (mut hits, mut in_a_row) = (0, 0);
    while let Some(call) = gate.next() {
        let path = call
            .string_arg(1)
            .map(|p| PathBuf::from(String::from_utf8_lossy(&p).into_owned()));
        if let Some(path) = path {
            let name = path
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            let ours = name.starts_with(".bpfsnap.prom.") && name.ends_with(".tmp");
            if ours && in_a_row == 2 {
                in_a_row = 0;
            } else if ours {
                in_a_row += 1;
                let at = dir.path().join(&name);
                std::os::unix::fs::symlink(&victim, &at).unwrap();
                planted.insert(at);
                hits += 1;
            }
        }
        gate.resume(&call);
    }
    let (status, _, stderr) = running.finish();
    assert!(status.success(), "{stderr}");
    // The writability checks create unnamed files (O_TMPFILE): nothing to
    // plant at. The write's temporary file is named, and was hit twice.
    assert!(
        hits >= 2,
        "the write's temporary file was hit twice: {hits}"
    );
    assert_eq!(
        fs::read(&victim).unwrap(),
        OLD,
        "the symlinks' target is untouched"
    );
    assert_complete(&output);
    let left: BTreeSet<PathBuf> = temp_files(&output).into_iter().collect();
    let planted_tmp: BTreeSet<PathBuf> = planted
        .iter()
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(".bpfsnap.prom.")
        })
        .cloned()
        .collect();
    assert_eq!(
        left, planted_tmp,
        "only the planted links are left, none of bpfsnap's own"
    );
    for link in &planted {
        assert!(fs::symlink_metadata(link).unwrap().file_type().is_symlink());
    }
    note(&format!("FIGURES planted_at_exact_temp_names={hits}"));
}

// --- two outputs in one textfile directory ------------------------------------

/// Two bpfsnap outputs in one textfile directory, as one cron job per
/// program set makes. node_exporter merges a family two files define with
/// the same HELP and TYPE, but drops, SILENTLY (`node_textfile_scrape_error
/// 0`), a series both files carry: the self metrics carry each output's
/// label, so they never collide; a config's metrics would. So a second
/// output with the same config is refused, naming the other file, before
/// loading anything and leaving its own output alone; with another config,
/// every series of both files reaches node_exporter.
#[test]
fn two_outputs_in_one_textfile_directory_never_collide_in_node_exporter() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    let dir = common::output_dir();
    let first = dir.path().join("a.prom");
    let second = dir.path().join("b.prom");
    let run_into = |output: &Path, builtins: &str| {
        let args = [
            "run",
            "-b",
            builtins,
            "--for",
            "100ms",
            "--output",
            path_str(output),
        ];
        run_counting_loads(&args)
    };
    let (status, stderr, _) = run_into(&first, "syscalls");
    assert!(status.success(), "{stderr}");
    let first_text = fs::read(&first).unwrap();

    let (status, stderr, loads) = run_into(&second, "execs,syscalls");
    assert_one_line_error(
        status,
        &stderr,
        1,
        &[
            "a.prom already defines bpfsnap_syscalls_total",
            "one output only",
        ],
    );
    assert!(!second.exists(), "the refused output was not written");
    assert_eq!(
        fs::read(&first).unwrap(),
        first_text,
        "the other file untouched"
    );
    assert_eq!(loads, 0, "refused before loading");

    let (status, stderr, _) = run_into(&second, "execs");
    assert!(status.success(), "{stderr}");
    let exporter = common::NodeExporter::start(dir.path());
    let body = exporter.scrape();
    assert_eq!(
        common::sample(&body, "node_textfile_scrape_error"),
        Some(0.0),
        "{body}"
    );
    // node_exporter prints labels sorted by name: compare as sets.
    let served: BTreeSet<String> = body.lines().filter_map(series_key).collect();
    for file in [&first, &second] {
        for series in fs::read_to_string(file)
            .unwrap()
            .lines()
            .filter_map(series_key)
        {
            assert!(
                served.contains(&series),
                "{series} of {} did not reach node_exporter",
                file.display()
            );
        }
    }
}

/// A sample line's series with its labels sorted by name (values here are
/// plain: no escaped quotes); None for comments.
fn series_key(line: &str) -> Option<String> {
    if line.starts_with('#') {
        return None;
    }
    let series = line.rsplit_once(' ')?.0;
    let Some((name, labels)) = series.split_once('{') else {
        return Some(series.to_string());
    };
    let mut pairs: Vec<&str> = labels
        .trim_end_matches('}')
        .split("\",")
        .map(|p| p.trim_end_matches('"'))
        .collect();
    pairs.sort_unstable();
    Some(format!("{name}{{{}}}", pairs.join(",")))
}

// --- signals at exact points ---------------------------------------------------

/// Where in a run the signal arrives.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    /// Signal handlers installed, nothing selected or loaded yet.
    Start,
    /// Stopped in the first BPF_PROG_LOAD.
    Load,
    /// Stopped in the first attach (BPF_LINK_CREATE / RAW_TRACEPOINT_OPEN),
    /// programs loaded.
    Attach,
    /// Sampling: every probe attached.
    Window,
    /// Stopped in the rename that publishes the file (written, fsynced).
    Write,
}

fn is_bpf(call: &Trapped, cmds: &[u32]) -> bool {
    call.nr == libc::SYS_bpf && cmds.contains(&call.bpf_cmd())
}

/// The system calls that rename a file (arm64 has no plain rename(2)).
#[cfg(target_arch = "x86_64")]
const RENAMES: [libc::c_long; 3] = [libc::SYS_rename, libc::SYS_renameat, libc::SYS_renameat2];
#[cfg(not(target_arch = "x86_64"))]
const RENAMES: [libc::c_long; 2] = [libc::SYS_renameat, libc::SYS_renameat2];

fn is_rename(call: &Trapped) -> bool {
    RENAMES.contains(&call.nr)
}

fn rename_traps() -> Vec<Trap> {
    RENAMES.iter().map(|&nr| Trap::Syscall(nr)).collect()
}

/// Whether `pid` has a handler for `signal` (SigCgt in /proc/PID/status).
fn catches(pid: u32, signal: i32) -> bool {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigCgt:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|mask| mask & (1 << (signal - 1)) != 0)
}

/// Runs `bpfsnap run -v -b syscalls` over an old output file and sends
/// `signal` at `phase`; checks the outcome: SIGINT/SIGTERM exit 0 with a
/// complete new file (the window ends early, what was gathered is written),
/// SIGKILL leaves the old file byte for byte; nothing stays loaded; no temp
/// file (except after SIGKILL in the write, which the return value says).
fn signal_at(phase: Phase, signal: i32) -> Vec<PathBuf> {
    let (_dir, output) = dir_with_old_output();
    let before = common::loaded_program_ids();
    let window = if phase == Phase::Write {
        "100ms"
    } else {
        "60s"
    };
    let mut command = common::bpfsnap();
    command.args([
        "run",
        "-v",
        "-b",
        "syscalls",
        "--for",
        window,
        "--output",
        path_str(&output),
    ]);
    let traps = match phase {
        Phase::Load => vec![Trap::Arg0(libc::SYS_bpf, common::BPF_PROG_LOAD)],
        Phase::Attach => vec![
            Trap::Arg0(libc::SYS_bpf, common::BPF_LINK_CREATE),
            Trap::Arg0(libc::SYS_bpf, common::BPF_RAW_TRACEPOINT_OPEN),
        ],
        Phase::Write => rename_traps(),
        Phase::Start | Phase::Window => vec![],
    };
    let socket = SyscallGate::arm(&mut command, &traps);
    let mut running = Running::spawn_command(command);
    let pid = running.child.id();
    let gate = socket.connect();
    let stopped = match phase {
        Phase::Load => Some(gate.stop_at("loading", |c| is_bpf(c, &[common::BPF_PROG_LOAD]))),
        Phase::Attach => {
            let call = gate.stop_at("attaching", |c| {
                is_bpf(
                    c,
                    &[common::BPF_LINK_CREATE, common::BPF_RAW_TRACEPOINT_OPEN],
                )
            });
            assert!(
                !common::programs_held_by(pid).is_empty(),
                "at the first attach the programs are loaded"
            );
            Some(call)
        }
        Phase::Write => Some(gate.stop_at("publishing the file", is_rename)),
        Phase::Start | Phase::Window => None,
    };
    let held = common::programs_held_by(pid);
    let release = match stopped {
        Some(call) => stop_with(&running, gate, &call, signal),
        None => {
            let release = gate.release();
            if phase == Phase::Start {
                let deadline = Instant::now() + common::PATIENCE;
                while !catches(pid, libc::SIGTERM) {
                    assert!(
                        Instant::now() < deadline,
                        "bpfsnap never installed its handlers"
                    );
                    std::thread::yield_now();
                }
            } else {
                running.wait_for("sampling");
            }
            running.signal(signal);
            release
        }
    };
    let (status, _, stderr) = running.finish();
    release.join().expect("gate thread");
    let what = format!("signal {signal} at {phase:?}");
    let left = common::still_loaded_after_exit(&held);
    assert!(left.is_empty(), "{what}: programs {left:?} still loaded");
    assert_nothing_left_loaded(&before);
    if signal == libc::SIGKILL {
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{what}: {stderr}");
        assert_eq!(
            fs::read(&output).unwrap(),
            OLD,
            "{what}: the old file intact"
        );
        let temps = temp_files(&output);
        if phase != Phase::Write {
            assert_eq!(temps, Vec::<PathBuf>::new(), "{what}: no temp file");
        }
        return temps;
    }
    assert!(
        status.success(),
        "{what}: exit 0 expected: {status}\n{stderr}"
    );
    let text = assert_complete(&output);
    if phase != Phase::Write {
        let window = common::sample(&text, "bpfsnap_window_seconds").unwrap();
        assert!(window < 60.0, "{what}: the window ended early ({window} s)");
    }
    assert_eq!(
        temp_files(&output),
        Vec::<PathBuf>::new(),
        "{what}: no temp file"
    );
    Vec::new()
}

/// Sends `signal` to the process stopped in `call`, then lets everything
/// go on. SIGKILL's call is never resumed: a reply racing the kill could
/// let the call run (a rename published) before the process dies.
fn stop_with(
    running: &Running,
    gate: SyscallGate,
    call: &Trapped,
    signal: i32,
) -> std::thread::JoinHandle<usize> {
    running.signal(signal);
    if signal != libc::SIGKILL {
        gate.resume(call);
    }
    gate.release()
}

fn every_signal_at(phase: Phase) {
    for signal in [libc::SIGTERM, libc::SIGINT, libc::SIGKILL] {
        signal_at(phase, signal);
    }
}

#[test]
fn signals_at_start_before_anything_is_loaded() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    every_signal_at(Phase::Start);
}

#[test]
fn signals_during_the_first_program_load() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    every_signal_at(Phase::Load);
}

#[test]
fn signals_during_the_first_attach() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    every_signal_at(Phase::Attach);
}

#[test]
fn signals_during_the_window() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    every_signal_at(Phase::Window);
}

/// SIGINT/SIGTERM in the rename: the file is published whole; SIGKILL
/// there: the old file stays (the new one was complete but never renamed).
#[test]
fn signals_during_the_write() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    every_signal_at(Phase::Write);
}

/// A SIGKILL in the write leaves the complete but unpublished temporary file
/// behind (nothing can remove it); node_exporter ignores it (not `.prom`),
/// but each such kill would add one. The next run on the same output, which
/// holds the output's lock and so knows no other writer is active, removes
/// it.
#[test]
fn the_next_run_removes_a_temp_file_left_by_sigkill() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    let (_dir, output) = dir_with_old_output();
    let mut command = common::bpfsnap();
    command.args([
        "run",
        "-b",
        "syscalls",
        "--for",
        "100ms",
        "--output",
        path_str(&output),
    ]);
    let socket = SyscallGate::arm(&mut command, &rename_traps());
    let running = Running::spawn_command(command);
    let gate = socket.connect();
    let call = gate.stop_at("publishing the file", is_rename);
    let release = stop_with(&running, gate, &call, libc::SIGKILL);
    let (status, _, _) = running.finish();
    release.join().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    let left = temp_files(&output);
    assert_eq!(
        left.len(),
        1,
        "the killed write left its temp file: {left:?}"
    );

    let (status, stderr) = run(&[
        "run",
        "-b",
        "syscalls",
        "--for",
        "100ms",
        "--output",
        path_str(&output),
    ]);
    assert!(status.success(), "{stderr}");
    assert_complete(&output);
    assert_eq!(
        temp_files(&output),
        Vec::<PathBuf>::new(),
        "the next run cleaned up the killed run's temp file"
    );
}

/// Interval mode, SIGTERM while the second window's file is being
/// published: that write completes, the last (partial) window is written,
/// exit 0.
#[test]
fn sigterm_during_a_write_in_interval_mode_writes_the_last_window() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    let (_dir, output) = dir_with_old_output();
    let before = common::loaded_program_ids();
    let mut command = common::bpfsnap();
    command.args([
        "run",
        "-v",
        "-b",
        "syscalls",
        "--interval",
        "100ms",
        "--output",
        path_str(&output),
    ]);
    let socket = SyscallGate::arm(&mut command, &rename_traps());
    let running = Running::spawn_command(command);
    let gate = socket.connect();
    let first = gate.stop_at("the first write", is_rename);
    gate.resume(&first);
    let second = gate.stop_at("the second write", is_rename);
    running.signal(libc::SIGTERM);
    gate.resume(&second);
    let release = gate.release();
    let (status, _, stderr) = running.finish();
    release.join().unwrap();
    assert!(status.success(), "{stderr}");
    assert_eq!(
        stderr.matches("bpfsnap: wrote ").count(),
        3,
        "two windows, then the last one: {stderr}"
    );
    assert_complete(&output);
    assert_eq!(temp_files(&output), Vec::<PathBuf>::new());
    assert_nothing_left_loaded(&before);
}

// --- SIGKILL in pinned mode -----------------------------------------------------

/// After a SIGKILL somewhere in a pinned run: the next pinned run succeeds
/// with a complete file, `stop` removes the pin directory, and nothing of
/// ours stays loaded.
fn pinned_recovers(pin: &PinDir, output: &Path, before: &BTreeSet<u64>, what: &str) {
    let (status, stderr) = run(&[
        "run",
        "-b",
        "syscalls",
        "--for",
        "100ms",
        "--pin",
        path_str(&pin.0),
        "--output",
        path_str(output),
    ]);
    assert!(status.success(), "{what}: the next pinned run: {stderr}");
    assert_complete(output);
    let (status, stderr) = run(&["stop", "--pin", path_str(&pin.0)]);
    assert!(status.success(), "{what}: stop: {stderr}");
    assert!(!pin.0.exists(), "{what}: stop removed {}", pin.0.display());
    assert_nothing_left_loaded(before);
}

/// SIGKILL at each BPF_OBJ_PIN of a first pinned run (the map, the links
/// the kernel may refuse, the state map): half-pinned sets are recovered.
#[test]
fn sigkill_while_pinning_is_recovered_by_the_next_run_and_stop() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    let before = common::loaded_program_ids();
    let mut pins_seen = 0;
    for nth in 1..=4 {
        let pin = PinDir::new(&format!("pin{nth}"));
        let (_dir, output) = dir_with_old_output();
        let mut command = common::bpfsnap();
        command.args([
            "run",
            "-b",
            "syscalls",
            "--for",
            "100ms",
            "--pin",
            path_str(&pin.0),
            "--output",
            path_str(&output),
        ]);
        let socket = SyscallGate::arm(
            &mut command,
            &[Trap::Arg0(libc::SYS_bpf, common::BPF_OBJ_PIN)],
        );
        let running = Running::spawn_command(command);
        let gate = socket.connect();
        let mut seen = 0;
        let mut killed = false;
        while let Some(call) = gate.next() {
            seen += 1;
            if seen == nth {
                // Not resumed: the call must not run (see stop_with).
                running.signal(libc::SIGKILL);
                killed = true;
                continue;
            }
            gate.resume(&call);
        }
        let (status, _, stderr) = running.finish();
        let what = format!("SIGKILL at BPF_OBJ_PIN #{nth}");
        if !killed {
            // Fewer pins than nth: the run completed; every point was covered.
            assert!(status.success(), "{what}: {stderr}");
            pinned_recovers(&pin, &output, &before, &what);
            break;
        }
        pins_seen = pins_seen.max(nth);
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{what}");
        assert_eq!(fs::read(&output).unwrap(), OLD, "{what}: old file intact");
        pinned_recovers(&pin, &output, &before, &what);
    }
    assert!(
        pins_seen >= 2,
        "pinning makes at least two BPF_OBJ_PIN calls"
    );
    note(&format!("FIGURES sigkill_points_while_pinning={pins_seen}"));
}

/// SIGKILL in the window and in the write of a pinned run (the set is
/// complete by then): the next run reuses it, `stop` removes it.
#[test]
fn sigkill_in_a_pinned_window_or_write_is_recovered() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    let before = common::loaded_program_ids();
    for phase in [Phase::Window, Phase::Write] {
        let pin = PinDir::new(&format!("{phase:?}").to_lowercase());
        let (_dir, output) = dir_with_old_output();
        let window = if phase == Phase::Write {
            "100ms"
        } else {
            "60s"
        };
        let mut command = common::bpfsnap();
        command.args([
            "run",
            "-v",
            "-b",
            "syscalls",
            "--for",
            window,
            "--pin",
            path_str(&pin.0),
            "--output",
            path_str(&output),
        ]);
        let traps = if phase == Phase::Write {
            rename_traps()
        } else {
            vec![]
        };
        let socket = SyscallGate::arm(&mut command, &traps);
        let mut running = Running::spawn_command(command);
        let gate = socket.connect();
        let release = if phase == Phase::Write {
            let call = gate.stop_at("publishing the file", is_rename);
            stop_with(&running, gate, &call, libc::SIGKILL)
        } else {
            let release = gate.release();
            running.wait_for("sampling");
            running.signal(libc::SIGKILL);
            release
        };
        let (status, _, _) = running.finish();
        release.join().unwrap();
        let what = format!("SIGKILL at {phase:?} in pinned mode");
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{what}");
        assert_eq!(fs::read(&output).unwrap(), OLD, "{what}: old file intact");
        assert!(
            pin.0.join("syscalls/state").exists(),
            "{what}: the pinned set survived"
        );
        for temp in temp_files(&output) {
            fs::remove_file(temp).unwrap();
        }
        pinned_recovers(&pin, &output, &before, &what);
    }
}
