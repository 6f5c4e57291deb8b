//! The terminal view as an SRE sees it: `bpfsnap run` in a tmux window of 80
//! and then 160 columns, read back with `capture-pane -J` (wrapped lines
//! joined, so a line wider than the window shows as one). The window is
//! loaded by the test — exact values through examples/histograms.bpf.c's
//! lseek(-7777, value, whence), and execs — and ended with Ctrl-C.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::path_str;

/// The values fed, whence = SEEK_SET: 20 × 1, 20 × 3, 10 × 7.
const VALUES: [(u64, usize); 3] = [(1, 20), (3, 20), (7, 10)];

/// p50/p90/p99 as `histogram_quantile` gives them for [`VALUES`] in the
/// example's linear buckets (width 1: 3 falls in (2, 3]) and its exp2
/// buckets (3 in (2, 4], 7 in (4, 8]), worked out by hand: rank q × 50,
/// interpolated within its bucket.
const LINEAR: &str = "count 50, sum 150, p50 2.25, p90 6.5, p99 6.95";
const EXP2: &str = "count 50, sum 150, p50 2.5, p90 6, p99 7.8";

/// A tmux session running one command, killed when dropped. Each on a
/// server of its own (`-L`): on the default socket, a session started while
/// the previous one's server was exiting failed ("tmux new-session").
struct Tmux {
    session: String,
}

impl Tmux {
    fn start(width: usize, command: &str) -> Tmux {
        let session = format!("bpfsnap-test-{}-{width}", std::process::id());
        let tmux = Tmux { session };
        let status = tmux
            .command()
            .args(["-f", "/dev/null"])
            .args([
                "new-session",
                "-d",
                "-s",
                &tmux.session,
                "-x",
                &width.to_string(),
            ])
            .args(["-y", "300", command])
            .status()
            .expect("run tmux (make test-deps installs it)");
        assert!(status.success(), "tmux new-session");
        tmux
    }

    /// tmux, talking to this session's own server.
    fn command(&self) -> Command {
        let mut command = Command::new("tmux");
        command.args(["-L", &self.session]);
        command
    }

    fn capture(&self) -> String {
        let output = self
            .command()
            .args(["capture-pane", "-p", "-J", "-S", "-", "-t", &self.session])
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// The pane once it shows `text` (polled; bounded).
    fn wait_for(&self, text: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let shown = self.capture();
            if shown.contains(text) {
                return shown;
            }
            assert!(Instant::now() < deadline, "no {text:?} in:\n{shown}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn send(&self, keys: &str) {
        let status = self
            .command()
            .args(["send-keys", "-t", &self.session, keys])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.command().arg("kill-server").status();
    }
}

fn feed_values() {
    for (value, times) in VALUES {
        for _ in 0..times {
            let rc = unsafe { libc::lseek(-7777, value as libc::off_t, libc::SEEK_SET) };
            assert_eq!(rc, -1, "lseek on the magic fd fails");
        }
    }
}

/// Every row of the first table whose header names `columns` starts each
/// column where the header's name does.
fn assert_aligned(view: &str, columns: &[&str]) {
    let is_header = |line: &str| {
        let names: Vec<&str> = line.split_whitespace().collect();
        columns.iter().all(|column| names.contains(column))
    };
    let mut lines = view.lines().skip_while(|line| !is_header(line));
    let header = lines
        .next()
        .unwrap_or_else(|| panic!("no {columns:?} header in\n{view}"));
    let starts: Vec<usize> = columns
        .iter()
        .map(|name| {
            header
                .find(name)
                .unwrap_or_else(|| panic!("{name} in {header}"))
        })
        .collect();
    let rows: Vec<&str> = lines
        .take_while(|line| line.starts_with("  ") && !line.starts_with("  …"))
        .collect();
    assert!(!rows.is_empty(), "rows under {header:?}:\n{view}");
    for row in rows {
        for &start in &starts[1..] {
            let before = &row[..start];
            assert!(
                before.ends_with("  ") && !row[start..].starts_with(' '),
                "column at {start} in {row:?} under {header:?}"
            );
        }
    }
}

#[test]
fn the_terminal_view_at_80_and_160_columns() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    let (_dir, config) = common::example_config("histograms.toml");
    for width in [80, 160] {
        let command = format!(
            "{} run {} -b exits --for 60s --top 5; echo BPFSNAP-DONE; sleep 600",
            env!("CARGO_BIN_EXE_bpfsnap"),
            path_str(&config)
        );
        let tmux = Tmux::start(width, &command);
        tmux.wait_for("left");
        feed_values();
        for _ in 0..3 {
            let _ = Command::new("true").status();
        }
        tmux.send("C-c");
        let shown = tmux.wait_for("BPFSNAP-DONE");
        let start = shown.find("bpfsnap_process_exits_total").expect("exits");
        let view = &shown[start..shown.find("BPFSNAP-DONE").unwrap_or(shown.len())];
        for line in view.lines() {
            assert!(
                line.chars().count() <= width,
                "wider than {width}: {line:?}\n{view}"
            );
        }
        assert_aligned(view, &["comm", "how", "code"]);
        for histogram in [
            "bpfsnap_test_values_linear",
            "bpfsnap_test_values_exp2",
            "bpfsnap_test_values_per_cpu",
        ] {
            let at = view.find(&format!("{histogram}\n")).expect(histogram);
            let figures = if histogram.ends_with("linear") {
                LINEAR
            } else {
                EXP2
            };
            let section = &view[at..];
            let section = &section[..section.find("\n\n").unwrap_or(section.len())];
            assert!(section.contains(figures), "{figures} in\n{section}");
        }
        let summary = view
            .find("bpfsnap: 2 of 2 configs up")
            .expect("summary line");
        assert!(
            view[summary..].lines().count() <= 2 && !view[summary..].contains("bpfsnap_"),
            "bpfsnap's own metrics come last, as one line:\n{view}"
        );
    }
}
