//! Peers of `bpfsnap serve` on loopback: free ports, curl, a Prometheus
//! server scraping it, and polling for what they should come to see.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::PATIENCE;

/// A port nothing listens on, on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A port nothing listens on, on ::1.
pub fn free_port_v6() -> u16 {
    TcpListener::bind("[::1]:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// curl's (status, headers, body) for a GET of `url` with curl options
/// `args`; its stderr if no HTTP response came.
pub fn curl_url(url: &str, args: &[&str]) -> Result<(u16, String, Vec<u8>), String> {
    let output = Command::new("curl")
        .args(["-sS", "-g", "-D", "-", "--max-time", "30"])
        .args(args)
        .arg(url)
        .output()
        .expect("run curl (make test-deps installs it)");
    let raw = output.stdout;
    let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Err(String::from_utf8_lossy(&output.stderr).into_owned());
    };
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok((status, head, raw[split + 4..].to_vec()))
}

/// Polls `what` until it returns Some, for at most [`PATIENCE`].
pub fn poll<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(found) = check() {
            return found;
        }
        assert!(Instant::now() < deadline, "never: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A Prometheus server on loopback scraping one job, `bpfsnap`, every
/// second.
pub struct Prometheus {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Prometheus {
    /// Scraping `http://127.0.0.1:TARGET/metrics`.
    pub fn start(target: u16) -> Prometheus {
        Prometheus::start_with(&format!(
            "static_configs:\n      - targets: ['127.0.0.1:{target}']\n"
        ))
    }

    /// Scraping as `job` says: the rest of the job's scrape config, its
    /// keys indented by 4 spaces (`static_configs`, `scheme`, `tls_config`,
    /// `basic_auth`); [`Prometheus::dir`] is there for files it names.
    pub fn start_with(job: &str) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        Prometheus::start_in(dir, job)
    }

    /// [`Prometheus::start_with`] in `dir`, which holds files `job` names.
    pub fn start_in(dir: tempfile::TempDir, job: &str) -> Prometheus {
        Prometheus::start_config(
            dir,
            &format!(
                "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: bpfsnap\n    {job}"
            ),
        )
    }

    /// A server with the whole of `prometheus.yml` given, in `dir` (which
    /// holds files it names).
    pub fn start_config(dir: tempfile::TempDir, yaml: &str) -> Prometheus {
        let config = dir.path().join("prometheus.yml");
        std::fs::write(&config, yaml).unwrap();
        let check = Command::new("promtool")
            .args(["check", "config"])
            .arg(&config)
            .output()
            .expect("run promtool (make test-deps installs it)");
        assert!(
            check.status.success(),
            "prometheus.yml: {}",
            String::from_utf8_lossy(&check.stdout)
        );
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
            .expect("start prometheus (make test-deps installs it)");
        Prometheus { child, port, dir }
    }

    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// The value of an instant query's first result, if any.
    pub fn query(&self, query: &str) -> Option<f64> {
        let json = self.api(&["--data-urlencode", &format!("query={query}")], "query")?;
        json["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    }

    /// An instant query's result (one element per series), or the error
    /// Prometheus gives (a parse error: `bad_data: ...`); Err too while it
    /// does not answer.
    pub fn instant(&self, query: &str) -> Result<Vec<serde_json::Value>, String> {
        let json = self
            .api(&["--data-urlencode", &format!("query={query}")], "query")
            .ok_or("no answer")?;
        match json["status"].as_str() {
            Some("success") => Ok(json["data"]["result"]
                .as_array()
                .cloned()
                .unwrap_or_default()),
            _ => Err(format!("{}: {}", json["errorType"], json["error"])),
        }
    }

    /// Polls until Prometheus answers queries.
    pub fn wait_ready(&self) {
        super::poll("prometheus answers queries", || self.instant("1").ok());
    }

    /// Why the scrapes of the target fail, as Prometheus says it ("" while
    /// they succeed).
    pub fn last_error(&self) -> Option<String> {
        let json = self.api(&[], "targets")?;
        let error = json["data"]["activeTargets"][0]["lastError"].as_str()?;
        Some(error.to_string())
    }

    fn api(&self, args: &[&str], endpoint: &str) -> Option<serde_json::Value> {
        let output = Command::new("curl")
            .args(["-s", "--max-time", "10", "--get"])
            .args(args)
            .arg(format!("http://127.0.0.1:{}/api/v1/{endpoint}", self.port))
            .output()
            .ok()?;
        serde_json::from_slice(&output.stdout).ok()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `bpfsnap serve` of the fixture config tests/fixtures/CONFIG.yaml with
/// the fixture object OBJECT as its object, copied to a directory of their
/// own, on a free loopback port, with `args` before the config; returns it
/// once it serves, its address and the directory (kept while it runs).
pub fn serve_fixture(
    config: &str,
    object: &str,
    args: &[&str],
) -> (super::Running, String, tempfile::TempDir) {
    let dir = super::config_dir();
    let yaml = dir.path().join(format!("{config}.yaml"));
    std::fs::copy(
        super::source_file(&format!("tests/fixtures/{config}.yaml")),
        &yaml,
    )
    .expect("copy the config");
    std::fs::copy(
        super::fixture_object(object),
        dir.path().join(format!("{config}.bpf.o")),
    )
    .expect("copy the object");
    let listen = format!("127.0.0.1:{}", free_port());
    let mut argv = vec!["serve", "-v", "--listen", &listen];
    argv.extend_from_slice(args);
    argv.push(super::path_str(&yaml));
    let mut serving = super::Running::spawn(&argv);
    serving.wait_for("serving http://");
    (serving, listen, dir)
}

/// One scrape of `listen`'s /metrics, which must answer 200.
pub fn scrape_metrics(listen: &str) -> String {
    let (status, _, body) = curl_url(&format!("http://{listen}/metrics"), &[]).expect("a scrape");
    assert_eq!(status, 200, "scrape of {listen}");
    String::from_utf8_lossy(&body).into_owned()
}
