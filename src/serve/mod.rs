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
//! what was gathered — both counted in `bpfsnap_scrape_errors_total{cause}`.
//! `/` is a landing page with the version and a link to the metrics;
//! `/healthz` answers `ok`. `--web.config.file` adds TLS and basic
//! authentication, as exporter-toolkit's web config does. SIGTERM/SIGINT:
//! stop accepting, finish scrapes in flight, detach, exit 0.
//!
//! - [`address`]: the listen addresses, parsed and resolved as Go does.
//! - [`server`] and [`http`]: accepting, a thread per connection, TLS,
//!   HTTP/1.1.
//! - [`web_config`], [`tls`] and [`auth`]: the web config file, its TLS
//!   settings as rustls', its users.
//! - [`scrape`]: what each path answers, and gathering within the timeout.
//! - [`negotiate`]: the exposition format and compression a scrape asks for.

pub mod address;
pub mod auth;
pub mod http;
pub mod negotiate;
pub mod scrape;
pub mod server;
pub mod tls;
pub mod web_config;

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{anyhow, Result};

use self::address::ListenAddress;
use self::auth::Authenticator;
use self::http::{Request, Response};
use self::scrape::{Scraping, State};
use self::server::{Handler, Server, Tls};
use self::web_config::WebConfigSource;
use crate::log::Log;
use crate::session::{Session, SessionOptions};

#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// What to load and how (shared with `run`).
    pub session: SessionOptions,
    /// Where to listen: one socket each.
    pub listen: Vec<ListenAddress>,
    /// exporter-toolkit's web config: TLS and basic authentication.
    pub web_config: Option<PathBuf>,
    pub scraping: Scraping,
}

/// Connections open at once beyond the scrapes in flight: the kept-alive
/// connections of this many idle scrapers. More are closed as they come.
const IDLE_CONNECTIONS: usize = 64;

pub fn serve(options: &ServeOptions) -> Result<()> {
    let log = options.session.log;
    let web = match &options.web_config {
        Some(path) => Some(Arc::new(WebConfigSource::open(path, log)?)),
        None => None,
    };
    let selected = Session::select(&options.session)?;
    // Before attaching: an address that is taken or does not resolve is
    // found in milliseconds, not after the probes are in.
    let listeners = listen(&options.listen)?;
    let session = selected.open(None)?;
    if session.probes.is_empty() {
        return Err(session.nothing_attached());
    }
    if let Some(web) = &web {
        web.check_readable()?;
    }

    let (state, stop) = State::new(session, options.scraping.clone());
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
    let limit = options.scraping.max_requests.max(1) + IDLE_CONNECTIONS;
    let sockets = listeners
        .into_iter()
        .map(|(listener, _)| listener)
        .collect();
    let server = Server::start(sockets, limit, handler, tls, log)?;

    let signal = stop.recv().ok();
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

/// A listening socket for each address, with the address it is bound to.
fn listen(addresses: &[ListenAddress]) -> Result<Vec<(TcpListener, std::net::SocketAddr)>> {
    let mut listeners = Vec::new();
    for given in addresses {
        let resolved = given.resolve()?;
        let listener = address::bind(given, resolved)?;
        let bound = listener.local_addr()?;
        listeners.push((listener, bound));
    }
    Ok(listeners)
}
