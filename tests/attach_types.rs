//! Attach types on the real kernel, each counting load this test makes
//! itself, exactly (tests/fixtures/attach_types_*.bpf.c):
//!
//! - kprobe and kretprobe, fentry and fexit on the getpgid system call's
//!   kernel function: the calls of a thread of the test's, with the thread
//!   id they pass and the process group they return;
//! - kprobe.multi and kretprobe.multi on a pattern, by the function each call
//!   was for (ksym) — or, on a kernel without fprobe, a one-line refusal;
//! - uprobe, uretprobe and a USDT probe in a program the test compiles;
//! - the ksym and kstack decoders on a kprobe's real address and stack;
//! - a kprobe on a function no kernel has, and on a module's function before
//!   and after `modprobe`: a one-line error, then exact counts.
//!
//! The host these tests are written on allows none of the kernel-side
//! probes (no kprobes, trampolines refused): there a test whose feature is
//! missing says SKIPPED and passes. The kernel matrix (tools/vm) runs them in
//! VMs of Debian's kernels with BPFSNAP_KERNEL_MATRIX set, where nothing may
//! skip. Features are detected from the running kernel, never its version.

mod common;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use common::{path_str, Running};

const KPROBE_PMU: &str = "/sys/bus/event_source/devices/kprobe";
const UPROBE_PMU: &str = "/sys/bus/event_source/devices/uprobe";
const KERNEL_BTF: &str = "/sys/kernel/btf/vmlinux";

// --- gating ------------------------------------------------------------------

/// The kernel matrix's name for this kernel (`5.10`, `6.12`, ...): set when
/// the VM suite runs these tests, which must then run.
fn matrix_kernel() -> Option<String> {
    std::env::var("BPFSNAP_KERNEL_MATRIX")
        .ok()
        .filter(|name| !name.is_empty())
}

/// Whether `test` goes on, given why its kernel feature is missing (if it
/// is): a kernel without it skips the test loudly, except in the kernel
/// matrix, where a missing feature is a failure.
fn feature_present(test: &str, missing: Option<String>) -> bool {
    let Some(why) = missing else {
        return true;
    };
    if let Some(kernel) = matrix_kernel() {
        panic!("{test}: the kernel matrix runs it on {kernel}, but {why}");
    }
    // Straight to the stream: libtest captures eprintln! of passing tests.
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {test}: {why} (the kernel matrix runs it in VMs)"
    );
    false
}

fn kprobes_missing() -> Option<String> {
    (!Path::new(KPROBE_PMU).exists())
        .then(|| format!("this kernel has no kprobes (no {KPROBE_PMU})"))
}

fn uprobes_missing() -> Option<String> {
    (!Path::new(UPROBE_PMU).exists())
        .then(|| format!("this kernel has no uprobes (no {UPROBE_PMU})"))
}

/// Why the kernel will not load fixture `object`'s fentry/fexit programs, if
/// it will not: loading them is the only way to know (a locked-down kernel
/// or a BPF LSM policy refuses BPF trampolines with EPERM).
fn trampolines_missing(object: &Path) -> Option<String> {
    libbpf_rs::set_print(None); // the refusal is expected here: no libbpf noise
    let loaded = libbpf_rs::ObjectBuilder::default()
        .open_file(object)
        .expect("open the fentry fixture")
        .load();
    match loaded {
        Ok(_) => None,
        Err(err) if err.kind() == libbpf_rs::ErrorKind::PermissionDenied => Some(format!(
            "this kernel refuses to load fentry/fexit programs ({err})"
        )),
        Err(err) => panic!("loading {} failed: {err:#}", object.display()),
    }
}

/// Whether this kernel can attach kprobe.multi programs: its BTF has the
/// link type, which exists only where fprobe does (CONFIG_FPROBE).
fn has_kprobe_multi() -> bool {
    use libbpf_rs::btf::{types::Struct, Btf};
    let btf = Btf::from_path(KERNEL_BTF).expect("the kernel's BTF (bpfsnap needs it)");
    btf.type_by_name::<Struct<'_>>("bpf_kprobe_multi_link")
        .is_some()
}

// --- running bpfsnap on a fixture ----------------------------------------------

/// The kernel function behind system call `name` here (the fixtures'
/// SYSCALL_PREFIX).
fn syscall_function(name: &str) -> String {
    let prefix = if cfg!(target_arch = "aarch64") {
        "__arm64_sys_"
    } else {
        "__x64_sys_"
    };
    format!("{prefix}{name}")
}

/// A config directory with fixture `object` (tests/fixtures/OBJECT.bpf.c)
/// and `config` (a file of tests/fixtures) installed as OBJECT.yaml; the
/// directory and the config's path.
fn install(object: &str, config: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = common::config_dir();
    let path = dir.path().join(format!("{object}.yaml"));
    std::fs::copy(
        common::source_file(&format!("tests/fixtures/{config}")),
        &path,
    )
    .unwrap_or_else(|err| panic!("copy {config}: {err}"));
    std::fs::copy(
        common::fixture_object(object),
        dir.path().join(format!("{object}.bpf.o")),
    )
    .unwrap_or_else(|err| panic!("copy {object}.bpf.o: {err}"));
    (dir, path)
}

/// `bpfsnap run -v CONFIG --for 1h --output DIR/bpfsnap.prom` (a new
/// textfile, whose counters are counters; the hour only has to outlast the
/// load, which takes seconds in the matrix's emulated VMs), with `bin` first in its
/// PATH if given (where libbpf looks up a uprobe's binary named without a
/// slash): once everything is attached runs `load`, then ends the window
/// with SIGINT. Checks the exit status and that promtool accepts the
/// output; returns it.
fn run_with_load(config: &Path, bin: Option<&Path>, load: impl FnOnce()) -> String {
    let dir = common::output_dir();
    let output = dir.path().join("bpfsnap.prom");
    let mut command = common::bpfsnap();
    command.args([
        "run",
        "-v",
        path_str(config),
        "--for",
        "1h",
        "--output",
        path_str(&output),
    ]);
    if let Some(bin) = bin {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut dirs = vec![bin.to_path_buf()];
        dirs.extend(std::env::split_paths(&path));
        command.env("PATH", std::env::join_paths(dirs).expect("PATH"));
    }
    let mut running = Running::spawn_command(command);
    running.wait_for("sampling");
    load();
    running.signal(libc::SIGINT);
    let (status, _, stderr) = running.finish();
    assert!(
        status.success(),
        "bpfsnap {}: {status}\n{stderr}",
        config.display()
    );
    let text = std::fs::read_to_string(&output).expect("the run wrote its output");
    common::promtool_check(&text);
    text
}

/// `bpfsnap run CONFIG --for 1s --output -`, which must fail: its stderr,
/// after checking the exit status (1: the kernel refused) and that the
/// error is one line.
fn run_refused(config: &Path) -> String {
    let output = common::bpfsnap()
        .args(["run", path_str(config), "--for", "1s", "--output", "-"])
        .output()
        .expect("run bpfsnap");
    let stderr = String::from_utf8_lossy(&output.stderr)
        .trim_end()
        .to_string();
    assert_eq!(
        output.status.code(),
        Some(1),
        "bpfsnap {} must fail: {stderr}",
        config.display()
    );
    assert_eq!(stderr.lines().count(), 1, "a one-line error: {stderr}");
    stderr
}

/// The attach kinds `bpfsnap_program_info` reports.
fn attach_kinds(text: &str) -> Vec<String> {
    common::samples(text, "bpfsnap_program_info")
        .iter()
        .filter_map(|(labels, _)| {
            let kind = labels.split_once("attach=\"")?.1;
            Some(kind.split_once('"')?.0.to_string())
        })
        .collect()
}

/// `metric`'s samples whose labels start with `prefix`, by the labels
/// after it.
fn series_after(text: &str, metric: &str, prefix: &str) -> BTreeMap<String, f64> {
    common::samples(text, metric)
        .into_iter()
        .filter_map(|(labels, value)| Some((labels.strip_prefix(prefix)?.to_string(), value)))
        .collect()
}

fn expected(series: &[(String, f64)]) -> BTreeMap<String, f64> {
    series.iter().cloned().collect()
}

// --- load --------------------------------------------------------------------

/// A thread name no other process has, that the fixtures' filter passes
/// (bpfsnap-*): tag + this process's pid, within the kernel's 15 bytes.
fn unique_comm(tag: char) -> String {
    format!("bpfsnap-{tag}{}", std::process::id() % 1_000_000)
}

/// `n` raw system calls `nr(arg)`; the value they returned (the same every
/// time).
fn syscalls(nr: libc::c_long, arg: libc::c_long, n: u64) -> libc::c_long {
    let first = unsafe { libc::syscall(nr, arg) };
    assert!(
        first >= 0,
        "syscall {nr}: {}",
        std::io::Error::last_os_error()
    );
    for _ in 1..n {
        assert_eq!(unsafe { libc::syscall(nr, arg) }, first, "syscall {nr}");
    }
    first
}

/// `n` getpgid calls from a new thread named `comm`, each asking for the
/// group of the thread itself; the thread's id and the group returned, which
/// differ (a thread that is not its process's leader leads no group), so
/// the probes' argument and return value cannot be mistaken for each other.
fn getpgid_calls_as(comm: &str, n: u64) -> (libc::c_long, libc::c_long) {
    common::named_thread(comm, move || {
        let tid = unsafe { libc::syscall(libc::SYS_gettid) };
        (tid, syscalls(libc::SYS_getpgid, tid, n))
    })
}

// --- kprobe, kretprobe, fentry, fexit ----------------------------------------

/// Runs getpgid fixture `object` (attach_types_calls.yaml) while a thread of
/// the test calls getpgid; asserts that its `entry` and `exit` probes
/// counted exactly those calls, with the thread id passed and the group
/// returned, and that bpfsnap reports their attach kinds.
fn getpgid_calls_are_counted(object: &str, [entry, exit]: [&str; 2]) {
    let (_dir, config) = install(object, "attach_types_calls.yaml");
    let comm = unique_comm(entry.chars().next().unwrap_or('x'));
    let calls = 1009;
    let mut made = None;
    let text = run_with_load(&config, None, || {
        made = Some(getpgid_calls_as(&comm, calls))
    });
    let (tid, pgid) = made.unwrap();
    assert_ne!(tid, pgid);
    assert_eq!(
        series_after(
            &text,
            "bpfsnap_attach_types_calls_total",
            &format!("comm=\"{comm}\","),
        ),
        expected(&[
            (format!("probe=\"{entry}\",value=\"{tid}\""), calls as f64),
            (format!("probe=\"{exit}\",value=\"{pgid}\""), calls as f64),
        ]),
        "thread {tid} of group {pgid}\n{text}"
    );
    let mut kinds = attach_kinds(&text);
    kinds.sort();
    assert_eq!(kinds, [entry, exit], "bpfsnap_program_info\n{text}");
}

#[test]
fn kprobe_and_kretprobe_count_the_test_threads_calls_exactly() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    if feature_present(common::test_name!(), kprobes_missing()) {
        getpgid_calls_are_counted("attach_types_kprobe", ["kprobe", "kretprobe"]);
    }
}

#[test]
fn fentry_and_fexit_count_the_test_threads_calls_exactly() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    let object = common::fixture_object("attach_types_fentry");
    if !feature_present(common::test_name!(), trampolines_missing(&object)) {
        return;
    }
    if trampolines_attach() {
        getpgid_calls_are_counted("attach_types_fentry", ["fentry", "fexit"]);
    } else {
        let (_dir, config) = install("attach_types_fentry", "attach_types_calls.yaml");
        let stderr = run_refused(&config);
        assert!(
            stderr.starts_with("bpfsnap: error: attach_types_fentry: cannot attach program ")
                && stderr.ends_with(
                    "this kernel cannot attach fentry/fexit programs to kernel functions \
                     (no ftrace direct calls: arm64 has them from Linux 6.4): \
                     use kprobe or kretprobe sections"
                ),
            "names the program and says why: {stderr}"
        );
    }
}

/// Whether fentry/fexit programs that load here also attach to kernel
/// functions: arm64 kernels call BPF trampolines from a function's entry
/// only from Linux 6.4 (ftrace direct calls); 6.1 refuses the attach.
fn trampolines_attach() -> bool {
    if !cfg!(target_arch = "aarch64") {
        return true;
    }
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").expect("osrelease");
    let mut numbers = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse::<u32>().unwrap_or(0));
    let (major, minor) = (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0));
    (major, minor) >= (6, 4)
}

// --- kprobe.multi ------------------------------------------------------------

/// kprobe.multi and kretprobe.multi on every get*id system call: a thread's
/// getpgid and getsid calls, each counted under the function it called
/// (ksym of bpf_get_func_ip), nothing else. Without fprobe, bpfsnap must
/// refuse the config in one line naming the program and its section.
#[test]
fn kprobe_multi_counts_each_matched_function_or_is_refused_in_one_line() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    let (_dir, config) = install("attach_types_multi", "attach_types_multi.yaml");
    if !has_kprobe_multi() {
        kprobe_multi_is_refused(&config);
        return;
    }
    let comm = unique_comm('m');
    let (getpgids, getsids) = (613, 211);
    let text = run_with_load(&config, None, || {
        common::named_thread(&comm, move || {
            syscalls(libc::SYS_getpgid, 0, getpgids);
            syscalls(libc::SYS_getsid, 0, getsids);
        })
    });
    let series = |probe: &str, call: &str, n: u64| {
        let function = syscall_function(call);
        (
            format!("probe=\"{probe}\",function=\"{function}\""),
            n as f64,
        )
    };
    assert_eq!(
        series_after(
            &text,
            "bpfsnap_attach_types_multi_total",
            &format!("comm=\"{comm}\","),
        ),
        expected(&[
            series("kprobe.multi", "getpgid", getpgids),
            series("kprobe.multi", "getsid", getsids),
            series("kretprobe.multi", "getpgid", getpgids),
            series("kretprobe.multi", "getsid", getsids),
        ]),
        "{text}"
    );
    let mut kinds = attach_kinds(&text);
    kinds.sort();
    assert_eq!(kinds, ["kprobe.multi", "kretprobe.multi"], "{text}");
}

/// What bpfsnap says of attach_types_multi on a kernel without fprobe: one
/// line naming the program and its section, and that the kernel cannot
/// attach kprobe.multi programs (whether the kernel refused the load or the
/// attach, and with whichever errno).
fn kprobe_multi_is_refused(config: &Path) {
    let stderr = run_refused(config);
    let pattern = syscall_function("get*id");
    let named = ["multi_entry", "multi_return"].iter().any(|program| {
        let kind = if *program == "multi_entry" {
            "kprobe"
        } else {
            "kretprobe"
        };
        ["attach", "load"].iter().any(|verb| {
            stderr.starts_with(&format!(
                "bpfsnap: error: attach_types_multi: cannot {verb} program {program} \
                 (section {kind}.multi/{pattern}): "
            ))
        })
    });
    assert!(named, "names the program and its section: {stderr}");
    assert!(
        stderr.ends_with(
            "this kernel cannot attach kprobe.multi programs (it has no fprobe: \
             CONFIG_FPROBE is off): use kprobe or kretprobe sections"
        ),
        "says why: {stderr}"
    );
}

// --- ksym and kstack ---------------------------------------------------------

/// The kernel function that calls the system call's function here.
fn syscall_caller() -> &'static str {
    if cfg!(target_arch = "aarch64") {
        // invoke_syscall is inlined into el0_svc_common in Debian's kernels.
        "do_el0_svc"
    } else {
        "do_syscall_64"
    }
}

/// A kprobe on getsid's kernel function records the probed address and the
/// kernel stack of each of the test's calls: ksym names that function, and
/// kstack a single stack, innermost first, whose first frame is that
/// function and which goes through the system call entry.
#[test]
fn ksym_and_kstack_name_the_probed_kernel_function() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    if !feature_present(common::test_name!(), kprobes_missing()) {
        return;
    }
    let (_dir, config) = install("attach_types_ksym", "attach_types_ksym.yaml");
    let comm = unique_comm('s');
    let calls = 307;
    let text = run_with_load(&config, None, || {
        common::named_thread(&comm, move || syscalls(libc::SYS_getsid, 0, calls));
    });
    let ours = format!("comm=\"{comm}\",");
    let function = syscall_function("getsid");
    assert_eq!(
        series_after(&text, "bpfsnap_attach_types_ksym_total", &ours),
        expected(&[(format!("function=\"{function}\""), calls as f64)]),
        "{text}"
    );
    let stacks = series_after(&text, "bpfsnap_attach_types_kstack_total", &ours);
    let [(stack, count)] = <[(String, f64); 1]>::try_from(stacks.into_iter().collect::<Vec<_>>())
        .unwrap_or_else(|stacks| panic!("one stack for all calls: {stacks:?}\n{text}"));
    assert_eq!(count, calls as f64, "{text}");
    let frames: Vec<&str> = stack
        .strip_prefix("stack=\"")
        .and_then(|frames| frames.strip_suffix('"'))
        .unwrap_or_else(|| panic!("a stack label: {stack}"))
        .split("\\n") // the text format's escape of the frames' separator
        .collect();
    assert_eq!(
        frames.first(),
        Some(&function.as_str()),
        "innermost first: {frames:?}"
    );
    assert!(
        frames.contains(&syscall_caller()) && !frames.contains(&"??"),
        "every frame named, through {}: {frames:?}",
        syscall_caller()
    );
}

// --- uprobe, uretprobe, USDT ---------------------------------------------------

/// tests/fixtures/attach_types_target.c, compiled into a directory of its
/// own (the uprobe fixtures name it without a path: bpfsnap gets the
/// directory first in its PATH).
struct Target {
    dir: PathBuf,
}

impl Target {
    const NAME: &'static str = "attach_types_target";

    /// The program, compiled once per run of these tests (a compile takes
    /// seconds in the matrix's emulated VMs) into cargo's directory for
    /// integration tests' files, or into a temporary directory where that is
    /// read-only (the VMs see /work read-only; their /tmp goes with them).
    fn get() -> &'static Target {
        static TARGET: OnceLock<Target> = OnceLock::new();
        TARGET.get_or_init(|| {
            let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("attach_types");
            let writable =
                std::fs::create_dir_all(&dir).is_ok() && tempfile::tempfile_in(&dir).is_ok();
            let dir = if writable {
                dir
            } else {
                tempfile::tempdir().expect("tempdir").keep()
            };
            Target::build(&dir);
            Target { dir }
        })
    }

    /// Compiled as a fixed-address executable (-no-pie): libbpf attaches
    /// USDT probes in position-independent binaries, for every process, only
    /// on kernels with BPF cookies (5.15+), and the matrix runs 5.10 too.
    fn build(dir: &Path) {
        let output = Command::new("cc")
            .args(["-O2", "-Wall", "-Werror", "-no-pie", "-o"])
            .arg(dir.join(Target::NAME))
            .arg(common::source_file("tests/fixtures/attach_types_target.c"))
            .output()
            .expect("run cc (make test-deps installs gcc)");
        assert!(
            output.status.success(),
            "compiling attach_types_target.c failed (its USDT probe needs <sys/sdt.h>: \
             apt-get install systemtap-sdt-dev):\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    fn dir(&self) -> &Path {
        &self.dir
    }

    /// Runs the program with `args` (w:X:N, t:V:N) to its end; its pid and
    /// what it printed (the sum of the work results).
    fn run(&self, args: &[&str]) -> (u32, i64) {
        let child = Command::new(self.dir().join(Target::NAME))
            .args(args)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("run attach_types_target");
        let pid = child.id();
        let output = child
            .wait_with_output()
            .expect("wait for attach_types_target");
        assert!(output.status.success(), "attach_types_target {args:?}");
        let sum = String::from_utf8_lossy(&output.stdout).trim().parse();
        (pid, sum.expect("attach_types_target prints a number"))
    }
}

/// Every sample of bpfsnap_attach_types_user_total, which only the test's
/// program feeds, checked to be of process `pid`: by their other labels.
fn user_probe_hits(text: &str, pid: u32) -> BTreeMap<String, f64> {
    let metric = "bpfsnap_attach_types_user_total";
    let ours = series_after(text, metric, &format!("pid=\"{pid}\","));
    assert_eq!(
        ours.len(),
        common::samples(text, metric).len(),
        "only the test's program {pid} hits the probes\n{text}"
    );
    ours
}

/// A uprobe and a uretprobe on a function of the test's program count its
/// calls exactly, with the argument passed and the result returned.
#[test]
fn uprobe_and_uretprobe_count_the_calls_in_a_test_program_exactly() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    if !feature_present(common::test_name!(), uprobes_missing()) {
        return;
    }
    let target = Target::get();
    let (_dir, config) = install("attach_types_uprobe", "attach_types_user.yaml");
    let mut ran = None;
    let text = run_with_load(&config, Some(target.dir()), || {
        ran = Some(target.run(&["w:7:150", "w:11:42"]));
    });
    let (pid, sum) = ran.unwrap();
    assert_eq!(sum, 150 * 15 + 42 * 23, "attach_types_work(x) = 2x + 1");
    let hits = |probe: &str, value: u32, n: u32| {
        (format!("probe=\"{probe}\",value=\"{value}\""), f64::from(n))
    };
    assert_eq!(
        user_probe_hits(&text, pid),
        expected(&[
            hits("uprobe", 7, 150),
            hits("uprobe", 11, 42),
            hits("uretprobe", 15, 150),
            hits("uretprobe", 23, 42),
        ]),
        "{text}"
    );
}

/// The USDT probe bpfsnap_test:tick of the test's program counts its
/// firings exactly, by the argument it fired with.
#[test]
fn a_usdt_probe_in_a_test_program_counts_its_firings_exactly() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    if !feature_present(common::test_name!(), uprobes_missing()) {
        return;
    }
    let target = Target::get();
    let (_dir, config) = install("attach_types_usdt", "attach_types_user.yaml");
    let mut pid = None;
    let text = run_with_load(&config, Some(target.dir()), || {
        pid = Some(target.run(&["t:42:120", "t:4242:33"]).0);
    });
    assert_eq!(
        user_probe_hits(&text, pid.unwrap()),
        expected(&[
            ("probe=\"usdt\",value=\"42\"".into(), 120.0),
            ("probe=\"usdt\",value=\"4242\"".into(), 33.0),
        ]),
        "{text}"
    );
}

// --- kprobes on functions the kernel does not have ---------------------------

/// A kprobe on a function no kernel has: bpfsnap fails in one line naming
/// the program, its section and the missing function.
#[test]
fn a_kprobe_on_a_missing_function_is_refused_in_one_line() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    if !feature_present(common::test_name!(), kprobes_missing()) {
        return;
    }
    let (_dir, config) = install("attach_types_missing", "attach_types_missing.yaml");
    let stderr = run_refused(&config);
    assert_missing_function(
        &stderr,
        "attach_types_missing: cannot attach program missing_function \
         (section kprobe/bpfsnap_no_such_function)",
        "bpfsnap_no_such_function",
    );
}

/// Checks bpfsnap's one-line error about a kprobe on `function`, which this
/// kernel does not have: it names the program and its section, then says
/// that the function is not there.
fn assert_missing_function(stderr: &str, what: &str, function: &str) {
    assert_eq!(
        stderr,
        format!(
            "bpfsnap: error: {what}: this kernel has no function {function} to probe \
             (/proc/kallsyms lists those it has; a module's functions are there only while \
             it is loaded)"
        )
    );
}

/// Why the dummy module cannot show a module function appearing, if it
/// cannot: it must exist and not be loaded yet. In the kernel matrix's
/// throwaway VMs a dummy module something loaded earlier is removed first;
/// elsewhere that would delete the machine's dummy links.
fn dummy_module_missing() -> Option<String> {
    let loaded = || Path::new("/sys/module/dummy").exists();
    if loaded() && matrix_kernel().is_some() {
        let _ = Command::new("modprobe").args(["-r", "dummy"]).status();
    }
    if loaded() {
        return Some("the dummy module is loaded already (or built in)".into());
    }
    let available = Command::new("modprobe")
        .args(["--dry-run", "dummy"])
        .output()
        .is_ok_and(|output| output.status.success());
    (!available).then(|| "there is no dummy module (modprobe --dry-run dummy)".into())
}

/// A module this test loaded; removed on drop if the test did not remove it.
struct LoadedModule(Option<&'static str>);

impl LoadedModule {
    fn load(name: &'static str) -> LoadedModule {
        let status = Command::new("modprobe")
            .arg(name)
            .status()
            .expect("run modprobe");
        assert!(status.success(), "modprobe {name}: {status}");
        LoadedModule(Some(name))
    }

    fn remove(mut self) {
        let name = self.0.take().expect("loaded");
        let status = Command::new("modprobe")
            .args(["-r", name])
            .status()
            .expect("run modprobe");
        assert!(status.success(), "modprobe -r {name}: {status}");
        assert!(
            !Path::new("/sys/module").join(name).exists(),
            "{name} is gone"
        );
    }
}

impl Drop for LoadedModule {
    fn drop(&mut self) {
        if let Some(name) = self.0 {
            let _ = Command::new("modprobe").args(["-r", name]).status();
        }
    }
}

/// Adds dummy links `names`, then deletes them, in a network namespace of
/// their own (nothing to clash with or leave behind).
fn add_and_delete_dummy_links(names: &[&str]) {
    let mut batch: String = names
        .iter()
        .map(|name| format!("link add {name} type dummy\n"))
        .collect();
    batch.extend(names.iter().map(|name| format!("link del {name}\n")));
    let mut child = Command::new("unshare")
        .args(["--net", "ip", "-batch", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("run unshare and ip (make test-deps installs util-linux and iproute2)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(batch.as_bytes())
        .expect("write ip's batch");
    let status = child.wait().expect("wait for ip");
    assert!(status.success(), "ip -batch: {batch}");
}

/// A kprobe on dummy_dev_init: refused in one line while the dummy module is
/// not loaded; after `modprobe dummy`, it counts exactly the links the test
/// adds, by name; the module can be removed afterwards.
#[test]
fn a_kprobe_on_a_module_function_attaches_once_the_module_is_loaded() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    if !feature_present(
        common::test_name!(),
        kprobes_missing().or_else(dummy_module_missing),
    ) {
        return;
    }
    let (_dir, config) = install("attach_types_module", "attach_types_module.yaml");
    let stderr = run_refused(&config);
    assert_missing_function(
        &stderr,
        "attach_types_module: cannot attach program dummy_init (section kprobe/dummy_dev_init)",
        "dummy_dev_init",
    );

    let module = LoadedModule::load("dummy");
    let links = ["bsnap0", "bsnap1", "bsnap2"];
    let text = run_with_load(&config, None, || add_and_delete_dummy_links(&links));
    let added: Vec<(String, f64)> = links
        .iter()
        .map(|link| (format!("link=\"{link}\""), 1.0))
        .collect();
    assert_eq!(
        series_after(&text, "bpfsnap_attach_types_dummy_inits_total", "")
            .into_iter()
            .filter(|(labels, _)| labels.starts_with("link=\"bsnap"))
            .collect::<BTreeMap<_, _>>(),
        expected(&added),
        "{text}"
    );
    module.remove();
}
