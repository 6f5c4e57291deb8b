//! Clients of `bpfsnap serve` beyond curl: connections that misbehave
//! (send half a request or half a TLS handshake, then wait), scrapers that
//! behave as Prometheus does (one kept-alive connection each, over TLS with
//! basic auth if asked), and what the server's process holds meanwhile.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

/// Raises this process's soft limit of open files to its hard limit, for a
/// test to hold thousands of connections (the server raises its own).
pub fn raise_open_files_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write the one struct given.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        limit.rlim_cur = limit.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
    }
}

/// The resident memory of process `pid`, in bytes (VmRSS).
pub fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().strip_suffix("kB"))
        .and_then(|value| value.trim().parse().ok())
        .expect("VmRSS in /proc/PID/status");
    kib * 1024
}

/// The descriptors process `pid` has open.
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// The descriptors of the server `pid` once it holds no connection on
/// `port`: a client that has gone (curl after a scrape) leaves the
/// server's end open until the server reads the end of the stream, and
/// counting before then counts a descriptor about to close.
pub fn open_fds_when_idle(pid: u32, port: u16) -> usize {
    super::poll("the server closed its connections", || {
        (server_connections(port) == 0).then(|| open_fds(pid))
    })
}

/// Connections whose local end is on `port` in the states in which a
/// server's descriptor holds them: ESTABLISHED (01) and CLOSE_WAIT (08),
/// from /proc/net/tcp and tcp6 (`local_address` is `HEXIP:HEXPORT`).
fn server_connections(port: u16) -> usize {
    let local = format!(":{port:04X}");
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(table).ok())
        .map(|table| {
            table
                .lines()
                .skip(1)
                .filter(|line| {
                    let fields: Vec<&str> = line.split_whitespace().collect();
                    fields.len() > 3
                        && fields[1].ends_with(&local)
                        && matches!(fields[3], "01" | "08")
                })
                .count()
        })
        .sum()
}

pub const MIB: u64 = 1024 * 1024;

/// `count` connections to 127.0.0.1:`port` that each send `first` (maybe
/// nothing) and then wait.
pub fn stalled_connections(port: u16, count: usize, first: &[u8]) -> Vec<TcpStream> {
    (0..count)
        .map(|_| {
            let mut connection = TcpStream::connect(("127.0.0.1", port)).unwrap();
            if !first.is_empty() {
                connection.write_all(first).unwrap();
            }
            connection
        })
        .collect()
}

/// Whether the server closed `connection` before `deadline`: reading sees
/// the end of the stream or a reset (after whatever the server answered,
/// such as a TLS alert), not a timeout.
pub fn closed_by_server(connection: &mut TcpStream, deadline: Instant) -> bool {
    let mut chunk = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        connection.set_read_timeout(Some(left)).unwrap();
        match connection.read(&mut chunk) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(err) if err.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

/// A TLS client configuration trusting the CA certificate(s) in `ca_pem`.
pub fn tls_client(ca_pem: &std::path::Path) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_file_iter(ca_pem).unwrap() {
        roots.add(certificate.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

/// How scrapers reach the server.
#[derive(Clone)]
pub struct Target {
    pub port: u16,
    pub path: String,
    /// TLS to 127.0.0.1 with this configuration, else plain HTTP.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Basic auth (user, password), if any.
    pub user: Option<(String, String)>,
}

trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

/// One scraper's kept-alive connection.
struct Scraper {
    reader: BufReader<Box<dyn Stream>>,
    request: Vec<u8>,
}

impl Scraper {
    fn connect(target: &Target) -> Result<Scraper, String> {
        let socket = TcpStream::connect(("127.0.0.1", target.port)).map_err(|e| e.to_string())?;
        socket.set_nodelay(true).map_err(|e| e.to_string())?;
        let stream: Box<dyn Stream> = match &target.tls {
            None => Box::new(socket),
            Some(config) => {
                let name = ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into());
                let connection = rustls::ClientConnection::new(config.clone(), name)
                    .map_err(|e| e.to_string())?;
                Box::new(rustls::StreamOwned::new(connection, socket))
            }
        };
        let mut request = format!("GET {} HTTP/1.1\r\nHost: 127.0.0.1\r\n", target.path);
        if let Some((user, password)) = &target.user {
            let credentials =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            request.push_str(&format!("Authorization: Basic {credentials}\r\n"));
        }
        request.push_str("Accept-Encoding: gzip\r\n\r\n");
        Ok(Scraper {
            reader: BufReader::new(stream),
            request: request.into_bytes(),
        })
    }

    /// One scrape: Ok with the body's length if answered 200. The body is
    /// framed by Content-Length (bpfsnap) or chunked (Go's net/http, as
    /// node_exporter answers a gzip scrape).
    fn scrape(&mut self) -> Result<usize, String> {
        let err = |e: std::io::Error| e.to_string();
        self.reader
            .get_mut()
            .write_all(&self.request)
            .map_err(err)?;
        self.reader.get_mut().flush().map_err(err)?;
        let mut status = String::new();
        self.reader.read_line(&mut status).map_err(err)?;
        let (mut length, mut chunked) = (None, false);
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line).map_err(err)? == 0 {
                return Err(format!("closed in the head after {status:?}"));
            }
            if line == "\r\n" {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse::<usize>().ok();
                }
                chunked |= name.eq_ignore_ascii_case("transfer-encoding")
                    && value.trim().eq_ignore_ascii_case("chunked");
            }
        }
        let body = match (length, chunked) {
            (Some(length), _) => self.read_body(length).map_err(err)?,
            (None, true) => self.read_chunked().map_err(err)?,
            (None, false) => return Err(format!("{status:?}: no Content-Length")),
        };
        match status.starts_with("HTTP/1.1 200 ") {
            true => Ok(body.len()),
            false => Err(format!("{status:?}: {}", String::from_utf8_lossy(&body))),
        }
    }

    fn read_body(&mut self, length: usize) -> std::io::Result<Vec<u8>> {
        let mut body = vec![0u8; length];
        self.reader.read_exact(&mut body)?;
        Ok(body)
    }

    /// A chunked body: hex sizes, each chunk followed by CRLF, up to the
    /// zero-sized chunk and the (empty) trailer.
    fn read_chunked(&mut self) -> std::io::Result<Vec<u8>> {
        let invalid = |what: String| std::io::Error::new(std::io::ErrorKind::InvalidData, what);
        let mut body = Vec::new();
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line)?;
            let hex = line.trim().split(';').next().unwrap_or_default();
            let size = usize::from_str_radix(hex, 16)
                .map_err(|_| invalid(format!("chunk size {line:?}")))?;
            if size == 0 {
                let mut trailer = String::new();
                while self.reader.read_line(&mut trailer)? > 2 {
                    trailer.clear();
                }
                return Ok(body);
            }
            body.extend(self.read_body(size)?);
            let mut crlf = [0u8; 2];
            self.reader.read_exact(&mut crlf)?;
        }
    }
}

/// `scrapers` threads scrape `target` back to back for `duration`, each on
/// its own kept-alive connection: every scrape's latency, or the first
/// error.
pub fn scrape_in_parallel(
    target: &Target,
    scrapers: usize,
    duration: Duration,
) -> Result<Vec<Duration>, String> {
    let end = Instant::now() + duration;
    let threads: Vec<_> = (0..scrapers)
        .map(|_| {
            let target = target.clone();
            std::thread::spawn(move || -> Result<Vec<Duration>, String> {
                let mut scraper = Scraper::connect(&target)?;
                let mut latencies = Vec::new();
                while Instant::now() < end {
                    let started = Instant::now();
                    scraper.scrape()?;
                    latencies.push(started.elapsed());
                }
                Ok(latencies)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for thread in threads {
        latencies.extend(
            thread
                .join()
                .map_err(|_| "a scraper panicked".to_string())??,
        );
    }
    latencies.sort();
    Ok(latencies)
}

/// The `q` quantile of sorted `latencies` (nearest rank).
pub fn quantile(latencies: &[Duration], q: f64) -> Duration {
    let rank = ((latencies.len() as f64 * q).ceil() as usize).clamp(1, latencies.len());
    latencies[rank - 1]
}
