//! bpfsnap's own metrics: every family defined once, in [`SelfMetric`]'s
//! table (name, help, kind, labels, and the name ebpf_exporter gives it where
//! its dashboards expect one), and filled by the mode that knows the values:
//! the configs' and programs' state by [`configs`], what gathering left out
//! by [`Bookkeeping`], the window by `run` and scrape errors by `serve`.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use super::{metric_name, Errors, Family, Kind, Samples};
use crate::probe::Probe;
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
    /// Under the `ebpf_exporter` namespace: ebpf_exporter's name for it, and
    /// how many of the labels it has (the first ones).
    pub upstream: Option<(&'static str, usize)>,
}

macro_rules! self_metric {
    ($id:ident, $name:literal, $kind:ident, [$($label:literal),*], $help:literal $(, upstream = ($up:literal, $n:literal))?) => {
        pub const $id: SelfMetric = SelfMetric {
            name: $name,
            help: $help,
            kind: Kind::$kind,
            labels: &[$($label),*],
            upstream: self_metric!(@upstream $(($up, $n))?),
        };
    };
    (@upstream ($up:literal, $n:literal)) => { Some(($up, $n)) };
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
        "Unix time from which the config's counters count (attach time, from which they are cumulative in --interval and --pin modes; with --counts window, the window's start).");
    self_metric!(
        PROGRAM_INFO,
        "program_info",
        Gauge,
        ["config", "id", "program", "tag", "attach"],
        "Every loaded BPF program: its config, kernel id, name, tag (and attach type).",
        upstream = ("ebpf_program_info", 4)
    );
    self_metric!(
        PROGRAM_ATTACHED,
        "program_attached",
        Gauge,
        ["id"],
        "Whether the BPF program with this id was attached.",
        upstream = ("ebpf_program_attached", 1)
    );
    self_metric!(PROGRAM_RECURSION_MISSES, "program_recursion_misses_total", Counter, ["id"],
        "Events the BPF program missed because it was already running on that CPU (e.g. interrupted by a hardirq hitting the same hook): its counts fall short by this much.");
    // ebpf_exporter's run time is a counter without `_total`, which promtool
    // flags; kept under its namespace for its dashboards.
    self_metric!(
        PROGRAM_RUN_TIME,
        "program_run_time_seconds_total",
        Counter,
        ["id"],
        "Time the BPF program has run in the kernel (kernel.bpf_stats_enabled=1).",
        upstream = ("ebpf_program_run_time_seconds", 1)
    );
    self_metric!(
        PROGRAM_RUN_COUNT,
        "program_run_count_total",
        Counter,
        ["id"],
        "Times the BPF program has run (kernel.bpf_stats_enabled=1).",
        upstream = ("ebpf_program_run_count_total", 1)
    );
    self_metric!(BUILD_INFO, "build_info", Gauge, ["version", "revision", "libbpf"],
        "The bpfsnap build running: its version, the commit it was built from and the libbpf it links.");
    self_metric!(
        DECODER_ERRORS,
        "decoder_errors_total",
        Counter,
        ["config", "decoder"],
        "Map keys skipped because a label decoder rejected them."
    );
    self_metric!(
        SERIES_DROPPED,
        "series_dropped_total",
        Counter,
        ["config", "metric"],
        "Series left out of this output because the metric has more than its max_series."
    );
    self_metric!(EVENTS_LOST, "events_lost_total", Counter, ["config", "map"],
        "Events of event-stream counters lost before bpfsnap could count them (buffer full, or shorter than their labels).");
    self_metric!(EVENTS_DROPPED, "events_dropped_total", Counter, ["config", "map"],
        "Events of event-stream counters not counted because their label set was new while the counter already counted max_series label sets.");
    self_metric!(WINDOW, "window_seconds", Gauge, [],
        "Length of the sampling window these metrics cover, as measured (shorter than requested when a signal ended it; since the last run in --pin mode).");
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

    /// Its family under namespace `ns`, one series per (label values, value).
    pub fn family(&self, ns: &str, mut series: Samples) -> Family {
        let (name, labels) = match self.upstream {
            Some((name, count)) if ns == EBPF_EXPORTER_NAMESPACE => {
                for (values, _) in &mut series {
                    values.truncate(count);
                }
                (name, &self.labels[..count])
            }
            _ => (self.name, self.labels),
        };
        Family::samples(&metric_name(ns, name), self.help, self.kind, labels, series)
    }

    /// Its family with one unlabelled sample.
    pub fn value(&self, ns: &str, value: f64) -> Family {
        self.family(ns, vec![(Vec::new(), value)])
    }
}

/// The configs' and their programs' state: which configs and programs are
/// loaded and up, since when their counters count, and (with
/// kernel.bpf_stats_enabled=1) what the programs cost; and the build.
pub fn configs(
    ns: &str,
    probes: &[Probe],
    down: &[&str],
    counting_since: SystemTime,
) -> Vec<Family> {
    let mut configs = Vec::new();
    let mut config_up = Vec::new();
    let mut started = Vec::new();
    for probe in probes {
        let config = &probe.config().name;
        configs.push((vec![config.clone()], 1.0));
        if !down.contains(&config.as_str()) {
            config_up.push((vec![config.clone()], 1.0));
        }
        let since = probe
            .pinned()
            .map_or(unix_seconds(counting_since), |p| p.manifest.attached_at);
        started.push((vec![config.clone()], since));
    }
    for config in down {
        config_up.push((vec![config.to_string()], 0.0));
    }
    let mut families = vec![
        SelfMetric::ENABLED_CONFIGS.family(ns, configs),
        SelfMetric::CONFIG_UP.family(ns, config_up),
        SelfMetric::COUNTERS_START.family(ns, started),
        build_info(ns),
    ];
    families.extend(programs(ns, probes));
    families
}

/// Every loaded program: its identity, whether it attached, what it missed
/// and (with kernel.bpf_stats_enabled=1) what it cost.
fn programs(ns: &str, probes: &[Probe]) -> Vec<Family> {
    let mut info = Vec::new();
    let mut attached = Vec::new();
    let mut run_time = Vec::new();
    let mut run_count = Vec::new();
    let mut recursion_misses = Vec::new();
    for probe in probes {
        let config = &probe.config().name;
        for program in probe.programs() {
            let id = program.id.to_string();
            let labels = vec![
                config.clone(),
                id.clone(),
                program.name.clone(),
                program.tag.clone(),
                program.attach.clone(),
            ];
            info.push((labels, 1.0));
            attached.push((vec![id.clone()], if program.attached { 1.0 } else { 0.0 }));
            run_time.push((vec![id.clone()], program.run_time_ns as f64 / 1e9));
            run_count.push((vec![id.clone()], program.run_count as f64));
            recursion_misses.push((vec![id], program.recursion_misses as f64));
        }
    }
    let mut families = vec![
        SelfMetric::PROGRAM_INFO.family(ns, info),
        SelfMetric::PROGRAM_ATTACHED.family(ns, attached),
        SelfMetric::PROGRAM_RECURSION_MISSES.family(ns, recursion_misses),
    ];
    if bpf_stats_enabled() {
        families.push(SelfMetric::PROGRAM_RUN_TIME.family(ns, run_time));
        families.push(SelfMetric::PROGRAM_RUN_COUNT.family(ns, run_count));
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

/// What gathering the configs' families left out, per config: keys a
/// decoder rejected, series over a metric's cap, events lost or dropped.
#[derive(Default)]
pub struct Bookkeeping {
    decode_errors: Samples,
    series_dropped: Samples,
    events_lost: Samples,
    events_dropped: Samples,
}

impl Bookkeeping {
    /// Records what building `config`'s families and reading its event
    /// streams left out.
    pub fn add(
        &mut self,
        config: &str,
        decode_errors: &Errors,
        series_dropped: &[(String, u64)],
        streams: &[StreamLoss],
    ) {
        for (decoder, count) in decode_errors {
            let labels = vec![config.to_string(), decoder.to_string()];
            self.decode_errors.push((labels, *count as f64));
        }
        for (metric, dropped) in series_dropped {
            let labels = vec![config.to_string(), metric.clone()];
            self.series_dropped.push((labels, *dropped as f64));
        }
        for stream in streams {
            let labels = vec![config.to_string(), stream.map.clone()];
            self.events_lost.push((labels.clone(), stream.lost as f64));
            self.events_dropped.push((labels, stream.dropped as f64));
        }
    }

    pub fn families(self, ns: &str) -> Vec<Family> {
        vec![
            SelfMetric::DECODER_ERRORS.family(ns, self.decode_errors),
            SelfMetric::SERIES_DROPPED.family(ns, self.series_dropped),
            SelfMetric::EVENTS_LOST.family(ns, self.events_lost),
            SelfMetric::EVENTS_DROPPED.family(ns, self.events_dropped),
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
            if let Some((_, count)) = metric.upstream {
                assert!(count <= metric.labels.len(), "{}", metric.name);
            }
        }
        let values = vec!["c".into(), "7".into(), "p".into(), "t".into(), "tp".into()];
        let ours = SelfMetric::PROGRAM_INFO.family("bpfsnap", vec![(values.clone(), 1.0)]);
        let theirs = SelfMetric::PROGRAM_INFO.family(EBPF_EXPORTER_NAMESPACE, vec![(values, 1.0)]);
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
        assert_eq!(labels(&ours), ["config", "id", "program", "tag", "attach"]);
        assert_eq!(labels(&theirs), ["config", "id", "program", "tag"]);
    }
}
