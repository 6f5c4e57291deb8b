//! `bpfsnap serve`: probes stay attached and every scrape of `/metrics`
//! snapshots the maps, for Prometheus to scrape bpfsnap directly instead of
//! through node_exporter's textfile directory.
//!
//! The HTTP behaviour is that of the Prometheus client libraries' handler:
//! text format 0.0.4 by default and OpenMetrics when the scraper asks for it,
//! gzip when accepted, a limit on scrapes in flight (503 over it), a scrape
//! timeout, and a choice between failing a scrape on a gathering error (500)
//! or serving what was gathered — both counted in
//! `bpfsnap_scrape_errors_total{cause}`. `/` links to `/metrics`; `/healthz`
//! answers `ok`. SIGTERM/SIGINT: stop accepting, finish scrapes in flight,
//! detach, exit 0.
//!
//! A gathering that outlives its scrape's timeout cannot be cancelled (it may
//! be stuck in the kernel): while one still runs, scrapes are answered 503 at
//! once instead of starting another, so stuck gatherings cannot pile up.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, bail, Result};
use tiny_http::{Header, Request, Response, Server};

use crate::exposition::self_metrics::{self, SelfMetric};
use crate::exposition::{self, Encoding, Exposition};
use crate::log::Log;
use crate::privilege::{self, KeepCaps};
use crate::probe::{self, Probe};
use crate::program::Selection;
use crate::session::{self, Failed};
use crate::snapshot::{Counts, Deltas};

#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub selection: Selection,
    pub listen: SocketAddr,
    pub namespace: String,
    /// Scrapes answered at once; more get 503.
    pub max_requests: usize,
    pub scrape_timeout: Duration,
    /// On a gathering error: serve what was gathered (true) or fail (500).
    pub serve_partial: bool,
    /// What each scrape's counters and histograms cover.
    pub counts: Counts,
    /// A program that cannot attach fails its config (see `run --strict`).
    pub strict: bool,
    /// The kernel's types in BTF (see `run --btf`).
    pub btf: Option<std::path::PathBuf>,
    /// Testing aid (hidden flag): a scrape takes at least this long.
    pub scrape_delay: Duration,
    /// Testing aid (hidden flag): gathering fails as if reading the maps had.
    pub scrape_error: bool,
    /// Testing aid (hidden flag): the delay and error apply to the first N
    /// scrapes only (all if None).
    pub faulty_scrapes: Option<usize>,
    pub keep_caps: KeepCaps,
    pub allow_untrusted_files: bool,
    pub log: Log,
}

const TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What the scrape handler shares.
struct State {
    probes: Mutex<Vec<Probe>>,
    /// With `--counts window`: the previous scrape's values and when it was
    /// (taken with `probes` held).
    deltas: Option<Mutex<(Deltas, SystemTime)>>,
    failed: Vec<Failed>,
    attached_at: SystemTime,
    namespace: String,
    serve_partial: bool,
    in_flight: AtomicUsize,
    max_requests: usize,
    scrape_timeout: Duration,
    scrape_delay: Duration,
    scrape_error: bool,
    faulty_scrapes: Option<usize>,
    /// Gatherings started so far (for `faulty_scrapes`).
    gatherings: AtomicUsize,
    /// Gatherings still running whose scrape gave up on them (timed out).
    abandoned: AtomicUsize,
    /// cause → count, exported as bpfsnap_scrape_errors_total.
    errors: Mutex<BTreeMap<&'static str, u64>>,
}

/// What a test asked one gathering to suffer (by default, nothing).
#[derive(Clone, Copy, Default)]
struct Faults {
    delay: Duration,
    error: bool,
}

pub fn serve(options: &ServeOptions) -> Result<()> {
    let stop = session::stop_signals()?;
    let log = options.log;
    if let Some(path) = &options.btf {
        probe::host::use_external_btf(path)?;
    }
    let programs = session::select(&options.selection, options.allow_untrusted_files, log)?;
    probe::check_host()?;
    probe::capture_libbpf_log(log.libbpf);
    let (probes, failed) = session::attach_all(&programs, None, options.strict, log)?;
    let listener = TcpListener::bind(options.listen)
        .map_err(|err| anyhow!("cannot listen on {}: {err}", options.listen))?;
    // The same socket, to shut down on SIGTERM: tiny_http keeps accepting
    // until it is dropped, after the scrapes in flight.
    let accepting = listener
        .try_clone()
        .map_err(|err| anyhow!("cannot listen on {}: {err}", options.listen))?;
    let server = Server::from_listener(listener, None)
        .map_err(|err| anyhow!("cannot listen on {}: {err}", options.listen))?;
    privilege::drop_capabilities(&session::keep_caps(&options.keep_caps, &programs, log))?;
    if !options.listen.ip().is_loopback() {
        log.warn(&format!(
            "listening on {}, reachable from other machines",
            options.listen
        ));
    }
    log.ready(&format!("serving http://{}/metrics", options.listen));

    let attached_at = SystemTime::now();
    let state = Arc::new(State {
        probes: Mutex::new(probes),
        deltas: (options.counts == Counts::Window)
            .then(|| Mutex::new((Deltas::default(), attached_at))),
        failed,
        attached_at,
        namespace: options.namespace.clone(),
        serve_partial: options.serve_partial,
        in_flight: AtomicUsize::new(0),
        max_requests: options.max_requests.max(1),
        scrape_timeout: options.scrape_timeout,
        scrape_delay: options.scrape_delay,
        scrape_error: options.scrape_error,
        faulty_scrapes: options.faulty_scrapes,
        gatherings: AtomicUsize::new(0),
        abandoned: AtomicUsize::new(0),
        errors: Mutex::new(BTreeMap::new()),
    });
    let server = Arc::new(server);
    let mut workers = Vec::new();
    // Worker threads take requests; one more than the limit, so requests
    // over it are answered 503 at once instead of queueing.
    for _ in 0..=state.max_requests {
        let (server, state) = (server.clone(), state.clone());
        workers.push(std::thread::spawn(move || {
            while let Ok(request) = server.recv() {
                handle(&state, request);
            }
        }));
    }
    let signal = stop.recv().ok();
    log.info(&format!(
        "signal {}: finishing scrapes in flight",
        signal.unwrap_or_default()
    ));
    // New connections are refused from here on (a listening socket shut down
    // closes; tiny_http's accept thread ends on the error).
    // SAFETY: shutdown(2) on a descriptor `accepting` owns and keeps open.
    unsafe { libc::shutdown(accepting.as_raw_fd(), libc::SHUT_RDWR) };
    // One unblock per worker: each ends its loop once its scrape in flight,
    // if any, is answered.
    for _ in &workers {
        server.unblock();
    }
    for worker in workers {
        let _ = worker.join();
    }
    drop(state);
    Ok(())
}

/// Releases an in-flight slot when dropped.
struct Slot<'a>(&'a AtomicUsize);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn handle(state: &Arc<State>, request: Request) {
    let path = request
        .url()
        .split('?')
        .next()
        .unwrap_or_default()
        .to_string();
    let response = match path.as_str() {
        "/metrics" => {
            let slot = Slot(&state.in_flight);
            if state.in_flight.fetch_add(1, Ordering::SeqCst) >= state.max_requests {
                count_error(state, "limit");
                drop(slot);
                let body = format!(
                    "503 too many scrapes in flight (limit {})\n",
                    state.max_requests
                );
                return respond(request, plain(503, body));
            }
            let response = metrics(state, &request);
            drop(slot);
            response
        }
        "/healthz" => plain(200, "ok\n".to_string()),
        "/" => html(),
        _ => plain(404, "404 not found: try /metrics\n".to_string()),
    };
    respond(request, response);
}

fn respond(request: Request, response: Response<std::io::Cursor<Vec<u8>>>) {
    let _ = request.respond(response);
}

/// A response header; names and values are constants of ours (ASCII).
fn header(name: &'static str, value: &'static str) -> Header {
    Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("constant ASCII header")
}

fn plain(status: u16, body: String) -> Response<std::io::Cursor<Vec<u8>>> {
    Response::from_data(body.into_bytes())
        .with_status_code(status)
        .with_header(header("Content-Type", "text/plain; charset=utf-8"))
}

fn html() -> Response<std::io::Cursor<Vec<u8>>> {
    let body = "<!doctype html><html><head><title>bpfsnap</title></head><body>\
                <h1>bpfsnap</h1><p>eBPF measurements as Prometheus metrics.</p>\
                <p><a href=\"/metrics\">Metrics</a></p></body></html>\n";
    Response::from_data(body.as_bytes().to_vec())
        .with_header(header("Content-Type", "text/html; charset=utf-8"))
}

fn request_header<'a>(request: &'a Request, name: &str) -> &'a str {
    request
        .headers()
        .iter()
        .find(|h| h.field.as_str().as_str().eq_ignore_ascii_case(name))
        .map_or("", |h| h.value.as_str())
}

/// The elements of a header list (`Accept`, `Accept-Encoding`), lowercased,
/// each with its q-value (1 if not given; an unreadable one makes the element
/// unacceptable). Parameters other than q are dropped.
fn weighted(header: &str) -> Vec<(String, f32)> {
    header
        .split(',')
        .filter_map(|element| {
            let mut parts = element.split(';');
            let value = parts.next()?.trim().to_ascii_lowercase();
            if value.is_empty() {
                return None;
            }
            let q = parts
                .filter_map(|param| {
                    let (name, q) = param.split_once('=')?;
                    name.trim().eq_ignore_ascii_case("q").then(|| q.trim())
                })
                .next_back()
                .map_or(Some(1.0), |q| q.parse::<f32>().ok())
                .filter(|q| (0.0..=1.0).contains(q))
                .unwrap_or(0.0);
            Some((value, q))
        })
        .collect()
}

/// The highest q of the elements that are one of `names`, if any is.
fn quality(elements: &[(String, f32)], names: &[&str]) -> Option<f32> {
    elements
        .iter()
        .filter(|(value, _)| names.contains(&value.as_str()))
        .map(|(_, q)| *q)
        .reduce(f32::max)
}

/// OpenMetrics only when the scraper names it, acceptable (q > 0) and liked
/// at least as much as the text format (`text/plain`, `text/*`, `*/*`);
/// otherwise the default, text 0.0.4.
fn wants_openmetrics(accept: &str) -> bool {
    let elements = weighted(accept);
    let openmetrics = quality(&elements, &["application/openmetrics-text"]).unwrap_or(0.0);
    let text = quality(&elements, &["text/plain", "text/*", "*/*"]).unwrap_or(0.0);
    openmetrics > 0.0 && openmetrics >= text
}

/// gzip when acceptable: named with q > 0, or not named and `*` is.
fn accepts_gzip(accept_encoding: &str) -> bool {
    let elements = weighted(accept_encoding);
    quality(&elements, &["gzip"])
        .or_else(|| quality(&elements, &["*"]))
        .is_some_and(|q| q > 0.0)
}

fn count_error(state: &State, cause: &'static str) {
    if let Ok(mut errors) = state.errors.lock() {
        *errors.entry(cause).or_default() += 1;
    }
}

fn metrics(state: &Arc<State>, request: &Request) -> Response<std::io::Cursor<Vec<u8>>> {
    let openmetrics = wants_openmetrics(request_header(request, "Accept"));
    let encoding = match openmetrics {
        true => Encoding::OpenMetrics,
        false => Encoding::Text,
    };
    let gzip = accepts_gzip(request_header(request, "Accept-Encoding"));

    if state.abandoned.load(Ordering::SeqCst) > 0 {
        count_error(state, "stuck");
        let body = format!(
            "503 an earlier scrape's gathering is still running past the scrape timeout ({:?}); \
             not starting another until it ends\n",
            state.scrape_timeout
        );
        return plain(503, body);
    }
    let started = state.gatherings.fetch_add(1, Ordering::SeqCst);
    let faults = if state.faulty_scrapes.is_none_or(|n| started < n) {
        Faults {
            delay: state.scrape_delay,
            error: state.scrape_error,
        }
    } else {
        Faults::default()
    };

    // Gather on a thread of its own, so a slow snapshot cannot hold the
    // scrape past its timeout.
    let (sender, receiver) = mpsc::channel();
    let gatherer = state.clone();
    let progress = Arc::new(AtomicU8::new(RUNNING));
    let finished = progress.clone();
    let spawned = std::thread::Builder::new()
        .name("gather".into())
        .spawn(move || {
            let result = gather(&gatherer, faults, encoding);
            if finished.swap(DONE, Ordering::SeqCst) == ABANDONED {
                gatherer.abandoned.fetch_sub(1, Ordering::SeqCst);
            }
            let _ = sender.send(result);
        });
    if let Err(err) = spawned {
        count_error(state, "gather");
        return plain(500, format!("500 cannot start gathering metrics: {err}\n"));
    }
    let (text, error) = match receiver.recv_timeout(state.scrape_timeout) {
        Ok(Ok(text)) => (text, None),
        Ok(Err((partial, err))) => {
            count_error(state, "gather");
            (partial, Some(err))
        }
        Err(_) => {
            // Counted before it is marked, so the gathering thread's
            // decrement (it sees the mark) always comes after.
            state.abandoned.fetch_add(1, Ordering::SeqCst);
            if progress
                .compare_exchange(RUNNING, ABANDONED, Ordering::SeqCst, Ordering::SeqCst)
                .is_err()
            {
                state.abandoned.fetch_sub(1, Ordering::SeqCst);
            }
            count_error(state, "timeout");
            let body = format!(
                "503 gathering metrics took longer than the scrape timeout ({:?})\n",
                state.scrape_timeout
            );
            return plain(503, body);
        }
    };
    if let Some(err) = error {
        if !state.serve_partial || text.is_empty() {
            return plain(500, format!("500 gathering metrics failed: {err:#}\n"));
        }
    }
    let (body, content_type) = match encoding {
        Encoding::OpenMetrics => (text, OPENMETRICS),
        Encoding::Text => (text, TEXT),
    };
    let mut response = Response::from_data(body.clone().into_bytes())
        .with_header(header("Content-Type", content_type));
    if gzip {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        if encoder.write_all(body.as_bytes()).is_ok() {
            if let Ok(compressed) = encoder.finish() {
                response = Response::from_data(compressed)
                    .with_header(header("Content-Type", content_type))
                    .with_header(header("Content-Encoding", "gzip"));
            }
        }
    }
    response
}

/// A gathering's progress, as its scrape and its thread see it.
const RUNNING: u8 = 0;
const DONE: u8 = 1;
/// Its scrape timed out; the thread ends the `abandoned` count when done.
const ABANDONED: u8 = 2;

/// The configs' metrics and the self metrics, into `exposition`; the first
/// error, if any (what could be gathered is in `exposition` all the same).
fn gather_programs(
    state: &State,
    probes: &mut [Probe],
    faults: Faults,
    exposition: &mut Exposition,
) -> Result<()> {
    let ns = state.namespace.as_str();
    if faults.error {
        bail!("reading the maps failed (forced by --scrape-error)");
    }
    // Taken while `probes` is held: one gathering at a time moves it on.
    let mut deltas = state.deltas.as_ref().and_then(|d| d.lock().ok());
    let counting_since = deltas.as_ref().map_or(state.attached_at, |d| d.1);
    let gathered = exposition::gather(
        probes,
        ns,
        deltas.as_deref_mut().map(|d| &mut d.0),
        |families| exposition.add_all(&families),
    )?;
    if let Some(deltas) = deltas.as_deref_mut() {
        deltas.1 = SystemTime::now();
    }
    let down: Vec<&str> = state
        .failed
        .iter()
        .chain(&gathered.unread)
        .map(|f| f.config.as_str())
        .collect();
    let mut families = self_metrics::configs(ns, probes, &down, counting_since);
    families.extend(gathered.bookkeeping.families(ns));
    exposition.add_all(&families)?;
    match gathered.unread.into_iter().next() {
        Some(first) => Err(first.error),
        None => Ok(()),
    }
}

/// One scrape's exposition; on error, what could be gathered and the error.
fn gather(
    state: &State,
    faults: Faults,
    encoding: Encoding,
) -> Result<String, (String, anyhow::Error)> {
    let ns = state.namespace.as_str();
    let started = Instant::now();
    if !faults.delay.is_zero() {
        std::thread::sleep(faults.delay);
    }
    let mut exposition = Exposition::new(encoding);
    let mut failure = match state.probes.lock() {
        Ok(mut probes) => gather_programs(state, &mut probes, faults, &mut exposition).err(),
        Err(_) => Some(anyhow!("a previous scrape panicked while reading the maps")),
    };
    let errors = state.errors.lock().map(|e| e.clone()).unwrap_or_default();
    let up = state.failed.is_empty();
    let extra = [
        SelfMetric::SNAPSHOT_DURATION.value(ns, started.elapsed().as_secs_f64()),
        SelfMetric::UP.value(ns, if up { 1.0 } else { 0.0 }),
        self_metrics::scrape_errors(ns, &errors),
    ];
    if let Err(err) = exposition.add_all(&extra) {
        failure.get_or_insert(err);
    }
    let text = exposition.into_text();
    match failure {
        None => Ok(text),
        Some(err) => Err((
            text,
            err.context("gathering metrics")
                .context(format!("after {:?}", started.elapsed())),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_honours_q_values() {
        for (accept, openmetrics) in [
            ("", false),
            ("*/*", false),
            ("text/plain", false),
            ("application/openmetrics-text", true),
            ("application/openmetrics-text; version=1.0.0", true),
            ("Application/OpenMetrics-Text;Version=1.0.0", true),
            ("application/openmetrics-text;q=0, text/plain", false),
            ("application/openmetrics-text; q=0", false),
            (
                "application/openmetrics-text;q=0.5, text/plain;q=0.9",
                false,
            ),
            ("application/openmetrics-text;q=0.9, text/plain;q=0.5", true),
            ("application/openmetrics-text;q=0.5, */*", false),
            ("application/openmetrics-text, text/plain", true),
            ("application/openmetrics-text;q=zero", false),
            ("application/openmetrics-text;q=2", false),
            // What Prometheus sends.
            (
                "application/openmetrics-text;version=1.0.0,application/openmetrics-text;\
                 version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
                true,
            ),
            ("text/plain;version=0.0.4;q=1,*/*;q=0.1", false),
        ] {
            assert_eq!(wants_openmetrics(accept), openmetrics, "Accept: {accept}");
        }
        for (encoding, gzip) in [
            ("", false),
            ("gzip", true),
            ("GZIP", true),
            ("deflate, gzip;q=0.5", true),
            ("gzip;q=0", false),
            ("gzip; q=0.0, identity", false),
            ("*", true),
            ("*;q=0", false),
            ("gzip;q=0, *", false),
            ("identity", false),
            ("gzipped", false),
        ] {
            assert_eq!(accepts_gzip(encoding), gzip, "Accept-Encoding: {encoding}");
        }
    }
}
