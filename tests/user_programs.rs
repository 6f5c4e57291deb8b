//! User programs end to end on the real kernel: the examples in examples/,
//! installed the way a user would (config and object in one directory), run
//! while this test makes load it controls; the labels must be exactly the
//! ones the load produced and the values must count it, exactly where the
//! program makes that possible. Each window ends with SIGINT once the load is
//! done, so no test waits for a timer.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{path_str, Running};

const GETPID_CALLS: u64 = 10_000;

/// A directory holding the example configs `configs` (file names in
/// examples/) and every compiled example object.
fn install_examples(configs: &[&str]) -> tempfile::TempDir {
    let dir = common::config_dir();
    for config in configs {
        fs::copy(
            common::source_file(&format!("examples/{config}")),
            dir.path().join(config),
        )
        .unwrap_or_else(|err| panic!("copy examples/{config}: {err}"));
    }
    for entry in fs::read_dir(env!("BPFSNAP_EXAMPLE_OBJECTS")).expect("example objects") {
        let object = entry.unwrap().path();
        fs::copy(&object, dir.path().join(object.file_name().unwrap())).unwrap();
    }
    dir
}

/// `bpfsnap run -v ARGS --for 30s --output DIR/bpfsnap.prom` (a new
/// textfile: its counters are counters, where standard output's one window
/// would be gauges); once it is sampling, runs `load`, then ends the window
/// with SIGINT. Checks the exit status, that promtool accepts the output and
/// that every program it loaded is gone afterwards; returns the output.
fn run_with_load(args: &[&str], load: impl FnOnce()) -> String {
    let before = common::loaded_program_ids();
    let dir = common::output_dir();
    let output = dir.path().join("bpfsnap.prom");
    let mut argv = vec!["run", "-v"];
    argv.extend_from_slice(args);
    argv.extend_from_slice(&["--for", "30s", "--output", path_str(&output)]);
    let mut running = Running::spawn(&argv);
    running.wait_for("bpfsnap: sampling");
    let ours: BTreeSet<u64> = common::loaded_program_ids()
        .difference(&before)
        .copied()
        .collect();
    assert!(
        !ours.is_empty(),
        "bpfsnap said it is sampling, but no new BPF program is loaded"
    );
    load();
    running.signal(libc::SIGINT);
    let (status, _, stderr) = running.finish();
    assert!(status.success(), "bpfsnap {argv:?}: {status}\n{stderr}");
    let stdout = std::fs::read_to_string(&output).expect("the run wrote its output");
    assert!(
        common::sample(&stdout, "bpfsnap_window_seconds")
            .or_else(|| common::sample(&stdout, "ebpf_exporter_window_seconds"))
            .is_some_and(|window| window < 30.0),
        "SIGINT ended the window early:\n{stdout}"
    );
    common::promtool_check(&stdout);
    let left = common::still_loaded_after_exit(&ours);
    assert!(
        left.is_empty(),
        "programs {left:?} still loaded after bpfsnap exited"
    );
    stdout
}

/// `metric`'s samples whose label text contains `needle`, by label text.
fn series_with(text: &str, metric: &str, needle: &str) -> BTreeMap<String, f64> {
    common::samples(text, metric)
        .into_iter()
        .filter(|(labels, _)| labels.contains(needle))
        .collect()
}

fn expected(series: &[(String, f64)]) -> BTreeMap<String, f64> {
    series.iter().cloned().collect()
}

// --- comm_getpid -----------------------------------------------------------

/// A thread name no other process has: `PREFIX-TAG` + this process's pid,
/// within the kernel's 15 bytes.
fn unique_comm(prefix: &str, tag: char) -> String {
    let comm = format!("{prefix}-{tag}{}", std::process::id() % 1_000_000);
    assert!(
        comm.len() <= 15,
        "{comm:?} is longer than TASK_COMM_LEN - 1"
    );
    comm
}

/// Makes `n` getpid calls from a new thread that names itself `comm`
/// (prctl(PR_SET_NAME)); returns once they are done.
fn getpid_calls_as(comm: &str, n: u64) {
    common::named_thread(comm, move || common::getpid_calls(n));
}

/// Counters without labels, read as ebpf_exporter reads them: the value at
/// key u32 0 of an array of one, of a per-CPU array of one by its `cpu`
/// label alone, and of a hash keyed by u32, whose other keys no label can
/// name (each a decoder error).
#[test]
fn unlabelled_counters_read_key_zero_as_ebpf_exporter_does() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    let dir = common::config_dir();
    for file in ["unlabelled.yaml", "unlabelled.bpf.o"] {
        let source = match file.ends_with(".yaml") {
            true => common::source_file(&format!("tests/fixtures/ebpf_exporter/{file}")),
            false => Path::new(env!("BPFSNAP_EBPF_EXPORTER_OBJECTS")).join(file),
        };
        fs::copy(source, dir.path().join(file)).unwrap();
    }
    let config = dir.path().join("unlabelled.yaml");
    let text = run_with_load(&["--namespace", "ebpf_exporter", path_str(&config)], || {
        getpid_calls_as(&unique_comm("unl", 'a'), 211);
    });
    assert_eq!(
        common::sample(&text, "ebpf_exporter_unlabelled_calls_total"),
        Some(211.0),
        "{text}"
    );
    assert_eq!(
        common::sample(&text, "ebpf_exporter_unlabelled_hash_calls_total"),
        Some(211.0),
        "{text}"
    );
    let by_cpu = common::samples(&text, "ebpf_exporter_unlabelled_calls_by_cpu_total");
    assert!(
        !by_cpu.is_empty()
            && by_cpu
                .iter()
                .all(|(labels, _)| labels.starts_with("cpu=\"")),
        "{text}"
    );
    assert_eq!(by_cpu.iter().map(|(_, n)| n).sum::<f64>(), 211.0, "{text}");
    assert_eq!(
        common::sample(
            &text,
            r#"ebpf_exporter_decoder_errors_total{config="unlabelled",decoder="unlabelled_key"}"#
        ),
        Some(1.0),
        "key 1 of the hash\n{text}"
    );
}

/// A config one of whose programs cannot attach (a uprobe on a function libc
/// does not have): its other program runs and counts exactly, a warning
/// names the one that did not attach and program_attached says 0 for it,
/// as ebpf_exporter does; with --config.strict (--strict) the config fails.
#[test]
fn a_program_that_cannot_attach_leaves_the_configs_others_running() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    let dir = common::config_dir();
    fs::copy(
        common::source_file("tests/fixtures/partial_attach.yaml"),
        dir.path().join("partial_attach.yaml"),
    )
    .unwrap();
    fs::copy(
        common::fixture_object("partial_attach"),
        dir.path().join("partial_attach.bpf.o"),
    )
    .unwrap();
    let config = dir.path().join("partial_attach.yaml");
    let (text, stderr) = common::run_with_load_and_stderr(&[path_str(&config)], || {
        getpid_calls_as(&unique_comm("part", 'a'), 123);
    });
    assert_eq!(
        common::sample(&text, "bpfsnap_partial_getpid_calls_total"),
        Some(123.0),
        "{text}"
    );
    assert!(
        stderr.contains(
            "partial_attach: cannot attach program partial_missing (section \
             uprobe/libc.so.6:bpfsnap_no_such_function)"
        ) && stderr.contains("the config's other programs run (--strict fails it instead)"),
        "{stderr}"
    );
    for (program, attached) in [("partial_counts", 1.0), ("partial_missing", 0.0)] {
        let series =
            format!("bpfsnap_program_attached{{config=\"partial_attach\",program=\"{program}\"}}");
        assert_eq!(
            common::sample(&text, &series),
            Some(attached),
            "{program}\n{text}"
        );
    }
    assert_eq!(
        common::sample(&text, r#"bpfsnap_config_up{config="partial_attach"}"#),
        Some(1.0)
    );
    assert_eq!(common::sample(&text, "bpfsnap_up"), Some(1.0), "{text}");

    let strict = common::bpfsnap()
        .args([
            "run",
            path_str(&config),
            "--config.strict",
            "--for",
            "100ms",
            "--output",
            "-",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&strict.stderr);
    assert_eq!(strict.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("(--strict: the config fails)"), "{stderr}");
}

#[test]
fn comm_getpid_counts_exactly_the_calls_of_matching_comms() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    let dir = install_examples(&["comm_getpid.toml"]);
    let config = dir.path().join("comm_getpid.toml");
    let (first, second) = (unique_comm("bpfsnap", 'a'), unique_comm("bpfsnap", 'b'));
    let other = unique_comm("nomatch", 'c');

    let stdout = run_with_load(&[path_str(&config)], || {
        getpid_calls_as(&first, GETPID_CALLS);
        getpid_calls_as(&second, 250);
        getpid_calls_as(&other, 100);
    });

    let metric = "bpfsnap_getpid_calls_total";
    let all = common::samples(&stdout, metric);
    for (labels, _) in &all {
        assert!(
            labels.starts_with("comm=\"bpfsnap-") && !labels.contains(','),
            "only comm, only values the regexp ^(bpfsnap-.*)$ keeps: {labels}\n{stdout}"
        );
    }
    let ours: BTreeMap<String, f64> = all
        .iter()
        .filter(|(labels, _)| {
            [&first, &second, &other]
                .iter()
                .any(|c| labels.contains(c.as_str()))
        })
        .cloned()
        .collect();
    assert_eq!(
        ours,
        expected(&[
            (format!("comm=\"{first}\""), GETPID_CALLS as f64),
            (format!("comm=\"{second}\""), 250.0),
        ]),
        "{stdout}"
    );
    assert!(!stdout.contains(&other), "{other} is dropped\n{stdout}");
    assert!(
        common::sample(
            &stdout,
            "bpfsnap_decoder_errors_total{config=\"comm_getpid\",decoder=\"regexp\"}"
        )
        .is_none(),
        "a regexp without a match skips the label set, it is not an error\n{stdout}"
    );
}

/// `bpfsnap build DIR/NAME.bpf.c` (copied there with `files`), which must
/// succeed and say what it wrote.
fn build_copy(dir: &Path, from: &str, files: &[&str], name: &str) {
    for file in files {
        fs::copy(
            common::source_file(&format!("{from}/{file}")),
            dir.join(file),
        )
        .unwrap_or_else(|err| panic!("copy {from}/{file}: {err}"));
    }
    let built = common::bpfsnap()
        .args(["build", path_str(&dir.join(format!("{name}.bpf.c")))])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&built.stderr);
    assert!(built.status.success(), "bpfsnap build {name}: {stderr}");
    assert!(stderr.contains("wrote "), "says what it wrote: {stderr}");
}

/// Programs compiled by `bpfsnap build` from copies of their sources — one
/// of examples/ (the headers are the embedded ones) and one written for
/// ebpf_exporter (its own headers beside it, `<vmlinux.h>` embedded) —
/// load and count exactly.
#[test]
fn programs_compiled_by_bpfsnap_build_count_exactly() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    let dir = common::config_dir();
    build_copy(
        dir.path(),
        "examples",
        &["comm_getpid.bpf.c", "comm_getpid.toml"],
        "comm_getpid",
    );
    let comm = unique_comm("bpfsnap", 'd');
    let config = dir.path().join("comm_getpid.toml");
    let stdout = run_with_load(&[path_str(&config)], || getpid_calls_as(&comm, 777));
    assert_eq!(
        series_with(&stdout, "bpfsnap_getpid_calls_total", &comm),
        expected(&[(format!("comm=\"{comm}\""), 777.0)]),
        "{stdout}"
    );

    let upstream = common::config_dir();
    let files = [
        "getpid_comm.bpf.c",
        "getpid_comm.yaml",
        "maps.bpf.h",
        "bits.bpf.h",
    ];
    build_copy(
        upstream.path(),
        "tests/fixtures/ebpf_exporter",
        &files,
        "getpid_comm",
    );
    let comm = unique_comm("eexp", 'b');
    let args = [
        "--namespace",
        "ebpf_exporter",
        "--config-dir",
        path_str(upstream.path()),
    ];
    let stdout = run_with_load(&[&args[..], &["--configs", "getpid_comm"]].concat(), || {
        getpid_calls_as(&comm, 321)
    });
    assert_eq!(
        series_with(&stdout, "ebpf_exporter_getpid_calls_total", &comm),
        expected(&[(format!("comm=\"{comm}\""), 321.0)]),
        "{stdout}"
    );
}

// --- struct_key ------------------------------------------------------------

/// Significant bits of `fd`, as struct_key.bpf.c's `fd_bits`.
fn fd_bits(fd: i32) -> u32 {
    32 - (fd as u32).leading_zeros()
}

/// In a child process: `dups` × (dup(fd), close(the copy)), then `fcntls` ×
/// fcntl(fd, F_GETFD). Returns the child's pid and the fd number of the copy
/// (the same every time: the lowest free one).
fn fd_calls_in_child(fd: i32, dups: u32, fcntls: u32) -> (i32, i32) {
    // SAFETY: the child only makes async-signal-safe system calls (no
    // allocation, no locks) until _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        unsafe {
            let mut copy = 0;
            for _ in 0..dups {
                copy = libc::dup(fd);
                if copy < 0 || libc::close(copy) != 0 {
                    libc::_exit(255);
                }
            }
            for _ in 0..fcntls {
                if libc::fcntl(fd, libc::F_GETFD) < 0 {
                    libc::_exit(255);
                }
            }
            // The copy's number is the exit status (fds are small here).
            libc::_exit(if copy < 255 { copy } else { 255 });
        }
    }
    let mut status = 0;
    let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(rc, pid, "waitpid");
    assert!(libc::WIFEXITED(status), "child status {status:#x}");
    let copy = libc::WEXITSTATUS(status);
    assert!(copy < 255, "the child's dup, close or fcntl failed");
    (pid, copy)
}

/// /dev/null open at fd 100 or above, so `fd_bits` is 7 or more.
fn high_fd() -> std::os::fd::OwnedFd {
    use std::os::fd::FromRawFd;
    let null = fs::File::open("/dev/null").unwrap();
    let fd = unsafe { libc::fcntl(null.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 100) };
    assert!(fd >= 100, "F_DUPFD: {}", std::io::Error::last_os_error());
    // SAFETY: a new fd nothing else owns.
    unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) }
}

/// What struct_key must report for [`fd_calls_in_child`].
fn expected_fd_series(
    pid: i32,
    fd: i32,
    copy: i32,
    dups: u32,
    fcntls: u32,
) -> BTreeMap<String, f64> {
    let series =
        |op: &str, fd: i32| format!("op=\"{op}\",pid=\"{pid}\",fd_bits=\"{}\"", fd_bits(fd));
    let mut expected = BTreeMap::new();
    *expected.entry(series("dup", fd)).or_default() += dups as f64;
    *expected.entry(series("close", copy)).or_default() += dups as f64;
    *expected.entry(series("fcntl", fd)).or_default() += fcntls as f64;
    expected
}

#[test]
fn struct_key_splits_a_padded_key_into_exact_labels() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    let dir = install_examples(&["struct_key.yaml"]);
    let fd = high_fd();
    let (dups, fcntls) = (300, 77);
    let mut child = None;
    // By name from the directory: the YAML config is found as struct_key.
    let stdout = run_with_load(
        &[
            "--config-dir",
            path_str(dir.path()),
            "--configs",
            "struct_key",
        ],
        || child = Some(fd_calls_in_child(fd.as_raw_fd(), dups, fcntls)),
    );
    let (pid, copy) = child.unwrap();

    let metric = "bpfsnap_fd_syscalls_total";
    assert_eq!(
        series_with(&stdout, metric, &format!(",pid=\"{pid}\",")),
        expected_fd_series(pid, fd.as_raw_fd(), copy, dups, fcntls),
        "fd {} copy {copy}\n{stdout}",
        fd.as_raw_fd()
    );
    for (labels, _) in common::samples(&stdout, metric) {
        assert!(
            ["op=\"close\",", "op=\"dup\",", "op=\"fcntl\","]
                .iter()
                .any(|op| labels.starts_with(op)),
            "op decoded by static_map: {labels}"
        );
    }
}

// --- percpu ----------------------------------------------------------------

/// CPUs this process may run on (at most `max`).
fn allowed_cpus(max: usize) -> Vec<usize> {
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set) };
    assert_eq!(rc, 0, "sched_getaffinity");
    (0..libc::CPU_SETSIZE as usize)
        .filter(|cpu| unsafe { libc::CPU_ISSET(*cpu, &set) })
        .take(max)
        .collect()
}

/// A program that execs with the comm `comm`: a symlink of that name to
/// /bin/true (the kernel names a new program after the path executed).
fn program_named(dir: &Path, comm: &str) -> PathBuf {
    let path = dir.join(comm);
    std::os::unix::fs::symlink("/bin/true", &path).unwrap();
    path
}

/// Runs `program` `n` times from a thread pinned to `cpu` (children inherit
/// the affinity, so each exec happens on that CPU).
fn execs_on(cpu: usize, program: &Path, n: u32) {
    let program = program.to_path_buf();
    std::thread::spawn(move || {
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        unsafe { libc::CPU_SET(cpu, &mut set) };
        let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) };
        assert_eq!(rc, 0, "sched_setaffinity to CPU {cpu}");
        for _ in 0..n {
            let status = Command::new(&program).status().expect("exec");
            assert!(status.success(), "{}: {status}", program.display());
        }
    })
    .join()
    .expect("exec thread");
}

/// Execs of a uniquely named program on up to two CPUs: (comm, [(cpu, n)]).
fn execs_on_cpus(dir: &Path, tag: char) -> (String, Vec<(usize, u32)>) {
    let comm = unique_comm("bpfsnap", tag);
    let program = program_named(dir, &comm);
    let plan: Vec<(usize, u32)> = allowed_cpus(2).into_iter().zip([12, 5]).collect();
    for (cpu, n) in &plan {
        execs_on(*cpu, &program, *n);
    }
    (comm, plan)
}

#[test]
fn percpu_with_a_cpu_label_reports_each_cpu() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    // percpu_cpu.toml reads percpu.bpf.o (its `object` key).
    let dir = install_examples(&["percpu_cpu.toml"]);
    assert!(!dir.path().join("percpu_cpu.bpf.o").exists());
    let mut load = None;
    let stdout = run_with_load(
        &[
            "--config-dir",
            path_str(dir.path()),
            "--configs",
            "percpu_cpu",
        ],
        || load = Some(execs_on_cpus(dir.path(), 'p')),
    );
    let (comm, plan) = load.unwrap();
    let want: Vec<(String, f64)> = plan
        .iter()
        .map(|(cpu, n)| (format!("comm=\"{comm}\",cpu=\"{cpu}\""), *n as f64))
        .collect();
    assert_eq!(
        series_with(&stdout, "bpfsnap_execs_total", &format!("comm=\"{comm}\"")),
        expected(&want),
        "{stdout}"
    );
}

#[test]
fn percpu_without_a_cpu_label_sums_the_cpus() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    let dir = install_examples(&["percpu.yaml"]);
    let config = dir.path().join("percpu.yaml");
    let mut load = None;
    let stdout = run_with_load(&[path_str(&config)], || {
        load = Some(execs_on_cpus(dir.path(), 's'))
    });
    let (comm, plan) = load.unwrap();
    let total: u32 = plan.iter().map(|(_, n)| n).sum();
    assert_eq!(
        series_with(&stdout, "bpfsnap_execs_total", &format!("\"{comm}\"")),
        expected(&[(format!("comm=\"{comm}\""), total as f64)]),
        "{stdout}"
    );
    assert!(!stdout.contains("cpu=\""), "no cpu label\n{stdout}");
}

// --- together, namespace, check ---------------------------------------------

#[test]
fn two_user_configs_and_a_builtin_run_together() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    let dir = install_examples(&["comm_getpid.toml", "struct_key.yaml"]);
    let comm = unique_comm("bpfsnap", 't');
    let fd = high_fd();
    let mut child = None;
    let stdout = run_with_load(
        &[
            "--config-dir",
            path_str(dir.path()),
            "--configs",
            "comm_getpid,struct_key",
            "--builtin",
            "syscalls",
        ],
        || {
            getpid_calls_as(&comm, GETPID_CALLS);
            child = Some(fd_calls_in_child(fd.as_raw_fd(), 10, 3));
        },
    );

    for name in ["comm_getpid", "struct_key", "syscalls"] {
        assert_eq!(
            common::sample(
                &stdout,
                &format!("bpfsnap_enabled_configs{{name=\"{name}\"}}")
            ),
            Some(1.0),
            "{name} enabled\n{stdout}"
        );
        assert!(
            stdout.contains(&format!("bpfsnap_program_info{{config=\"{name}\",")),
            "{name}'s programs listed\n{stdout}"
        );
    }
    assert_eq!(
        common::sample(
            &stdout,
            &format!("bpfsnap_getpid_calls_total{{comm=\"{comm}\"}}")
        ),
        Some(GETPID_CALLS as f64),
        "{stdout}"
    );
    let getpid = common::sample(&stdout, r#"bpfsnap_syscalls_total{syscall="getpid"}"#);
    assert!(
        getpid.is_some_and(|n| n >= GETPID_CALLS as f64),
        "built-in syscalls saw the getpid calls too: {getpid:?}\n{stdout}"
    );
    let (pid, copy) = child.unwrap();
    assert_eq!(
        series_with(
            &stdout,
            "bpfsnap_fd_syscalls_total",
            &format!(",pid=\"{pid}\",")
        ),
        expected_fd_series(pid, fd.as_raw_fd(), copy, 10, 3),
        "{stdout}"
    );
}

#[test]
fn namespace_ebpf_exporter_prefixes_every_metric() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    let dir = install_examples(&["comm_getpid.toml"]);
    let config = dir.path().join("comm_getpid.toml");
    let comm = unique_comm("bpfsnap", 'n');
    let stdout = run_with_load(&["--namespace", "ebpf_exporter", path_str(&config)], || {
        getpid_calls_as(&comm, 500)
    });
    assert_eq!(
        common::sample(
            &stdout,
            &format!("ebpf_exporter_getpid_calls_total{{comm=\"{comm}\"}}")
        ),
        Some(500.0),
        "{stdout}"
    );
    assert_eq!(
        common::sample(
            &stdout,
            "ebpf_exporter_enabled_configs{name=\"comm_getpid\"}"
        ),
        Some(1.0),
        "{stdout}"
    );
    for line in stdout.lines() {
        let name = line
            .strip_prefix("# HELP ")
            .or_else(|| line.strip_prefix("# TYPE "))
            .unwrap_or(line);
        assert!(
            name.starts_with("ebpf_exporter_"),
            "every metric in the namespace: {line}"
        );
    }
}

/// Every example config: file names in examples/.
fn example_configs() -> Vec<String> {
    let mut configs: Vec<String> = fs::read_dir(common::source_file("examples"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".toml") || name.ends_with(".yaml"))
        .collect();
    configs.sort();
    configs
}

#[test]
fn check_accepts_every_example_without_warnings() {
    let configs = example_configs();
    for required in [
        "comm_getpid.toml",
        "struct_key.yaml",
        "percpu.yaml",
        "percpu_cpu.toml",
    ] {
        assert!(configs.iter().any(|c| c == required), "examples/{required}");
    }
    let names: Vec<&str> = configs
        .iter()
        .map(|c| c.rsplit_once('.').unwrap().0)
        .collect();
    let dir = install_examples(&configs.iter().map(String::as_str).collect::<Vec<_>>());

    // As files, then by name from the directory.
    let files: Vec<PathBuf> = configs.iter().map(|c| dir.path().join(c)).collect();
    let by_name = names.join(",");
    let invocations: [Vec<&str>; 2] = [
        files.iter().map(|f| path_str(f)).collect(),
        vec!["--config-dir", path_str(dir.path()), "--configs", &by_name],
    ];
    for args in invocations {
        let output = common::bpfsnap()
            .arg("check")
            .args(&args)
            .output()
            .expect("run bpfsnap check");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "check {args:?}: {stderr}");
        assert!(stderr.is_empty(), "no warnings: {stderr}");
        let oks: Vec<&str> = stdout
            .lines()
            .map(|line| {
                line.strip_prefix("ok ")
                    .and_then(|rest| rest.split_once(' '))
                    .map(|(name, _)| name)
                    .unwrap_or_else(|| panic!("not an `ok NAME (ORIGIN)` line: {line:?}"))
            })
            .collect();
        assert_eq!(oks, names, "{stdout}");
    }
}

// --- an ebpf_exporter config directory, unchanged ----------------------------

/// The configs of tests/fixtures/ebpf_exporter/ (ebpf_exporter's YAML, keys it
/// has and bpfsnap ignores included) with their objects, built against
/// ebpf_exporter-style headers: a directory as an ebpf_exporter user has it.
const EBPF_EXPORTER_CONFIGS: [&str; 2] = ["getpid_comm", "write_sizes"];

fn install_ebpf_exporter_dir() -> tempfile::TempDir {
    let dir = common::config_dir();
    for name in EBPF_EXPORTER_CONFIGS {
        let yaml = format!("{name}.yaml");
        fs::copy(
            common::source_file(&format!("tests/fixtures/ebpf_exporter/{yaml}")),
            dir.path().join(&yaml),
        )
        .unwrap_or_else(|err| panic!("copy {yaml}: {err}"));
        let object = format!("{name}.bpf.o");
        fs::copy(
            Path::new(env!("BPFSNAP_EBPF_EXPORTER_OBJECTS")).join(&object),
            dir.path().join(&object),
        )
        .unwrap_or_else(|err| panic!("copy {object}: {err}"));
    }
    dir
}

/// From a thread named `comm`: `n` write() calls of `bytes` bytes each to
/// /dev/null, for each (bytes, n) of `writes`.
fn writes_as(comm: &str, writes: &[(usize, u32)]) {
    let writes = writes.to_vec();
    common::named_thread(comm, move || {
        let null = fs::OpenOptions::new()
            .write(true)
            .open("/dev/null")
            .unwrap();
        let buffer = vec![0u8; writes.iter().map(|(bytes, _)| *bytes).max().unwrap_or(0)];
        for (bytes, n) in writes {
            for _ in 0..n {
                let written =
                    unsafe { libc::write(null.as_raw_fd(), buffer.as_ptr().cast(), bytes) };
                assert_eq!(written, bytes as isize, "write to /dev/null");
            }
        }
    });
}

#[test]
fn check_accepts_an_ebpf_exporter_directory_and_warns_of_ignored_keys() {
    let dir = install_ebpf_exporter_dir();
    let output = common::bpfsnap()
        .args(["check", "--config-dir", path_str(dir.path()), "--configs"])
        .arg(EBPF_EXPORTER_CONFIGS.join(","))
        .output()
        .expect("run bpfsnap check");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    for name in EBPF_EXPORTER_CONFIGS {
        assert!(stdout.contains(&format!("ok {name} (")), "{stdout}");
        assert!(
            stderr.contains(&format!(
                "bpfsnap: warning: {}: line ",
                dir.path().join(format!("{name}.yaml")).display()
            )) && stderr.contains("unknown key `skip_cache_size` ignored (as ebpf_exporter does)"),
            "{name}: the ignored key is named\n{stderr}"
        );
    }
}

/// ebpf_exporter's done-when: its config directory runs through
/// `bpfsnap run --config-dir DIR --configs NAMES` unchanged, with the names
/// ebpf_exporter gives the metrics (its own self metrics included).
#[test]
fn an_ebpf_exporter_directory_runs_unchanged_with_its_metric_names() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    let dir = install_ebpf_exporter_dir();
    let (getpid_comm, write_comm) = (unique_comm("eexp", 'g'), unique_comm("eexp", 'w'));
    let writes = [(1, 5), (100, 7), (5000, 3)];
    let configs = EBPF_EXPORTER_CONFIGS.join(",");
    let stdout = run_with_load(
        &[
            "--namespace",
            "ebpf_exporter",
            "--config-dir",
            path_str(dir.path()),
            "--configs",
            &configs,
        ],
        || {
            getpid_calls_as(&getpid_comm, 321);
            getpid_calls_as(&unique_comm("other", 'g'), 50);
            writes_as(&write_comm, &writes);
        },
    );

    assert_eq!(
        series_with(&stdout, "ebpf_exporter_getpid_calls_total", "eexp-"),
        expected(&[(format!("comm=\"{getpid_comm}\""), 321.0)]),
        "{stdout}"
    );
    assert!(
        !stdout.contains("comm=\"other-"),
        "regexp drops it\n{stdout}"
    );

    // 1 byte in le=1, 100 in le=128, 5000 in le=8192; cumulative.
    let comm = format!("comm=\"{write_comm}\"");
    let buckets = series_with(&stdout, "ebpf_exporter_write_size_bytes_bucket", &comm);
    for (le, count) in [
        ("1", 5.0),
        ("64", 5.0),
        ("128", 12.0),
        ("4096", 12.0),
        ("8192", 15.0),
        ("1048576", 15.0),
        ("+Inf", 15.0),
    ] {
        assert_eq!(
            buckets.get(&format!("{comm},le=\"{le}\"")),
            Some(&count),
            "le={le}\n{stdout}"
        );
    }
    assert_eq!(
        common::sample(
            &stdout,
            &format!("ebpf_exporter_write_size_bytes_count{{{comm}}}")
        ),
        Some(15.0),
        "{stdout}"
    );
    assert_eq!(
        common::sample(
            &stdout,
            &format!("ebpf_exporter_write_size_bytes_sum{{{comm}}}")
        ),
        Some((5 + 7 * 100 + 3 * 5000) as f64),
        "{stdout}"
    );

    // ebpf_exporter's self metrics, by its names and labels.
    for (config, program) in [
        ("getpid_comm", "getpid_enter"),
        ("write_sizes", "write_enter"),
    ] {
        assert_eq!(
            common::sample(
                &stdout,
                &format!("ebpf_exporter_enabled_configs{{name=\"{config}\"}}")
            ),
            Some(1.0),
            "{stdout}"
        );
        let info = common::samples(&stdout, "ebpf_exporter_ebpf_program_info");
        let (labels, _) = info
            .iter()
            .find(|(labels, _)| labels.starts_with(&format!("config=\"{config}\",")))
            .unwrap_or_else(|| panic!("{config}'s program info\n{stdout}"));
        let names: Vec<&str> = labels
            .split(',')
            .map(|pair| pair.split_once('=').unwrap().0)
            .collect();
        assert_eq!(names, ["config", "id", "program", "tag"], "{labels}");
        assert!(
            labels.contains(&format!("program=\"{program}\"")),
            "{labels}"
        );
        let id = labels
            .split(",program=")
            .next()
            .and_then(|head| head.split_once("id="))
            .map(|(_, id)| id.to_string())
            .unwrap();
        assert_eq!(
            common::sample(
                &stdout,
                &format!("ebpf_exporter_ebpf_program_attached{{id={id}}}")
            ),
            Some(1.0),
            "{stdout}"
        );
    }
    assert!(
        !stdout.contains("ebpf_exporter_program_info"),
        "bpfsnap's own name is not used in this namespace\n{stdout}"
    );
}

// --- program run statistics ---------------------------------------------------

const BPF_STATS_ENABLED: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// kernel.bpf_stats_enabled=1 while it lives; the old value back on drop,
/// panics included.
struct BpfStats {
    old: String,
}

impl BpfStats {
    fn enable() -> BpfStats {
        let old = fs::read_to_string(BPF_STATS_ENABLED).expect(BPF_STATS_ENABLED);
        fs::write(BPF_STATS_ENABLED, "1").expect("enable kernel.bpf_stats_enabled");
        BpfStats { old }
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        if let Err(err) = fs::write(BPF_STATS_ENABLED, self.old.trim()) {
            eprintln!(
                "restoring kernel.bpf_stats_enabled={}: {err}",
                self.old.trim()
            );
        }
    }
}

/// With kernel.bpf_stats_enabled=1 and `--counts window`, the run
/// statistics are gauges of one window, under names promtool accepts (a
/// gauge named `..._run_count` it refuses: `_count` is a histogram's).
#[test]
fn run_statistics_of_one_window_pass_promtool() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    let dir = install_examples(&["comm_getpid.toml"]);
    let config = dir.path().join("comm_getpid.toml");
    let _stats = BpfStats::enable();
    let comm = unique_comm("bpfsnap", 'w');
    let stdout = run_with_load(&["--counts", "window", path_str(&config)], || {
        getpid_calls_as(&comm, GETPID_CALLS)
    });
    let program = r#"{config="comm_getpid",program="count_getpid"}"#;
    let runs = common::sample(&stdout, &format!("bpfsnap_program_runs{program}"));
    assert!(
        runs.is_some_and(|n| n >= GETPID_CALLS as f64),
        "{runs:?}\n{stdout}"
    );
}

/// The id label (with its quotes) of `config`'s one program in `info`'s samples.
fn program_id(text: &str, info: &str, config: &str) -> String {
    common::samples(text, info)
        .into_iter()
        .find_map(|(labels, _)| {
            let rest = labels.strip_prefix(&format!("config=\"{config}\",id="))?;
            Some(rest.split(',').next()?.to_string())
        })
        .unwrap_or_else(|| panic!("{info} of {config}\n{text}"))
}

#[test]
fn run_time_and_count_follow_kernel_bpf_stats() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    let dir = install_examples(&["comm_getpid.toml"]);
    let config = dir.path().join("comm_getpid.toml");

    // Off (unless someone else turned it on): no run statistics.
    if fs::read_to_string(BPF_STATS_ENABLED).is_ok_and(|v| v.trim() == "0") {
        let stdout = run_with_load(&[path_str(&config)], || {});
        assert!(!stdout.contains("_program_run_"), "{stdout}");
    }

    let _stats = BpfStats::enable();
    let comm = unique_comm("bpfsnap", 's');
    let stdout = run_with_load(&[path_str(&config)], || {
        getpid_calls_as(&comm, GETPID_CALLS)
    });
    let program = r#"{config="comm_getpid",program="count_getpid"}"#;
    let count = common::sample(&stdout, &format!("bpfsnap_program_runs_total{program}"));
    assert!(
        count.is_some_and(|n| n >= GETPID_CALLS as f64),
        "the program ran once per getpid call at least: {count:?}\n{stdout}"
    );
    let time = common::sample(
        &stdout,
        &format!("bpfsnap_program_run_time_seconds_total{program}"),
    );
    assert!(time.is_some_and(|t| t > 0.0), "{time:?}\n{stdout}");

    // ebpf_exporter's names (keyed by id, as its dashboards expect); its run
    // time counter lacks `_total`, so no promtool here.
    let output = common::output_dir();
    let file = output.path().join("ebpf.prom");
    let mut running = Running::spawn(&[
        "run",
        "-v",
        "--namespace",
        "ebpf_exporter",
        path_str(&config),
        "--for",
        "30s",
        "--output",
        path_str(&file),
    ]);
    running.wait_for("bpfsnap: sampling");
    getpid_calls_as(&comm, 100);
    running.signal(libc::SIGINT);
    let (status, _, stderr) = running.finish();
    assert!(status.success(), "{stderr}");
    let stdout = fs::read_to_string(&file).unwrap();
    let id = program_id(&stdout, "ebpf_exporter_ebpf_program_info", "comm_getpid");
    let count = common::sample(
        &stdout,
        &format!("ebpf_exporter_ebpf_program_run_count_total{{id={id}}}"),
    );
    assert!(count.is_some_and(|n| n >= 100.0), "{count:?}\n{stdout}");
    assert!(
        stdout.contains("# TYPE ebpf_exporter_ebpf_program_run_time_seconds counter\n")
            && common::sample(
                &stdout,
                &format!("ebpf_exporter_ebpf_program_run_time_seconds{{id={id}}}")
            )
            .is_some_and(|t| t > 0.0),
        "{stdout}"
    );
}

// --- xdp/IFNAME and a library uprobe --------------------------------------------

/// Whether an XDP program is attached to lo (`ip link` shows `xdp...`).
fn xdp_on_lo() -> bool {
    let output = Command::new("ip")
        .args(["-details", "link", "show", "dev", "lo"])
        .output()
        .expect("run ip link");
    assert!(output.status.success(), "ip link show dev lo");
    String::from_utf8_lossy(&output.stdout).contains("xdp")
}

/// tests/fixtures/xdp_uprobe: `xdp/lo` counts the UDP datagrams this test
/// sends to a port of its own over loopback, `uprobe/libc.so.6:getpid` the
/// libc getpid() calls of a thread of its own; both exactly, and the XDP
/// program is gone from lo afterwards.
#[test]
fn xdp_on_lo_and_a_libc_uprobe_count_exactly() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    assert!(!xdp_on_lo(), "lo has an XDP program before the test");
    let dir = common::config_dir();
    fs::copy(
        common::source_file("tests/fixtures/xdp_uprobe.yaml"),
        dir.path().join("xdp_uprobe.yaml"),
    )
    .unwrap();
    fs::copy(
        common::fixture_object("xdp_uprobe"),
        dir.path().join("xdp_uprobe.bpf.o"),
    )
    .unwrap();
    let receiver = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    receiver.set_read_timeout(Some(common::PATIENCE)).unwrap();
    let port = receiver.local_addr().unwrap().port();
    let comm = unique_comm("bpfsnap", 'u');
    let (datagrams, calls) = (37, 211);

    let stdout = run_with_load(
        &[
            "--config-dir",
            path_str(dir.path()),
            "--configs",
            "xdp_uprobe",
        ],
        || {
            assert!(xdp_on_lo(), "attached to lo while running");
            let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            let mut buffer = [0u8; 16];
            for n in 0..datagrams {
                sender.send_to(&[n as u8; 8], ("127.0.0.1", port)).unwrap();
                // Received: it went through lo's XDP hook.
                receiver.recv(&mut buffer).expect("datagram over lo");
            }
            common::named_thread(&comm, move || {
                for _ in 0..calls {
                    // The libc function itself, which the uprobe is on.
                    std::hint::black_box(unsafe { libc::getpid() });
                }
            });
        },
    );

    assert_eq!(
        common::sample(
            &stdout,
            &format!("bpfsnap_xdp_udp_packets_total{{port=\"{port}\"}}")
        ),
        Some(datagrams as f64),
        "{stdout}"
    );
    assert_eq!(
        series_with(&stdout, "bpfsnap_libc_getpid_calls_total", &comm),
        expected(&[(format!("comm=\"{comm}\""), calls as f64)]),
        "{stdout}"
    );
    assert!(
        !xdp_on_lo(),
        "the XDP program is detached from lo after exit"
    );
}

/// Where the cgroup2 file system is mounted (as bpfsnap finds it).
fn cgroup2_root() -> std::path::PathBuf {
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let mut roots: Vec<std::path::PathBuf> = mounts
        .lines()
        .filter(|line| {
            line.split(" - ")
                .nth(1)
                .is_some_and(|fs| fs.starts_with("cgroup2 "))
        })
        .filter_map(|line| line.split(' ').nth(4).map(std::path::PathBuf::from))
        .collect();
    roots.sort_by_key(|root| root != Path::new("/sys/fs/cgroup"));
    roots.into_iter().next().expect(
        "a cgroup2 mount (Debian mounts one at /sys/fs/cgroup, or /sys/fs/cgroup/unified beside v1)",
    )
}

/// A cgroup of the test's, removed (once empty) when dropped.
struct TestCgroup(std::path::PathBuf);

impl TestCgroup {
    fn new(root: &Path, tag: &str) -> TestCgroup {
        let path = root.join(format!("bpfsnap-cgtest-{tag}{}", std::process::id()));
        fs::create_dir(&path).unwrap_or_else(|err| panic!("mkdir {}: {err}", path.display()));
        TestCgroup(path)
    }

    /// `n` getpid calls from a child process moved into this cgroup (cgroup
    /// v2 moves whole processes: a thread cannot go alone).
    fn getpid_calls(&self, n: u64) {
        let procs = std::ffi::CString::new(
            self.0
                .join("cgroup.procs")
                .into_os_string()
                .into_encoded_bytes(),
        )
        .unwrap();
        // SAFETY: the child only makes system calls and exits.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork");
        if pid == 0 {
            unsafe {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
                // "0" moves the writer itself.
                if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    libc::_exit(2);
                }
                libc::close(fd);
                for _ in 0..n {
                    libc::syscall(libc::SYS_getpid);
                }
                libc::_exit(0);
            }
        }
        let mut status = 0;
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "child: {status}"
        );
    }

    fn id(&self) -> u64 {
        use std::os::unix::fs::MetadataExt;
        fs::metadata(&self.0).unwrap().ino()
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let _ = fs::remove_dir(&self.0);
    }
}

/// ebpf_exporter's cgroup_id_map, kept by bpfsnap: calls from a cgroup
/// whose path matches count as matched, exactly; a cgroup made after start
/// is in the map from the next scrape, and a removed one's id leaves it.
#[test]
fn cgroup_id_map_holds_the_matching_cgroups_and_follows_them() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    let root = cgroup2_root();
    let early = TestCgroup::new(&root, "a");
    let dir = common::config_dir();
    fs::copy(
        common::source_file("tests/fixtures/cgroup_ids.yaml"),
        dir.path().join("cgroup_ids.yaml"),
    )
    .unwrap();
    fs::copy(
        common::fixture_object("cgroup_ids"),
        dir.path().join("cgroup_ids.bpf.o"),
    )
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let config = dir.path().join("cgroup_ids.yaml");
    let mut serving = Running::spawn(&["serve", "-v", "--listen", &listen, path_str(&config)]);
    serving.wait_for("serving http://");
    let scrape = || {
        let output = std::process::Command::new("curl")
            .args(["-sf", &format!("http://{listen}/metrics")])
            .output()
            .unwrap();
        assert!(output.status.success());
        String::from_utf8(output.stdout).unwrap()
    };
    let matched = |text: &str| {
        common::sample(text, r#"bpfsnap_cgroup_getpid_calls_total{matched="yes"}"#).unwrap_or(0.0)
    };
    let map_ids = || -> Vec<u64> {
        let output = std::process::Command::new("bpftool")
            .args(["map", "dump", "name", "cgroup_ids", "--json"])
            .output()
            .unwrap();
        let entries: Vec<serde_json::Value> =
            serde_json::from_slice(&output.stdout).unwrap_or_default();
        entries
            .iter()
            .filter_map(|e| e["key"].as_array())
            .map(|key| {
                key.iter().rev().fold(0u64, |id, b| {
                    id << 8
                        | u64::from_str_radix(
                            b.as_str().unwrap_or("0").trim_start_matches("0x"),
                            16,
                        )
                        .unwrap_or(0)
                })
            })
            .collect()
    };

    early.getpid_calls(301);
    assert_eq!(matched(&scrape()), 301.0, "a cgroup there before start");
    let late = TestCgroup::new(&root, "b");
    assert!(!map_ids().contains(&late.id()));
    scrape(); // brings the map up to date
    assert!(map_ids().contains(&late.id()), "{:?}", map_ids());
    late.getpid_calls(99);
    assert_eq!(matched(&scrape()), 400.0, "and one made after start");
    let late_id = late.id();
    drop(late);
    scrape();
    assert!(
        !map_ids().contains(&late_id),
        "a removed cgroup's id leaves the map"
    );
    assert!(map_ids().contains(&early.id()));
}

/// The same with a cgrp_storage map, where the kernel has them (6.2+):
/// bpfsnap gives each matching cgroup an entry; where it has none, the
/// config fails naming the map.
#[test]
fn cgroup_id_map_fills_a_cgrp_storage_map_where_the_kernel_has_them() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    let cgroup = TestCgroup::new(&cgroup2_root(), "s");
    let dir = common::config_dir();
    for file in ["cgroup_storage_ids.yaml", "cgroup_storage_ids.bpf.o"] {
        let source = match file.ends_with(".yaml") {
            true => common::source_file(&format!("tests/fixtures/{file}")),
            false => common::fixture_object("cgroup_storage_ids"),
        };
        fs::copy(source, dir.path().join(file)).unwrap();
    }
    let config = dir.path().join("cgroup_storage_ids.yaml");
    // SAFETY: a feature probe: creates and closes a map.
    let supported = unsafe {
        libbpf_sys::libbpf_probe_bpf_map_type(
            libbpf_sys::BPF_MAP_TYPE_CGRP_STORAGE,
            std::ptr::null(),
        )
    } == 1;
    if !supported {
        let output = common::bpfsnap()
            .args(["run", path_str(&config), "--for", "100ms", "--output", "-"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains("cgroup_storage_ids"), "{stderr}");
        return;
    }
    let text = run_with_load(&[path_str(&config)], || cgroup.getpid_calls(77));
    assert_eq!(
        common::sample(
            &text,
            r#"bpfsnap_cgroup_storage_getpid_calls_total{matched="yes"}"#
        ),
        Some(77.0),
        "{text}"
    );
}
