//! A pinned run that fails leaves bpffs as it found it: a refused
//! selection, a verifier rejection in the second of two configs, an
//! unwritable output and a failed write, each on an empty pin directory and
//! on one holding an earlier run's set. Afterwards the directory holds the
//! same pinned objects (paths and kernel ids) and no map of the failed run
//! is left in the kernel. A run killed between two configs' pins is
//! recovered by the next one, which says what it removed and adopted.
//!
//! The tests here count every BPF map in the kernel, so they take turns
//! (and the test binaries of `cargo test` run one at a time).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Instant;

use common::{path_str, Mount, PinDir, Running, SyscallGate, Trap, PATIENCE};

/// Held by each test: they count the kernel's maps.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Every object pinned under `dir`, by path: `map ID`, `link ID`, or `dir`.
fn pinned_objects(dir: &Path) -> BTreeMap<String, String> {
    let mut objects = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        for entry in fs::read_dir(&path).into_iter().flatten().flatten() {
            let path = entry.path();
            let name = path.strip_prefix(dir).unwrap().display().to_string();
            if path.is_dir() {
                objects.insert(name, "dir".to_string());
                stack.push(path);
            } else {
                objects.insert(name, object_id(&path));
            }
        }
    }
    objects
}

/// The kind and kernel id of the BPF object pinned at `path`.
fn object_id(path: &Path) -> String {
    let c_path = std::ffi::CString::new(path_str(path)).unwrap();
    // SAFETY: a valid path; the fd is closed below.
    let fd = unsafe { libbpf_sys::bpf_obj_get(c_path.as_ptr()) };
    assert!(fd >= 0, "open pinned {}", path.display());
    // Map and link info both start with (type, id); the kernel fills the
    // struct of the object's kind.
    let mut info = [0u32; 64];
    let mut len = std::mem::size_of_val(&info) as u32;
    // SAFETY: `info` has room for `len` bytes.
    let rc = unsafe { libbpf_sys::bpf_obj_get_info_by_fd(fd, info.as_mut_ptr().cast(), &mut len) };
    // SAFETY: our fd.
    unsafe { libc::close(fd) };
    assert_eq!(rc, 0, "info of {}", path.display());
    let kind = match path.parent().and_then(Path::file_name) {
        Some(parent) if parent == "links" => "link",
        _ => "map",
    };
    format!("{kind} {}", info[1])
}

/// Ids of every BPF map in the kernel.
fn map_ids() -> BTreeSet<u64> {
    let output = Command::new("bpftool")
        .args(["map", "show", "--json"])
        .output()
        .expect("run bpftool (make test-deps installs it)");
    assert!(output.status.success(), "bpftool map show");
    let maps: Vec<serde_json::Value> = serde_json::from_slice(&output.stdout).expect("JSON");
    maps.iter().filter_map(|m| m["id"].as_u64()).collect()
}

/// Maps created since `before` that are still there after [`PATIENCE`] (the
/// kernel frees a map once the programs using it are freed, after an RCU
/// grace period: gone is a poll).
fn maps_left_since(before: &BTreeSet<u64>) -> Vec<u64> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let left: Vec<u64> = map_ids().difference(before).copied().collect();
        if left.is_empty() || Instant::now() >= deadline {
            return left;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// `bpfsnap run --for 100ms --pin DIR ARGS`: (exit code, stderr).
fn pinned_run(pin: &Path, args: &[&str]) -> (Option<i32>, String) {
    let output = common::bpfsnap()
        .args(["run", "-v", "--for", "100ms", "--pin", path_str(pin)])
        .args(args)
        .output()
        .expect("run bpfsnap");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output.status.code(), stderr)
}

/// A directory with the bad_verifier fixture as `bad_verifier.toml`: its
/// object loads nowhere (the verifier refuses it).
fn bad_verifier_config() -> tempfile::TempDir {
    let dir = common::config_dir();
    fs::copy(
        common::source_file("tests/fixtures/events.toml"),
        dir.path().join("bad_verifier.toml"),
    )
    .unwrap();
    fs::copy(
        common::fixture_object("bad_verifier"),
        dir.path().join("bad_verifier.bpf.o"),
    )
    .unwrap();
    dir
}

#[test]
fn failed_pinned_runs_leave_bpffs_as_they_found_it() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let configs = bad_verifier_config();
    let bad = configs.path().join("bad_verifier.toml");
    let out = common::output_dir();
    let output = out.path().join("bpfsnap.prom");
    let read_only_dir = common::output_dir();
    let _read_only = Mount::read_only(read_only_dir.path());
    let unwritable = read_only_dir.path().join("bpfsnap.prom");
    let output_arg = ["--output", path_str(&output)];
    // (what, arguments, exit code, error, whether it fails after pinning)
    let cases: [(&str, Vec<&str>, i32, &str, bool); 4] = [
        (
            "a refused selection",
            [&["-b", "syscalls,exits"][..], &output_arg].concat(),
            2,
            "exits: its event-stream counters",
            false,
        ),
        (
            "a verifier rejection in the second of two configs",
            [&["-b", "syscalls", path_str(&bad)][..], &output_arg].concat(),
            1,
            "the verifier rejected program count_unchecked",
            true,
        ),
        (
            "an unwritable output",
            vec!["-b", "syscalls", "--output", path_str(&unwritable)],
            1,
            "Read-only file system",
            false,
        ),
        (
            "a failed write",
            vec!["-b", "syscalls", "--output", "/dev/full"],
            1,
            "No space left on device",
            true,
        ),
    ];
    for earlier in [false, true] {
        let pin = PinDir::new(if earlier { "earlier" } else { "empty" });
        if earlier {
            let (code, stderr) =
                pinned_run(&pin.0, &[&["-b", "syscalls"][..], &output_arg].concat());
            assert_eq!(code, Some(0), "the earlier run: {stderr}");
        }
        for (what, args, want_code, want_error, pins) in &cases {
            let what = format!(
                "{what}, {} pin directory",
                if earlier {
                    "an earlier run's"
                } else {
                    "an empty"
                }
            );
            let before = pinned_objects(&pin.0);
            let maps_before = map_ids();
            let (code, stderr) = pinned_run(&pin.0, args);
            assert_eq!(code, Some(*want_code), "{what}: {stderr}");
            assert!(stderr.contains(want_error), "{what}: {stderr}");
            // The run's own error comes last (a failed config's is logged
            // before, with the verifier's log).
            let error = stderr
                .lines()
                .rfind(|line| line.starts_with("bpfsnap: error:"))
                .unwrap_or_else(|| panic!("{what}: no error line: {stderr}"));
            let said = match (pins, earlier) {
                (false, _) => "--pin: this run pinned nothing",
                (true, false) => "--pin: nothing is left pinned",
                (true, true) => {
                    "left nothing pinned; the sets of earlier runs (syscalls) are as they were"
                }
            };
            assert!(
                error.contains(said),
                "{what}: the error says what is pinned: {error}"
            );
            assert_eq!(pinned_objects(&pin.0), before, "{what}: the pin directory");
            assert_eq!(
                maps_left_since(&maps_before),
                Vec::<u64>::new(),
                "{what}: maps left"
            );
        }
    }
}

/// bpf(BPF_OBJ_PIN) paths of a run are `PIN/CONFIG/...`: the config's name.
fn config_of(path: &[u8], pin: &Path) -> Option<String> {
    let path = PathBuf::from(String::from_utf8_lossy(path).into_owned());
    let rest = path.strip_prefix(pin).ok()?;
    Some(rest.iter().next()?.to_string_lossy().into_owned())
}

/// SIGKILL at a pin of one config after the other's set was complete: the
/// next run adopts the complete set, removes the half-pinned one, pins it
/// again and counts; `stop` removes everything.
#[test]
fn sigkill_between_two_configs_pins_is_recovered() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let pin = PinDir::new("killed");
    let out = common::output_dir();
    let output = out.path().join("bpfsnap.prom");
    let run_args = [
        "run",
        "-b",
        "syscalls,runqlat",
        "--for",
        "100ms",
        "--pin",
        path_str(&pin.0),
        "--output",
        path_str(&output),
    ];
    let mut command = common::bpfsnap();
    command.args(run_args);
    let socket = SyscallGate::arm(
        &mut command,
        &[Trap::Arg0(libc::SYS_bpf, common::BPF_OBJ_PIN)],
    );
    let running = Running::spawn_command(command);
    let gate = socket.connect();
    let mut complete: Option<String> = None;
    let mut killed = false;
    while let Some(call) = gate.next() {
        let path = call.bpf_pin_path().expect("the pin's path");
        let config = config_of(&path, &pin.0).expect("a pin under the pin directory");
        if complete.as_ref().is_some_and(|done| *done != config) {
            // Not resumed: this pin never happens. Not waiting for the gate
            // to see the exit: some kernels release the filter (and hang up)
            // only once the process is reaped.
            running.signal(libc::SIGKILL);
            killed = true;
            break;
        }
        gate.resume(&call);
        if path.ends_with(b"/state") {
            // The set's last pin: wait until it is there before going on.
            let state = pin.0.join(&config).join("state");
            let deadline = Instant::now() + PATIENCE;
            while !state.exists() && Instant::now() < deadline {
                std::thread::yield_now();
            }
            complete = Some(config);
        }
    }
    let (status, _, _) = running.finish();
    assert!(killed, "the run was killed between the two configs' pins");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    let adopted = complete.unwrap();
    let half = if adopted == "syscalls" {
        "runqlat"
    } else {
        "syscalls"
    };

    let mut again = vec!["-v"];
    again.extend_from_slice(&run_args);
    let result = common::bpfsnap()
        .args(&again)
        .output()
        .expect("run bpfsnap");
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(result.status.success(), "the next run: {stderr}");
    assert!(
        stderr.contains(&format!(
            "removing {half}: an interrupted run left it half-pinned"
        )),
        "-v says what it removed: {stderr}"
    );
    assert!(
        stderr.contains(&format!("{adopted}: counting on in the set pinned in")),
        "-v says what it adopted: {stderr}"
    );
    let text = fs::read_to_string(&output).unwrap();
    let calls: f64 = text
        .lines()
        .filter(|line| line.starts_with("bpfsnap_syscalls_total{"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(calls > 0.0, "syscalls counts: {text}");
    for config in ["syscalls", "runqlat"] {
        assert!(
            pin.0.join(config).join("state").exists(),
            "{config} is pinned"
        );
    }
    pin.stop();
    assert!(!pin.0.exists(), "stop removed everything");
}

/// A link the kernel refuses to pin (the gate fails its BPF_OBJ_PIN with
/// EINVAL, as a kernel without BPF perf links fails a perf event's): the run
/// says so with the errno and the path, writes `bpfsnap_pinned_links 0`,
/// keeps the maps pinned and counts in its window only. The next run, whose
/// pins the kernel takes, pins the links: from then on calls made between
/// runs are counted, and the counters carried on all along.
#[test]
fn a_refused_link_pin_is_said_and_counted_in_windows_until_the_kernel_takes_it() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let pin = PinDir::new(common::test_name!());
    let dir = common::output_dir();
    let output = dir.path().join("bpfsnap.prom");
    let args = |window: &'static str| {
        let pin = path_str(&pin.0).to_string();
        let output = path_str(&output).to_string();
        vec![
            "run".to_string(),
            "-v".into(),
            "-b".into(),
            "syscalls".into(),
            "--for".into(),
            window.into(),
            "--pin".into(),
            pin,
            "--output".into(),
            output,
        ]
    };
    let rare = format!(
        "bpfsnap_syscalls_total{{syscall=\"{}\"}}",
        common::RARE_SYSCALL
    );
    let links = "bpfsnap_pinned_links{config=\"syscalls\"}";
    let before = common::loaded_program_ids();

    let mut command = common::bpfsnap();
    command.args(args("1h"));
    let socket = SyscallGate::arm(
        &mut command,
        &[Trap::Arg0(libc::SYS_bpf, common::BPF_OBJ_PIN)],
    );
    let mut running = Running::spawn_command(command);
    let gate = socket.connect();
    let refused = gate.stop_at("the link's pin", |call| {
        call.bpf_pin_path()
            .is_some_and(|path| String::from_utf8_lossy(&path).contains("/links/"))
    });
    let refused_at = String::from_utf8_lossy(&refused.bpf_pin_path().unwrap()).into_owned();
    gate.fail(&refused, libc::EINVAL);
    let released = gate.release();
    running.wait_for("sampling");
    common::rare_syscalls(77);
    running.signal(libc::SIGINT);
    let (status, _, stderr) = running.finish();
    released.join().unwrap();
    assert!(status.success(), "{stderr}");
    let said = format!(
        "the kernel refused to pin the link of program syscalls_enter at {refused_at}: EINVAL (Invalid argument); its maps stay pinned"
    );
    assert!(
        stderr.contains(&said),
        "the warning names errno and path: {stderr}"
    );
    assert!(!stderr.contains("security policy"), "no guess: {stderr}");
    let first = fs::read_to_string(&output).unwrap();
    assert_eq!(common::sample(&first, links), Some(0.0), "{first}");
    assert_eq!(common::sample(&first, &rare), Some(77.0), "{first}");
    let ours: BTreeSet<u64> = common::loaded_program_ids()
        .difference(&before)
        .copied()
        .collect();
    assert!(
        common::still_loaded_after_exit(&ours).is_empty(),
        "without pinned links the programs go with the run"
    );

    // Not counted: nothing is attached.
    common::rare_syscalls(50);
    let run = || {
        let ran = common::bpfsnap().args(args("100ms")).output().unwrap();
        assert!(
            ran.status.success(),
            "{}",
            String::from_utf8_lossy(&ran.stderr)
        );
        fs::read_to_string(&output).unwrap()
    };
    let second = run();
    assert!(common::sample(&second, links).unwrap() >= 1.0, "{second}");
    assert_eq!(common::sample(&second, &rare), Some(77.0), "{second}");
    // Counted: the links are pinned now.
    common::rare_syscalls(33);
    let third = run();
    assert_eq!(common::sample(&third, &rare), Some(110.0), "{third}");
    let sampled = |text: &str| {
        common::sample(text, "bpfsnap_sampled_seconds_total{config=\"syscalls\"}").unwrap()
    };
    assert!(
        sampled(&first) < sampled(&second) && sampled(&second) < sampled(&third),
        "the time counted only grows"
    );
}
