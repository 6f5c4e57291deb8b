//! Messages for the journal: when stderr is the stream systemd named in
//! JOURNAL_STREAM, every line starts with its sd-daemon priority (`<3>`
//! errors, `<4>` warnings), so `journalctl -p warning` finds them; when
//! stderr is anything else (a child's redirected stderr inherits the
//! variable), lines are plain.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use common::path_str;

/// A valid YAML config with a key ebpf_exporter ignores (a warning) and a
/// TOML config with an unknown decoder (an error), each with its object.
fn configs() -> (tempfile::TempDir, String, String) {
    let dir = common::config_dir();
    let yaml = "metrics:\n  counters:\n    - name: getpid_calls_total\n      help: getpid() calls.\n      colour: red\n      labels:\n        - name: comm\n          size: 16\n          decoders:\n            - name: string\n";
    let toml = "[[metrics.counters]]\nname = \"getpid_calls_total\"\nhelp = \"getpid() calls.\"\n\n[[metrics.counters.labels]]\nname = \"comm\"\nsize = 16\ndecoders = [{ name = \"nosuch\" }]\n";
    fs::write(dir.path().join("warned.yaml"), yaml).unwrap();
    fs::write(dir.path().join("broken.toml"), toml).unwrap();
    for name in ["warned", "broken"] {
        fs::copy(
            common::example_object("comm_getpid"),
            dir.path().join(format!("{name}.bpf.o")),
        )
        .unwrap();
    }
    let warned = path_str(&dir.path().join("warned.yaml")).to_string();
    let broken = path_str(&dir.path().join("broken.toml")).to_string();
    (dir, warned, broken)
}

/// `bpfsnap ARGS` with stderr a file and JOURNAL_STREAM naming that file
/// (`journal`) or another one; returns the exit and what it wrote on stderr.
fn run_with_journal_stream(args: &[&str], journal: bool) -> (Output, String) {
    let dir = tempfile::tempdir().unwrap();
    let (stderr, stream, path) = common::journal_stderr(dir.path());
    let stream = if journal {
        stream
    } else {
        // What a service's child sees whose stderr went elsewhere: the
        // journal's stream is another file.
        let journal = dir.path().join("journal");
        fs::write(&journal, "").unwrap();
        let stat = fs::metadata(&journal).unwrap();
        format!("{}:{}", stat.dev(), stat.ino())
    };
    let output = common::bpfsnap()
        .args(args)
        .env("JOURNAL_STREAM", &stream)
        .stderr(Stdio::from(stderr))
        .output()
        .expect("run bpfsnap");
    (output, fs::read_to_string(path).unwrap())
}

#[test]
fn lines_on_the_journal_carry_their_priority() {
    let (_dir, warned, broken) = configs();
    let (output, stderr) = run_with_journal_stream(&["check", &warned, &broken], true);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{stderr}");
    assert!(
        lines[0].starts_with("<4>bpfsnap: warning: ")
            && lines[0].contains("unknown key `colour` ignored"),
        "{stderr}"
    );
    assert!(
        lines[1].starts_with("<3>bpfsnap: error: ") && lines[1].contains("unknown decoder"),
        "{stderr}"
    );
    // Results on stdout are not log lines.
    assert!(
        String::from_utf8_lossy(&output.stdout).starts_with("ok warned ("),
        "{output:?}"
    );

    // A usage error: every line of clap's message, usage included.
    let (output, stderr) = run_with_journal_stream(&["run", "--no-such-flag"], true);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.lines().count() > 1, "{stderr}");
    for line in stderr.lines() {
        assert!(line.starts_with("<3>"), "{line:?} in\n{stderr}");
    }
    assert!(stderr.contains("--no-such-flag"), "{stderr}");
}

#[test]
fn lines_elsewhere_are_plain_though_journal_stream_is_set() {
    let (_dir, warned, broken) = configs();
    let (output, stderr) = run_with_journal_stream(&["check", &warned, &broken], false);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{stderr}");
    assert!(lines[0].starts_with("bpfsnap: warning: "), "{stderr}");
    assert!(lines[1].starts_with("bpfsnap: error: "), "{stderr}");
}

/// `serve` says where it listens once it serves, at info priority, without
/// `-v` (as exporters do): what `journalctl -u` shows of a healthy start.
#[test]
fn serve_says_where_it_listens_at_info_priority() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (stderr, stream, path) = common::journal_stderr(dir.path());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let mut child = common::bpfsnap()
        .args(["serve", "-b", "syscalls", "--listen", &listen])
        .env("JOURNAL_STREAM", &stream)
        .stderr(Stdio::from(stderr))
        .spawn()
        .expect("start bpfsnap serve");
    let expected = format!("<6>bpfsnap: serving http://{listen}/metrics\n");
    let deadline = Instant::now() + common::PATIENCE;
    let said = loop {
        let said = fs::read_to_string(&path).unwrap();
        if said.contains(&expected) || Instant::now() > deadline {
            break said;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = common::wait_bounded(&mut child, common::PATIENCE).expect("serve exits");
    assert!(said.contains(&expected), "{said}");
    assert!(status.success(), "{said}");
    for line in fs::read_to_string(&path).unwrap().lines() {
        assert!(line.starts_with('<'), "{line:?}");
    }
}
