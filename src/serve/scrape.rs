//! What `serve` answers: a fresh snapshot at the telemetry path, a landing
//! page at `/`, `ok` at `/healthz`; and how a scrape is gathered: on a
//! thread of its own, bounded by the scrape timeout, at most `max_requests`
//! at once, the failures counted in `bpfsnap_scrape_errors_total{cause}`,
//! with the process's own metrics (`process_*`) beside the snapshot's.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};

use super::http::{Request, Response};
use super::negotiate::{accepts_gzip, wants_openmetrics};
use super::process;
use crate::collect::Collector;
use crate::exposition::self_metrics::{self, SelfMetric};
use crate::exposition::{Encoding, Exposition};
use crate::probe::Probe;
use crate::session::{Failed, Session};
use crate::snapshot::Counts;

const TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// How scrapes are answered (from the command line).
#[derive(Debug, Clone)]
pub struct Scraping {
    pub namespace: String,
    /// Where the metrics are (`--web.telemetry-path`).
    pub telemetry_path: String,
    /// On a gathering error: serve what was gathered (true) or fail (500).
    pub serve_partial: bool,
    pub counts: Counts,
    /// Scrapes answered at once; more get 503.
    pub max_requests: usize,
    pub scrape_timeout: Duration,
    /// Testing aid: a scrape takes at least this long.
    pub scrape_delay: Duration,
    /// Testing aid: gathering fails as if reading the maps had.
    pub scrape_error: bool,
    /// Testing aid: the delay and error apply to the first N scrapes only.
    pub faulty_scrapes: Option<usize>,
}

/// What the scrape handler shares.
pub struct State {
    /// The probes and what collecting keeps between scrapes: one gathering
    /// at a time.
    gathering: Mutex<(Vec<Probe>, Collector)>,
    failed: Vec<Failed>,
    scraping: Scraping,
    in_flight: AtomicUsize,
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

impl State {
    /// The session's probes, scraped as `scraping` says (and its signals,
    /// which the server waits for).
    pub fn new(session: Session, mut scraping: Scraping) -> (State, crate::session::Stop) {
        scraping.max_requests = scraping.max_requests.max(1);
        let window = scraping.counts == Counts::Window;
        let collector = Collector::new(
            &scraping.namespace,
            scraping.counts,
            window,
            session.attached_at,
        );
        let state = State {
            gathering: Mutex::new((session.probes, collector)),
            failed: session.failed,
            scraping,
            in_flight: AtomicUsize::new(0),
            gatherings: AtomicUsize::new(0),
            abandoned: AtomicUsize::new(0),
            errors: Mutex::new(BTreeMap::new()),
        };
        (state, session.stop)
    }
}

/// Releases an in-flight slot when dropped.
struct Slot<'a>(&'a AtomicUsize);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The answer to `request`.
pub fn handle(state: &Arc<State>, request: &Request) -> Response {
    let path = request.path.as_str();
    if path == state.scraping.telemetry_path {
        return scrape(state, request);
    }
    match path {
        "/healthz" => Response::text(200, "ok\n".to_string()),
        "/" => landing_page(&state.scraping.telemetry_path),
        _ => Response::text(
            404,
            format!("404 not found: try {}\n", state.scraping.telemetry_path),
        ),
    }
}

/// A scrape within the in-flight limit (503 beyond it).
fn scrape(state: &Arc<State>, request: &Request) -> Response {
    let slot = Slot(&state.in_flight);
    let limit = state.scraping.max_requests;
    if state.in_flight.fetch_add(1, Ordering::SeqCst) >= limit {
        count_error(state, "limit");
        drop(slot);
        let body = format!("503 too many scrapes in flight (limit {limit})\n");
        return Response::text(503, body);
    }
    metrics(state, request)
}

/// `/`: what this is, its version, and links to the metrics.
fn landing_page(telemetry_path: &str) -> Response {
    let path = html_escape(telemetry_path);
    let version = html_escape(&format!(
        "{} (revision {})",
        env!("CARGO_PKG_VERSION"),
        env!("BPFSNAP_REVISION")
    ));
    let body = format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>bpfsnap</title></head>\
         <body>\n<h1>bpfsnap</h1>\n<p>eBPF measurements as Prometheus metrics.</p>\n\
         <p>Version {version}</p>\n\
         <ul>\n<li><a href=\"{path}\">Metrics</a> ({path})</li>\n\
         <li><a href=\"/healthz\">Health</a> (/healthz)</li>\n</ul>\n</body></html>\n"
    );
    Response::new(200, "text/html; charset=utf-8", body.into_bytes())
}

fn html_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn count_error(state: &State, cause: &'static str) {
    if let Ok(mut errors) = state.errors.lock() {
        *errors.entry(cause).or_default() += 1;
    }
}

/// A snapshot in the encoding and compression the scraper asked for; 503
/// past the scrape timeout or while an earlier gathering still runs past
/// its own, 500 on a gathering error unless partial results are served.
fn metrics(state: &Arc<State>, request: &Request) -> Response {
    let encoding = match wants_openmetrics(request.header("Accept")) {
        true => Encoding::OpenMetrics,
        false => Encoding::Text,
    };
    if state.abandoned.load(Ordering::SeqCst) > 0 {
        count_error(state, "stuck");
        let body = format!(
            "503 an earlier scrape's gathering is still running past the scrape timeout ({:?}); \
             not starting another until it ends\n",
            state.scraping.scrape_timeout
        );
        return Response::text(503, body);
    }
    let (text, error) = match gather_in_time(state, encoding) {
        Ok(gathered) => gathered,
        Err(response) => return response,
    };
    if let Some(err) = error {
        if !state.scraping.serve_partial || text.is_empty() {
            return Response::text(500, format!("500 gathering metrics failed: {err:#}\n"));
        }
    }
    let content_type = match encoding {
        Encoding::OpenMetrics => OPENMETRICS,
        Encoding::Text => TEXT,
    };
    if accepts_gzip(request.header("Accept-Encoding")) {
        if let Some(compressed) = gzip(text.as_bytes()) {
            return Response::new(200, content_type, compressed)
                .with_header("Content-Encoding", "gzip");
        }
    }
    Response::new(200, content_type, text.into_bytes())
}

fn gzip(bytes: &[u8]) -> Option<Vec<u8>> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).ok()?;
    encoder.finish().ok()
}

/// A gathering's progress, as its scrape and its thread see it.
const RUNNING: u8 = 0;
const DONE: u8 = 1;
/// Its scrape timed out; the thread ends the `abandoned` count when done.
const ABANDONED: u8 = 2;

/// Gathers on a thread of its own, so that a slow snapshot cannot hold the
/// scrape past its timeout: the text and the error, if any (the text is
/// then what could be gathered); or the answer when there is nothing to
/// serve (timed out, no thread).
fn gather_in_time(
    state: &Arc<State>,
    encoding: Encoding,
) -> Result<(String, Option<anyhow::Error>), Response> {
    let started = state.gatherings.fetch_add(1, Ordering::SeqCst);
    let faults = if state.scraping.faulty_scrapes.is_none_or(|n| started < n) {
        Faults {
            delay: state.scraping.scrape_delay,
            error: state.scraping.scrape_error,
        }
    } else {
        Faults::default()
    };
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
        let body = format!("500 cannot start gathering metrics: {err}\n");
        return Err(Response::text(500, body));
    }
    match receiver.recv_timeout(state.scraping.scrape_timeout) {
        Ok(Ok(text)) => Ok((text, None)),
        Ok(Err((partial, err))) => {
            count_error(state, "gather");
            Ok((partial, Some(err)))
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
                state.scraping.scrape_timeout
            );
            Err(Response::text(503, body))
        }
    }
}

/// The configs' metrics and the self metrics, into `exposition`; the first
/// error, if any (what could be gathered is in `exposition` all the same).
fn gather_programs(
    state: &State,
    (probes, collector): &mut (Vec<Probe>, Collector),
    faults: Faults,
    exposition: &mut Exposition<'_>,
) -> Result<()> {
    let ns = state.scraping.namespace.as_str();
    if faults.error {
        bail!("reading the maps failed (forced by --scrape-error)");
    }
    let collected = collector.collect(probes, &state.failed, |families| {
        exposition.add_all(&families)
    })?;
    exposition.add_all(&collected.families)?;
    if state.scraping.counts == Counts::Window {
        // What a scrape's own counts cover: since the previous scrape.
        let window = collected.taken_at.duration_since(collected.window_start);
        let seconds = window.unwrap_or_default().as_secs_f64();
        exposition.add(&SelfMetric::WINDOW.value(ns, seconds))?;
    }
    match collected.unread.into_iter().next() {
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
    let ns = state.scraping.namespace.as_str();
    let started = Instant::now();
    if !faults.delay.is_zero() {
        std::thread::sleep(faults.delay);
    }
    let mut exposition = Exposition::new(encoding).counting(state.scraping.counts);
    let mut failure = match state.gathering.lock() {
        Ok(mut gathering) => gather_programs(state, &mut gathering, faults, &mut exposition).err(),
        Err(_) => Some(anyhow!("a previous scrape panicked while reading the maps")),
    };
    if failure.is_some() {
        // Gathering stopped before its own families: say the scrape is not
        // up, and no more.
        let down = SelfMetric::UP.value(ns, 0.0);
        if let Err(err) = exposition.replace(&down) {
            failure.get_or_insert(err);
        }
    }
    let errors = state.errors.lock().map(|e| e.clone()).unwrap_or_default();
    if let Err(err) = exposition.add_cumulative(&self_metrics::scrape_errors(ns, &errors)) {
        failure.get_or_insert(err);
    }
    let process = process::families().and_then(|families| {
        families
            .iter()
            .try_for_each(|family| exposition.add_cumulative(family))
    });
    if let Err(err) = process {
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
    fn the_landing_page_links_to_the_telemetry_path_and_says_the_version() {
        let page = landing_page("/custom\"<path>");
        let html = String::from_utf8(page.body.clone()).unwrap();
        assert_eq!(
            page.header("Content-Type"),
            Some("text/html; charset=utf-8")
        );
        assert!(
            html.contains("href=\"/custom&quot;&lt;path&gt;\""),
            "{html}"
        );
        assert!(html.contains(env!("CARGO_PKG_VERSION")), "{html}");
    }
}
