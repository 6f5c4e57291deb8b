//! bpfsnap's own metrics: every family defined once, in [`SelfMetric`]'s
//! table (name, help, kind, labels, and the name ebpf_exporter gives it where
//! its dashboards expect one), filled by whoever knows the values: the
//! configs' and programs' state by `collect`, what gathering left out by
//! [`Bookkeeping`], the window by `run` and scrape errors by `serve`.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use super::{metric_name, Errors, Family, Kind, Samples};
use crate::snapshot::StreamLoss;

/// The namespace that asks for ebpf_exporter's metric names.
pub const EBPF_EXPORTER_NAMESPACE: &str = "ebpf_exporter";

/// One self-metric family.
pub struct SelfMetric {
    /// Without the namespace.
    pub name: &'static str,
    pub help: &'static str,
    pub kind: Kind,
    pub labels: &'static [&'static str],
    /// Under the `ebpf_exporter` namespace: ebpf_exporter's name for it and
    /// its labels, as its dashboards expect them.
    pub upstream: Option<(&'static str, &'static [&'static str])>,
}

macro_rules! self_metric {
    ($id:ident, $name:literal, $kind:ident, [$($label:literal),*], $help:literal $(, upstream = ($up:literal, [$($up_label:literal),*]))?) => {
        pub const $id: SelfMetric = SelfMetric {
            name: $name,
            help: $help,
            kind: Kind::$kind,
            labels: &[$($label),*],
            upstream: self_metric!(@upstream $(($up, [$($up_label),*]))?),
        };
    };
    (@upstream ($up:literal, [$($up_label:literal),*])) => { Some(($up, &[$($up_label),*])) };
    (@upstream) => { None };
}

impl SelfMetric {
    self_metric!(
        ENABLED_CONFIGS,
        "enabled_configs",
        Gauge,
        ["name"],
        "The configs (programs) this run loaded."
    );
    self_metric!(
        CONFIG_UP,
        "config_up",
        Gauge,
        ["config"],
        "1 if the config's programs were loaded and attached, 0 if that failed."
    );
    self_metric!(COUNTERS_START, "counters_start_timestamp_seconds", Gauge, ["config"],
        "Unix time from which the config's counters count (the first run's attach time when they carry on across runs; with --counts window, the window's start).");
    self_metric!(SAMPLED, "sampled_seconds_total", Counter, ["config"],
        "Time the config's programs have counted into its counters: rate(its counter) / rate(this) is the rate while they counted, whatever share of the time that was.");
    self_metric!(PINNED_LINKS, "pinned_links", Gauge, ["config"],
        "Links of the config pinned in bpffs (--pin), which keep its programs counting between runs; 0 when the kernel refused to pin them (the warning says why): then they count during each run's window only.");
    // Keyed by config and program, never by the kernel's id, which is new
    // whenever a program is loaded again: a series per load would pile up
    // in Prometheus. ebpf_exporter's names keep its labels.
    self_metric!(
        PROGRAM_INFO,
        "program_info",
        Gauge,
        ["config", "program", "tag", "attach"],
        "Every loaded BPF program: its config, name, tag (a hash of its instructions) and attach type.",
        upstream = ("ebpf_program_info", ["config", "id", "program", "tag"])
    );
    self_metric!(
        PROGRAM_ATTACHED,
        "program_attached",
        Gauge,
        ["config", "program"],
        "Whether the BPF program was attached.",
        upstream = ("ebpf_program_attached", ["id"])
    );
    self_metric!(PROGRAM_RECURSION_MISSES, "program_recursion_misses_total", Counter, ["config", "program"],
        "Events the BPF program missed because it was already running on that CPU (e.g. interrupted by a hardirq hitting the same hook): its counts fall short by this much.");
    // ebpf_exporter's run time is a counter without `_total`, which promtool
    // flags; kept under its namespace for its dashboards.
    self_metric!(
        PROGRAM_RUN_TIME,
        "program_run_time_seconds_total",
        Counter,
        ["config", "program"],
        "Time the BPF program has run in the kernel (kernel.bpf_stats_enabled=1).",
        upstream = ("ebpf_program_run_time_seconds", ["id"])
    );
    // Not `program_run_count_total`: with `--counts window` a counter is a
    // gauge without `_total`, and promtool refuses a gauge named `_count`.
    self_metric!(
        PROGRAM_RUN_COUNT,
        "program_runs_total",
        Counter,
        ["config", "program"],
        "Times the BPF program has run (kernel.bpf_stats_enabled=1).",
        upstream = ("ebpf_program_run_count_total", ["id"])
    );
    self_metric!(BUILD_INFO, "build_info", Gauge, ["version", "revision", "libbpf"],
        "The bpfsnap build running: its version, the commit it was built from and the libbpf it links.");
    self_metric!(
        DECODER_ERRORS,
        "decoder_errors_total",
        Counter,
        ["config", "decoder"],
        "Map keys skipped because a label decoder rejected them, counted at each snapshot."
    );
    self_metric!(
        SERIES_DROPPED,
        "series_dropped_total",
        Counter,
        ["config", "metric"],
        "Series left out of the outputs because the metric has more than its max_series, counted at each snapshot."
    );
    self_metric!(EVENTS_LOST, "events_lost_total", Counter, ["config", "map"],
        "Events of event-stream counters lost before bpfsnap could count them (buffer full, or shorter than their labels).");
    self_metric!(EVENTS_DROPPED, "events_dropped_total", Counter, ["config", "map"],
        "Events of event-stream counters not counted because their label set was new while the counter already counted max_series label sets.");
    self_metric!(WINDOW, "window_seconds", Gauge, [],
        "Length of the sampling window these metrics cover, as measured (shorter than requested when a signal ended it; since the last run in --pin mode; since the previous scrape with serve --counts window).");
    self_metric!(
        WINDOW_START,
        "window_start_timestamp_seconds",
        Gauge,
        [],
        "Unix time at which the sampling window started."
    );
    self_metric!(
        WINDOW_END,
        "window_end_timestamp_seconds",
        Gauge,
        [],
        "Unix time at which the sampling window ended."
    );
    self_metric!(
        SNAPSHOT_DURATION,
        "snapshot_duration_seconds",
        Gauge,
        [],
        "Time taken to read the BPF maps and encode their metrics."
    );
    self_metric!(
        UP,
        "up",
        Gauge,
        [],
        "1 if every selected config ran, 0 if some failed."
    );
    self_metric!(
        WRITE_FAILURES,
        "write_failures_total",
        Counter,
        [],
        "Outputs this process failed to write (interval mode; each is retried the next window)."
    );
    self_metric!(
        LAST_SUCCESS,
        "last_success_timestamp_seconds",
        Gauge,
        [],
        "Unix time of the last run in which every config ran: alert when it is old."
    );
    self_metric!(SCRAPE_ERRORS, "scrape_errors_total", Counter, ["cause"],
        "Scrapes that failed or were refused, by cause: gather (gathering failed), timeout, limit (too many in flight), stuck (a timed-out gathering still runs).");

    /// Every self metric, for docs and tests.
    pub const ALL: &'static [SelfMetric] = &[
        Self::ENABLED_CONFIGS,
        Self::CONFIG_UP,
        Self::COUNTERS_START,
        Self::SAMPLED,
        Self::PINNED_LINKS,
        Self::PROGRAM_INFO,
        Self::PROGRAM_ATTACHED,
        Self::PROGRAM_RECURSION_MISSES,
        Self::PROGRAM_RUN_TIME,
        Self::PROGRAM_RUN_COUNT,
        Self::BUILD_INFO,
        Self::DECODER_ERRORS,
        Self::SERIES_DROPPED,
        Self::EVENTS_LOST,
        Self::EVENTS_DROPPED,
        Self::WINDOW,
        Self::WINDOW_START,
        Self::WINDOW_END,
        Self::SNAPSHOT_DURATION,
        Self::UP,
        Self::WRITE_FAILURES,
        Self::LAST_SUCCESS,
        Self::SCRAPE_ERRORS,
    ];

    /// Its family's name under namespace `ns`.
    pub fn name_in(&self, ns: &str) -> String {
        match self.upstream {
            Some((name, _)) if ns == EBPF_EXPORTER_NAMESPACE => metric_name(ns, name),
            _ => metric_name(ns, self.name),
        }
    }

    /// Its family under namespace `ns`, one series per (label values, value).
    pub fn family(&self, ns: &str, series: Samples) -> Family {
        self.family_of(ns, self.labels, series)
    }

    /// Its family under namespace `ns` from series whose label values are
    /// those of `names` (a superset of its labels, and of its upstream ones).
    pub fn family_of(&self, ns: &str, names: &[&str], mut series: Samples) -> Family {
        let (name, labels) = match self.upstream {
            Some((name, labels)) if ns == EBPF_EXPORTER_NAMESPACE => (name, labels),
            _ => (self.name, self.labels),
        };
        if names != labels {
            let picks: Vec<Option<usize>> = labels
                .iter()
                .map(|label| names.iter().position(|name| name == label))
                .collect();
            for (values, _) in &mut series {
                *values = picks
                    .iter()
                    .map(|pick| {
                        pick.and_then(|i| values.get(i).cloned())
                            .unwrap_or_default()
                    })
                    .collect();
            }
        }
        Family::samples(&metric_name(ns, name), self.help, self.kind, labels, series)
    }

    /// Its family with one unlabelled sample.
    pub fn value(&self, ns: &str, value: f64) -> Family {
        self.family(ns, vec![(Vec::new(), value)])
    }
}

/// What gathering the configs' families left out, per config, over every
/// snapshot of the process: keys a decoder rejected and series over a
/// metric's cap, counted at each snapshot (as ebpf_exporter counts decoder
/// errors at each scrape), and events lost or dropped, which the event
/// streams count themselves.
#[derive(Default)]
pub struct Bookkeeping {
    /// (config, decoder) → keys rejected.
    decode_errors: BTreeMap<(String, String), u64>,
    /// (config, metric) → series left out.
    series_dropped: BTreeMap<(String, String), u64>,
    /// (config, map) → (lost, dropped), as the stream counts them.
    events: BTreeMap<(String, String), (u64, u64)>,
}

impl Bookkeeping {
    /// Adds what building `config`'s families in one snapshot and reading
    /// its event streams left out.
    pub fn add(
        &mut self,
        config: &str,
        decode_errors: &Errors,
        series_dropped: &[(String, u64)],
        streams: &[StreamLoss],
    ) {
        for (decoder, count) in decode_errors {
            let key = (config.to_string(), decoder.to_string());
            *self.decode_errors.entry(key).or_default() += count;
        }
        for (metric, dropped) in series_dropped {
            let key = (config.to_string(), metric.clone());
            *self.series_dropped.entry(key).or_default() += dropped;
        }
        for stream in streams {
            let key = (config.to_string(), stream.map.clone());
            self.events.insert(key, (stream.lost, stream.dropped));
        }
    }

    pub fn families(&self, ns: &str) -> Vec<Family> {
        let samples = |counts: &BTreeMap<(String, String), u64>| -> Samples {
            counts
                .iter()
                .map(|((a, b), n)| (vec![a.clone(), b.clone()], *n as f64))
                .collect()
        };
        let events = |pick: fn(&(u64, u64)) -> u64| -> Samples {
            self.events
                .iter()
                .map(|((a, b), n)| (vec![a.clone(), b.clone()], pick(n) as f64))
                .collect()
        };
        vec![
            SelfMetric::DECODER_ERRORS.family(ns, samples(&self.decode_errors)),
            SelfMetric::SERIES_DROPPED.family(ns, samples(&self.series_dropped)),
            SelfMetric::EVENTS_LOST.family(ns, events(|(lost, _)| *lost)),
            SelfMetric::EVENTS_DROPPED.family(ns, events(|(_, dropped)| *dropped)),
        ]
    }
}

/// (cause, count) → `scrape_errors_total` series.
pub fn scrape_errors(ns: &str, errors: &BTreeMap<&'static str, u64>) -> Family {
    let series = errors
        .iter()
        .map(|(cause, n)| (vec![cause.to_string()], *n as f64))
        .collect();
    SelfMetric::SCRAPE_ERRORS.family(ns, series)
}

pub fn unix_seconds(time: SystemTime) -> f64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_upstream_names_keep_their_first_labels() {
        let mut names = std::collections::BTreeSet::new();
        for metric in SelfMetric::ALL {
            assert!(names.insert(metric.name), "{} twice", metric.name);
            assert_eq!(
                metric.name.ends_with("_total"),
                metric.kind == Kind::Counter
            );
            assert!(
                !metric.labels.contains(&"id"),
                "{}: a kernel id is new at every load",
                metric.name
            );
        }
        let names = ["config", "program", "tag", "attach", "id"];
        let values = vec!["c".into(), "p".into(), "t".into(), "tp".into(), "7".into()];
        let family =
            |ns| SelfMetric::PROGRAM_INFO.family_of(ns, &names, vec![(values.clone(), 1.0)]);
        let (ours, theirs) = (family("bpfsnap"), family(EBPF_EXPORTER_NAMESPACE));
        assert_eq!(ours.name, "bpfsnap_program_info");
        assert_eq!(theirs.name, "ebpf_exporter_ebpf_program_info");
        let labels = |family: &Family| {
            let mut names = Vec::new();
            if let crate::exposition::Series::Metrics(metrics) = &family.series {
                names = metrics[0]
                    .get_label()
                    .iter()
                    .map(|l| l.name().to_string())
                    .collect();
            }
            names
        };
        assert_eq!(labels(&ours), ["config", "program", "tag", "attach"]);
        assert_eq!(labels(&theirs), ["config", "id", "program", "tag"]);
        let value_of = |family: &Family, label: &str| {
            let mut found = String::new();
            family.for_each_sample(|pairs, _| {
                found = pairs
                    .iter()
                    .find(|(n, _)| *n == label)
                    .unwrap()
                    .1
                    .to_string()
            });
            found
        };
        assert_eq!(value_of(&theirs, "id"), "7");
        assert_eq!(value_of(&ours, "tag"), "t");
    }
}
