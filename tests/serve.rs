//! `bpfsnap serve` against real peers on loopback: a Prometheus server
//! scrapes it and its HTTP API returns the value; curl checks negotiation,
//! gzip, the in-flight limit and the scrape timeout; SIGTERM detaches.

mod common;

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::Running;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `bpfsnap serve -v ARGS --listen 127.0.0.1:PORT`, once it serves.
fn serve(port: u16, args: &[&str]) -> Running {
    let listen = format!("127.0.0.1:{port}");
    let mut argv = vec!["serve", "-v", "--listen", listen.as_str()];
    argv.extend_from_slice(args);
    let mut running = Running::spawn(&argv);
    running.wait_for("serving http://");
    running
}

/// curl's (status, headers, body) for a GET with extra headers.
fn curl(port: u16, path: &str, headers: &[&str]) -> (u16, String, Vec<u8>) {
    let mut command = Command::new("curl");
    command.args(["-s", "-D", "-", "--max-time", "30"]);
    for header in headers {
        command.args(["-H", header]);
    }
    let output = command
        .arg(format!("http://127.0.0.1:{port}{path}"))
        .output()
        .expect("run curl (make deps installs it)");
    let raw = output.stdout;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("HTTP response");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head, raw[split + 4..].to_vec())
}

#[test]
fn negotiation_gzip_health_and_sigterm() {
    let Some(_kernel) = common::kernel_test("negotiation_gzip_health_and_sigterm") else {
        return;
    };
    let port = free_port();
    let before = common::loaded_program_ids();
    let server = serve(port, &["-b", "syscalls"]);
    let ours: BTreeSet<u64> = common::loaded_program_ids()
        .difference(&before)
        .copied()
        .collect();
    common::getpid_calls(1000);

    let (status, head, body) = curl(port, "/metrics", &[]);
    let text = String::from_utf8(body).unwrap();
    assert_eq!(status, 200);
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4; charset=utf-8"),
        "{head}"
    );
    assert!(
        common::sample(&text, r#"bpfsnap_syscalls_total{syscall="getpid"}"#).unwrap() >= 1000.0
    );
    common::promtool_check(&text);

    let (_, head, body) = curl(
        port,
        "/metrics",
        &["Accept: application/openmetrics-text; version=1.0.0"],
    );
    let open = String::from_utf8(body).unwrap();
    assert!(
        head.contains("Content-Type: application/openmetrics-text; version=1.0.0; charset=utf-8"),
        "{head}"
    );
    assert!(
        open.ends_with("# EOF\n") && open.contains("# TYPE bpfsnap_syscalls counter\n"),
        "{open}"
    );

    let (_, head, body) = curl(port, "/metrics", &["Accept-Encoding: gzip"]);
    assert!(head.contains("Content-Encoding: gzip"), "{head}");
    let mut gunzip = Command::new("gzip")
        .arg("-dc")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut gunzip.stdin.take().unwrap(), &body).unwrap();
    let unzipped = String::from_utf8(gunzip.wait_with_output().unwrap().stdout).unwrap();
    assert!(
        unzipped.contains("bpfsnap_syscalls_total{syscall=\"getpid\"}"),
        "gzip body decodes"
    );

    assert_eq!(curl(port, "/healthz", &[]).2, b"ok\n");
    assert!(String::from_utf8(curl(port, "/", &[]).2)
        .unwrap()
        .contains("href=\"/metrics\""));
    assert_eq!(curl(port, "/nope", &[]).0, 404);

    server.signal(libc::SIGTERM);
    let (status, _, stderr) = server.finish();
    assert!(status.success(), "{stderr}");
    assert!(
        common::still_loaded_after_exit(&ours).is_empty(),
        "SIGTERM detaches everything"
    );
}

#[test]
fn over_the_in_flight_limit_and_past_the_timeout_answers_503() {
    let Some(_kernel) =
        common::kernel_test("over_the_in_flight_limit_and_past_the_timeout_answers_503")
    else {
        return;
    };
    let port = free_port();
    let server = serve(
        port,
        &[
            "-b",
            "syscalls",
            "--max-requests",
            "1",
            "--scrape-delay",
            "1s",
        ],
    );
    // Two scrapes at once, each holding the only slot for a second: one of
    // them is refused, the other served. (Retried only in case one's curl
    // started after the other's scrape was over.)
    let deadline = Instant::now() + common::PATIENCE;
    let mut refused = None;
    while refused.is_none() && Instant::now() < deadline {
        let other = std::thread::spawn(move || curl(port, "/metrics", &[]));
        let pair = [curl(port, "/metrics", &[]), other.join().unwrap()];
        let statuses = [pair[0].0, pair[1].0];
        if let Some((_, _, body)) = pair.into_iter().find(|(status, ..)| *status == 503) {
            assert!(statuses.contains(&200), "{statuses:?}");
            refused = Some(String::from_utf8_lossy(&body).into_owned());
        }
    }
    let refused = refused.expect("a concurrent scrape was refused");
    assert!(
        refused.contains("too many scrapes in flight (limit 1)"),
        "{refused}"
    );
    let (_, _, body) = curl(port, "/metrics", &[]);
    let text = String::from_utf8(body).unwrap();
    assert!(
        common::sample(&text, r#"bpfsnap_scrape_errors_total{cause="limit"}"#).unwrap() >= 1.0,
        "{text}"
    );
    server.signal(libc::SIGTERM);
    assert!(server.finish().0.success());

    let port = free_port();
    let server = serve(
        port,
        &[
            "-b",
            "syscalls",
            "--scrape-delay",
            "2s",
            "--scrape-timeout",
            "200ms",
        ],
    );
    let (status, _, body) = curl(port, "/metrics", &[]);
    assert_eq!(status, 503, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("scrape timeout"));
    server.signal(libc::SIGTERM);
    assert!(server.finish().0.success());
}

/// A Prometheus server on loopback scraping `target` every second.
struct Prometheus {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(target: u16) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: bpfsnap\n    static_configs:\n      - targets: ['127.0.0.1:{target}']\n"
            ),
        )
        .unwrap();
        let port = free_port();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus (make deps installs it)");
        Prometheus {
            child,
            port,
            _dir: dir,
        }
    }

    /// The value of an instant query's first result, if any.
    fn query(&self, query: &str) -> Option<f64> {
        let output = Command::new("curl")
            .args(["-s", "--max-time", "10", "--get", "--data-urlencode"])
            .arg(format!("query={query}"))
            .arg(format!("http://127.0.0.1:{}/api/v1/query", self.port))
            .output()
            .ok()?;
        let json: serde_json::Value = serde_json::from_slice(&output.stdout).ok()?;
        json["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_real_prometheus_ingests_the_series() {
    let Some(_kernel) = common::kernel_test("a_real_prometheus_ingests_the_series") else {
        return;
    };
    let port = free_port();
    let server = serve(port, &["-b", "syscalls"]);
    common::getpid_calls(5000);
    let prometheus = Prometheus::start(port);
    let deadline = Instant::now() + common::PATIENCE;
    let value = loop {
        if let Some(value) = prometheus.query(r#"bpfsnap_syscalls_total{syscall="getpid"}"#) {
            break value;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus never ingested bpfsnap_syscalls_total"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(value >= 5000.0, "ingested getpid count {value}");
    assert_eq!(prometheus.query(r#"up{job="bpfsnap"}"#), Some(1.0));
    server.signal(libc::SIGTERM);
    assert!(server.finish().0.success());
}
