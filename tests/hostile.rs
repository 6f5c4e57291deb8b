//! Hostile and odd input on the real kernel: kernel strings that are quotes,
//! backslashes, newlines and invalid UTF-8 in labels (thread names set with
//! prctl, program names from exec), runs with no, some and all privileges,
//! and config and object files that someone else could have changed.
//!
//! RELIABILITY.md lists what is covered and what is not.

mod common;

use std::ffi::OsStr;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{path_str, Decoder, Running, SyscallGate, Trap, UserConfig};

/// Names a thread or program can have (at most 15 bytes, no NUL), each
/// with what the text format must say for it in a label value: the bytes
/// decoded as UTF-8 (invalid sequences become U+FFFD), then `\`, `"` and
/// newline escaped.
const HOSTILE: &[&[u8]] = &[
    b"q\"uo\"te",
    b"back\\sl\\ash",
    b"new\nli\nne",
    b"bad\xff\xfeutf8",
    b"mix\"\\\n\xc3(",
    b"{a=\"b\",} 1 #",
    b"\xe2\x80\xa8sep\t\r",
];

fn escaped(name: &[u8]) -> String {
    String::from_utf8_lossy(name)
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn note(text: &str) {
    let _ = writeln!(std::io::stderr(), "{text}");
}

/// The output must hold `metric{comm="ESCAPED"}` for every hostile name,
/// with at least `at_least` counted, parse line by line, and pass promtool.
fn assert_names_escaped(text: &str, metric: &str, at_least: f64) {
    common::assert_complete_exposition(text);
    common::promtool_check(text);
    let samples = common::samples(text, metric);
    for name in HOSTILE {
        let labels = format!("comm=\"{}\"", escaped(name));
        let value = samples
            .iter()
            .find(|(l, _)| *l == labels)
            .map(|(_, v)| *v)
            .unwrap_or_else(|| panic!("no series {metric}{{{labels}}} in:\n{text}"));
        assert!(value >= at_least, "{labels}: {value} < {at_least}");
    }
}

/// A config for examples/comm_getpid.bpf.c that keeps every comm (string
/// decoder only), with its object beside it, in a root-owned 0755 directory.
struct CommConfig {
    dir: tempfile::TempDir,
}

impl CommConfig {
    fn new() -> CommConfig {
        let config = CommConfig {
            dir: common::config_dir(),
        };
        UserConfig::counter(
            "getpid_calls_total",
            "getpid() calls, by the calling thread's name.",
        )
        .label("comm", 16, &[Decoder::String])
        .install(
            config.dir.path(),
            "comm",
            &common::example_object("comm_getpid"),
        );
        for file in [config.config(), config.object()] {
            fs::set_permissions(file, fs::Permissions::from_mode(0o644)).unwrap();
        }
        config
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("comm.toml")
    }

    fn object(&self) -> PathBuf {
        self.dir.path().join("comm.bpf.o")
    }
}

const CALLS: u64 = 50;

/// Threads named with quotes, backslashes, newlines, invalid UTF-8 and
/// text-format syntax (prctl PR_SET_NAME) call getpid while a comm-keyed
/// program counts them: every name comes out escaped, promtool is clean.
#[test]
fn hostile_thread_names_are_escaped_in_labels() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    let config = CommConfig::new();
    let output = common::output_dir();
    let file = output.path().join("bpfsnap.prom");
    let mut running = Running::spawn(&[
        "run",
        "-v",
        path_str(&config.config()),
        "--for",
        "60s",
        "--output",
        path_str(&file),
    ]);
    running.wait_for("sampling");
    for name in HOSTILE {
        std::thread::spawn(move || {
            let mut comm = name.to_vec();
            comm.push(0);
            // SAFETY: a NUL-terminated name of at most 16 bytes.
            let rc = unsafe { libc::prctl(libc::PR_SET_NAME, comm.as_ptr()) };
            assert_eq!(rc, 0, "prctl");
            let mut set = [0u8; 16];
            unsafe { libc::prctl(libc::PR_GET_NAME, set.as_mut_ptr()) };
            assert_eq!(&set[..name.len()], *name, "the kernel kept the name as is");
            common::getpid_calls(CALLS);
        })
        .join()
        .unwrap();
    }
    running.signal(libc::SIGINT);
    let (status, _, stderr) = running.finish();
    assert!(status.success(), "{stderr}");
    let text = fs::read_to_string(&file).unwrap();
    assert_names_escaped(&text, "bpfsnap_getpid_calls_total", CALLS as f64);
    note(&format!("FIGURES hostile_thread_names={}", HOSTILE.len()));
}

/// Programs started through symlinks with hostile names (the kernel names
/// the new program after the file it was asked to run) are counted by the
/// `execs` built-in under those names, escaped.
#[test]
fn hostile_program_names_are_escaped_in_labels() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    let links = tempfile::tempdir().unwrap();
    let paths: Vec<PathBuf> = HOSTILE
        .iter()
        .map(|name| {
            let path = links.path().join(OsStr::from_bytes(name));
            std::os::unix::fs::symlink("/bin/true", &path).unwrap();
            path
        })
        .collect();
    let output = common::output_dir();
    let file = output.path().join("bpfsnap.prom");
    let mut running = Running::spawn(&[
        "run",
        "-v",
        "-b",
        "execs",
        "--for",
        "60s",
        "--output",
        path_str(&file),
    ]);
    running.wait_for("sampling");
    for path in &paths {
        for _ in 0..2 {
            let status = Command::new(path).status().expect("exec the symlink");
            assert!(status.success());
        }
    }
    running.signal(libc::SIGINT);
    let (status, _, stderr) = running.finish();
    assert!(status.success(), "{stderr}");
    let text = fs::read_to_string(&file).unwrap();
    assert_names_escaped(&text, "bpfsnap_execs_total", 2.0);
}

// --- privileges ---------------------------------------------------------------

/// `bpfsnap run` through setpriv as nobody with these capabilities.
fn as_nobody_with(caps: &str, args: &[&str]) -> std::process::Output {
    Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            &format!("--inh-caps=-all{caps}"),
            &format!("--ambient-caps=-all{caps}"),
        ])
        .arg(env!("CARGO_BIN_EXE_bpfsnap"))
        .args(args)
        .output()
        .expect("setpriv (util-linux)")
}

/// Each privilege level either works (a complete file, promtool-clean) or
/// fails with exit 1 and one line naming the missing capability — the
/// default set and a single built-in alike.
#[test]
fn each_privilege_level_works_or_names_the_missing_capability() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    let dir = common::output_dir();
    let output = dir.path().join("bpfsnap.prom");
    let cases: &[(&str, &str, bool, &[&str])] = &[
        (
            "nobody, no capabilities",
            "",
            false,
            &["CAP_BPF", "CAP_PERFMON"],
        ),
        ("nobody, CAP_BPF only", ",+bpf", false, &["CAP_PERFMON"]),
        ("nobody, CAP_PERFMON only", ",+perfmon", false, &["CAP_BPF"]),
        ("nobody, CAP_BPF + CAP_PERFMON", ",+bpf,+perfmon", true, &[]),
    ];
    for selection in [&["-b", "syscalls"][..], &[][..]] {
        for (what, caps, works, names) in cases {
            let _ = fs::remove_file(&output);
            let mut args = vec!["run", "--for", "200ms", "--output", path_str(&output)];
            args.extend_from_slice(selection);
            let result = as_nobody_with(caps, &args);
            let stderr = String::from_utf8_lossy(&result.stderr);
            let what = format!("{what}, {selection:?}");
            if *works {
                assert!(result.status.success(), "{what}: {stderr}");
                let text = fs::read_to_string(&output).unwrap();
                common::assert_complete_exposition(&text);
                common::promtool_check(&text);
                assert_eq!(common::sample(&text, "bpfsnap_up"), Some(1.0), "{what}");
            } else {
                assert_eq!(result.status.code(), Some(1), "{what}: {stderr}");
                assert_eq!(stderr.lines().count(), 1, "{what}: one line: {stderr}");
                for name in *names {
                    assert!(stderr.contains(name), "{what}: names {name}: {stderr}");
                }
                assert!(!output.exists(), "{what}: no file");
            }
        }
        // And root, with every capability.
        let result = common::bpfsnap()
            .args(["run", "--for", "200ms", "--output", path_str(&output)])
            .args(selection)
            .output()
            .unwrap();
        assert!(
            result.status.success(),
            "root: {}",
            String::from_utf8_lossy(&result.stderr)
        );
        common::promtool_check(&fs::read_to_string(&output).unwrap());
    }
}

// --- untrusted config and object files ----------------------------------------

/// `bpfsnap run CONFIG --for 100ms --output -` (as root), with `extra` args.
fn run_config(config: &Path, extra: &[&str]) -> std::process::Output {
    common::bpfsnap()
        .args(["run", path_str(config), "--for", "100ms", "--output", "-"])
        .args(extra)
        .output()
        .unwrap()
}

/// Config and object files writable by group or others, or owned by
/// another user, are refused (exit 2, one line naming the file and the
/// override) — they become kernel code — and accepted with
/// --allow-untrusted-files.
#[test]
fn untrusted_config_and_object_files_are_refused() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    type Spoil = fn(&Path);
    let group_writable: Spoil =
        |p| fs::set_permissions(p, fs::Permissions::from_mode(0o664)).unwrap();
    let world_writable: Spoil =
        |p| fs::set_permissions(p, fs::Permissions::from_mode(0o646)).unwrap();
    let foreign: Spoil = |p| std::os::unix::fs::chown(p, Some(65534), Some(65534)).unwrap();
    let cases: &[(&str, Spoil, &str)] = &[
        (
            "group-writable",
            group_writable,
            "writable by group or others",
        ),
        (
            "world-writable",
            world_writable,
            "writable by group or others",
        ),
        ("owned by nobody", foreign, "owned by uid 65534"),
    ];
    let mut refused = 0;
    for (what, spoil, says) in cases {
        for object in [false, true] {
            let config = CommConfig::new();
            let file = if object {
                config.object()
            } else {
                config.config()
            };
            spoil(&file);
            let what = format!("{} {what}", file.display());
            let result = run_config(&config.config(), &[]);
            let stderr = String::from_utf8_lossy(&result.stderr);
            assert_eq!(result.status.code(), Some(2), "{what}: {stderr}");
            assert_eq!(stderr.lines().count(), 1, "{what}: {stderr}");
            for text in [*says, path_str(&file), "--allow-untrusted-files"] {
                assert!(stderr.contains(text), "{what}: says {text:?}: {stderr}");
            }
            assert!(result.stdout.is_empty(), "{what}: no metrics");
            refused += 1;

            let result = run_config(&config.config(), &["--allow-untrusted-files"]);
            let stderr = String::from_utf8_lossy(&result.stderr);
            assert!(
                result.status.success(),
                "{what} with the override: {stderr}"
            );
            common::promtool_check(&String::from_utf8_lossy(&result.stdout));
        }
    }
    note(&format!("FIGURES untrusted_files_refused={refused}"));
}

/// In a directory anyone may write (here 0777), an attacker swaps the
/// checked object for their own (owned by nobody, mode 0666) at the exact
/// moment bpfsnap opens it (the stopped `openat`). It must never be loaded:
/// such a directory is refused, and the object is checked and read through
/// one descriptor, so what was checked is what is loaded. (Bug 2 in
/// RELIABILITY.md: the check once looked at the file's owner and mode only.)
#[test]
fn an_object_swapped_after_the_trust_check_is_not_loaded() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    let config = CommConfig::new();
    fs::set_permissions(config.dir.path(), fs::Permissions::from_mode(0o777)).unwrap();
    let attacker = config.dir.path().join(".attacker");
    fs::copy(config.object(), &attacker).unwrap();
    fs::set_permissions(&attacker, fs::Permissions::from_mode(0o666)).unwrap();
    std::os::unix::fs::chown(&attacker, Some(65534), Some(65534)).unwrap();

    let mut command = common::bpfsnap();
    command.args([
        "run",
        path_str(&config.config()),
        "--for",
        "100ms",
        "--output",
        "-",
    ]);
    let socket = SyscallGate::arm(&mut command, &[Trap::Syscall(libc::SYS_openat)]);
    let running = Running::spawn_command(command);
    let gate = socket.connect();
    let mut swapped = false;
    while let Some(call) = gate.next() {
        let opens_object = call
            .string_arg(1)
            .is_some_and(|path| path.ends_with(b"comm.bpf.o"));
        if opens_object && !swapped {
            fs::rename(&attacker, config.object()).unwrap();
            swapped = true;
        }
        gate.resume(&call);
    }
    let (status, _, stderr) = running.finish();
    assert!(swapped, "bpfsnap never opened the object");
    assert!(
        !status.success(),
        "bpfsnap loaded an object owned by uid 65534 (mode 0666), swapped in after its check: {stderr}"
    );
}

/// A histogram whose bucket range is huge (a typo: bucket_max 10^12 with
/// linear buckets) is refused by validation; it once passed, and the first
/// snapshot tried to lay out every bucket key: ~16 TB, an abort (bug 3).
#[test]
fn a_histogram_with_a_huge_bucket_range_is_refused() {
    let text = "metrics:\n  histograms:\n    - name: h_seconds\n      help: H.\n      bucket_type: linear\n      bucket_min: 0\n      bucket_max: 1000000000000\n      labels:\n        - name: bucket\n          size: 8\n          decoders:\n            - name: uint\n";
    let parsed = bpfsnap::spec::Config::parse("h", "h.yaml", text, bpfsnap::spec::Format::Yaml);
    assert!(
        parsed.is_err(),
        "a layout of 10^12 buckets was accepted; a snapshot of it would abort the run"
    );
}

/// An unknown key containing a newline (YAML `? "a\nb"`) is escaped in the
/// error's key path, so the error stays one line (bug 4, found by the
/// config_parse fuzz target).
#[test]
fn config_errors_stay_one_line_for_keys_with_newlines() {
    let text = "? \"ge\\n .)\"\n: 1\n";
    let err =
        bpfsnap::spec::Config::parse("x", "x.yaml", text, bpfsnap::spec::Format::Yaml).unwrap_err();
    let message = format!("{err:#}");
    assert!(!message.contains('\n'), "two lines: {message:?}");
}

// --- histogram edge cases found by fuzzing (fuzz/fuzz_targets/histograms.rs) --

/// The histogram family of a config with these bucket settings (YAML) over
/// a map of (bucket key → count), through the public API.
fn histogram_of(buckets: &str, entries: &[(u64, u64)]) -> prometheus::proto::MetricFamily {
    use bpfsnap::snapshot::{MapData, Snapshot};
    let text = format!(
        "metrics:\n  histograms:\n    - name: h_seconds\n      help: H.\n{buckets}      labels:\n        - name: bucket\n          size: 8\n          decoders:\n            - name: uint\n"
    );
    let (_, plan) = bpfsnap::plan::parse("h", "h.yaml", &text, bpfsnap::spec::Format::Yaml)
        .expect("the config is accepted");
    let snapshot = Snapshot {
        maps: vec![MapData {
            name: "h_seconds".into(),
            key_size: 8,
            values_per_key: 1,
            is_array: false,
            per_cpu: false,
            keys: entries.iter().flat_map(|(k, _)| k.to_ne_bytes()).collect(),
            values: entries.iter().map(|(_, v)| *v).collect(),
        }],
        unread: Vec::new(),
        events_lost: Vec::new(),
    };
    let exposed = bpfsnap::exposition::families(&plan, snapshot, "x").expect("histograms");
    exposed.families[0].to_proto()
}

fn bounds(family: &prometheus::proto::MetricFamily) -> Vec<f64> {
    family.get_metric()[0]
        .get_histogram()
        .get_bucket()
        .iter()
        .map(|b| b.upper_bound())
        .collect()
}

/// Bounds beyond ~10^15 round to 15 significant digits; keys whose bounds
/// meet share one bucket instead of giving two with the same `le` (bug 5).
#[test]
fn histogram_bounds_stay_distinct() {
    let family = histogram_of(
        "      bucket_type: linear\n      bucket_min: 10000000000000000\n      bucket_max: 10000000000000003\n",
        &[(10_000_000_000_000_000, 1)],
    );
    let bounds = bounds(&family);
    assert!(bounds.windows(2).all(|p| p[0] < p[1]), "bounds {bounds:?}");
}

/// The sum key is the last bucket key + 1: for a last key of u64::MAX there
/// is none, rather than an overflow (a panic with overflow checks; in
/// release, key 0 taken as the sum, its count leaving the buckets: bug 6).
#[test]
fn histogram_sum_key_does_not_overflow() {
    let family = histogram_of(
        "      bucket_type: linear\n      bucket_min: 18446744073709551610\n      bucket_max: 18446744073709551615\n",
        &[(0, 5), (u64::MAX, 1)],
    );
    let histogram = family.get_metric()[0].get_histogram();
    assert_eq!(histogram.get_sample_count(), 6, "every observation counted");
}

/// A bound that overflows to infinity (2^40 × 1e300) is part of `+Inf`,
/// never a bucket `le="inf"` beside it (bug 7).
#[test]
fn histogram_bounds_are_finite() {
    let family = histogram_of(
        "      bucket_type: exp2\n      bucket_min: 0\n      bucket_max: 40\n      bucket_multiplier: 1e300\n",
        &[(1, 1)],
    );
    let bounds = bounds(&family);
    assert!(bounds.iter().all(|b| b.is_finite()), "bounds {bounds:?}");
}

/// Counts of keys landing in the same series and bucket saturate instead of
/// overflowing (a panic with overflow checks; wrapped, buckets no longer
/// cumulative, without: bug 8).
#[test]
fn histogram_counts_do_not_overflow() {
    // Keys 5 and 6 are both below bucket_min 7: both land in the first bucket.
    let family = histogram_of(
        "      bucket_type: linear\n      bucket_min: 7\n      bucket_max: 8\n",
        &[(5, u64::MAX / 2 + 1), (6, u64::MAX / 2 + 1)],
    );
    let buckets = family.get_metric()[0].get_histogram().get_bucket().to_vec();
    assert!(
        buckets
            .windows(2)
            .all(|p| p[0].cumulative_count() <= p[1].cumulative_count()),
        "buckets stay cumulative"
    );
}
