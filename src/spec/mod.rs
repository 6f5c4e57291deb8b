//! Program configs: what a BPF object's maps mean as metrics.
//!
//! A config names the object's maps as metrics and describes how each map key
//! splits into labels (`size`, `padding`) and how each label's bytes are decoded
//! (a chain of decoders). It follows cloudflare/ebpf_exporter's model key for
//! key, in two spellings: ebpf_exporter's YAML, read unchanged, and TOML with
//! the same keys (see [`Format`]). Built-in programs use the very same format
//! (`bpf/NAME.toml`).
//!
//! The first stage, and a leaf: it imports nothing of the crate. Hands on a
//! [`Config`] (and, for `check`, [`Problems`]). [`Config::parse`] rejects
//! unknown TOML keys (with their path and line; in YAML they are warnings,
//! as ebpf_exporter ignores them) and validates everything that can be
//! checked without the decoders or the BPF object: the decoders' names and
//! options are the plan stage's to check, the object's maps the probe
//! stage's.

mod parse;
mod variant;

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use serde::de::IgnoredAny;
use serde::Deserialize;

pub use parse::{deserialize_yaml_strictly, Format};
pub use variant::{normalise_type, TracepointNeed, Variant};

/// Series per metric unless its `max_series` says otherwise: node_exporter
/// reads every file at every scrape, and a runaway label (a pid, an address)
/// must not turn one metric into millions of series.
pub const DEFAULT_MAX_SERIES: usize = 10_000;

/// Buckets one histogram may have: every one is laid out at each snapshot,
/// so a typo in `bucket_max` must not become terabytes.
pub const MAX_BUCKETS: usize = 4096;

/// Namespace of every metric unless `--namespace` says otherwise.
pub const DEFAULT_NAMESPACE: &str = "bpfsnap";

/// One program: a BPF object plus the metrics read from its maps.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Set after parsing: the config's name (file stem or built-in name).
    #[serde(skip)]
    pub name: String,
    /// Set after parsing: where the config came from, for messages.
    #[serde(skip)]
    pub origin: String,
    /// Set after parsing: problems that do not stop the config from running.
    #[serde(skip)]
    pub warnings: Vec<String>,
    /// One line saying what the program measures.
    #[serde(default)]
    pub description: String,
    /// The compiled BPF object, relative to the config's directory
    /// (default: NAME.bpf.o beside the config).
    #[serde(default)]
    pub object: Option<PathBuf>,
    /// Facts only built-in programs carry.
    #[serde(default)]
    pub builtin: BuiltinInfo,
    #[serde(default)]
    pub metrics: Metrics,
    /// Kernel symbols whose addresses are written into the object's
    /// `kaddr_<symbol>` variables before load.
    #[serde(default)]
    pub kaddrs: Vec<String>,
    /// ebpf_exporter features bpfsnap does not have: accepted with a warning.
    #[serde(default)]
    tracing: Option<IgnoredAny>,
    /// ebpf_exporter's map of cgroup ids bpfsnap fills (see
    /// `probe::cgroups`).
    #[serde(default)]
    pub cgroup_id_map: Option<CgroupIdMap>,
    /// ebpf_exporter's `name`, which it too replaces by the file's name.
    #[serde(default, rename = "name")]
    name_key: Option<IgnoredAny>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuiltinInfo {
    /// Part of the set `bpfsnap run` uses when no program is named.
    #[serde(default)]
    pub default: bool,
    /// The bound on each metric's series, e.g. "syscall: ~380 names".
    #[serde(default)]
    pub cardinality: String,
    /// The cost per event, in words and numbers.
    #[serde(default)]
    pub overhead: String,
    /// Alternative programs for kernels that differ: the first variant whose
    /// needs the kernel meets is loaded (see [`Variant`]).
    #[serde(default)]
    pub variants: Vec<Variant>,
    /// The architectures it exists on (as Rust names them:
    /// `std::env::consts::ARCH`, e.g. "x86_64", "aarch64"); empty: all. On
    /// another, `bpfsnap list` says it is unavailable, with `arches_reason`.
    #[serde(default)]
    pub arches: Vec<String>,
    #[serde(default)]
    pub arches_reason: String,
}

impl BuiltinInfo {
    /// Why it does not exist on `arch`, if it does not.
    pub fn not_on_arch(&self, arch: &str) -> Option<String> {
        if self.arches.is_empty() || self.arches.iter().any(|a| a == arch) {
            return None;
        }
        let mut reason = format!("{} only, and this is {arch}", self.arches.join(", "));
        if !self.arches_reason.is_empty() {
            reason = format!("{reason}: {}", self.arches_reason);
        }
        Some(reason)
    }
}

/// ebpf_exporter's `cgroup_id_map`: the BPF map `name` holds the ids of the
/// cgroups (v2) whose path matches one of `regexps`, kept current by bpfsnap.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CgroupIdMap {
    pub name: String,
    /// `hash` (keys: u64 cgroup ids; the default) or `cgrp_storage`.
    #[serde(default, rename = "type")]
    pub kind: CgroupMapKind,
    pub regexps: Vec<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CgroupMapKind {
    #[default]
    Hash,
    CgrpStorage,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metrics {
    #[serde(default)]
    pub counters: Vec<Counter>,
    #[serde(default)]
    pub histograms: Vec<Histogram>,
}

impl Metrics {
    pub fn is_empty(&self) -> bool {
        self.counters.is_empty() && self.histograms.is_empty()
    }
}

/// A counter: every key of the map named `name` is a series, its u64 value
/// (summed over CPUs for per-CPU maps) the sample.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Counter {
    /// Metric name without the namespace prefix; also the map's name.
    pub name: String,
    pub help: String,
    #[serde(default)]
    pub labels: Vec<Label>,
    /// ebpf_exporter's marker of an event-stream counter (the map is a perf
    /// event array); bpfsnap tells by the map's type, ring buffers included.
    #[serde(default)]
    pub perf_event_array: bool,
    /// Event streams: drop a series not seen for this long (`30s`, `5m`).
    #[serde(default)]
    pub flush_interval: Option<String>,
    /// Most series written; the rest are counted in
    /// `bpfsnap_series_dropped_total` (default [`DEFAULT_MAX_SERIES`]).
    #[serde(default)]
    pub max_series: Option<usize>,
    /// ebpf_exporter's multi-value counters (a struct of u64s per key, one
    /// metric per field): not supported, the counter is left out.
    #[serde(default)]
    values: Option<IgnoredAny>,
}

/// A histogram: the last label of the key is the bucket, the others the series.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Histogram {
    /// Metric name without the namespace prefix; also the map's name.
    pub name: String,
    pub help: String,
    pub bucket_type: BucketType,
    #[serde(default)]
    pub bucket_min: u64,
    #[serde(default)]
    pub bucket_max: Option<u64>,
    /// `fixed`: the bucket keys, ascending.
    #[serde(default)]
    pub bucket_keys: Vec<f64>,
    #[serde(default = "one")]
    pub bucket_multiplier: f64,
    #[serde(default)]
    pub labels: Vec<Label>,
    /// Most histogram series written (see [`Counter::max_series`]).
    #[serde(default)]
    pub max_series: Option<usize>,
}

fn one() -> f64 {
    1.0
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BucketType {
    /// `le = 2^key × multiplier`
    Exp2,
    /// key 0: `le = 0`; key k: `le = 2^(k-1) × multiplier`
    Exp2Zero,
    /// `le = key × multiplier`
    Linear,
    /// `le = key × multiplier` for the listed `bucket_keys`
    Fixed,
}

/// A slice of the map key that becomes one label.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Label {
    pub name: String,
    /// Bytes of the key this label takes (with `same_bytes_as`, those of
    /// the label named, filled in when the config is validated).
    #[serde(default)]
    pub size: usize,
    /// Bytes skipped after it (C struct alignment).
    #[serde(default)]
    pub padding: usize,
    /// bpfsnap's extension: this label takes no bytes of its own but
    /// decodes the bytes of the earlier label of that name again, so that
    /// one cgroup id can give a namespace, a pod and a container label.
    #[serde(default)]
    pub same_bytes_as: Option<String>,
    #[serde(default)]
    pub decoders: Vec<DecoderSpec>,
}

/// A metric of either kind, for what is common to both.
pub struct MetricRef<'a> {
    pub name: &'a str,
    pub help: &'a str,
    pub labels: &'a [Label],
    pub kind: MetricKind,
    /// Its series cap ([`DEFAULT_MAX_SERIES`] unless `max_series` says).
    pub max_series: usize,
    /// A histogram's buckets.
    pub histogram: Option<&'a Histogram>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Histogram,
}

impl std::fmt::Display for MetricKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MetricKind::Counter => "counter",
            MetricKind::Histogram => "histogram",
        })
    }
}

/// One step of a label's decoder chain, with the options some decoders take.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecoderSpec {
    pub name: String,
    /// `static_map`: input value → label value.
    #[serde(default)]
    pub static_map: Option<StaticMap>,
    /// `regexp`: patterns; a value matching none drops the label set.
    #[serde(default)]
    pub regexps: Option<Vec<String>>,
    /// `static_map`: pass values missing from the map through unchanged.
    #[serde(default)]
    pub allow_unknown: bool,
}

impl DecoderSpec {
    /// A spec with no options.
    pub fn named(name: &str) -> DecoderSpec {
        DecoderSpec {
            name: name.to_string(),
            ..DecoderSpec::default()
        }
    }
}

/// `static_map` entries. Keys may be written as numbers (YAML `1: read`,
/// as ebpf_exporter's configs do) or strings; values must be strings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StaticMap(pub BTreeMap<String, String>);

impl<'de> Deserialize<'de> for StaticMap {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let entries = BTreeMap::<KeyText, String>::deserialize(deserializer)?;
        Ok(StaticMap(
            entries.into_iter().map(|(k, v)| (k.0, v)).collect(),
        ))
    }
}

/// A map key written as a number or a string, kept as its decimal text.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct KeyText(String);

impl<'de> Deserialize<'de> for KeyText {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = KeyText;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a number or a string")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// Asked about each label's decoders while a config is validated (see
/// [`Config::parse_checking`]).
pub type DecoderCheck<'a> = &'a mut dyn FnMut(&Label) -> Result<()>;

/// Every problem found in one config, so `bpfsnap check` can list them all;
/// shown on one line (`ORIGIN: first; second`) everywhere else.
#[derive(Debug)]
pub struct Problems {
    /// Where the config came from (a path or `built-in NAME`).
    pub origin: String,
    pub problems: Vec<String>,
}

impl Problems {
    /// One line per problem, each starting with the origin.
    pub fn lines(&self) -> Vec<String> {
        self.problems
            .iter()
            .map(|problem| format!("{}: {problem}", self.origin))
            .collect()
    }
}

impl std::fmt::Display for Problems {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.origin, self.problems.join("; "))
    }
}

impl std::error::Error for Problems {}

/// The lines `bpfsnap check` prints for `err`: one per problem of a
/// [`Problems`] anywhere in it, else the error itself.
pub fn problem_lines(err: &anyhow::Error) -> Vec<String> {
    let inner = err
        .chain()
        .find_map(|e| e.downcast_ref::<crate::BadInput>())
        .map(crate::BadInput::inner);
    let problems = err
        .chain()
        .chain(inner.into_iter().flat_map(|inner| inner.chain()))
        .find_map(|e| e.downcast_ref::<Problems>());
    match problems {
        Some(problems) => problems.lines(),
        None => vec![format!("{err:#}")],
    }
}

impl Config {
    /// Parses and validates a config; `origin` names it in errors (a path or
    /// `built-in NAME`). Validation problems come as one [`Problems`]. The
    /// decoders' names and options are not checked: see
    /// [`Config::parse_checking`].
    pub fn parse(name: &str, origin: &str, text: &str, format: Format) -> Result<Config> {
        Config::parse_checking(name, origin, text, format, &mut |_| Ok(()))
    }

    /// [`Config::parse`], with `check_decoders` asked about each label's
    /// decoders where the spec's own checks of it passed: its error is that
    /// label's problem, among the others in their order. The plan stage
    /// builds the chains there (`plan::parse`).
    pub fn parse_checking(
        name: &str,
        origin: &str,
        text: &str,
        format: Format,
        check_decoders: DecoderCheck,
    ) -> Result<Config> {
        let (mut config, unknown_keys): (Config, _) =
            parse::deserialize(text, format).map_err(|err| anyhow::anyhow!("{origin}: {err}"))?;
        config.name = name.to_string();
        config.origin = origin.to_string();
        config.warnings.extend(unknown_keys);
        let problems = config.validate(check_decoders);
        if !problems.is_empty() {
            return Err(Problems {
                origin: origin.to_string(),
                problems,
            }
            .into());
        }
        Ok(config)
    }

    /// Every metric, counters first.
    pub fn metrics(&self) -> impl Iterator<Item = MetricRef<'_>> {
        let counters = self.metrics.counters.iter().map(|c| MetricRef {
            name: &c.name,
            help: &c.help,
            labels: &c.labels,
            kind: MetricKind::Counter,
            max_series: c.max_series.unwrap_or(DEFAULT_MAX_SERIES),
            histogram: None,
        });
        let histograms = self.metrics.histograms.iter().map(|h| MetricRef {
            name: &h.name,
            help: &h.help,
            labels: &h.labels,
            kind: MetricKind::Histogram,
            max_series: h.max_series.unwrap_or(DEFAULT_MAX_SERIES),
            histogram: Some(h),
        });
        counters.chain(histograms)
    }

    /// Every counter (hash/array maps and event streams alike).
    pub fn map_counters(&self) -> impl Iterator<Item = &Counter> {
        self.metrics.counters.iter()
    }

    /// The series cap of metric `name`.
    pub fn max_series(&self, name: &str) -> usize {
        let counter = self
            .metrics
            .counters
            .iter()
            .find(|c| c.name == name)
            .and_then(|c| c.max_series);
        let histogram = self
            .metrics
            .histograms
            .iter()
            .find(|h| h.name == name)
            .and_then(|h| h.max_series);
        counter.or(histogram).unwrap_or(DEFAULT_MAX_SERIES)
    }

    /// The flush interval of counter `name`, if it has a valid one.
    pub fn flush_interval(&self, name: &str) -> Option<std::time::Duration> {
        let counter = self.metrics.counters.iter().find(|c| c.name == name)?;
        humantime::parse_duration(counter.flush_interval.as_deref()?).ok()
    }

    /// Sets aside what bpfsnap accepts but does not run (with a warning),
    /// then returns every problem found (none: the config is valid).
    fn validate(&mut self, check_decoders: DecoderCheck) -> Vec<String> {
        self.set_aside_unsupported();
        let counters = self.metrics.counters.iter_mut().map(|c| &mut c.labels);
        let histograms = self.metrics.histograms.iter_mut().map(|h| &mut h.labels);
        for labels in counters.chain(histograms) {
            resolve_same_bytes(labels);
        }
        if self.metrics.is_empty() {
            return vec![match self.tracing {
                Some(_) => "defines only `tracing` (spans, which ebpf_exporter exports to \
                            OpenTelemetry): bpfsnap writes metrics and does not export tracing spans"
                    .into(),
                None => "defines no metrics: add a metrics.counters or metrics.histograms entry"
                    .into(),
            }];
        }
        let mut problems = variant::problems(&self.builtin.variants);
        problems.extend(self.cgroup_id_map.iter().flat_map(CgroupIdMap::problems));
        problems.extend(self.metric_problems(check_decoders));
        for counter in &self.metrics.counters {
            if !counter.name.ends_with("_total") {
                self.warnings.push(format!(
                    "counter {:?} does not end in _total (Prometheus naming convention; promtool will warn)",
                    counter.name
                ));
            }
        }
        problems
    }

    /// ebpf_exporter's keys bpfsnap reads but does not act on: a warning
    /// each; its multi-value counters are left out.
    fn set_aside_unsupported(&mut self) {
        if self.tracing.is_some() && !self.metrics.is_empty() {
            self.warnings.push(
                "key `tracing` ignored: bpfsnap writes metrics and does not export tracing spans \
                 (ebpf_exporter sends them to OpenTelemetry); the config's metrics run"
                    .into(),
            );
        }
        if self.name_key.is_some() {
            self.warnings
                .push("key `name` ignored: a config's name is its file name".into());
        }
        let warnings = &mut self.warnings;
        self.metrics.counters.retain(|counter| {
            if counter.values.is_some() {
                warnings.push(format!(
                    "counter {:?} left out: multi-value counters (`values`) are not supported",
                    counter.name
                ));
            }
            counter.values.is_none()
        });
    }

    /// What is wrong with the metrics: names, labels, caps, help texts,
    /// flush intervals, buckets.
    fn metric_problems(&self, check_decoders: DecoderCheck) -> Vec<String> {
        let mut problems = Vec::new();
        let mut names = HashSet::new();
        for metric in self.metrics() {
            if let Err(err) = check_metric_name(metric.name) {
                problems.push(format!("{err:#}"));
            }
            if !names.insert(metric.name.to_string()) {
                problems.push(format!("metric {:?} is defined twice", metric.name));
            }
            check_labels(&metric, &mut problems, check_decoders);
        }
        for (name, cap) in self
            .metrics
            .counters
            .iter()
            .map(|c| (&c.name, c.max_series))
            .chain(
                self.metrics
                    .histograms
                    .iter()
                    .map(|h| (&h.name, h.max_series)),
            )
        {
            if cap == Some(0) {
                problems.push(format!("metric {name:?}: max_series must be at least 1"));
            }
        }
        for counter in &self.metrics.counters {
            if counter.help.trim().is_empty() {
                problems.push(format!(
                    "counter {:?} has no help text: say what it counts",
                    counter.name
                ));
            }
            if let Some(interval) = &counter.flush_interval {
                if let Err(err) = humantime::parse_duration(interval) {
                    problems.push(format!(
                        "counter {:?}: flush_interval {interval:?}: {err} (try 30s or 5m)",
                        counter.name
                    ));
                }
            }
        }
        for histogram in &self.metrics.histograms {
            if let Err(err) = check_histogram(histogram) {
                problems.push(format!("histogram {:?}: {err:#}", histogram.name));
            }
        }
        problems
    }
}

impl CgroupIdMap {
    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.regexps.is_empty() {
            problems.push("cgroup_id_map: regexps is empty: name the cgroup paths to match".into());
        }
        for pattern in &self.regexps {
            if let Err(err) = regex::Regex::new(pattern) {
                // regex's messages draw a caret under the pattern: one line.
                let err = err
                    .to_string()
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ");
                problems.push(format!("cgroup_id_map: regexp {pattern:?}: {err}"));
            }
        }
        problems
    }
}

fn check_histogram(histogram: &Histogram) -> Result<()> {
    if histogram.help.trim().is_empty() {
        bail!("no help text: say what it measures");
    }
    let multiplier = histogram.bucket_multiplier;
    if !(multiplier.is_finite() && multiplier > 0.0) {
        bail!("bucket_multiplier must be a positive number, not {multiplier}");
    }
    if histogram.labels.is_empty() {
        bail!("needs at least one label: the last label of the key is the bucket");
    }
    if histogram.bucket_type == BucketType::Fixed {
        let keys = &histogram.bucket_keys;
        if keys.is_empty() {
            bail!("bucket_type fixed needs bucket_keys");
        }
        if keys.len() > MAX_BUCKETS {
            bail!(
                "{} bucket_keys: at most {MAX_BUCKETS} buckets per histogram",
                keys.len()
            );
        }
        if keys
            .iter()
            .any(|k| !(k.is_finite() && *k >= 0.0 && k.fract() == 0.0))
        {
            bail!("bucket_keys must be whole numbers ≥ 0 (they are map keys)");
        }
        if keys.windows(2).any(|pair| pair[0] >= pair[1]) {
            bail!("bucket_keys must be sorted ascending without repeats");
        }
        return Ok(());
    }
    if !histogram.bucket_keys.is_empty() {
        bail!("bucket_keys only applies to bucket_type fixed");
    }
    let Some(max) = histogram.bucket_max else {
        bail!("needs bucket_max (the last bucket key)");
    };
    let min = histogram.bucket_min;
    if max <= min {
        bail!("bucket_min {min} .. bucket_max {max} is an empty range: bucket_max must be greater than bucket_min");
    }
    if max - min >= MAX_BUCKETS as u64 {
        bail!(
            "bucket_min {min} .. bucket_max {max} is {} buckets: at most {MAX_BUCKETS} per histogram",
            u128::from(max - min) + 1
        );
    }
    if matches!(
        histogram.bucket_type,
        BucketType::Exp2 | BucketType::Exp2Zero
    ) && max > 64
    {
        bail!("bucket_max {max} is too large for exp2 buckets (2^64 is the largest u64 bucket)");
    }
    Ok(())
}

impl Label {
    /// Bytes this label takes in the key, padding included (none when it
    /// reads another label's bytes).
    pub fn span(&self) -> usize {
        match self.same_bytes_as {
            Some(_) => 0,
            None => self.size + self.padding,
        }
    }
}

/// Fills in the size of each label that reads an earlier label's bytes
/// (`same_bytes_as`), where that label exists: what is wrong with the
/// reference is [`check_same_bytes`]'s to say.
fn resolve_same_bytes(labels: &mut [Label]) {
    for index in 0..labels.len() {
        let (earlier, rest) = labels.split_at_mut(index);
        let label = &mut rest[0];
        let Some(origin) = &label.same_bytes_as else {
            continue;
        };
        let found = earlier
            .iter()
            .find(|l| &l.name == origin && l.same_bytes_as.is_none());
        if let (Some(found), 0) = (found, label.size) {
            label.size = found.size;
        }
    }
}

/// What is wrong with label `index`'s `same_bytes_as`, if it has one: it
/// must name an earlier label with bytes of its own, of the same size, and
/// take no padding; a histogram's bucket and a `cpu` label read their own.
fn check_same_bytes(metric: &MetricRef, index: usize) -> Result<()> {
    let label = &metric.labels[index];
    let Some(origin) = &label.same_bytes_as else {
        return Ok(());
    };
    let Some(found) = metric.labels[..index]
        .iter()
        .find(|l| &l.name == origin && l.same_bytes_as.is_none())
    else {
        bail!(
            "label {:?}: same_bytes_as {origin:?} names no earlier label of this metric \
             with bytes of its own",
            label.name
        );
    };
    if label.size != found.size || label.padding != 0 {
        bail!(
            "label {:?}: with same_bytes_as it takes the {} bytes of {origin:?}: \
             give no size or that one, and no padding",
            label.name,
            found.size
        );
    }
    let bucket = metric.kind == MetricKind::Histogram && index + 1 == metric.labels.len();
    if bucket || label.name == "cpu" {
        bail!(
            "label {:?}: a histogram's bucket and a cpu label cannot use same_bytes_as",
            label.name
        );
    }
    Ok(())
}

fn label_name_is_valid(name: &str) -> bool {
    let valid = name
        .chars()
        .enumerate()
        .all(|(i, c)| c.is_ascii_alphabetic() || c == '_' || (i > 0 && c.is_ascii_digit()));
    !name.is_empty() && valid && !name.starts_with("__")
}

/// The key of an unlabelled counter's sample (ebpf_exporter's rule): u32 0
/// in a map with 4-byte keys, whose labels take no bytes of the key.
pub const UNLABELLED_KEY: [u8; 4] = [0; 4];

fn check_metric_name(name: &str) -> Result<()> {
    let valid = name.chars().enumerate().all(|(i, c)| {
        c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit())
    });
    if name.is_empty() || !valid {
        bail!("metric name {name:?} is not valid: use letters, digits, '_' and ':', not starting with a digit");
    }
    Ok(())
}

/// Pushes one problem per faulty label (its first) onto `problems`.
fn check_labels(metric: &MetricRef, problems: &mut Vec<String>, check_decoders: DecoderCheck) {
    let mut names = HashSet::new();
    for (index, label) in metric.labels.iter().enumerate() {
        let checked = check_same_bytes(metric, index)
            .and_then(|()| check_label(label, &mut names, check_decoders));
        if let Err(err) = checked {
            problems.push(format!("metric {:?}: {err:#}", metric.name));
        }
    }
}

fn check_label<'a>(
    label: &'a Label,
    names: &mut HashSet<&'a str>,
    check_decoders: DecoderCheck,
) -> Result<()> {
    if !label_name_is_valid(&label.name) {
        bail!(
            "label name {:?} is not valid: use letters, digits and '_', \
             not starting with a digit or '__'",
            label.name
        );
    }
    if !names.insert(&label.name) {
        bail!("label {:?} appears twice", label.name);
    }
    if label.size == 0 {
        bail!(
            "label {:?} has no size (or 0): give the bytes it takes in the key \
             as `size`, or read an earlier label's with `same_bytes_as`",
            label.name
        );
    }
    if label.decoders.is_empty() {
        bail!(
            "label {:?} has no decoders: add some, e.g. decoders = [{{ name = \"uint\" }}]",
            label.name
        );
    }
    check_decoders(label).with_context(|| format!("label {:?}", label.name))?;
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) const GOOD: &str = r#"
description = "test"
[[metrics.counters]]
name = "things_total"
help = "Things."
[[metrics.counters.labels]]
name = "kind"
size = 4
padding = 4
decoders = [{ name = "uint" }]
"#;

    pub(crate) const GOOD_YAML: &str = "
metrics:
  counters:
    - name: things_total
      help: Things.
      labels:
        - name: kind
          size: 4
          padding: 4
          decoders:
            - name: uint
            - name: static_map
              static_map:
                1: one
                2: two
  histograms:
    - name: latency_seconds
      help: Latency.
      bucket_type: exp2
      bucket_min: 0
      bucket_max: 26
      bucket_multiplier: 0.000001
      labels:
        - name: bucket
          size: 8
          decoders:
            - name: uint
";

    fn parse(text: &str, format: Format) -> Result<Config> {
        Config::parse("t", "t.cfg", text, format)
    }

    #[test]
    fn parses_toml_and_yaml_alike() {
        let config = parse(GOOD, Format::Toml).unwrap();
        assert_eq!(config.name, "t");
        let counter = &config.metrics.counters[0];
        assert_eq!(counter.name, "things_total");
        assert_eq!(counter.labels.iter().map(Label::span).sum::<usize>(), 8);

        let config = parse(GOOD_YAML, Format::Yaml).unwrap();
        let decoders = &config.metrics.counters[0].labels[0].decoders;
        let map = &decoders[1].static_map.as_ref().unwrap().0;
        assert_eq!(map.get("2").map(String::as_str), Some("two"));
        let histogram = &config.metrics.histograms[0];
        assert_eq!(histogram.bucket_type, BucketType::Exp2);
        assert_eq!(histogram.bucket_max, Some(26));
        assert_eq!(histogram.bucket_multiplier, 0.000001);
        assert!(config.warnings.is_empty(), "{:?}", config.warnings);
    }

    /// The README's worked example, in both spellings, parses to the same config.
    #[test]
    fn readme_worked_example_parses_alike() {
        let readme = include_str!("../../README.md");
        let block = |start: &str| {
            let from = readme.find(start).expect("example in README") + start.len();
            readme[from..].split("```").next().unwrap_or_default()
        };
        let toml = parse(block("```toml\n# getpid_by_comm.toml"), Format::Toml).unwrap();
        let yaml = parse(block("```yaml\n# getpid_by_comm.yaml"), Format::Yaml).unwrap();
        assert_eq!(format!("{:?}", toml.metrics), format!("{:?}", yaml.metrics));
        assert_eq!(
            toml.metrics.counters[0].labels[0].decoders[1]
                .regexps
                .as_ref()
                .unwrap()[0],
            "^(bpfsnap-.*)$"
        );
    }

    /// `same_bytes_as`: the size filled in from the label named; each wrong
    /// use one line naming the label.
    #[test]
    fn same_bytes_as_reads_an_earlier_labels_bytes() {
        let yaml = |second: &str| {
            format!(
                "metrics:\n  counters:\n    - name: runs_total\n      help: Runs.\n      labels:\n\
                 \x20       - name: cgroup\n          size: 8\n          decoders: [{{name: uint}}]\n\
                 \x20       - name: pod\n{second}          decoders: [{{name: uint}}, {{name: kube_pod}}]\n"
            )
        };
        let config = parse(&yaml("          same_bytes_as: cgroup\n"), Format::Yaml).unwrap();
        let labels = &config.metrics.counters[0].labels;
        assert_eq!((labels[1].size, labels[1].span()), (8, 0));
        let cases = [
            ("          same_bytes_as: cgroup\n          size: 8\n", None),
            (
                "          same_bytes_as: nope\n",
                Some("names no earlier label of this metric"),
            ),
            (
                "          same_bytes_as: pod\n",
                Some("names no earlier label"),
            ),
            (
                "          same_bytes_as: cgroup\n          size: 4\n",
                Some("takes the 8 bytes of \"cgroup\""),
            ),
            (
                "          same_bytes_as: cgroup\n          padding: 4\n",
                Some("no padding"),
            ),
        ];
        for (second, want) in cases {
            let result = parse(&yaml(second), Format::Yaml);
            match (want, result) {
                (None, Ok(_)) => {}
                (Some(want), Err(err)) => {
                    let lines = problem_lines(&err);
                    assert_eq!(lines.len(), 1, "{lines:?}");
                    assert!(
                        lines[0].contains("label \"pod\": ") && lines[0].contains(want),
                        "{lines:?}"
                    );
                }
                (want, got) => panic!("{second}: expected {want:?}, got {:?}", got.map(|_| ())),
            }
        }
    }

    #[test]
    fn unsupported_ebpf_exporter_keys_warn() {
        let text = format!("{GOOD_YAML}tracing:\n  spans: []\nname: x\n");
        let config = parse(&text, Format::Yaml).unwrap();
        assert_eq!(config.warnings.len(), 2, "{:?}", config.warnings);
        let text = GOOD.replace("things_total", "things");
        let config = parse(&text, Format::Toml).unwrap();
        assert!(
            config.warnings[0].contains("does not end in _total"),
            "{:?}",
            config.warnings
        );
    }

    /// Every key of ebpf_exporter's config schema bpfsnap does not act on
    /// (its config.go), keys it does not know either (its YAML reader ignores
    /// them: `skip_cache_size` in some examples' decoders), and `values`
    /// (multi-value counters, from an unmerged pull request) are accepted
    /// with a warning naming them; the rest of the config parses as before.
    #[test]
    fn ebpf_exporter_keys_bpfsnap_ignores_warn_and_go_on() {
        let regexp = "            - name: uint\n";
        let cases: &[(&str, &str, &str)] = &[
            ("top level name", "name: renamed\n", "key `name` ignored"),
            (
                "tracing",
                "tracing:\n  spans:\n    - name: x\n      ringbuf: events\n",
                "key `tracing` ignored: bpfsnap writes metrics and does not export tracing spans",
            ),
            (
                "decoder skip_cache_size",
                "            - name: uint\n              skip_cache_size: 100\n",
                "labels[0].decoders[0]: unknown key `skip_cache_size` ignored (as ebpf_exporter does)",
            ),
            (
                "counter values",
                "",
                "counter \"multi_total\" left out: multi-value counters (`values`)",
            ),
        ];
        for (what, snippet, warning) in cases {
            let mut text = GOOD_YAML.to_string();
            if snippet.starts_with("            ") {
                text = text.replacen(regexp, snippet, 1);
            } else if snippet.is_empty() {
                text = text.replace(
                    "  histograms:",
                    "    - name: multi_total\n      help: Two values.\n      labels: []\n      values:\n        - name: a_total\n          help: A.\n  histograms:",
                );
            } else {
                text.push_str(snippet);
            }
            let config =
                parse(&text, Format::Yaml).unwrap_or_else(|err| panic!("{what}: {err:#}\n{text}"));
            assert_eq!(config.warnings.len(), 1, "{what}: {:?}", config.warnings);
            assert!(
                config.warnings[0].contains(warning),
                "{what}: {:?} should contain {warning:?}",
                config.warnings
            );
            assert_eq!(config.name, "t", "{what}");
            let names: Vec<&str> = config.metrics().map(|m| m.name).collect();
            assert_eq!(names, ["things_total", "latency_seconds"], "{what}");
            let decoders = &config.metrics.counters[0].labels[0].decoders;
            assert_eq!(decoders.len(), 2, "{what}");
        }
    }

    /// A key the model does not know: an error in TOML, with its path and
    /// line; in YAML (ebpf_exporter's reader ignores such keys) a warning
    /// with the same, and the config runs.
    #[test]
    fn unknown_keys_are_errors_in_toml_and_warnings_in_yaml() {
        let config = parse(&GOOD_YAML.replace("padding", "paddin"), Format::Yaml).unwrap();
        assert_eq!(
            config.warnings,
            ["line 9: metrics.counters[0].labels[0]: unknown key `paddin` ignored (as ebpf_exporter does)"]
        );
        let only_spans = "tracing:\n  spans:\n    - name: x\n      ringbuf: events\n";
        let err = format!("{:#}", parse(only_spans, Format::Yaml).unwrap_err());
        assert!(
            err.contains("defines only `tracing` (spans, which ebpf_exporter exports to OpenTelemetry): bpfsnap writes metrics and does not export tracing spans"),
            "{err}"
        );
    }
}
