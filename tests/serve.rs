//! `bpfsnap serve` against real peers on loopback: a Prometheus server
//! scrapes it and its HTTP API returns the exact value; curl checks
//! negotiation, gzip, the in-flight limit, the scrape timeout, a timed-out
//! gathering still running, gathering errors (`--on-error`), SIGTERM with a
//! scrape in flight or an idle kept-alive connection, several listen
//! addresses and the telemetry path; event-stream counters served over
//! time (`flush_interval`, perf-array lost events); and clients that
//! misbehave: thousands of half-sent requests, oversized heads, HTTP/1.0,
//! pipelining. The web config (TLS, basic auth) is tests/serve_web.rs'.

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    curl_url, free_port, free_port_v6, named_thread, path_str, poll, Prometheus, Running,
};

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
    let mut args = Vec::new();
    for header in headers {
        args.extend_from_slice(&["-H", header]);
    }
    curl_url(&format!("http://127.0.0.1:{port}{path}"), &args)
        .unwrap_or_else(|stderr| panic!("no HTTP response: {stderr}"))
}

/// Threads of process `pid` gathering metrics for a scrape (serve names
/// them "gather").
fn gather_threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|tasks| {
            tasks
                .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
                .filter(|comm| comm.trim() == "gather")
                .count()
        })
        .unwrap_or(0)
}

/// `n` getppid calls from a thread named `name` pinned to CPU 0 (so that
/// every event goes through the same per-CPU perf buffer).
fn getppid_calls_on_cpu0(name: &'static str, n: u64) {
    named_thread(name, move || {
        let mut cpus: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        unsafe {
            libc::CPU_SET(0, &mut cpus);
            assert_eq!(
                libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &cpus),
                0
            );
        }
        for _ in 0..n {
            unsafe { libc::syscall(libc::SYS_getppid) };
        }
    });
}

/// The body of a scrape that must succeed.
fn scrape(port: u16) -> String {
    let (status, _, body) = curl(port, "/metrics", &[]);
    let body = String::from_utf8(body).unwrap();
    assert_eq!(status, 200, "{body}");
    body
}

#[test]
fn negotiation_gzip_health_and_sigterm() {
    let Some(_kernel) = common::kernel_test!() else {
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

    server.terminate();
    assert!(
        common::still_loaded_after_exit(&ours).is_empty(),
        "SIGTERM detaches everything"
    );
}

#[test]
fn over_the_in_flight_limit_and_past_the_timeout_answers_503() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    let port = free_port();
    let server = serve(
        port,
        &[
            "-b",
            "syscalls",
            "--web.max-requests",
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

#[test]
fn a_timed_out_gathering_still_running_refuses_new_ones_until_it_ends() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    let port = free_port();
    // Only the first gathering is slow (as if stuck in the kernel).
    let server = serve(
        port,
        &[
            "-b",
            "syscalls",
            "--scrape-delay",
            "5s",
            "--scrape-timeout",
            "200ms",
            "--faulty-scrapes",
            "1",
        ],
    );
    let pid = server.child.id();
    let (status, _, body) = curl(port, "/metrics", &[]);
    let body = String::from_utf8_lossy(&body);
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("longer than the scrape timeout"), "{body}");
    // Its gathering runs on: scrapes now are refused at once instead of
    // starting gatherings of their own (these would be quick, and served).
    const REFUSED: usize = 4;
    for _ in 0..REFUSED {
        let (status, _, body) = curl(port, "/metrics", &[]);
        let body = String::from_utf8_lossy(&body);
        assert_eq!(status, 503, "{body}");
        assert!(
            body.contains("still running past the scrape timeout"),
            "{body}"
        );
    }
    assert_eq!(gather_threads(pid), 1, "one gathering at a time");
    // Once it has ended, scrapes are served again and the errors counted.
    poll("the slow gathering ended", || {
        (gather_threads(pid) == 0).then_some(())
    });
    let text = scrape(port);
    assert_eq!(
        common::sample(&text, r#"bpfsnap_scrape_errors_total{cause="timeout"}"#),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        common::sample(&text, r#"bpfsnap_scrape_errors_total{cause="stuck"}"#),
        Some(REFUSED as f64),
        "{text}"
    );
    server.signal(libc::SIGTERM);
    assert!(server.finish().0.success());
}

#[test]
fn a_gathering_error_fails_the_scrape_or_serves_what_was_gathered() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    // Any syscall series (curl's own calls make some).
    let syscalls = "bpfsnap_syscalls_total{";
    let gather_errors = r#"bpfsnap_scrape_errors_total{cause="gather"}"#;

    // --on-error fail (the default): HTTP 500 with the error.
    let port = free_port();
    let server = serve(
        port,
        &["-b", "syscalls", "--scrape-error", "--faulty-scrapes", "1"],
    );
    let (status, _, body) = curl(port, "/metrics", &[]);
    let body = String::from_utf8_lossy(&body);
    assert_eq!(status, 500, "{body}");
    assert!(
        body.starts_with("500 gathering metrics failed")
            && body.contains("reading the maps failed (forced by --scrape-error)"),
        "{body}"
    );
    let text = scrape(port);
    assert_eq!(common::sample(&text, gather_errors), Some(1.0), "{text}");
    assert!(text.contains(syscalls), "{text}");
    server.signal(libc::SIGTERM);
    assert!(server.finish().0.success());

    // --on-error partial: 200 with what was gathered (bpfsnap's own
    // families, not the program's that failed), saying it is not up: the
    // maps were not read.
    let port = free_port();
    let server = serve(
        port,
        &[
            "-b",
            "syscalls",
            "--on-error",
            "partial",
            "--scrape-error",
            "--faulty-scrapes",
            "1",
        ],
    );
    let partial = scrape(port);
    assert_eq!(
        common::sample(&partial, "bpfsnap_up"),
        Some(0.0),
        "{partial}"
    );
    assert!(!partial.contains(syscalls), "{partial}");
    common::promtool_check(&partial);
    let text = scrape(port);
    assert_eq!(common::sample(&text, gather_errors), Some(1.0), "{text}");
    assert!(text.contains(syscalls), "{text}");
    server.signal(libc::SIGTERM);
    assert!(server.finish().0.success());
}

#[test]
fn sigterm_finishes_the_scrape_in_flight_and_refuses_new_connections() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    let port = free_port();
    let before = common::loaded_program_ids();
    let server = serve(port, &["-b", "syscalls", "--scrape-delay", "5s"]);
    let ours: BTreeSet<u64> = common::loaded_program_ids()
        .difference(&before)
        .copied()
        .collect();
    assert!(!ours.is_empty());
    let pid = server.child.id();
    let in_flight = std::thread::spawn(move || curl(port, "/metrics", &[]));
    poll("the scrape is being gathered", || {
        (gather_threads(pid) == 1).then_some(())
    });
    server.signal(libc::SIGTERM);
    poll("connections refused after SIGTERM", || {
        TcpStream::connect(("127.0.0.1", port))
            .err()
            .filter(|err| err.kind() == std::io::ErrorKind::ConnectionRefused)
    });
    assert!(
        !in_flight.is_finished(),
        "new connections are refused while the scrape is still in flight"
    );
    let (status, _, body) = in_flight.join().unwrap();
    let text = String::from_utf8(body).unwrap();
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("bpfsnap_syscalls_total{"), "{text}");
    let (status, _, stderr) = server.finish();
    assert!(status.success(), "{stderr}");
    assert!(
        common::still_loaded_after_exit(&ours).is_empty(),
        "SIGTERM detaches everything"
    );
}

/// `--counts window`: each scrape's counters cover what happened since the
/// previous scrape, and counters_start_timestamp_seconds says from when;
/// cumulative (the default) counts on. Exact counts from getpid calls of a
/// bpfsnap-* thread (examples/comm_getpid).
#[test]
fn counts_per_scrape_cover_the_calls_since_the_previous_scrape() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    let (_dir, config) = common::example_config("comm_getpid.toml");
    for (counts, shown) in [("window", [300.0, 200.0]), ("cumulative", [300.0, 500.0])] {
        let port = free_port();
        let _running = serve(port, &[path_str(&config), "--counts", counts]);
        // A scrape's own counts are a gauge, named without `_total`.
        let series = match counts {
            "window" => r#"bpfsnap_getpid_calls{comm="bpfsnap-window"}"#,
            _ => r#"bpfsnap_getpid_calls_total{comm="bpfsnap-window"}"#,
        };
        let calls = |text: &str| common::sample(text, series);
        let first = scrape(port);
        assert_eq!(calls(&first), None, "{counts}: nothing yet\n{first}");
        let mut since = common::sample(
            &first,
            r#"bpfsnap_counters_start_timestamp_seconds{config="comm_getpid"}"#,
        )
        .expect("counters_start_timestamp_seconds");
        for (made, want) in [300, 200].into_iter().zip(shown) {
            named_thread("bpfsnap-window", move || common::getpid_calls(made));
            let text = scrape(port);
            assert_eq!(
                calls(&text),
                Some(want),
                "{counts}: after {made} more calls\n{text}"
            );
            let start = common::sample(
                &text,
                r#"bpfsnap_counters_start_timestamp_seconds{config="comm_getpid"}"#,
            )
            .unwrap();
            match counts {
                "window" => assert!(start > since, "{counts}: counted since the previous scrape"),
                _ => assert_eq!(start, since, "{counts}: counted since the start"),
            }
            since = start;
        }
    }
}

/// `bpfsnap serve` of examples/events.toml, its `getppid_events_total`
/// (a perf event array) flushed after `flush_interval`.
fn serve_events(port: u16, flush_interval: &str) -> (tempfile::TempDir, Running) {
    let (dir, config) = common::example_config("events.toml");
    let toml = std::fs::read_to_string(&config).unwrap();
    let toml = toml.replace(
        "flush_interval = \"1h\"",
        &format!("flush_interval = \"{flush_interval}\""),
    );
    assert!(toml.contains(flush_interval), "{toml}");
    std::fs::write(&config, toml).unwrap();
    let server = serve(port, &[path_str(&config)]);
    (dir, server)
}

#[test]
fn a_series_not_seen_for_the_flush_interval_is_dropped_and_restarts_from_zero() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    const FLUSH: Duration = Duration::from_secs(3);
    let series = r#"bpfsnap_getppid_events_total{comm="bpfsnap-ev-f"}"#;
    let port = free_port();
    let (_dir, server) = serve_events(port, "3s");
    let loaded = Instant::now();
    getppid_calls_on_cpu0("bpfsnap-ev-f", 3);
    let text = scrape(port);
    assert_eq!(common::sample(&text, series), Some(3.0), "{text}");
    // Not seen again: dropped at the first scrape FLUSH after its last event.
    poll("the idle series dropped", || {
        common::sample(&scrape(port), series)
            .is_none()
            .then_some(())
    });
    assert!(
        loaded.elapsed() >= FLUSH,
        "dropped before the flush interval"
    );
    // Seen again: a new series, counting from zero (a counter reset).
    getppid_calls_on_cpu0("bpfsnap-ev-f", 2);
    let text = scrape(port);
    assert_eq!(common::sample(&text, series), Some(2.0), "{text}");
    server.signal(libc::SIGTERM);
    assert!(server.finish().0.success());
}

#[test]
fn an_overflowing_perf_array_counts_lost_events_and_exits_0() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    // Far more than a per-CPU perf buffer holds (64 pages).
    const BURST: u64 = 100_000;
    let port = free_port();
    let (_dir, server) = serve_events(port, "1h");
    // bpfsnap stopped, nothing reads the buffer: once it is full the kernel
    // counts the rest as lost.
    server.signal(libc::SIGSTOP);
    getppid_calls_on_cpu0("bpfsnap-ev-c", BURST);
    server.signal(libc::SIGCONT);
    // The kernel reports the loss with the next event it can write to that
    // CPU's buffer: a few more events once bpfsnap reads again.
    let mut more = 0;
    let text = poll("lost events reported", || {
        getppid_calls_on_cpu0("bpfsnap-ev-d", 1);
        more += 1;
        let text = scrape(port);
        let lost = common::sample(
            &text,
            r#"bpfsnap_events_lost_total{config="events",map="getppid_events_total"}"#,
        )?;
        (lost > 0.0).then_some(text)
    });
    let value = |series| common::sample(&text, series).unwrap_or(0.0);
    let counted = value(r#"bpfsnap_getppid_events_total{comm="bpfsnap-ev-c"}"#)
        + value(r#"bpfsnap_getppid_events_total{comm="bpfsnap-ev-d"}"#);
    let lost = value(r#"bpfsnap_events_lost_total{config="events",map="getppid_events_total"}"#);
    assert_eq!(
        counted + lost,
        (BURST + more) as f64,
        "every event counted or counted as lost ({counted} + {lost})"
    );
    server.terminate();
}

/// exporter-toolkit's flags: every `--web.listen-address` (`--listen`) is
/// served — an IPv4 address, a bracketed IPv6 one, a host name (its IPv4
/// address, as Go listens) — and said at start without `-v`; the metrics are
/// at `--web.telemetry-path`, with `bpfsnap_build_info`; `/` says the
/// version and links there; a scraper's connection is kept alive.
#[test]
fn every_listen_address_serves_the_telemetry_path() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    let (v4, v6, named) = (free_port(), free_port_v6(), free_port());
    let addresses = [
        format!("127.0.0.1:{v4}"),
        format!("[::1]:{v6}"),
        format!("localhost:{named}"),
    ];
    let mut server = Running::spawn(&[
        "serve",
        "-b",
        "syscalls",
        "--web.listen-address",
        &addresses[0],
        "--listen",
        &addresses[1],
        "--web.listen-address",
        &addresses[2],
        "--web.telemetry-path",
        "/probe/metrics",
    ]);
    let bound = [
        format!("127.0.0.1:{v4}"),
        format!("[::1]:{v6}"),
        format!("127.0.0.1:{named}"),
    ];
    for address in &bound {
        server.wait_for(&format!("serving http://{address}/probe/metrics"));
    }
    let build_info = format!(
        "bpfsnap_build_info{{version=\"{}\",",
        env!("CARGO_PKG_VERSION")
    );
    for address in &bound {
        let url = format!("http://{address}/probe/metrics");
        let (status, _, body) = curl_url(&url, &[]).unwrap();
        let text = String::from_utf8(body).unwrap();
        assert_eq!(status, 200, "{url}: {text}");
        assert!(text.contains(&build_info), "{url}: {text}");
        assert!(text.contains("bpfsnap_syscalls_total{"), "{url}: {text}");
    }
    // The host name was bound to its IPv4 address only.
    assert!(curl_url(&format!("http://[::1]:{named}/probe/metrics"), &[]).is_err());

    let (status, _, body) = curl_url(&format!("http://{}/metrics", bound[0]), &[]).unwrap();
    assert_eq!(status, 404);
    assert!(String::from_utf8_lossy(&body).contains("try /probe/metrics"));
    let (status, head, body) = curl_url(&format!("http://{}/", bound[1]), &[]).unwrap();
    let page = String::from_utf8(body).unwrap();
    assert_eq!(status, 200, "{page}");
    assert!(head.contains("Content-Type: text/html"), "{head}");
    assert!(
        page.contains("href=\"/probe/metrics\"") && page.contains(env!("CARGO_PKG_VERSION")),
        "{page}"
    );

    // Two scrapes in one curl: the second reuses the first one's connection.
    let url = format!("http://{}/probe/metrics", bound[0]);
    let connects = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-o", "/dev/null"])
        .args(["-w", "%{http_code}:%{num_connects} ", &url, &url])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&connects.stdout), "200:1 200:0 ");

    server.terminate();
}

/// A scraper's kept-alive connection, idle between scrapes, is closed at
/// SIGTERM instead of holding bpfsnap up.
#[test]
fn sigterm_closes_idle_kept_alive_connections() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    let port = free_port();
    let server = serve(port, &["-b", "syscalls"]);
    let mut connection = TcpStream::connect(("127.0.0.1", port)).unwrap();
    connection
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: bpfsnap\r\n\r\n")
        .unwrap();
    connection.set_read_timeout(Some(common::PATIENCE)).unwrap();
    let mut answer = Vec::new();
    let mut chunk = [0u8; 1024];
    while !answer.ends_with(b"\r\n\r\nok\n") {
        let read = connection.read(&mut chunk).unwrap();
        assert!(read > 0, "{}", String::from_utf8_lossy(&answer));
        answer.extend_from_slice(&chunk[..read]);
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(
        !answer.contains("Connection: close"),
        "kept alive: {answer}"
    );

    server.terminate();
    assert_eq!(connection.read(&mut chunk).unwrap_or(0), 0, "closed");
}

#[test]
fn a_real_prometheus_ingests_the_series() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    // A series only this test moves: perf-array events of one thread.
    const EVENTS: u64 = 1234;
    let series = r#"bpfsnap_getppid_events_total{comm="bpfsnap-ev-p"}"#;
    let port = free_port();
    let (_dir, server) = serve_events(port, "1h");
    getppid_calls_on_cpu0("bpfsnap-ev-p", EVENTS);
    // Started after the load: every sample it takes is of the final count.
    let prometheus = Prometheus::start(port);
    let value = poll("Prometheus ingested the series", || {
        prometheus.query(series)
    });
    assert_eq!(value, EVENTS as f64, "ingested {series}");
    assert_eq!(prometheus.query(r#"up{job="bpfsnap"}"#), Some(1.0));
    server.signal(libc::SIGTERM);
    assert!(server.finish().0.success());
}

/// 2,000 connections that send half a request head and 500 that send
/// nothing: a scrape from another client still gets 200 within a second,
/// the server's memory grows by less than 50 MiB, and every stalled
/// connection is closed once the header timeout (here 10 s) has passed.
#[test]
fn half_sent_requests_cannot_starve_a_scrape() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
    common::raise_open_files_limit();
    let port = free_port();
    let server = serve(port, &["-b", "syscalls", "--web.header-timeout", "10s"]);
    let pid = server.child.id();
    scrape(port);
    let (fds, rss) = (
        common::open_fds_when_idle(pid, port),
        common::rss_bytes(pid),
    );

    let opened = Instant::now();
    let mut stalled = common::stalled_connections(port, 2000, b"GET /metrics HTTP/1.1\r\nHos");
    stalled.extend(common::stalled_connections(port, 500, b""));
    poll("the server accepted every stalled connection", || {
        (common::open_fds(pid) >= fds + 2500).then_some(())
    });
    let started = Instant::now();
    scrape(port);
    let took = started.elapsed();
    assert!(took < Duration::from_secs(1), "the scrape took {took:?}");
    let grown = common::rss_bytes(pid).saturating_sub(rss);
    eprintln!(
        "2,500 stalled connections: RSS grew by {:.1} MiB, a scrape took {took:?}",
        grown as f64 / common::MIB as f64
    );
    assert!(grown < 50 * common::MIB, "RSS grew by {grown} bytes");
    assert!(opened.elapsed() < HEADER_TIMEOUT, "the test was too slow");

    let deadline = opened + HEADER_TIMEOUT + common::PATIENCE;
    for connection in &mut stalled {
        assert!(common::closed_by_server(connection, deadline));
    }
    assert!(opened.elapsed() >= HEADER_TIMEOUT - Duration::from_secs(1));
    scrape(port);
    server.terminate();
}

/// What `request` gets on a connection of its own, read until the server
/// closes it (a write the server cut short is no error: what it answered
/// is still read).
fn exchange(port: u16, request: &[u8]) -> String {
    let mut connection = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let _ = connection.write_all(request);
    connection.set_read_timeout(Some(common::PATIENCE)).unwrap();
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match connection.read(&mut chunk) {
            Ok(0) => break,
            Ok(read) => answer.extend_from_slice(&chunk[..read]),
            Err(err) if err.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(err) => panic!("{err}: {}", String::from_utf8_lossy(&answer)),
        }
    }
    String::from_utf8_lossy(&answer).into_owned()
}

/// An oversized request head is answered 431, HTTP/1.0 is answered and
/// closed, pipelined requests are answered in order, a TLS ClientHello to
/// the plain port is refused; after each, the server goes on serving.
#[test]
fn odd_requests_are_answered_or_closed_and_serving_goes_on() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    let port = free_port();
    let server = serve(port, &["-b", "syscalls"]);
    let big = format!(
        "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let answer = exchange(port, big.as_bytes());
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 431 "),
        "{answer}"
    );
    scrape(port);

    let answer = exchange(port, b"GET /healthz HTTP/1.0\r\n\r\n");
    assert!(answer.starts_with("HTTP/1.0 200 OK\r\n"), "{answer}");
    assert!(answer.ends_with("\r\n\r\nok\n"), "{answer}");
    scrape(port);

    let answer = exchange(
        port,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n\
          GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    let statuses: Vec<&str> = answer
        .split('\n')
        .map(|line| line.trim_end_matches('\r'))
        .filter(|line| line.starts_with("HTTP/1.1 "))
        .collect();
    assert_eq!(
        statuses,
        [
            "HTTP/1.1 200 OK",
            "HTTP/1.1 404 Not Found",
            "HTTP/1.1 200 OK"
        ],
        "{answer}"
    );
    scrape(port);

    let answer = exchange(port, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03");
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 400 "),
        "{answer}"
    );
    scrape(port);
    server.terminate();
}

/// The `process_*` metrics of the Prometheus client libraries, with
/// client_golang's help texts and types, and values that are this
/// server's: its descriptors, its memory, its start, its limit of open
/// files raised to the hard limit; promtool finds them well formed. In
/// OpenMetrics too.
#[test]
fn process_metrics_are_those_of_the_client_libraries() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    let port = free_port();
    let server = serve(port, &["-b", "syscalls"]);
    let pid = server.child.id();
    let text = scrape(port);
    for (name, kind, help) in [
        (
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
        ),
        (
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
        ),
        (
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors.",
        ),
        (
            "process_virtual_memory_bytes",
            "gauge",
            "Virtual memory size in bytes.",
        ),
        (
            "process_virtual_memory_max_bytes",
            "gauge",
            "Maximum amount of virtual memory available in bytes.",
        ),
        (
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
        ),
        (
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since unix epoch in seconds.",
        ),
    ] {
        assert!(
            text.contains(&format!("# HELP {name} {help}\n")),
            "{name}: {text}"
        );
        assert!(
            text.contains(&format!("# TYPE {name} {kind}\n")),
            "{name}: {text}"
        );
    }
    common::promtool_check(&text);
    let value = |name: &str| common::sample(&text, name).unwrap();
    let fds = common::open_fds(pid) as f64;
    assert!(
        (value("process_open_fds") - fds).abs() <= 4.0,
        "{fds}: {text}"
    );
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    assert_eq!(
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) },
        0
    );
    assert_eq!(value("process_max_fds"), limit.rlim_max as f64, "raised");
    let rss = common::rss_bytes(pid) as f64;
    let resident = value("process_resident_memory_bytes");
    assert!((resident - rss).abs() < rss / 4.0, "{resident} vs {rss}");
    assert!(value("process_virtual_memory_bytes") > resident);
    // utime + stime of /proc/PID/stat, in clock ticks; read after the
    // scrape, so at least what it reported (a start-up can take under a tick).
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(") ").unwrap().1.split(' ').collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    let cpu = ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let reported = value("process_cpu_seconds_total");
    assert!(
        reported >= 0.0 && reported <= cpu + 1e-9,
        "{reported} vs {cpu} s in /proc"
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let started = value("process_start_time_seconds");
    assert!(
        started <= now && started > now - 300.0,
        "{started} vs {now}"
    );

    let (status, _, body) = curl(port, "/metrics", &["Accept: application/openmetrics-text"]);
    assert_eq!(status, 200);
    let openmetrics = String::from_utf8(body).unwrap();
    assert!(
        openmetrics.contains("# TYPE process_cpu_seconds counter\n"),
        "{openmetrics}"
    );
    assert!(
        openmetrics.contains("\nprocess_cpu_seconds_total "),
        "{openmetrics}"
    );
    server.signal(libc::SIGTERM);
    assert!(server.finish().0.success());
}

/// exporter-toolkit's logging flags: `--log.format json` writes every
/// message as a JSON object with a timestamp, its level and its message;
/// `--log.level warn` hides where it serves, as it hides every info
/// message.
#[test]
fn messages_are_json_records_at_the_level_asked_for() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut server = Running::spawn(&[
        "serve",
        "--log.format",
        "json",
        "--log.level",
        "info",
        "-b",
        "syscalls",
        "--listen",
        &listen,
    ]);
    server.wait_for("serving http://");
    scrape(port);
    server.signal(libc::SIGTERM);
    let (status, _, stderr) = server.finish();
    assert!(status.success(), "{stderr}");
    let records: Vec<serde_json::Value> = stderr
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    for record in &records {
        assert!(
            record["time"].as_str().is_some_and(|t| t.ends_with('Z')),
            "{record}"
        );
        assert!(
            record["level"].is_string() && record["msg"].is_string(),
            "{record}"
        );
    }
    assert!(
        records.iter().any(|r| r["level"] == "info"
            && r["msg"] == format!("serving http://{listen}/metrics").as_str()),
        "{stderr}"
    );

    let quiet_port = free_port();
    let quiet_listen = format!("127.0.0.1:{quiet_port}");
    let server = Running::spawn(&[
        "serve",
        "--log.level",
        "warn",
        "-b",
        "syscalls",
        "--listen",
        &quiet_listen,
    ]);
    poll("it serves", || {
        curl_url(&format!("http://{quiet_listen}/healthz"), &[]).ok()
    });
    server.signal(libc::SIGTERM);
    let (status, _, stderr) = server.finish();
    assert!(status.success(), "{stderr}");
    assert!(!stderr.contains("serving"), "{stderr}");
}

/// `command` with `listener` as its descriptor 3 (and no other copy).
fn with_socket_as_fd3(mut command: Command, listener: &std::net::TcpListener) -> Command {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let fd = listener.as_raw_fd();
    // SAFETY: dup2 and fcntl only, between fork and exec.
    unsafe {
        command.pre_exec(move || {
            let ok = match fd {
                3 => libc::fcntl(3, libc::F_SETFD, 0) == 0,
                _ => libc::dup2(fd, 3) == 3,
            };
            match ok {
                true => Ok(()),
                false => Err(std::io::Error::last_os_error()),
            }
        });
    }
    command
}

/// Listening sockets bpfsnap is given: `--listen fd://3` (ebpf_exporter's
/// form) serves on the descriptor passed; `--web.systemd-socket` under
/// systemd's own `systemd-socket-activate`, which listens, and on the first
/// connection execs bpfsnap with the socket as descriptor 3 and LISTEN_PID
/// and LISTEN_FDS set: that first connection is answered too.
#[test]
fn sockets_given_as_fd_or_by_systemd_are_served() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut command = common::bpfsnap();
    command.args(["serve", "-b", "syscalls", "--listen", "fd://3"]);
    let mut server = Running::spawn_command(with_socket_as_fd3(command, &listener));
    drop(listener);
    server.wait_for(&format!("serving http://127.0.0.1:{port}/metrics"));
    assert!(scrape(port).contains("bpfsnap_syscalls_total{"));
    server.terminate();

    let port = common::free_port();
    let mut command = Command::new("systemd-socket-activate");
    command
        .args(["-l", &format!("127.0.0.1:{port}")])
        .args([env!("CARGO_BIN_EXE_bpfsnap"), "serve", "-b", "syscalls"])
        .arg("--web.systemd-socket");
    let mut server = Running::spawn_command(command);
    server.wait_for(&format!("Listening on 127.0.0.1:{port}"));
    // The first scrape starts bpfsnap, which answers it once attached.
    assert!(scrape(port).contains("bpfsnap_syscalls_total{"));
    server.wait_for(&format!("serving http://127.0.0.1:{port}/metrics"));
    server.terminate();
}
