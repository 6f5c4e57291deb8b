//! The built-ins on the kernel these tests run on, whatever it is: `make
//! test` runs them on the host and, through the kernel matrix
//! (tools/vm/matrix.sh), in a VM per Debian kernel.
//!
//! - The default run exits 0 with `bpfsnap_up 1`, and what it leaves out is
//!   exactly what `bpfsnap list` says cannot run here, with the same reason.
//! - Each built-in named alone runs, or is refused in one line with that
//!   reason and a non-zero exit; at least as many run as the matrix expects of
//!   the kernel (`BPFSNAP_MIN_BUILTINS`: a number or `all`).
//! - Maps are read after capabilities are dropped, keeping exactly the one
//!   the kernel wants for bpf() calls (none on most kernels).

mod common;

use std::collections::BTreeMap;
use std::io::Write as _;

use common::{path_str, Running};

/// Each built-in and, if it cannot run here, why (`bpfsnap list --long`).
fn availability() -> BTreeMap<String, (bool, Option<String>)> {
    let output = common::bpfsnap().args(["list", "--long"]).output().unwrap();
    assert!(output.status.success(), "bpfsnap list --long failed");
    let text = String::from_utf8(output.stdout).unwrap();
    let mut builtins = BTreeMap::new();
    let mut current: Option<(String, bool)> = None;
    for line in text.lines() {
        if let Some((name, _)) = line.split_once(" — ") {
            current = Some((name.to_string(), false));
        } else if let Some(default) = line.strip_prefix("  default set: ") {
            if let Some((_, is_default)) = &mut current {
                *is_default = default == "yes";
            }
        } else if let Some(here) = line.strip_prefix("  available here: ") {
            let (name, default) = current.take().expect("a built-in before its availability");
            let reason = here.strip_prefix("no: ").map(str::to_string);
            assert!(reason.is_some() || here == "yes", "{line}");
            builtins.insert(name, (default, reason));
        }
    }
    assert_eq!(builtins.len(), bpfsnap::builtin::BUILTINS.len(), "{text}");
    builtins
}

/// How many built-ins must run here: `BPFSNAP_MIN_BUILTINS` (the matrix sets
/// it per kernel, `make test` to `all` for the host), else none.
fn minimum_running() -> usize {
    match std::env::var("BPFSNAP_MIN_BUILTINS").as_deref() {
        Ok("all") => bpfsnap::builtin::BUILTINS.len(),
        Ok(number) => number
            .parse()
            .expect("BPFSNAP_MIN_BUILTINS: a number or all"),
        Err(_) => 0,
    }
}

#[test]
fn the_default_run_works_and_leaves_out_only_what_cannot_run_here() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    let builtins = availability();
    let dir = common::output_dir();
    let file = dir.path().join("bpfsnap.prom");
    let output = common::bpfsnap()
        .args(["run", "-v", "--for", "1s", "--output", path_str(&file)])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let text = std::fs::read_to_string(&file).unwrap();
    assert_eq!(common::sample(&text, "bpfsnap_up"), Some(1.0), "{text}");
    for (name, (default, reason)) in &builtins {
        let up = common::sample(&text, &format!("bpfsnap_config_up{{config=\"{name}\"}}"));
        match (default, reason) {
            (true, None) => assert_eq!(up, Some(1.0), "{name} runs in the default set\n{text}"),
            (true, Some(reason)) => {
                assert_eq!(up, None, "{name} is left out\n{text}");
                assert!(
                    stderr.contains(&format!("built-in {name} left out: {reason}")),
                    "-v says why {name} is left out ({reason}):\n{stderr}"
                );
            }
            (false, _) => assert_eq!(up, None, "{name} is not in the default set"),
        }
    }
    common::promtool_check(&text);
}

/// `bpfsnap run --builtin NAME` for a moment, writing into a directory of
/// its own under `dir` (outputs in one directory must not share families):
/// whether it ran; if `list` says it cannot run here, asserts it is refused
/// in one line with that reason.
fn run_alone(name: &str, reason: Option<&str>, dir: &std::path::Path) -> bool {
    let dir = dir.join(name);
    std::fs::create_dir(&dir).unwrap();
    let file = dir.join("out.prom");
    let output = common::bpfsnap()
        .args(["run", "--builtin", name, "--for", "200ms"])
        .args(["--output", path_str(&file)])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let text = std::fs::read_to_string(&file).unwrap_or_default();
    let Some(reason) = reason else {
        assert!(output.status.success(), "{name}: {stderr}");
        assert_eq!(common::sample(&text, "bpfsnap_up"), Some(1.0), "{name}");
        return true;
    };
    assert_eq!(output.status.code(), Some(1), "{name}: {stderr}");
    assert_eq!(
        stderr.trim_end(),
        format!("bpfsnap: error: {name}: cannot run on this kernel: {reason}"),
        "{name} is refused in one line"
    );
    assert_eq!(common::sample(&text, "bpfsnap_up"), Some(0.0), "{name}");
    false
}

#[test]
fn each_builtin_runs_or_is_refused_in_one_line() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    let dir = common::output_dir();
    let builtins: Vec<(String, Option<String>)> = availability()
        .into_iter()
        .map(|(name, (_, reason))| (name, reason))
        .collect();
    // Two at a time: in the matrix's emulated VMs each run takes seconds of
    // CPU, and they have two.
    let halves = builtins.split_at(builtins.len() / 2);
    let mut running: Vec<String> = std::thread::scope(|scope| {
        let runs = [halves.0, halves.1].map(|half| {
            let dir = dir.path();
            scope.spawn(move || {
                half.iter()
                    .filter(|(name, reason)| run_alone(name, reason.as_deref(), dir))
                    .map(|(name, _)| name.clone())
                    .collect::<Vec<_>>()
            })
        });
        runs.into_iter()
            .flat_map(|run| run.join().expect("a run thread"))
            .collect()
    });
    running.sort();
    let _ = writeln!(
        std::io::stderr(),
        "{} built-ins run here: {}",
        running.len(),
        running.join(", ")
    );
    assert!(
        running.len() >= minimum_running(),
        "{} built-ins run on this kernel, {} should: {running:?}",
        running.len(),
        minimum_running()
    );
}

/// Whether reading a map needs a capability on this kernel, found the way a
/// user would: this test's own thread lowers its effective capabilities
/// (they are per thread) and reads a map it made; the answer is the lowest
/// of none, CAP_BPF alone, CAP_SYS_ADMIN alone that reads.
fn capability_reads_need() -> Option<u32> {
    use libbpf_rs::{MapCore, MapFlags, MapHandle, MapType};
    let opts = libbpf_sys::bpf_map_create_opts {
        sz: std::mem::size_of::<libbpf_sys::bpf_map_create_opts>() as _,
        ..Default::default()
    };
    let map = MapHandle::create(MapType::Array, Some("caps_test"), 4, 8, 1, &opts).unwrap();
    let mut header = [0x2008_0522u32, 0]; // _LINUX_CAPABILITY_VERSION_3, this thread
    let mut held = [0u32; 6]; // effective, permitted, inheritable × 2
    let capget = unsafe { libc::syscall(libc::SYS_capget, header.as_mut_ptr(), held.as_mut_ptr()) };
    assert_eq!(capget, 0);
    let mut reads_with = |cap: Option<u32>| {
        let mut sets = held;
        sets[0] = cap.filter(|c| *c < 32).map_or(0, |c| 1 << c);
        sets[3] = cap.filter(|c| *c >= 32).map_or(0, |c| 1 << (c - 32));
        let rc = unsafe { libc::syscall(libc::SYS_capset, header.as_mut_ptr(), sets.as_ptr()) };
        assert_eq!(rc, 0, "capset");
        map.lookup(&0u32.to_ne_bytes(), MapFlags::ANY).is_ok()
    };
    let needed = [None, Some(39), Some(21)]
        .into_iter()
        .find(|cap| reads_with(*cap))
        .expect("the map reads with CAP_BPF or CAP_SYS_ADMIN");
    let rc = unsafe { libc::syscall(libc::SYS_capset, header.as_mut_ptr(), held.as_ptr()) };
    assert_eq!(rc, 0, "restoring this thread's capabilities");
    needed
}

/// The effective capabilities of process `pid`, as a mask.
fn effective_capabilities(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let hex = status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .expect("CapEff in /proc/PID/status");
    u64::from_str_radix(hex.trim(), 16).unwrap()
}

#[test]
fn maps_are_read_after_the_drop_keeping_only_what_this_kernel_needs() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    let needed = capability_reads_need();
    let dir = common::output_dir();
    let file = dir.path().join("caps.prom");
    let mut run = Running::spawn(&[
        "run",
        "-v",
        "--builtin",
        "syscalls",
        "--for",
        "60s",
        "--output",
        path_str(&file),
    ]);
    run.wait_for("sampling");
    let expected = needed.map_or(0, |cap| 1u64 << cap);
    assert_eq!(
        effective_capabilities(run.child.id()),
        expected,
        "bpfsnap keeps exactly the capability map reads need here ({needed:?})"
    );
    common::getpid_calls(1000);
    run.signal(libc::SIGINT);
    let (status, _, stderr) = run.finish();
    assert!(status.success(), "{stderr}");
    let says_it_keeps = stderr.contains("keeping CAP_");
    assert_eq!(
        says_it_keeps,
        needed.is_some(),
        "-v says what it keeps:\n{stderr}"
    );
    let text = std::fs::read_to_string(&file).unwrap();
    assert_eq!(common::sample(&text, "bpfsnap_up"), Some(1.0), "{text}");
    let getpid = common::sample(&text, "bpfsnap_syscalls_total{syscall=\"getpid\"}");
    assert!(getpid.is_some_and(|n| n >= 1000.0), "{text}");
}
