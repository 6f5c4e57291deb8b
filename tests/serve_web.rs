//! `bpfsnap serve --web.config.file`: exporter-toolkit's web config, against
//! real clients on loopback. curl checks TLS, basic auth (401 with
//! `WWW-Authenticate` without the right password), plain HTTP sent to the
//! TLS port, the TLS versions allowed, client certificates required and
//! verified; a real Prometheus scrapes over https with a client certificate
//! and basic auth and ingests the series; the file is read again when it
//! changes. Under load: thousands of stalled TLS handshakes, bad TLS
//! records, 20 scrapers at once. Certificates are made by the openssl CLI
//! for each test.

mod common;

use std::fs;
use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{curl_url, free_port, path_str, poll, Prometheus, Running, Target, MIB};

/// A CA for the server, one for clients, a client certificate it signed and
/// one from a CA bpfsnap does not trust, all in `dir`.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        let pki = Pki {
            dir: tempfile::tempdir().unwrap(),
        };
        pki.ca("ca");
        pki.ca("client-ca");
        pki.ca("other-ca");
        pki.leaf("server", "ca", "serverAuth", "IP:127.0.0.1,DNS:localhost");
        pki.leaf("client", "client-ca", "clientAuth", "DNS:prometheus");
        pki.leaf("stranger", "other-ca", "clientAuth", "DNS:prometheus");
        pki
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn arg(&self, name: &str) -> String {
        path_str(&self.path(name)).to_string()
    }

    fn openssl(&self, args: &[&str]) {
        let output = Command::new("openssl")
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .expect("run openssl (make test-deps installs it)");
        assert!(
            output.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// NAME.pem, a self-signed CA, and its key NAME.key (P-256).
    fn ca(&self, name: &str) {
        self.openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN=bpfsnap test {name}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.pem"),
        ]);
    }

    /// NAME.pem signed by CA for `usage` (serverAuth, clientAuth) with
    /// subject alternative names `names`, and its key NAME.key.
    fn leaf(&self, name: &str, ca: &str, usage: &str, names: &str) {
        let extensions = format!("{name}.ext");
        fs::write(
            self.path(&extensions),
            format!(
                "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n\
                 extendedKeyUsage={usage}\nsubjectAltName={names}\n"
            ),
        )
        .unwrap();
        self.openssl(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            &format!("/CN=bpfsnap test {name}"),
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
        ]);
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-days",
            "2",
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-extfile",
            &extensions,
            "-out",
            &format!("{name}.pem"),
        ]);
    }
}

/// A bcrypt hash of `password`, as `htpasswd -B` makes them (low cost: a test).
fn args(owned: &[String]) -> Vec<&str> {
    owned.iter().map(String::as_str).collect()
}

fn bcrypt(password: &str) -> String {
    bcrypt::hash(password, 6).unwrap()
}

/// Writes `text` as the web config `path`, replacing it at once (a new file
/// renamed over the old, as configuration tools do).
fn write_config(path: &Path, text: &str) {
    let new = path.with_extension("new");
    fs::write(&new, text).unwrap();
    fs::rename(&new, path).unwrap();
}

/// `bpfsnap serve -b syscalls --web.config.file CONFIG` on 127.0.0.1:PORT,
/// once it says it serves `scheme`.
fn serve(port: u16, config: &Path, scheme: &str) -> Running {
    serve_with(port, config, scheme, &[])
}

/// [`serve`] with more arguments.
fn serve_with(port: u16, config: &Path, scheme: &str, extra: &[&str]) -> Running {
    let listen = format!("127.0.0.1:{port}");
    let mut argv = vec![
        "serve",
        "-v",
        "-b",
        "syscalls",
        "--listen",
        &listen,
        "--web.config.file",
        path_str(config),
    ];
    argv.extend_from_slice(extra);
    let mut server = Running::spawn(&argv);
    server.wait_for(&format!("serving {scheme}://{listen}/metrics"));
    server
}

/// The users' part of a web config: `prometheus` with password `s3cret`.
fn users() -> String {
    format!("basic_auth_users:\n  prometheus: {}\n", bcrypt("s3cret"))
}

#[test]
fn tls_and_basic_auth_as_curl_sees_them() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    let pki = Pki::new();
    let config = pki.path("web.yml");
    // Relative paths: from the config's directory.
    fs::write(
        &config,
        format!(
            "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n  \
             min_version: TLS13\nhttp_server_config:\n  headers:\n    \
             X-Content-Type-Options: nosniff\n{}",
            users()
        ),
    )
    .unwrap();
    let port = free_port();
    let server = serve(port, &config, "https");
    let url = format!("https://127.0.0.1:{port}/metrics");
    let ca = pki.arg("ca.pem");
    let trusted = ["--cacert", ca.as_str()];

    let (status, head, body) =
        curl_url(&url, &[&trusted[..], &["-u", "prometheus:s3cret"]].concat()).unwrap();
    let text = String::from_utf8(body).unwrap();
    assert_eq!(status, 200, "{head}{text}");
    assert!(text.contains("bpfsnap_syscalls_total{"), "{text}");
    assert!(text.contains("bpfsnap_build_info{"), "{text}");
    assert!(head.contains("X-Content-Type-Options: nosniff"), "{head}");
    common::promtool_check(&text);

    for credentials in [
        &["-u", "prometheus:wrong"][..],
        &["-u", "nobody:s3cret"],
        &[],
    ] {
        let (status, head, body) = curl_url(&url, &[&trusted[..], credentials].concat()).unwrap();
        let body = String::from_utf8_lossy(&body);
        assert_eq!(status, 401, "{credentials:?}: {head}{body}");
        // Go's spelling of the name (net/http canonicalizes it so).
        assert!(head.contains("Www-Authenticate: Basic"), "{head}");
        assert!(!body.contains("bpfsnap_"), "{body}");
    }
    // Every path is behind the password, as exporter-toolkit has it.
    let (status, ..) = curl_url(&format!("https://127.0.0.1:{port}/"), &trusted).unwrap();
    assert_eq!(status, 401);

    // Plain HTTP to the TLS port: Go's answer, no metrics.
    let (status, _, body) = curl_url(
        &format!("http://127.0.0.1:{port}/metrics"),
        &["-u", "prometheus:s3cret"],
    )
    .unwrap();
    let body = String::from_utf8_lossy(&body);
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("Client sent an HTTP request to an HTTPS server."),
        "{body}"
    );
    // A server certificate the client does not trust, a TLS version the
    // config does not allow: no HTTP at all.
    let err = curl_url(&url, &["-u", "prometheus:s3cret"]).unwrap_err();
    assert!(err.contains("certificate"), "{err}");
    let tls12 = [&trusted[..], &["--tlsv1.2", "--tls-max", "1.2"]].concat();
    assert!(curl_url(&url, &tls12).is_err());

    server.terminate();
}

#[test]
fn client_certificates_are_required_and_verified() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    let pki = Pki::new();
    let config = pki.path("web.yml");
    fs::write(
        &config,
        format!(
            "tls_server_config:\n  cert_file: {}\n  key_file: {}\n  \
             client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {}\n",
            pki.arg("server.pem"),
            pki.arg("server.key"),
            pki.arg("client-ca.pem"),
        ),
    )
    .unwrap();
    let port = free_port();
    let server = serve(port, &config, "https");
    let url = format!("https://127.0.0.1:{port}/metrics");
    let ca = pki.arg("ca.pem");
    let certificate = |name: &str| {
        vec![
            "--cacert".to_string(),
            ca.clone(),
            "--cert".to_string(),
            pki.arg(&format!("{name}.pem")),
            "--key".to_string(),
            pki.arg(&format!("{name}.key")),
        ]
    };

    let (status, _, body) = curl_url(&url, &args(&certificate("client"))).unwrap();
    let text = String::from_utf8(body).unwrap();
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("bpfsnap_syscalls_total{"), "{text}");
    // Without a certificate, or with one the client CA did not sign: the
    // handshake fails, nothing is served.
    assert!(curl_url(&url, &["--cacert", &ca]).is_err());
    assert!(curl_url(&url, &args(&certificate("stranger"))).is_err());

    server.terminate();
}

/// Prometheus scrapes bpfsnap as it scrapes node_exporter behind a web
/// config: `scheme: https`, `tls_config` with the CA and its own client
/// certificate, `basic_auth`.
#[test]
fn a_real_prometheus_scrapes_over_tls_with_a_client_certificate_and_a_password() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    let pki = Pki::new();
    let config = pki.path("web.yml");
    fs::write(
        &config,
        format!(
            "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n  \
             client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: client-ca.pem\n{}",
            users()
        ),
    )
    .unwrap();
    let port = free_port();
    let server = serve(port, &config, "https");
    let prometheus = Prometheus::start_with(&format!(
        "scheme: https\n    tls_config:\n      ca_file: {}\n      cert_file: {}\n      \
         key_file: {}\n    basic_auth:\n      username: prometheus\n      password: s3cret\n    \
         static_configs:\n      - targets: ['127.0.0.1:{port}']\n",
        pki.arg("ca.pem"),
        pki.arg("client.pem"),
        pki.arg("client.key"),
    ));
    let up = poll("Prometheus scraped bpfsnap", || {
        prometheus.query(r#"up{job="bpfsnap"}"#)
    });
    assert_eq!(up, 1.0, "{:?}", prometheus.last_error());
    let ingested = poll("Prometheus ingested bpfsnap's series", || {
        prometheus.query(r#"bpfsnap_up{job="bpfsnap"}"#)
    });
    assert_eq!(ingested, 1.0);
    assert!(prometheus
        .query(r#"count(bpfsnap_syscalls_total{job="bpfsnap"})"#)
        .is_some_and(|series| series > 0.0));
    server.terminate();
}

/// The file is read again when it changes, as exporter-toolkit reads it at
/// every request: a new password applies at once; a file made invalid
/// refuses every request (500) until it is fixed.
#[test]
fn the_web_config_is_read_again_when_it_changes() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    let dir = common::config_dir();
    let config = dir.path().join("web.yml");
    write_config(&config, &users());
    let port = free_port();
    let server = serve(port, &config, "http");
    let url = format!("http://127.0.0.1:{port}/metrics");
    let status = |password: &str| {
        curl_url(&url, &["-u", &format!("prometheus:{password}")])
            .unwrap()
            .0
    };
    assert_eq!(status("s3cret"), 200);
    assert_eq!(status("n3w"), 401);

    write_config(
        &config,
        &format!("basic_auth_users:\n  prometheus: {}\n", bcrypt("n3w")),
    );
    assert_eq!(status("n3w"), 200);
    assert_eq!(status("s3cret"), 401);

    write_config(&config, "basic_auth_users:\n  prometheus: n3w\n");
    let (code, _, body) = curl_url(&url, &["-u", "prometheus:n3w"]).unwrap();
    assert_eq!(code, 500, "{}", String::from_utf8_lossy(&body));
    write_config(&config, "");
    assert_eq!(curl_url(&url, &[]).unwrap().0, 200, "no users: no password");

    server.signal(libc::SIGTERM);
    let (status, _, stderr) = server.finish();
    assert!(status.success(), "{stderr}");
    assert!(
        stderr.contains("the password of \"prometheus\" is not a bcrypt hash")
            && stderr.contains("refusing requests until it is fixed"),
        "the broken config is logged: {stderr}"
    );
}

/// The web config is read again when it changes, after bpfsnap has dropped
/// its capabilities: a key that only CAP_DAC_OVERRIDE could read is found
/// at start, not at the first renewal.
#[test]
fn files_readable_only_with_capabilities_are_refused_at_start() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    let pki = Pki::new();
    let key = pki.path("server.key");
    let status = Command::new("chown")
        .args(["65534:65534", path_str(&key)])
        .status()
        .unwrap();
    assert!(status.success());
    fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let config = pki.path("web.yml");
    fs::write(
        &config,
        "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n",
    )
    .unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let output = common::bpfsnap()
        .args(["serve", "-b", "syscalls", "--listen", &listen])
        .args(["--web.config.file", path_str(&config)])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("bpfsnap: error: web config ")
            && stderr.contains("server.key: Permission denied")
            && stderr.contains("--keep-caps"),
        "{stderr}"
    );
}

/// A web config with TLS (`server.pem`) and the user of [`users`].
fn tls_and_users(pki: &Pki) -> PathBuf {
    let config = pki.path("web.yml");
    fs::write(
        &config,
        format!(
            "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n{}",
            users()
        ),
    )
    .unwrap();
    config
}

/// A ClientHello's record header (512 bytes to come) and its first bytes,
/// and no more: a TLS handshake that never ends.
const HALF_CLIENT_HELLO: &[u8] = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03";

/// 2,000 connections that send nothing and 500 that send half a
/// ClientHello, to a TLS port with basic auth: a scrape over TLS with the
/// password still gets 200 within a second, the server's memory grows by
/// less than 50 MiB, and every stalled connection is closed once the
/// header timeout (here 10 s) has passed.
#[test]
fn stalled_tls_handshakes_cannot_starve_a_scrape() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
    common::raise_open_files_limit();
    let pki = Pki::new();
    let config = tls_and_users(&pki);
    let port = free_port();
    let server = serve_with(port, &config, "https", &["--web.header-timeout", "10s"]);
    let pid = server.child.id();
    let url = format!("https://127.0.0.1:{port}/metrics");
    let ca = pki.arg("ca.pem");
    let scrape = ["--cacert", ca.as_str(), "-u", "prometheus:s3cret"];
    // A first scrape: what every scrape allocates is in the baseline.
    assert_eq!(curl_url(&url, &scrape).unwrap().0, 200);
    let (fds, rss) = (
        common::open_fds_when_idle(pid, port),
        common::rss_bytes(pid),
    );

    let opened = Instant::now();
    let mut stalled = common::stalled_connections(port, 2000, b"");
    stalled.extend(common::stalled_connections(port, 500, HALF_CLIENT_HELLO));
    poll("the server accepted every stalled connection", || {
        (common::open_fds(pid) >= fds + 2500).then_some(())
    });
    let started = Instant::now();
    let (status, head, body) = curl_url(&url, &scrape).unwrap();
    let took = started.elapsed();
    assert_eq!(status, 200, "{head}{}", String::from_utf8_lossy(&body));
    assert!(took < Duration::from_secs(1), "the scrape took {took:?}");
    let grown = common::rss_bytes(pid).saturating_sub(rss);
    eprintln!(
        "2,500 stalled TLS connections: RSS grew by {:.1} MiB, a scrape took {took:?}",
        grown as f64 / MIB as f64
    );
    assert!(grown < 50 * MIB, "RSS grew by {grown} bytes");
    assert!(opened.elapsed() < HEADER_TIMEOUT, "the test was too slow");

    let deadline = opened + HEADER_TIMEOUT + common::PATIENCE;
    for connection in &mut stalled {
        assert!(common::closed_by_server(connection, deadline));
    }
    assert!(opened.elapsed() >= HEADER_TIMEOUT - Duration::from_secs(1));
    assert_eq!(curl_url(&url, &scrape).unwrap().0, 200);
    server.terminate();
}

/// 20 scrapers, each on its own kept-alive TLS connection with the
/// password, scrape back to back for 12 s (BPFSNAP_SCRAPE_LOAD_SECONDS
/// for longer; 12 s keeps `make test` short and already takes thousands
/// of scrapes): not one fails, and the server's memory is flat after the
/// first third (grows by less than 16 MiB). The latencies' p99 is printed.
#[test]
fn twenty_scrapers_over_tls_with_basic_auth() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    let pki = Pki::new();
    let config = tls_and_users(&pki);
    let port = free_port();
    let server = serve_with(port, &config, "https", &["--web.max-requests", "20"]);
    let load = twenty_scrapers(&pki, port, server.child.id(), "bpfsnap serve")
        .unwrap_or_else(|err| panic!("bpfsnap serve: {err}"));
    let grown = load.rss[3].saturating_sub(load.rss[1]);
    assert!(
        load.latencies.len() >= 20,
        "{} scrapes",
        load.latencies.len()
    );
    assert!(
        grown < 16 * MIB,
        "RSS grew by {grown} bytes after the first third"
    );
    server.terminate();
}

/// What [`twenty_scrapers`] measured: every scrape's latency, sorted, and
/// the server's RSS at the start and after each third.
struct ScrapeLoad {
    latencies: Vec<Duration>,
    rss: Vec<u64>,
}

/// 20 scrapers over TLS with basic auth against the server `pid` on `port`
/// for BPFSNAP_SCRAPE_LOAD_SECONDS (12 s by default), in thirds (the first
/// warms up a blocking thread and a malloc arena per scraper; after it,
/// RSS moves by a few MiB either way as arenas are reused). Prints p50,
/// p99, max and RSS under `name`.
fn twenty_scrapers(pki: &Pki, port: u16, pid: u32, name: &str) -> Result<ScrapeLoad, String> {
    let seconds: u64 = std::env::var("BPFSNAP_SCRAPE_LOAD_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(12);
    let target = Target {
        port,
        path: "/metrics".into(),
        tls: Some(common::tls_client(&pki.path("ca.pem"))),
        user: Some(("prometheus".into(), "s3cret".into())),
    };
    let mut latencies = Vec::new();
    let mut rss = vec![common::rss_bytes(pid)];
    for _ in 0..3 {
        let third = Duration::from_secs(seconds) / 3;
        latencies.extend(common::scrape_in_parallel(&target, 20, third)?);
        rss.push(common::rss_bytes(pid));
    }
    latencies.sort();
    let mib = |bytes: &u64| format!("{:.1}", *bytes as f64 / MIB as f64);
    eprintln!(
        "{name}, 20 scrapers over TLS with basic auth for {seconds} s: {} scrapes, \
         p50 {:?}, p99 {:?}, max {:?}; RSS (MiB) at the start and after each third: {}",
        latencies.len(),
        common::quantile(&latencies, 0.5),
        common::quantile(&latencies, 0.99),
        common::quantile(&latencies, 1.0),
        rss.iter().map(mib).collect::<Vec<_>>().join(", ")
    );
    Ok(ScrapeLoad { latencies, rss })
}

/// TLS records that are not a handshake, too long, or not TLS at all:
/// each connection is closed (after an alert, if any), and the server
/// goes on serving.
#[test]
fn bad_tls_records_are_closed_and_serving_goes_on() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    let pki = Pki::new();
    let config = tls_and_users(&pki);
    let port = free_port();
    let server = serve(port, &config, "https");
    let url = format!("https://127.0.0.1:{port}/healthz");
    let ca = pki.arg("ca.pem");
    let scrape = ["--cacert", ca.as_str(), "-u", "prometheus:s3cret"];
    for record in [
        // Application data before any handshake.
        &b"\x17\x03\x03\x00\x05hello"[..],
        // A record longer than TLS allows (2^14 + 2048).
        b"\x16\x03\x03\xff\xff\x01\x00\xff\xfb",
        // A ClientHello whose body is garbage.
        b"\x16\x03\x01\x00\x08\x01\x00\x00\x04\xff\xff\xff\xff",
        // No TLS record type at all.
        &[0x99; 64],
    ] {
        let mut connection = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let _ = connection.write_all(record);
        let deadline = Instant::now() + common::PATIENCE;
        assert!(
            common::closed_by_server(&mut connection, deadline),
            "{record:?} left open"
        );
        assert_eq!(curl_url(&url, &scrape).unwrap().0, 200, "after {record:?}");
    }
    server.terminate();
}

/// A benchmark, run by `make bench` (bench/bench.py's `serve` stage), not
/// by `make test`: `bpfsnap serve -b syscalls` and Debian's node_exporter
/// (its default collectors) behind the same web config, one after the
/// other under the same 20 scrapers, so that their p99 latencies are
/// measured in one run. Prints one `bench-serve:` line that bench.py reads.
#[test]
#[ignore = "a benchmark: make bench runs it (bench/bench.py, stage serve)"]
fn serve_p99_beside_node_exporter() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    let pki = Pki::new();
    let config = tls_and_users(&pki);
    let port = free_port();
    let server = serve_with(port, &config, "https", &["--web.max-requests", "20"]);
    let ours = twenty_scrapers(&pki, port, server.child.id(), "bpfsnap serve")
        .unwrap_or_else(|err| panic!("bpfsnap serve: {err}"));
    server.signal(libc::SIGTERM);
    assert!(server.finish().0.success());
    let web_config = format!("--web.config.file={}", path_str(&config));
    let exporter = common::NodeExporter::with_args(&[web_config]);
    let theirs = twenty_scrapers(&pki, exporter.port, exporter.pid(), "node_exporter")
        .unwrap_or_else(|err| panic!("node_exporter: {err}"));
    let p99 = |load: &ScrapeLoad| common::quantile(&load.latencies, 0.99).as_secs_f64();
    let peak = |load: &ScrapeLoad| load.rss.iter().max().copied().unwrap_or(0);
    println!(
        "bench-serve: bpfsnap_p99_s={} node_exporter_p99_s={} bpfsnap_scrapes={} \
         node_exporter_scrapes={} bpfsnap_peak_rss={} node_exporter_peak_rss={}",
        p99(&ours),
        p99(&theirs),
        ours.latencies.len(),
        theirs.latencies.len(),
        peak(&ours),
        peak(&theirs)
    );
}
