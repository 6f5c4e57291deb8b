//! bpfsnap as a child process: started plain, as nobody or from a prepared
//! command, its stderr watched line by line, its exit awaited with a bound,
//! and whole `run` windows around a load the test makes.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use super::{promtool_check, PATIENCE};

pub fn bpfsnap() -> Command {
    Command::new(env!("CARGO_BIN_EXE_bpfsnap"))
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

    /// SIGTERM, as systemd stops a service: it must exit 0.
    pub fn terminate(self) {
        self.signal(libc::SIGTERM);
        let (status, _, stderr) = self.finish();
        assert!(status.success(), "{stderr}");
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

/// `bpfsnap run -v ARGS --for 1h --output DIR/bpfsnap.prom` (a new
/// textfile, so its counters are counters: on standard output one window's
/// counts are gauges) around `load`: waits until every probe is attached,
/// runs `load`, ends the window with SIGINT, checks the exit status and that
/// promtool accepts the output; returns the output. (The hour is never
/// waited for: it only has to outlast the load, which takes minutes in the
/// kernel matrix's emulated VMs.)
pub fn run_with_load(args: &[&str], load: impl FnOnce()) -> String {
    run_with_load_and_stderr(args, load).0
}

/// [`run_with_load`], also returning what bpfsnap said on stderr.
pub fn run_with_load_and_stderr(args: &[&str], load: impl FnOnce()) -> (String, String) {
    let dir = super::output_dir();
    let output = dir.path().join("bpfsnap.prom");
    let mut argv = vec!["run", "-v"];
    argv.extend_from_slice(args);
    argv.extend_from_slice(&["--for", "1h", "--output", super::path_str(&output)]);
    let mut running = Running::spawn(&argv);
    running.wait_for("sampling");
    load();
    running.signal(libc::SIGINT);
    let (status, _, stderr) = running.finish();
    assert!(status.success(), "bpfsnap {args:?}: {stderr}");
    let text = std::fs::read_to_string(&output).expect("the run wrote its output");
    promtool_check(&text);
    (text, stderr)
}

/// [`run_with_load`] on one built-in.
pub fn run_builtin(name: &str, load: impl FnOnce()) -> String {
    run_with_load(&["--builtin", name], load)
}
