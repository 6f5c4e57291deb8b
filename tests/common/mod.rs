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
        let mut command = bpfsnap();
        command.args(args);
        Running::spawn_command(command)
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

/// A test that fails while bpfsnap runs must not leave it running with its
/// programs attached: killed and reaped unless it has already been.
impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
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

/// `work`'s result, run on a thread named `name` (the comm BPF programs see;
/// examples/events.bpf.c counts threads named bpfsnap-ev*).
pub fn named_thread<T: Send + 'static>(name: &str, work: impl FnOnce() -> T + Send + 'static) -> T {
    let name = std::ffi::CString::new(name).expect("a thread name without NUL");
    std::thread::spawn(move || {
        let rc = unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr()) };
        assert_eq!(rc, 0, "prctl(PR_SET_NAME)");
        work()
    })
    .join()
    .expect("named thread")
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

/// The value of the sample `series` (name and labels exactly as printed,
/// but for the `output` label of a textfile's self metrics, which tests
/// that do not look for it leave out).
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let line = without_output_label(line);
        line.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// `line` without its `output="..."` label, if it has one (bpfsnap writes
/// it last).
pub fn without_output_label(line: &str) -> std::borrow::Cow<'_, str> {
    let Some(at) = line.find("output=\"") else {
        return line.into();
    };
    let Some(end) = line[at..].find("\"}").map(|end| at + end + 1) else {
        return line.into();
    };
    match &line[..at] {
        // The only label: the braces go too.
        before if before.ends_with('{') => {
            format!("{}{}", &before[..before.len() - 1], &line[end + 1..]).into()
        }
        before if before.ends_with(',') => {
            format!("{}{}", &before[..before.len() - 1], &line[end..]).into()
        }
        _ => line.into(),
    }
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

/// A fresh directory for configs and objects: writable by its owner only, as
/// bpfsnap requires of directories holding code it loads into the kernel.
pub fn config_dir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    dir
}

/// examples/`config` and its object (`NAME.bpf.o` for `NAME.toml` or
/// `NAME.yaml`) copied into a fresh [`config_dir`]; returns it and the
/// config's path there.
pub fn example_config(config: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = config_dir();
    let name = config.rsplit_once('.').map_or(config, |(name, _)| name);
    let object = format!("{name}.bpf.o");
    std::fs::copy(
        source_file(&format!("examples/{config}")),
        dir.path().join(config),
    )
    .unwrap_or_else(|err| panic!("copy examples/{config}: {err}"));
    std::fs::copy(
        Path::new(env!("BPFSNAP_EXAMPLE_OBJECTS")).join(&object),
        dir.path().join(&object),
    )
    .unwrap_or_else(|err| panic!("copy {object}: {err}"));
    let path = dir.path().join(config);
    (dir, path)
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
        .map(without_output_label)
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

/// Events the run's programs missed because one was already running on that
/// CPU (a hardirq hitting the hook it ran for in softirq, say): the kernel
/// skips the nested run, so a count may fall short of the load by this much.
pub fn recursion_misses(text: &str) -> f64 {
    samples(text, "bpfsnap_program_recursion_misses_total")
        .iter()
        .map(|(_, count)| count)
        .sum()
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

// --- Appended for tests/reliability.rs and tests/hostile.rs: a spawn of a
// prepared command, a syscall gate (seccomp user notification) to stop
// bpfsnap at an exact point, the BPF programs a process holds, and a
// grammar check of the text format.

impl Running {
    /// [`Running::spawn`] for a prepared command: another wrapper (setpriv),
    /// a [`SyscallGate`], other environment.
    pub fn spawn_command(mut command: Command) -> Running {
        let mut child = command
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
}

/// A system call of the gated process, stopped before it runs until
/// [`SyscallGate::resume`] lets it go on.
#[derive(Debug, Clone, Copy)]
pub struct Trapped {
    pub id: u64,
    /// The calling thread.
    pub pid: u32,
    pub nr: i64,
    pub args: [u64; 6],
}

impl Trapped {
    /// The NUL-terminated string argument `index` (a path), read from the
    /// stopped thread's memory.
    pub fn string_arg(&self, index: usize) -> Option<Vec<u8>> {
        use std::os::unix::fs::FileExt;
        let mem = std::fs::File::open(format!("/proc/{}/mem", self.pid)).ok()?;
        let mut buf = vec![0u8; 4096];
        let n = mem.read_at(&mut buf, self.args[index]).ok()?;
        buf.truncate(n);
        let end = buf.iter().position(|&b| b == 0)?;
        buf.truncate(end);
        Some(buf)
    }

    /// bpf(2)'s command, for a trapped bpf call.
    pub fn bpf_cmd(&self) -> u32 {
        self.args[0] as u32
    }
}

/// Which system calls a [`SyscallGate`] stops.
#[derive(Debug, Clone, Copy)]
pub enum Trap {
    Syscall(i64),
    /// The call when its first argument (low 32 bits) is the value: bpf(cmd).
    Arg0(i64, u32),
    /// The call when its third argument has one of these bits: openat(flags).
    Arg2Bits(i64, u32),
}

/// bpf(2) commands (linux/bpf.h).
pub const BPF_PROG_LOAD: u32 = 5;
pub const BPF_OBJ_PIN: u32 = 6;
pub const BPF_RAW_TRACEPOINT_OPEN: u32 = 17;
pub const BPF_LINK_CREATE: u32 = 28;

/// Stops chosen system calls of a child before they run (seccomp user
/// notification, the kernel's own mechanism: no ptrace, no timing), so a
/// test can act at an exact point of bpfsnap's run — the first program load,
/// the first attach, the rename that publishes a file — and then let it go
/// on. Needs root (or no_new_privs) and Linux ≥ 5.19.
pub struct SyscallGate {
    listener: std::os::fd::OwnedFd,
}

impl SyscallGate {
    /// Arms `command` so the process it starts runs under a filter stopping
    /// `traps`; call [`SyscallGate::connect`] right after spawning it.
    pub fn arm(command: &mut Command, traps: &[Trap]) -> GateSocket {
        use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
        use std::os::unix::process::CommandExt;
        let mut pair = [0i32; 2];
        // SAFETY: plain socketpair(2) into a two-int array.
        let rc = unsafe {
            libc::socketpair(
                libc::AF_UNIX,
                libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
                0,
                pair.as_mut_ptr(),
            )
        };
        assert_eq!(rc, 0, "socketpair: {}", std::io::Error::last_os_error());
        // SAFETY: fresh descriptors we own.
        let (parent, child) =
            unsafe { (OwnedFd::from_raw_fd(pair[0]), OwnedFd::from_raw_fd(pair[1])) };
        let filter = seccomp_filter(traps);
        let child_fd = child.as_raw_fd();
        // SAFETY: the hook only makes async-signal-safe system calls and does
        // not allocate: the filter was built before the fork.
        unsafe {
            command.pre_exec(move || {
                let prog = libc::sock_fprog {
                    len: filter.len() as u16,
                    filter: filter.as_ptr() as *mut libc::sock_filter,
                };
                let fd = libc::syscall(
                    libc::SYS_seccomp,
                    libc::SECCOMP_SET_MODE_FILTER,
                    libc::SECCOMP_FILTER_FLAG_NEW_LISTENER
                        | libc::SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV,
                    &prog as *const libc::sock_fprog,
                );
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                send_fd(child_fd, fd as i32)?;
                libc::close(fd as i32);
                Ok(())
            });
        }
        GateSocket {
            parent,
            _child: child,
        }
    }

    /// The next trapped call; None once no process runs under the filter.
    /// Panics after [`PATIENCE`] without either (a hang guard).
    pub fn next(&self) -> Option<Trapped> {
        use std::os::fd::AsRawFd;
        let deadline = Instant::now() + PATIENCE;
        loop {
            let mut poll = libc::pollfd {
                fd: self.listener.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            let ready = unsafe { libc::poll(&mut poll, 1, 200) };
            if ready > 0 && poll.revents & libc::POLLIN != 0 {
                // SAFETY: the kernel fills a zeroed seccomp_notif.
                let mut notif: libc::seccomp_notif = unsafe { std::mem::zeroed() };
                let rc = unsafe {
                    libc::ioctl(
                        self.listener.as_raw_fd(),
                        libc::SECCOMP_IOCTL_NOTIF_RECV,
                        &mut notif,
                    )
                };
                if rc == 0 {
                    return Some(Trapped {
                        id: notif.id,
                        pid: notif.pid,
                        nr: i64::from(notif.data.nr),
                        args: notif.data.args,
                    });
                }
                // ENOENT: the caller went away meanwhile; wait for the next.
                continue;
            }
            if ready > 0 && poll.revents & (libc::POLLHUP | libc::POLLERR) != 0 {
                return None;
            }
            assert!(
                Instant::now() < deadline,
                "no trapped system call and no exit within {PATIENCE:?}"
            );
        }
    }

    /// Lets a trapped call run (as if it had never been stopped).
    pub fn resume(&self, call: &Trapped) {
        use std::os::fd::AsRawFd;
        let mut response = libc::seccomp_notif_resp {
            id: call.id,
            val: 0,
            error: 0,
            flags: libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32,
        };
        // SAFETY: a valid response; ENOENT (the caller died) is fine.
        unsafe {
            libc::ioctl(
                self.listener.as_raw_fd(),
                libc::SECCOMP_IOCTL_NOTIF_SEND,
                &mut response,
            )
        };
    }

    /// Resumes trapped calls until one satisfies `wanted`, which stays
    /// stopped; panics if the process exits first.
    pub fn stop_at(&self, what: &str, wanted: impl Fn(&Trapped) -> bool) -> Trapped {
        loop {
            let call = self
                .next()
                .unwrap_or_else(|| panic!("bpfsnap exited before {what}"));
            if wanted(&call) {
                return call;
            }
            self.resume(&call);
        }
    }

    /// Resumes every call from now on, on a thread of its own, until the
    /// process is gone.
    pub fn release(self) -> std::thread::JoinHandle<usize> {
        std::thread::spawn(move || {
            let mut resumed = 0;
            while let Some(call) = self.next() {
                self.resume(&call);
                resumed += 1;
            }
            resumed
        })
    }
}

/// The parent's end of an armed command's socket (see [`SyscallGate::arm`]).
pub struct GateSocket {
    parent: std::os::fd::OwnedFd,
    _child: std::os::fd::OwnedFd,
}

impl GateSocket {
    /// Receives the gate of the process just spawned from the armed command.
    pub fn connect(self) -> SyscallGate {
        use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
        drop(self._child);
        let fd = recv_fd(self.parent.as_raw_fd()).expect("receive the seccomp listener");
        SyscallGate {
            // SAFETY: a descriptor we just received and own.
            listener: unsafe { OwnedFd::from_raw_fd(fd) },
        }
    }
}

/// A classic BPF seccomp program: USER_NOTIF for `traps`, ALLOW otherwise.
fn seccomp_filter(traps: &[Trap]) -> Vec<libc::sock_filter> {
    const LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
    const JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
    const JSET_K: u16 = 0x45; // BPF_JMP | BPF_JSET | BPF_K
    const RET_K: u16 = 0x06; // BPF_RET | BPF_K
    #[cfg(target_arch = "x86_64")]
    const ARCH: u32 = 0xc000_003e;
    #[cfg(target_arch = "aarch64")]
    const ARCH: u32 = 0xc000_00b7;
    let op = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
    let allow = libc::SECCOMP_RET_ALLOW;
    let notify = libc::SECCOMP_RET_USER_NOTIF;
    let mut prog = vec![
        op(LD_W_ABS, 0, 0, 4),
        op(JEQ_K, 1, 0, ARCH),
        op(RET_K, 0, 0, allow),
    ];
    for trap in traps {
        match *trap {
            Trap::Syscall(nr) => prog.extend([
                op(LD_W_ABS, 0, 0, 0),
                op(JEQ_K, 0, 1, nr as u32),
                op(RET_K, 0, 0, notify),
            ]),
            Trap::Arg0(nr, value) => prog.extend([
                op(LD_W_ABS, 0, 0, 0),
                op(JEQ_K, 0, 3, nr as u32),
                op(LD_W_ABS, 0, 0, 16),
                op(JEQ_K, 0, 1, value),
                op(RET_K, 0, 0, notify),
            ]),
            Trap::Arg2Bits(nr, bits) => prog.extend([
                op(LD_W_ABS, 0, 0, 0),
                op(JEQ_K, 0, 3, nr as u32),
                op(LD_W_ABS, 0, 0, 32),
                op(JSET_K, 0, 1, bits),
                op(RET_K, 0, 0, notify),
            ]),
        }
    }
    prog.push(op(RET_K, 0, 0, allow));
    prog
}

/// Sends `fd` over the unix socket `sock` (SCM_RIGHTS); async-signal-safe.
unsafe fn send_fd(sock: i32, fd: i32) -> std::io::Result<()> {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let mut space = [0u64; 8];
    let mut msg: libc::msghdr = std::mem::zeroed();
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = space.as_mut_ptr().cast();
    msg.msg_controllen = libc::CMSG_SPACE(4) as _;
    let cmsg = libc::CMSG_FIRSTHDR(&msg);
    (*cmsg).cmsg_level = libc::SOL_SOCKET;
    (*cmsg).cmsg_type = libc::SCM_RIGHTS;
    (*cmsg).cmsg_len = libc::CMSG_LEN(4) as _;
    std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<i32>(), fd);
    if libc::sendmsg(sock, &msg, 0) < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Receives one descriptor sent by [`send_fd`].
fn recv_fd(sock: i32) -> std::io::Result<i32> {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let mut space = [0u64; 8];
    // SAFETY: a msghdr over buffers that outlive the call.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = space.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&space) as _;
        if libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC) <= 0 {
            return Err(std::io::Error::last_os_error());
        }
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        if cmsg.is_null() || (*cmsg).cmsg_type != libc::SCM_RIGHTS {
            return Err(std::io::Error::other("no descriptor received"));
        }
        Ok(std::ptr::read_unaligned(
            libc::CMSG_DATA(cmsg).cast::<i32>(),
        ))
    }
}

/// Ids of the BPF programs process `pid` holds a descriptor of.
pub fn programs_held_by(pid: u32) -> BTreeSet<u64> {
    let mut ids = BTreeSet::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let is_prog = std::fs::read_link(fd.path())
            .is_ok_and(|target| target.as_os_str() == "anon_inode:bpf-prog");
        if !is_prog {
            continue;
        }
        let info = std::fs::read_to_string(format!(
            "/proc/{pid}/fdinfo/{}",
            fd.file_name().to_string_lossy()
        ))
        .unwrap_or_default();
        ids.extend(info.lines().find_map(|line| {
            line.strip_prefix("prog_id:")
                .and_then(|id| id.trim().parse::<u64>().ok())
        }));
    }
    ids
}

/// Checks that `text` is a complete exposition in the text format: non-empty,
/// ending in a newline, every line a `# HELP`/`# TYPE` comment or a sample
/// `name{label="value",...} number` with valid names and escapes. Returns
/// the number of samples.
pub fn assert_complete_exposition(text: &str) -> usize {
    assert!(
        !text.is_empty() && text.ends_with('\n'),
        "not a complete file: {text:?}"
    );
    let mut samples = 0;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# ") {
            assert!(
                rest.starts_with("HELP ") || rest.starts_with("TYPE "),
                "bad comment {line:?}"
            );
            continue;
        }
        if let Err(err) = parse_sample(line) {
            panic!("bad sample line {line:?}: {err}\n--- text ---\n{text}");
        }
        samples += 1;
    }
    samples
}

/// Parses one sample line of the text format.
pub fn parse_sample(line: &str) -> Result<(), String> {
    fn valid_name(name: &str, colons: bool) -> bool {
        !name.is_empty()
            && name.chars().enumerate().all(|(i, c)| {
                c.is_ascii_alphabetic()
                    || c == '_'
                    || (colons && c == ':')
                    || (i > 0 && c.is_ascii_digit())
            })
    }
    let bytes = line.as_bytes();
    let mut i = 0;
    while i < bytes.len() && bytes[i] != b'{' && bytes[i] != b' ' {
        i += 1;
    }
    if !valid_name(&line[..i], true) {
        return Err(format!("bad metric name {:?}", &line[..i]));
    }
    if bytes.get(i) == Some(&b'{') {
        i += 1;
        while bytes.get(i) != Some(&b'}') {
            let start = i;
            while i < bytes.len() && bytes[i] != b'=' {
                i += 1;
            }
            if !valid_name(&line[start..i], false) {
                return Err(format!("bad label name {:?}", &line[start..i]));
            }
            if bytes.get(i + 1) != Some(&b'"') {
                return Err("label value not quoted".into());
            }
            i += 2;
            loop {
                match bytes.get(i) {
                    None => return Err("unterminated label value".into()),
                    Some(b'\\') => match bytes.get(i + 1) {
                        Some(b'\\' | b'"' | b'n') => i += 2,
                        _ => return Err("bad escape in a label value".into()),
                    },
                    Some(b'"') => {
                        i += 1;
                        break;
                    }
                    Some(b'\n') => return Err("raw newline in a label value".into()),
                    Some(_) => i += 1,
                }
            }
            match bytes.get(i) {
                Some(b',') => i += 1,
                Some(b'}') => {}
                _ => return Err("expected , or } after a label".into()),
            }
        }
        i += 1;
    }
    let value = line[i..]
        .strip_prefix(' ')
        .ok_or("no space before the value")?;
    let number = matches!(value, "+Inf" | "-Inf" | "NaN") || value.parse::<f64>().is_ok();
    if !number {
        return Err(format!("bad value {value:?} (a timestamp or junk?)"));
    }
    Ok(())
}

/// `bpfsnap run -v ARGS --for 1h --output -` around `load`: waits until
/// every probe is attached, runs `load`, ends the window with SIGINT, checks
/// the exit status and that promtool accepts the output; returns the output.
/// (The hour is never waited for: it only has to outlast the load, which
/// takes minutes in the kernel matrix's emulated VMs.)
pub fn run_with_load(args: &[&str], load: impl FnOnce()) -> String {
    run_with_load_and_stderr(args, load).0
}

/// [`run_with_load`], also returning what bpfsnap said on stderr.
pub fn run_with_load_and_stderr(args: &[&str], load: impl FnOnce()) -> (String, String) {
    let mut argv = vec!["run", "-v"];
    argv.extend_from_slice(args);
    argv.extend_from_slice(&["--for", "1h", "--output", "-"]);
    let mut running = Running::spawn(&argv);
    running.wait_for("sampling");
    load();
    running.signal(libc::SIGINT);
    let (status, text, stderr) = running.finish();
    assert!(status.success(), "bpfsnap {args:?}: {stderr}");
    promtool_check(&text);
    (text, stderr)
}

/// [`run_with_load`] on one built-in.
pub fn run_builtin(name: &str, load: impl FnOnce()) -> String {
    run_with_load(&["--builtin", name], load)
}

/// Whether built-in `name` can run on this kernel; if not, says on stderr
/// that `test` is skipped and why. Not a silent skip: tests/kernels.rs
/// checks on every kernel that such a built-in is left out of the default
/// set and refused in one line when named.
pub fn builtin_runs_here(name: &str, test: &str) -> bool {
    let config = bpfsnap::builtin::find(name)
        .expect("a built-in")
        .config()
        .expect("its spec");
    let kernel = bpfsnap::probe::availability::KernelTypes::load();
    match bpfsnap::probe::variants::fit(&config, &kernel) {
        Ok(_) => true,
        Err(reason) => {
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED {test}: {name} cannot run on this kernel ({reason})"
            );
            false
        }
    }
}

/// For a kernel test that cannot make its load on this machine (no loop
/// device, no memory cgroup): fails when kernel tests are required, else says
/// on stderr what was not exercised and why, so a run never passes silently.
pub fn not_exercised(name: &str, why: &str) {
    assert!(
        !kernel_tests_required(),
        "{name}: kernel tests are required here (CI or BPFSNAP_REQUIRE_KERNEL_TESTS=1) but its load cannot be made: {why}"
    );
    let _ = writeln!(std::io::stderr(), "NOT EXERCISED {name}: {why}");
}
