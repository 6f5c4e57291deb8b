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
//! `/healthz` answers `ok`. SIGTERM/SIGINT: stop accepting, finish scrapes
//! in flight, detach, exit 0.
//!
//! - [`address`]: the listen addresses, parsed and resolved as Go does.
//! - [`server`] and [`http`]: accepting, a thread per connection, HTTP/1.1.
//! - [`scrape`]: what each path answers, and gathering within the timeout.
//! - [`negotiate`]: the exposition format and compression a scrape asks for.

pub mod address;
pub mod http;
pub mod negotiate;
pub mod scrape;
pub mod server;

use std::net::TcpListener;
use std::sync::Arc;

use anyhow::Result;

use self::address::ListenAddress;
use self::scrape::{Scraping, State};
use self::server::Server;
use crate::log::Log;
use crate::privilege::{self, KeepCaps};
use crate::probe;
use crate::program::Selection;
use crate::session;

#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub selection: Selection,
    /// Where to listen: one socket each.
    pub listen: Vec<ListenAddress>,
    pub scraping: Scraping,
    /// A program that cannot attach fails its config (see `run --strict`).
    pub strict: bool,
    /// The kernel's types in BTF (see `run --btf`).
    pub btf: Option<std::path::PathBuf>,
    pub keep_caps: KeepCaps,
    pub allow_untrusted_files: bool,
    pub log: Log,
}

/// Connections open at once beyond the scrapes in flight: the kept-alive
/// connections of this many idle scrapers. More are closed as they come.
const IDLE_CONNECTIONS: usize = 64;

pub fn serve(options: &ServeOptions) -> Result<()> {
    let stop = session::stop_signals()?;
    let log = options.log;
    if let Some(path) = &options.btf {
        probe::host::use_external_btf(path)?;
    }
    let programs = session::select(&options.selection, options.allow_untrusted_files, log)?;
    // Before attaching: an address that is taken or does not resolve is
    // found in milliseconds, not after the probes are in.
    let listeners = listen(&options.listen)?;
    probe::check_host()?;
    probe::capture_libbpf_log(log.libbpf);
    let (probes, failed) = session::attach_all(&programs, None, options.strict, log)?;
    privilege::drop_capabilities(&session::keep_caps(&options.keep_caps, &programs, log))?;

    let state = Arc::new(State::new(probes, failed, options.scraping.clone()));
    let handler = {
        let state = state.clone();
        Arc::new(move |request: &http::Request| scrape::handle(&state, request))
    };
    let limit = options.scraping.max_requests.max(1) + IDLE_CONNECTIONS;
    for (_, bound) in &listeners {
        if !bound.ip().is_loopback() {
            log.warn(&format!(
                "listening on {bound}, reachable from other machines"
            ));
        }
        let path = &options.scraping.telemetry_path;
        log.ready(&format!("serving http://{bound}{path}"));
    }
    let sockets = listeners
        .into_iter()
        .map(|(listener, _)| listener)
        .collect();
    let server = Server::start(sockets, limit, handler, log)?;

    let signal = stop.recv().ok();
    log.info(&format!(
        "signal {}: finishing scrapes in flight",
        signal.unwrap_or_default()
    ));
    server.stop();
    drop(state);
    Ok(())
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
