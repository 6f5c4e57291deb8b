//! Helpers for the integration tests: gate kernel tests on root, run the built
//! binary, watch its stderr for events, generate load, list loaded programs,
//! run promtool and node_exporter.

#![allow(dead_code)] // each test binary uses its own subset

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Bound on waits for things that should take milliseconds; reaching it means
/// the test failed (it is a hang guard, not a timing assertion).
pub const PATIENCE: Duration = Duration::from_secs(60);

static KERNEL: Mutex<()> = Mutex::new(());

/// Whether kernel tests must run: in CI and under `make test` they never skip.
fn kernel_tests_required() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false")
        || std::env::var_os("BPFSNAP_REQUIRE_KERNEL_TESTS").is_some_and(|v| v == "1")
}

/// Gate for a test that loads BPF programs. As root: a guard that serialises
/// such tests (they compare the kernel's list of programs before and after).
/// Otherwise the test is skipped, loudly, unless kernel tests are required, in
/// which case it fails.
pub fn kernel_test(name: &str) -> Option<MutexGuard<'static, ()>> {
    if unsafe { libc::geteuid() } == 0 {
        return Some(
            KERNEL
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        );
    }
    assert!(
        !kernel_tests_required(),
        "{name}: kernel tests are required here (CI or BPFSNAP_REQUIRE_KERNEL_TESTS=1) but need root: run `make test` as root"
    );
    // Straight to the stream: libtest captures eprintln! of passing tests.
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {name}: needs root to load BPF programs (run `make test` as root)"
    );
    None
}

pub fn bpfsnap() -> Command {
    Command::new(env!("CARGO_BIN_EXE_bpfsnap"))
}

/// A running `bpfsnap` whose stderr is read line by line on a thread.
pub struct Running {
    pub child: Child,
    lines: Receiver<String>,
    pub stderr: Vec<String>,
}

impl Running {
    pub fn spawn(args: &[&str]) -> Running {
        let mut child = bpfsnap()
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start bpfsnap");
        let stderr = child.stderr.take().expect("stderr");
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        Running {
            child,
            lines,
            stderr: Vec::new(),
        }
    }

    /// Waits for a stderr line containing `needle` (bpfsnap -v says "sampling"
    /// once every probe is attached).
    pub fn wait_for(&mut self, needle: &str) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let found = line.contains(needle);
                    self.stderr.push(line);
                    if found {
                        return;
                    }
                }
                Err(_) => {
                    let status = self.child.try_wait().ok().flatten();
                    panic!(
                        "bpfsnap never said {needle:?} (exit: {status:?}); stderr: {:#?}",
                        self.stderr
                    )
                }
            }
        }
    }

    /// Waits for exit; returns the status, stdout and the whole stderr.
    /// Stdout is drained on a thread meanwhile: output larger than a pipe
    /// buffer would otherwise block bpfsnap forever.
    pub fn finish(mut self) -> (ExitStatus, String, String) {
        let reader = self.child.stdout.take().map(|mut out| {
            std::thread::spawn(move || {
                let mut stdout = String::new();
                let _ = out.read_to_string(&mut stdout);
                stdout
            })
        });
        let status = wait_bounded(&mut self.child, PATIENCE).expect("bpfsnap did not exit");
        let stdout = reader
            .map(|r| r.join().expect("stdout reader"))
            .unwrap_or_default();
        self.stderr.extend(self.lines.iter());
        (status, stdout, self.stderr.join("\n"))
    }

    pub fn signal(&self, signal: i32) {
        let rc = unsafe { libc::kill(self.child.id() as i32, signal) };
        assert_eq!(rc, 0, "kill");
    }
}

/// Polls `child` for exit for at most `limit`.
pub fn wait_bounded(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Makes `n` getpid system calls (the raw syscall: libc may cache the pid).
pub fn getpid_calls(n: u64) {
    for _ in 0..n {
        unsafe { libc::syscall(libc::SYS_getpid) };
    }
}

/// Ids of every BPF program loaded in the kernel.
pub fn loaded_program_ids() -> BTreeSet<u64> {
    let output = Command::new("bpftool")
        .args(["prog", "show", "--json"])
        .output()
        .expect("run bpftool (make deps installs it)");
    assert!(
        output.status.success(),
        "bpftool prog show: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let programs: Vec<serde_json::Value> =
        serde_json::from_slice(&output.stdout).expect("bpftool JSON");
    programs.iter().filter_map(|p| p["id"].as_u64()).collect()
}

/// Waits until none of `ids` is loaded any more; returns those still loaded
/// after [`PATIENCE`]. The kernel frees a program asynchronously once its
/// last link and fd are closed (tracing links wait for an RCU grace period),
/// so "gone" is a poll, not an instant check.
pub fn still_loaded_after_exit(ids: &BTreeSet<u64>) -> Vec<u64> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let left: Vec<u64> = loaded_program_ids().intersection(ids).copied().collect();
        if left.is_empty() || Instant::now() >= deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The value of the sample `series` (name and labels exactly as printed).
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        line.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// `promtool check metrics` on `text`: must exit 0 and print no lint problem.
pub fn promtool_check(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool (make deps installs the prometheus package)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("feed promtool");
    let Output {
        status,
        stdout,
        stderr,
    } = child.wait_with_output().expect("promtool");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&stdout),
        String::from_utf8_lossy(&stderr)
    );
    assert!(
        status.success() && said.trim().is_empty(),
        "promtool check metrics: {status}: {said}\n--- text ---\n{text}"
    );
}

/// A node_exporter with only the textfile collector, on loopback; killed on drop.
pub struct NodeExporter {
    child: Child,
    pub port: u16,
}

impl NodeExporter {
    pub fn start(textfile_dir: &Path) -> NodeExporter {
        let port = free_port();
        let child = Command::new("prometheus-node-exporter")
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .args(["--collector.disable-defaults", "--collector.textfile"])
            .arg(format!(
                "--collector.textfile.directory={}",
                textfile_dir.display()
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus-node-exporter (make deps installs it)");
        let exporter = NodeExporter { child, port };
        let deadline = Instant::now() + PATIENCE;
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "node_exporter did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        exporter
    }

    /// GET /metrics; the body.
    pub fn scrape(&self) -> String {
        let mut stream =
            TcpStream::connect(("127.0.0.1", self.port)).expect("connect node_exporter");
        stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
        write!(stream, "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").expect("send");
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("read response");
        let (head, body) = response.split_once("\r\n\r\n").expect("HTTP response");
        assert!(
            head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
            "{head}"
        );
        body.to_string()
    }
}

impl Drop for NodeExporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A fresh directory for outputs; world-writable so unprivileged runs can use it.
pub fn output_dir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).expect("chmod");
    dir
}

pub fn path_str(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

pub fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    files
}

/// Every sample of `metric` as (the text between its braces, value): for
/// `m{a="1",b="x"} 5`, `("a=\"1\",b=\"x\"", 5.0)`; an unlabelled sample has "".
pub fn samples(text: &str, metric: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(metric)?;
            let (labels, value) = match rest.strip_prefix('{') {
                Some(labelled) => labelled.rsplit_once("} ")?,
                None => ("", rest.strip_prefix(' ')?),
            };
            Some((labels.to_string(), value.trim().parse().ok()?))
        })
        .collect()
}

/// The compiled example `examples/NAME.bpf.c` (build.rs builds it).
pub fn example_object(name: &str) -> PathBuf {
    Path::new(env!("BPFSNAP_EXAMPLE_OBJECTS")).join(format!("{name}.bpf.o"))
}

/// The compiled fixture `tests/fixtures/NAME.bpf.c` (build.rs builds it).
pub fn fixture_object(name: &str) -> PathBuf {
    Path::new(env!("BPFSNAP_FIXTURE_OBJECTS")).join(format!("{name}.bpf.o"))
}

/// A file of the source tree, e.g. `examples/comm_getpid.toml`.
pub fn source_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// bpfsnap run as nobody (uid and gid 65534), without any capability; needs
/// root to start.
pub fn bpfsnap_as_nobody() -> Command {
    let mut command = Command::new("setpriv");
    command
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
        ])
        .arg(env!("CARGO_BIN_EXE_bpfsnap"));
    command
}
