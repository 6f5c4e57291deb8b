//! Collect: from attached probes to the families of one output, the one path
//! every mode takes. Each config's maps are read ([`snapshot`]) and turned
//! into its families ([`exposition`]), handed on one config at a time (a
//! large map's family can be encoded and freed before the next is read);
//! then bpfsnap's own metrics: which configs and programs run, since when
//! and for how long their counters count, what is pinned, what the
//! snapshot left out, whether every config ran (`bpfsnap_up`) and how long
//! collecting took. A mode adds only what is its own: `run` the window, and
//! `serve` its scrape errors.

use std::time::{Instant, SystemTime};

use anyhow::Result;

use crate::exposition::self_metrics::{unix_seconds, Bookkeeping, SelfMetric};
use crate::exposition::{self, Family};
use crate::probe::Probe;
use crate::program::Failed;
use crate::snapshot::{self, Counts, Deltas};

/// What collecting keeps from one output to the next.
pub struct Collector {
    namespace: String,
    /// What an output's counts cover (see [`exposition::Exposition`]).
    counts: Counts,
    /// With `--counts window`: the previous snapshot, to subtract.
    deltas: Option<Deltas>,
    /// What the snapshots left out, added up.
    bookkeeping: Bookkeeping,
    /// When the probes were attached (or pinned ones adopted).
    attached_at: SystemTime,
    /// When the previous output was collected: a window's start.
    previous: SystemTime,
}

/// One output's collection, besides the configs' families.
pub struct Collected {
    /// Configs whose maps could not be read this time (written as down;
    /// the others' families were handed on all the same).
    pub unread: Vec<Failed>,
    /// Whether every config ran: attached, and its maps read.
    pub up: bool,
    /// bpfsnap's own families.
    pub families: Vec<Family>,
    /// Since when the output's counts count when they are a window's: the
    /// previous collection (or the attach).
    pub window_start: SystemTime,
    /// When the maps were read.
    pub taken_at: SystemTime,
}

impl Collector {
    /// A collector for probes attached at `attached_at`, into outputs whose
    /// counts cover `counts`; `subtract` takes each snapshot less the one
    /// before (`--counts window`).
    pub fn new(namespace: &str, counts: Counts, subtract: bool, attached_at: SystemTime) -> Self {
        Collector {
            namespace: namespace.to_string(),
            counts,
            deltas: subtract.then(Deltas::default),
            bookkeeping: Bookkeeping::default(),
            attached_at,
            previous: attached_at,
        }
    }

    /// Reads every probe's maps and hands each config's families to `each`;
    /// returns the rest of the output (see [`Collected`]). `failed` are the
    /// configs that did not attach.
    pub fn collect(
        &mut self,
        probes: &mut [Probe],
        failed: &[Failed],
        mut each: impl FnMut(Vec<Family>) -> Result<()>,
    ) -> Result<Collected> {
        let started = Instant::now();
        let ns = self.namespace.as_str();
        let bookkeeping = &mut self.bookkeeping;
        let unread = snapshot::take_each(probes, self.deltas.as_mut(), |probe, mut snapshot| {
            let events_lost = std::mem::take(&mut snapshot.events_lost);
            // Counters' maps are read as they are decoded (snapshot::Unread).
            let exposed = exposition::families(probe.plan(), snapshot, ns)?;
            bookkeeping.add(
                &probe.config().name,
                &exposed.decode_errors,
                &exposed.series_dropped,
                &events_lost,
            );
            each(exposed.families)
        })?;
        let taken_at = SystemTime::now();
        let window_start = std::mem::replace(&mut self.previous, taken_at);
        let down: Vec<&str> = failed
            .iter()
            .chain(&unread)
            .map(|f| f.config.as_str())
            .collect();
        let up = down.is_empty();
        let clock = Clock {
            attached_at: self.attached_at,
            counting_since: match self.counts {
                Counts::Cumulative => self.attached_at,
                Counts::Window => window_start,
            },
            now: taken_at,
            counts: self.counts,
        };
        let mut families = configs(ns, probes, &down, &clock);
        families.extend(self.bookkeeping.families(ns));
        families.push(SelfMetric::UP.value(ns, if up { 1.0 } else { 0.0 }));
        let took = started.elapsed().as_secs_f64();
        families.push(SelfMetric::SNAPSHOT_DURATION.value(ns, took));
        Ok(Collected {
            unread,
            up,
            families,
            window_start,
            taken_at,
        })
    }
}

/// When a collection's counts began and when it was taken: what the
/// counting self metrics say.
struct Clock {
    /// When this process attached the programs (or adopted pinned ones).
    attached_at: SystemTime,
    /// When the counts the output shows began: `attached_at`, or with
    /// `--counts window` the window's start.
    counting_since: SystemTime,
    /// When the maps were read.
    now: SystemTime,
    /// Whether the counts are cumulative (time counted is then exported).
    counts: Counts,
}

/// The configs' and their programs' state: which configs and programs are
/// loaded and up, since when their counters count and for how long they
/// have, what is pinned, and (with kernel.bpf_stats_enabled=1) what the
/// programs cost; and the build.
fn configs(ns: &str, probes: &[Probe], down: &[&str], clock: &Clock) -> Vec<Family> {
    let mut configs = Vec::new();
    let mut config_up = Vec::new();
    let mut started = Vec::new();
    let mut counted = Vec::new();
    let mut pinned_links = Vec::new();
    let (attached_at, now) = (unix_seconds(clock.attached_at), unix_seconds(clock.now));
    for probe in probes {
        let config = vec![probe.config().name.clone()];
        configs.push((config.clone(), 1.0));
        if !down.contains(&config[0].as_str()) {
            config_up.push((config.clone(), 1.0));
        }
        let since = match (clock.counts, probe.pinned()) {
            (Counts::Cumulative, Some(pinned)) => pinned.manifest.attached_at,
            _ => unix_seconds(clock.counting_since),
        };
        started.push((config.clone(), since));
        let seconds = match probe.pinned() {
            Some(pinned) => pinned.counted_seconds(now, attached_at),
            None => now - attached_at,
        };
        counted.push((config.clone(), seconds.max(0.0)));
        if let Some(links) = probe.pinned_links() {
            pinned_links.push((config, links as f64));
        }
    }
    for config in down {
        config_up.push((vec![config.to_string()], 0.0));
    }
    let mut families = vec![
        SelfMetric::ENABLED_CONFIGS.family(ns, configs),
        SelfMetric::CONFIG_UP.family(ns, config_up),
        SelfMetric::COUNTERS_START.family(ns, started),
        SelfMetric::PINNED_LINKS.family(ns, pinned_links),
        build_info(ns),
    ];
    if clock.counts == Counts::Cumulative {
        families.push(SelfMetric::SAMPLED.family(ns, counted));
    }
    families.extend(programs(ns, probes));
    families
}

/// Every loaded program: its identity, whether it attached, what it missed
/// and (with kernel.bpf_stats_enabled=1) what it cost.
fn programs(ns: &str, probes: &[Probe]) -> Vec<Family> {
    const LABELS: &[&str] = &["config", "program", "tag", "attach", "id"];
    let mut info = Vec::new();
    let mut attached = Vec::new();
    let mut run_time = Vec::new();
    let mut run_count = Vec::new();
    let mut recursion_misses = Vec::new();
    for probe in probes {
        let config = &probe.config().name;
        // Programs loaded again at every run (a pinned set of maps only):
        // their kernel statistics start again too, and no counter may.
        let restarts = probe.pinned_links() == Some(0);
        for program in probe.programs() {
            let labels = vec![
                config.clone(),
                program.name.clone(),
                program.tag.clone(),
                program.attach.clone(),
                program.id.to_string(),
            ];
            info.push((labels.clone(), 1.0));
            let attached_now = if program.attached { 1.0 } else { 0.0 };
            attached.push((labels.clone(), attached_now));
            if restarts {
                continue;
            }
            run_time.push((labels.clone(), program.run_time_ns as f64 / 1e9));
            run_count.push((labels.clone(), program.run_count as f64));
            recursion_misses.push((labels, program.recursion_misses as f64));
        }
    }
    let mut families = vec![
        SelfMetric::PROGRAM_INFO.family_of(ns, LABELS, info),
        SelfMetric::PROGRAM_ATTACHED.family_of(ns, LABELS, attached),
        SelfMetric::PROGRAM_RECURSION_MISSES.family_of(ns, LABELS, recursion_misses),
    ];
    if bpf_stats_enabled() {
        families.push(SelfMetric::PROGRAM_RUN_TIME.family_of(ns, LABELS, run_time));
        families.push(SelfMetric::PROGRAM_RUN_COUNT.family_of(ns, LABELS, run_count));
    }
    families
}

/// `NS_build_info{version,revision,libbpf} 1`, as ebpf_exporter exports
/// `ebpf_exporter_build_info` (its labels come from Go's build; these from
/// bpfsnap's).
fn build_info(ns: &str) -> Family {
    // SAFETY: libbpf returns a static NUL-terminated string.
    let libbpf = unsafe { std::ffi::CStr::from_ptr(libbpf_sys::libbpf_version_string()) };
    let labels = vec![
        env!("CARGO_PKG_VERSION").to_string(),
        env!("BPFSNAP_REVISION").to_string(),
        libbpf.to_string_lossy().into_owned(),
    ];
    SelfMetric::BUILD_INFO.family(ns, vec![(labels, 1.0)])
}

fn bpf_stats_enabled() -> bool {
    std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled")
        .is_ok_and(|text| text.trim() == "1")
}
