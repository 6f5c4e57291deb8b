//! `bpfsnap serve --web.config.file`: exporter-toolkit's web config, against
//! real clients on loopback. curl checks TLS, basic auth (401 with
//! `WWW-Authenticate` without the right password), plain HTTP sent to the
//! TLS port, the TLS versions allowed, client certificates required and
//! verified; a real Prometheus scrapes over https with a client certificate
//! and basic auth and ingests the series; the file is read again when it
//! changes. Certificates are made by the openssl CLI for each test.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{curl_url, free_port, path_str, poll, Prometheus, Running};

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
            .expect("run openssl (make deps installs it)");
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
    let listen = format!("127.0.0.1:{port}");
    let mut server = Running::spawn(&[
        "serve",
        "-v",
        "-b",
        "syscalls",
        "--listen",
        &listen,
        "--web.config.file",
        path_str(config),
    ]);
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
        assert!(head.contains("WWW-Authenticate: Basic"), "{head}");
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

    server.signal(libc::SIGTERM);
    let (status, _, stderr) = server.finish();
    assert!(status.success(), "{stderr}");
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

    server.signal(libc::SIGTERM);
    let (status, _, stderr) = server.finish();
    assert!(status.success(), "{stderr}");
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
    server.signal(libc::SIGTERM);
    let (status, _, stderr) = server.finish();
    assert!(status.success(), "{stderr}");
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
