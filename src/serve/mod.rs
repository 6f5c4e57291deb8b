//! `bpfsnap serve`: probes stay attached and every scrape of the telemetry
//! path (`/metrics`) snapshots the maps, for Prometheus to scrape bpfsnap
//! directly instead of through node_exporter's textfile directory.
//!
//! It behaves as Prometheus exporters do (exporter-toolkit's conventions, as
//! in node_exporter and ebpf_exporter): `--web.listen-address` (bpfsnap's
//! `--listen`, repeatable) and `--web.telemetry-path`. The HTTP behaviour is
//! that of the Prometheus client libraries' handler: text format 0.0.4 by
//! default and OpenMetrics when the scraper asks for it, gzip when accepted,
//! a limit on scrapes in flight (503 over it), a scrape timeout, and a
//! choice between failing a scrape on a gathering error (500) or serving
//! what was gathered — both counted in `bpfsnap_scrape_errors_total{cause}`;
//! and the `process_*` metrics every client library exports.
//! `/` is a landing page with the version and a link to the metrics;
//! `/healthz` answers `ok`. `--web.config.file` adds TLS and basic
//! authentication, as exporter-toolkit's web config does. SIGTERM/SIGINT:
//! stop accepting, finish scrapes in flight, detach, exit 0.
//!
//! - [`address`]: the listen addresses, parsed and resolved as Go does.
//! - [`inherited`]: listening sockets given by the parent (`fd://N`) or by
//!   systemd (`--web.systemd-socket`).
//! - [`server`] and [`http`]: accepting, TLS and HTTP/1.1 (hyper on tokio),
//!   within a header timeout however many clients misbehave.
//! - [`web_config`], [`tls`] and [`auth`]: the web config file, its TLS
//!   settings as rustls', its users.
//! - [`scrape`]: what each path answers, and gathering within the timeout.
//! - [`negotiate`]: the exposition format and compression a scrape asks for.
//! - [`process`]: the `process_*` metrics of the client libraries.

pub mod address;
pub mod auth;
pub mod http;
pub mod inherited;
pub mod negotiate;
pub mod process;
pub mod scrape;
pub mod server;
pub mod tls;
pub mod web_config;

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Result};

use self::address::Listen;
use self::auth::Authenticator;
use self::http::{Request, Response};
use self::scrape::{Scraping, State};
use self::server::{Handler, Limits, Server, Tls};
use self::web_config::WebConfigSource;
use crate::log::Log;
use crate::session::{Session, SessionOptions};

#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// What to load and how (shared with `run`).
    pub session: SessionOptions,
    /// Where to listen: one socket each.
    pub listen: Vec<Listen>,
    /// Take the listening sockets systemd passed instead (socket activation).
    pub systemd_socket: bool,
    /// exporter-toolkit's web config: TLS and basic authentication.
    pub web_config: Option<PathBuf>,
    pub scraping: Scraping,
    /// A connection's time to send a request head or end its TLS handshake
    /// (and the longest a kept-alive connection idles).
    pub header_timeout: Duration,
}

/// Requests answered at once beyond the scrapes in flight (health checks,
/// refusals, password checks); more wait their turn.
const OTHER_REQUESTS: usize = 64;

/// How long stopping waits, beyond the scrape timeout, for a response to be
/// taken by its client.
const STOP_WRITE_GRACE: Duration = Duration::from_secs(30);

pub fn serve(options: &ServeOptions) -> Result<()> {
    let log = options.session.log;
    let web = match &options.web_config {
        Some(path) => Some(Arc::new(WebConfigSource::open(path, log)?)),
        None => None,
    };
    raise_open_files_limit(log);
    let selected = Session::select(&options.session)?;
    // Before attaching: an address that is taken or does not resolve is
    // found in milliseconds, not after the probes are in.
    let listeners = match options.systemd_socket {
        true => systemd_listeners()?,
        false => listen(&options.listen)?,
    };
    let session = selected.open(None)?;
    if session.probes.is_empty() {
        return Err(session.nothing_attached());
    }
    if let Some(web) = &web {
        web.check_readable()?;
    }

    let (state, mut stop) = State::new(session, options.scraping.clone());
    let state = Arc::new(state);
    let handler = handler(state.clone(), web.clone())?;
    let tls = web.as_ref().filter(|web| web.tls()).map(|web| {
        let web = web.clone();
        Arc::new(move || {
            let config = web.current()?;
            config.tls.clone().ok_or_else(|| "TLS is off".to_string())
        }) as Tls
    });
    say_where(
        &listeners,
        web.as_deref(),
        &options.scraping.telemetry_path,
        log,
    );
    let limits = Limits {
        header_timeout: options.header_timeout,
        handlers: options.scraping.max_requests.max(1) + OTHER_REQUESTS,
        stop_grace: options.scraping.scrape_timeout + STOP_WRITE_GRACE,
    };
    let sockets = listeners
        .into_iter()
        .map(|(listener, _)| listener)
        .collect();
    let server = Server::start(sockets, limits, handler, tls, log)?;

    let signal = stop.wait(None);
    log.info(&format!(
        "signal {}: finishing scrapes in flight",
        signal.unwrap_or_default()
    ));
    server.stop();
    drop(state);
    Ok(())
}

/// What answers each request: the scrape handler, behind the web config's
/// users and with its headers when there is one.
fn handler(state: Arc<State>, web: Option<Arc<WebConfigSource>>) -> Result<Arc<Handler>> {
    let Some(web) = web else {
        return Ok(Arc::new(move |request: &Request| {
            scrape::handle(&state, request)
        }));
    };
    let auth = Authenticator::new().map_err(|err| anyhow!(err))?;
    Ok(Arc::new(move |request: &Request| {
        let Ok(config) = web.current() else {
            let body = "500 the web config is invalid: bpfsnap's log says why\n";
            return Response::text(500, body.into());
        };
        let response = if config.users.is_empty()
            || auth.allows(&config.users, request.header("Authorization"))
        {
            scrape::handle(&state, request)
        } else {
            Response::text(401, "401 Unauthorized\n".into())
                .with_header("WWW-Authenticate", "Basic")
        };
        config
            .headers
            .iter()
            .fold(response, |response, (name, value)| {
                response.with_header(name, value)
            })
    }))
}

/// Says where it serves, once ready, and warns of what other machines can
/// reach.
fn say_where(
    listeners: &[(TcpListener, SocketAddr)],
    web: Option<&WebConfigSource>,
    telemetry_path: &str,
    log: Log,
) {
    let config = web.and_then(|web| web.current().ok());
    let tls = config.as_ref().is_some_and(|config| config.tls.is_some());
    let users = config
        .as_ref()
        .is_some_and(|config| !config.users.is_empty());
    let scheme = if tls { "https" } else { "http" };
    for (_, bound) in listeners {
        if !bound.ip().is_loopback() {
            log.warn(&format!(
                "listening on {bound}, reachable from other machines"
            ));
            if users && !tls {
                log.warn(&format!(
                    "basic_auth_users without tls_server_config: passwords sent to {bound} \
                     cross the network in clear text"
                ));
            }
        }
        log.ready(&format!("serving {scheme}://{bound}{telemetry_path}"));
    }
}

/// Raises the soft limit of open files to the hard limit, as Go programs
/// do at start (node_exporter holds thousands of connections so): each
/// client, well-behaved or not, holds a descriptor until its header
/// timeout, and the 1024 of a default soft limit are soon reached.
fn raise_open_files_limit(log: Log) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write the one struct given.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 || limit.rlim_cur >= limit.rlim_max
        {
            return;
        }
        let soft = limit.rlim_cur;
        limit.rlim_cur = limit.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
            let err = std::io::Error::last_os_error();
            log.warn(&format!(
                "cannot raise the limit of open files from {soft} to {}: {err}",
                limit.rlim_max
            ));
        }
    }
}

/// A listening socket for each address, with the address it is bound to.
fn listen(addresses: &[Listen]) -> Result<Vec<(TcpListener, SocketAddr)>> {
    let mut listeners = Vec::new();
    for given in addresses {
        let listener = match given {
            Listen::Address(address) => address::bind(address, address.resolve()?)?,
            Listen::Fd(fd) => inherited::listener(*fd, &given.to_string())?,
        };
        let bound = listener
            .local_addr()
            .map_err(|err| anyhow!("listening on {given}: cannot read its address: {err}"))?;
        listeners.push((listener, bound));
    }
    Ok(listeners)
}

/// The listening sockets systemd passed (`--web.systemd-socket`).
fn systemd_listeners() -> Result<Vec<(TcpListener, SocketAddr)>> {
    let pid = std::env::var("LISTEN_PID").ok();
    let fds = std::env::var("LISTEN_FDS").ok();
    let fds = inherited::systemd_fds(pid.as_deref(), fds.as_deref())?;
    let given: Vec<Listen> = fds.into_iter().map(Listen::Fd).collect();
    listen(&given)
}
