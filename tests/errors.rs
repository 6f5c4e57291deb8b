//! Bad input and missing privileges: a one-line error saying what to do, a
//! non-zero exit, no panic, and the previous output untouched.

mod common;

use std::fs;

use common::path_str;

/// Runs bpfsnap expecting failure with exit status `code` (1 run time, 2 bad
/// input); returns its stderr, checked to be one `bpfsnap: error:` line.
fn fails(code: i32, args: &[&str]) -> String {
    let output = common::bpfsnap().args(args).output().expect("run bpfsnap");
    failure(&output, code, &format!("{args:?}"))
}

/// Checks that `output` (of `what`) is a failure with exit status `code` and
/// one `bpfsnap: error:` line; returns that line.
fn failure(output: &std::process::Output, code: i32, what: &str) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(
        output.status.code(),
        Some(code),
        "exit status for {what}: {stderr}"
    );
    assert!(
        stderr.starts_with("bpfsnap: error: ") && stderr.lines().count() == 1,
        "one-line error: {stderr:?}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

#[test]
fn missing_output_directory_fails_before_loading() {
    let dir = common::output_dir();
    let output = dir.path().join("no/such/dir/bpfsnap.prom");
    let stderr = fails(1, &["run", "--for", "1s", "--output", path_str(&output)]);
    assert!(stderr.contains("does not exist: create it"), "{stderr}");
}

#[test]
fn output_that_is_a_directory_is_refused() {
    let dir = common::output_dir();
    let stderr = fails(1, &["run", "--for", "1s", "--output", path_str(dir.path())]);
    assert!(stderr.contains("is a directory"), "{stderr}");
}

#[test]
fn unknown_builtin_lists_the_known_ones() {
    let stderr = fails(2, &["run", "--builtin", "nosuch", "--for", "1s"]);
    assert!(
        stderr.contains("no built-in program \"nosuch\": choose from")
            && stderr.contains("syscalls"),
        "{stderr}"
    );
}

#[test]
fn bad_window_is_a_usage_error() {
    for window in ["soon", "0s", "-1s"] {
        let output = common::bpfsnap()
            .args(["run", &format!("--for={window}")])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{window}: {stderr}");
        assert!(stderr.contains("--for"), "{stderr}");
    }
}

#[test]
fn bad_listen_addresses_and_telemetry_paths_are_usage_errors() {
    for (args, says) in [
        (&["--listen", "9435"][..], "has no port"),
        (&["--web.listen-address", "::1:9435"][..], "in brackets"),
        (&["--listen", "localhost:http"][..], "a number up to 65535"),
        (&["--web.telemetry-path", "metrics"][..], "starts with /"),
        (&["--web.telemetry-path", "/a b"][..], "no spaces"),
    ] {
        let output = common::bpfsnap().arg("serve").args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
}

/// An address that does not resolve is bad input, found before anything is
/// attached; one that is taken is a failure at run time; both say which.
#[test]
fn serve_names_the_address_it_cannot_listen_on() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    let stderr = fails(
        2,
        &[
            "serve",
            "-b",
            "syscalls",
            "--listen",
            "no-such-host.invalid:9435",
        ],
    );
    assert!(
        stderr.contains("cannot resolve listen address no-such-host.invalid:9435"),
        "{stderr}"
    );
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let stderr = fails(1, &["serve", "-b", "syscalls", "--listen", &address]);
    assert!(
        stderr.contains(&format!("cannot listen on {address}"))
            && stderr.contains("Address already in use"),
        "{stderr}"
    );
}

#[test]
fn count_without_interval_is_a_usage_error() {
    for args in [
        &["run", "--count", "3"][..],
        &["run", "--count", "3", "--for", "200ms"][..],
    ] {
        let output = common::bpfsnap().args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("--count"), "{args:?}: {stderr}");
    }
}

#[test]
fn unprivileged_run_says_which_capabilities_and_keeps_the_old_file() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    let dir = common::output_dir();
    let output = dir.path().join("bpfsnap.prom");
    fs::write(&output, "old 1\n").unwrap();
    let result = common::bpfsnap_as_nobody()
        .args(["run", "--for", "1s", "--output", path_str(&output)])
        .output()
        .expect("run setpriv (util-linux)");
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert_eq!(result.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("CAP_BPF") && stderr.contains("CAP_PERFMON") && stderr.lines().count() == 1,
        "{stderr}"
    );
    assert_eq!(fs::read_to_string(&output).unwrap(), "old 1\n");
    assert_eq!(common::files_in(dir.path()), [output], "no temp file left");
}

/// Outputs in one directory may share self-metric families (their series
/// carry each output's label), not a config's metrics, nor a family with
/// another HELP or TYPE: node_exporter would drop series of one file. The
/// first is refused before any probe is loaded, the second at the write.
#[test]
fn outputs_sharing_a_directory_are_refused_what_node_exporter_would_drop() {
    let dir = common::output_dir();
    let output = dir.path().join("bpfsnap.prom");
    std::fs::write(
        dir.path().join("fast.prom"),
        "# HELP bpfsnap_syscalls_total S.\n# TYPE bpfsnap_syscalls_total counter\n\
         bpfsnap_syscalls_total{syscall=\"read\"} 1\n",
    )
    .unwrap();
    let args = [
        "run",
        "--builtin",
        "syscalls",
        "--for",
        "1s",
        "--output",
        path_str(&output),
    ];
    let stderr = fails(1, &args);
    assert!(
        stderr.contains(
            "fast.prom already defines bpfsnap_syscalls_total, which this output writes too"
        ),
        "{stderr}"
    );
    assert!(!output.exists());

    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    std::fs::write(
        dir.path().join("fast.prom"),
        "# HELP bpfsnap_up An older help text.\n# TYPE bpfsnap_up gauge\nbpfsnap_up{output=\"fast\"} 1\n",
    )
    .unwrap();
    let stderr = fails(1, &args);
    assert!(
        stderr.contains("fast.prom defines bpfsnap_up with another HELP or TYPE"),
        "{stderr}"
    );
    assert!(!output.exists());
}

/// `sh -c SCRIPT` in a mount namespace of its own (so unmounting tracefs or
/// hiding the kernel's BTF there leaves the machine alone), with `$BPFSNAP`
/// and `$CONFIG` set; returns its output.
fn in_own_mount_namespace(script: &str, config: &std::path::Path) -> std::process::Output {
    std::process::Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", script])
        .env("BPFSNAP", env!("CARGO_BIN_EXE_bpfsnap"))
        .env("CONFIG", config)
        .output()
        .expect("run unshare (util-linux)")
}

#[test]
fn unmounted_tracefs_is_mounted_or_explained() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    // comm_getpid attaches a classic tracepoint, which needs tracefs.
    let (_dir, config) = common::example_config("comm_getpid.toml");
    let unmount =
        "umount -l /sys/kernel/tracing 2>/dev/null; umount -l /sys/kernel/debug 2>/dev/null; \
                   test ! -d /sys/kernel/tracing/events || exit 99";

    // With the right to mount, bpfsnap mounts it itself and runs.
    let output = in_own_mount_namespace(
        &format!("{unmount}; \"$BPFSNAP\" run \"$CONFIG\" --for 100ms --output - && test -d /sys/kernel/tracing/events"),
        &config,
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{:?}: {stderr}", output.status);
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("bpfsnap_window_seconds "),
        "{stderr}"
    );

    // Without CAP_SYS_ADMIN it cannot: it says how, in one line, exit 1.
    let output = in_own_mount_namespace(
        &format!(
            "{unmount}; exec setpriv --bounding-set -sys_admin --inh-caps -sys_admin \
             \"$BPFSNAP\" run \"$CONFIG\" --for 100ms --output -"
        ),
        &config,
    );
    let stderr = failure(
        &output,
        1,
        "bpfsnap without CAP_SYS_ADMIN, tracefs unmounted",
    );
    assert!(
        stderr.contains("tracefs is not mounted")
            && stderr.contains("mount -t tracefs nodev /sys/kernel/tracing"),
        "{stderr}"
    );
}

/// A kernel without /sys/kernel/btf (an empty tmpfs over it, in a mount
/// namespace of bpfsnap's own) given its types with --btf (a copy, as
/// BTFHub's archives provide): a CO-RE program on a classic tracepoint runs
/// and counts exactly; a built-in, whose tp_btf programs need the kernel's
/// own BTF, is refused in one line saying so.
#[test]
fn btf_from_a_file_serves_core_programs_on_a_kernel_without_its_own() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    let dir = common::config_dir();
    let btf = dir.path().join("vmlinux.btf");
    fs::copy("/sys/kernel/btf/vmlinux", &btf).unwrap();
    fs::copy(
        common::source_file("tests/fixtures/core_btf.yaml"),
        dir.path().join("core_btf.yaml"),
    )
    .unwrap();
    fs::copy(
        common::fixture_object("core_btf"),
        dir.path().join("core_btf.bpf.o"),
    )
    .unwrap();
    let hidden = |args: &str| {
        let mut command = std::process::Command::new("unshare");
        command
            .args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(format!(
                "mount -t tmpfs none /sys/kernel/btf && exec \"$BPFSNAP\" run -v {args}"
            ))
            .env("BPFSNAP", env!("CARGO_BIN_EXE_bpfsnap"));
        command
    };
    let config = dir.path().join("core_btf.yaml");
    let args = format!(
        "--btf {} {} --for 1h --output -",
        path_str(&btf),
        path_str(&config)
    );
    let mut running = common::Running::spawn_command(hidden(&args));
    running.wait_for("sampling");
    common::named_thread("btf-load", || common::getpid_calls(257));
    running.signal(libc::SIGINT);
    let (status, text, stderr) = running.finish();
    assert!(status.success(), "{stderr}");
    assert_eq!(
        // One window on standard output: a gauge.
        common::sample(&text, "bpfsnap_core_btf_getpid_calls"),
        Some(257.0),
        "{text}"
    );

    let builtin = format!(
        "--btf {} --builtin syscalls --for 100ms --output -",
        path_str(&btf)
    );
    let output = hidden(&builtin).output().unwrap();
    let stderr = failure(&output, 1, "a built-in with --btf and no kernel BTF");
    assert!(
        stderr.contains("syscalls: cannot run on this kernel: program syscalls_enter (section tp_btf/sys_enter): this kernel has no BTF of its own"),
        "{stderr}"
    );
}

/// A --btf file that is not BTF is refused before anything loads, in one
/// line naming the file and what it is not; the previous output stays.
#[test]
fn btf_file_that_is_not_btf_is_bad_input() {
    let dir = common::output_dir();
    let btf = dir.path().join("not.btf");
    fs::write(&btf, "not the kernel's types\n".repeat(64)).unwrap();
    let output = dir.path().join("bpfsnap.prom");
    fs::write(&output, "previous\n").unwrap();
    let stderr = fails(
        2,
        &[
            "run",
            "--btf",
            path_str(&btf),
            "--for",
            "1s",
            "--output",
            path_str(&output),
        ],
    );
    assert!(
        stderr.contains(&format!(
            "--btf {}: neither raw BTF nor an ELF file",
            btf.display()
        )) && stderr.contains("give a file of the kernel's types in BTF"),
        "{stderr}"
    );
    assert_eq!(fs::read_to_string(&output).unwrap(), "previous\n");
}

#[test]
fn missing_kernel_btf_is_explained() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    let (_dir, config) = common::example_config("comm_getpid.toml");
    // An empty tmpfs over /sys/kernel/btf: as on a kernel built without BTF.
    let output = in_own_mount_namespace(
        "mount -t tmpfs none /sys/kernel/btf && exec \"$BPFSNAP\" run --builtin syscalls --for 100ms --output -",
        &config,
    );
    let stderr = failure(&output, 1, "bpfsnap with /sys/kernel/btf empty");
    assert!(
        stderr.contains("kernel BTF not found at /sys/kernel/btf/vmlinux")
            && stderr.contains("CONFIG_DEBUG_INFO_BTF"),
        "{stderr}"
    );
    assert!(output.stdout.is_empty());
}
