//! Exposition: turn map snapshots into Prometheus metric families and text.
//!
//! Each key is split into its labels (size + padding, in config order) and each
//! label decoded by its decoder chain; per-CPU values are summed. Keys whose
//! labels decode to the same values are added together. A key a decoder
//! rejects is skipped and counted in `bpfsnap_decoder_errors_total`. Families
//! come out sorted by name and series by label values, so the text of two runs
//! over the same data is identical.

pub mod decoder;
mod histogram;
pub mod pretty;
mod series;
pub mod text;

pub use histogram::histograms;

use std::cmp::Ordering;
use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use prometheus::proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType};

use crate::config::{Config, Label};
use crate::snapshot::{MapData, Snapshot};

/// Families built from one config's snapshot, plus keys that failed to decode.
#[derive(Debug, Default)]
pub struct Exposed {
    pub families: Vec<MetricFamily>,
    /// (decoder, count) of keys skipped because a decoder rejected them.
    pub decode_errors: BTreeMap<&'static str, u64>,
}

/// Splits map keys into labels and decodes them.
pub(crate) struct KeyDecoder<'a> {
    labels: Vec<(&'a Label, decoder::Chain)>,
    /// A per-CPU map whose last label `cpu` is filled with the CPU number.
    pub cpu_label: Option<usize>,
}

impl<'a> KeyDecoder<'a> {
    pub fn new(labels: &'a [Label], map: &MapData) -> Result<Self> {
        let chains = labels
            .iter()
            .map(|label| Ok((label, decoder::Chain::build(&label.decoders, label.size)?)))
            .collect::<Result<Vec<_>>>()?;
        let cpu_label = crate::config::cpu_label_index(labels, false)
            .filter(|_| map.per_cpu)
            .map(|index| labels[index].size);
        Ok(KeyDecoder {
            labels: chains,
            cpu_label,
        })
    }

    pub fn names(&self) -> Vec<&'a str> {
        self.labels
            .iter()
            .map(|(label, _)| label.name.as_str())
            .collect()
    }

    /// Label values of `key`; None when a decoder rejected it (counted in
    /// `errors`) or asked to skip it.
    pub fn decode(
        &self,
        key: &[u8],
        errors: &mut BTreeMap<&'static str, u64>,
    ) -> Option<Vec<String>> {
        let mut values = Vec::with_capacity(self.labels.len());
        let mut offset = 0;
        for (label, chain) in &self.labels {
            let bytes = key.get(offset..offset + label.size)?;
            match chain.decode(bytes) {
                Ok(value) => values.push(value),
                Err(err) if err.skip => return None,
                Err(err) => {
                    *errors.entry(err.decoder).or_default() += 1;
                    return None;
                }
            }
            offset += label.span();
        }
        Some(values)
    }
}

/// Series of a simple family: (label values, value).
pub type Samples = Vec<(Vec<String>, f64)>;

/// The metric's full name: `NAMESPACE_NAME`.
pub fn metric_name(namespace: &str, name: &str) -> String {
    if namespace.is_empty() {
        name.to_string()
    } else {
        format!("{namespace}_{name}")
    }
}

/// Builds the counter families `config` defines from `snapshot`.
pub fn counters(config: &Config, snapshot: &Snapshot, namespace: &str) -> Result<Exposed> {
    let mut exposed = Exposed::default();
    for counter in config.map_counters() {
        let (keys, table) = counter_table(config, counter, snapshot, &mut exposed.decode_errors)?;
        let names = keys.names();
        let mut metrics = Vec::new();
        table.for_each_series(|row, value| {
            let pairs = names
                .iter()
                .zip(row)
                .enumerate()
                .map(|(label, (name, &index))| {
                    let mut pair = LabelPair::default();
                    pair.set_name(name.to_string());
                    pair.set_value(table.values[label][index as usize].clone());
                    pair
                })
                .collect();
            let mut metric = Metric::from_label(pairs);
            let mut sample = Counter::default();
            sample.set_value(value);
            metric.set_counter(sample);
            metrics.push(metric);
        });
        exposed.families.push(family(
            &metric_name(namespace, &counter.name),
            &counter.help,
            MetricType::COUNTER,
            metrics,
        ));
    }
    Ok(exposed)
}

/// The decoded, sorted, merged series of one counter's map.
fn counter_table<'c>(
    config: &Config,
    counter: &'c crate::config::Counter,
    snapshot: &Snapshot,
    errors: &mut BTreeMap<&'static str, u64>,
) -> Result<(KeyDecoder<'c>, series::Table)> {
    let map = snapshot
        .map(&counter.name)
        .with_context(|| format!("{}: no snapshot of map {}", config.name, counter.name))?;
    let label_bytes = crate::config::map_key_size(&counter.labels, map.per_cpu, false);
    let unlabelled;
    let map = if label_bytes == 0 && map.key_size == crate::config::UNLABELLED_KEY.len() {
        unlabelled = unlabelled_entry(map, errors);
        &unlabelled
    } else if map.key_size == label_bytes {
        map
    } else {
        bail!(
            "{}: metric {}: label sizes do not match the map's key size",
            config.name,
            counter.name
        );
    };
    let keys = KeyDecoder::new(&counter.labels, map)?;
    let table = series::counter_table(&keys.labels, keys.cpu_label, map, errors);
    Ok((keys, table))
}

/// An unlabelled counter's map (ebpf_exporter's rule): its entry at key u32
/// 0 is the sample, even when zero (a gauge-like count, such as pages in
/// use); any other key cannot be labelled and counts as a decoder error.
fn unlabelled_entry(map: &MapData, errors: &mut BTreeMap<&'static str, u64>) -> MapData {
    let mut entry = MapData {
        name: map.name.clone(),
        key_size: map.key_size,
        values_per_key: map.values_per_key,
        is_array: false,
        per_cpu: map.per_cpu,
        keys: Vec::new(),
        values: Vec::new(),
    };
    for (key, values) in map.entries() {
        if key == crate::config::UNLABELLED_KEY {
            entry.keys.extend_from_slice(key);
            entry.values.extend_from_slice(values);
        } else if values.iter().any(|value| *value != 0) {
            *errors.entry("unlabelled_key").or_default() += 1;
        }
    }
    entry
}

pub(crate) fn label_pairs(names: &[&str], values: Vec<String>) -> Vec<LabelPair> {
    names
        .iter()
        .zip(values)
        .map(|(name, value)| {
            let mut pair = LabelPair::default();
            pair.set_name(name.to_string());
            pair.set_value(value);
            pair
        })
        .collect()
}

/// Adds label `name="value"` to every series of `families`, after their own.
pub fn label_every_series(families: &mut [MetricFamily], name: &str, value: &str) {
    for family in families {
        for metric in family.mut_metric() {
            let mut labels = metric.take_label();
            labels.extend(label_pairs(&[name], vec![value.to_string()]));
            metric.set_label(labels);
        }
    }
}

pub(crate) fn family(
    name: &str,
    help: &str,
    kind: MetricType,
    metrics: Vec<Metric>,
) -> MetricFamily {
    let mut family = MetricFamily::default();
    family.set_name(name.to_string());
    family.set_help(help.to_string());
    family.set_field_type(kind);
    family.set_metric(metrics);
    family
}

/// A gauge family with one unlabelled sample.
pub fn gauge(name: &str, help: &str, value: f64) -> MetricFamily {
    let mut sample = Gauge::default();
    sample.set_value(value);
    family(
        name,
        help,
        MetricType::GAUGE,
        vec![Metric::from_gauge(sample)],
    )
}

/// A family of `kind` (counter or gauge) with one series per (label values, value).
pub fn labelled(
    name: &str,
    help: &str,
    kind: MetricType,
    labels: &[&str],
    series: Vec<(Vec<String>, f64)>,
) -> MetricFamily {
    let metrics = series
        .into_iter()
        .map(|(values, value)| {
            let mut metric = Metric::from_label(label_pairs(labels, values));
            if kind == MetricType::GAUGE {
                let mut sample = Gauge::default();
                sample.set_value(value);
                metric.set_gauge(sample);
            } else {
                let mut sample = Counter::default();
                sample.set_value(value);
                metric.set_counter(sample);
            }
            metric
        })
        .collect();
    family(name, help, kind, metrics)
}

/// A counter family with one series per (label values, value).
pub fn labelled_counter(
    name: &str,
    help: &str,
    labels: &[&str],
    series: Vec<(Vec<String>, f64)>,
) -> MetricFamily {
    labelled(name, help, MetricType::COUNTER, labels, series)
}

/// Text exposition format 0.0.4 being assembled: each family is encoded as it
/// is added, and [`Exposition::text`] joins them sorted by name. Families
/// without series are left out (the format allows them, but they carry
/// nothing); a name added twice is an error, as node_exporter would silently
/// drop one of the two.
#[derive(Debug, Default)]
pub struct Exposition {
    families: BTreeMap<String, String>,
}

impl Exposition {
    pub fn add(&mut self, family: MetricFamily) -> Result<()> {
        self.add_ref(&family)
    }

    pub fn add_all(&mut self, families: Vec<MetricFamily>) -> Result<()> {
        families.iter().try_for_each(|family| self.add_ref(family))
    }

    /// [`Exposition::add`] without taking the family: nothing is copied or
    /// freed, so a caller that keeps its families need not clone them.
    pub fn add_ref(&mut self, family: &MetricFamily) -> Result<()> {
        let metrics = family.get_metric();
        if metrics.is_empty() {
            return Ok(());
        }
        if self.families.contains_key(family.name()) {
            bail!(
                "metric {} is defined twice: rename one of them",
                family.name()
            );
        }
        // Series in label order. The families built here already are, which
        // a comparison without copies confirms; others are put in order by
        // reference (a stable sort, as before).
        let mut text = String::new();
        let in_order = |a: &Metric, b: &Metric| label_order(a, b) != Ordering::Greater;
        let encoded = if metrics.is_sorted_by(in_order) {
            text::encode_metrics(family, metrics.iter(), &mut text)
        } else {
            let mut sorted: Vec<&Metric> = metrics.iter().collect();
            sorted.sort_by(|a, b| label_order(a, b));
            text::encode_metrics(family, sorted.into_iter(), &mut text)
        };
        encoded.with_context(|| format!("encoding {}", family.name()))?;
        self.families.insert(family.name().to_string(), text);
        Ok(())
    }

    /// Decodes and encodes every family `config` defines from `snapshot`
    /// straight into text: what [`counters`] + [`histograms`] + capping
    /// each metric at its `max_series` + [`Exposition::add`] give, without
    /// a `MetricFamily` per counter map (a proto struct and four strings per
    /// series, which for a large map cost more than reading it).
    pub fn add_snapshot(
        &mut self,
        config: &Config,
        snapshot: &Snapshot,
        namespace: &str,
    ) -> Result<Added> {
        let mut exposed = Exposed::default();
        let mut added = Added::default();
        for counter in config.map_counters() {
            let (keys, table) =
                counter_table(config, counter, snapshot, &mut exposed.decode_errors)?;
            if table.is_empty() {
                continue;
            }
            let name = metric_name(namespace, &counter.name);
            if self.families.contains_key(&name) {
                bail!("metric {name} is defined twice: rename one of them");
            }
            let mut text = String::new();
            text::push_header(&mut text, &name, &counter.help, MetricType::COUNTER)?;
            let cap = config.max_series(&counter.name);
            let dropped = table.encode_samples(&name, &keys.names(), cap, &mut text);
            if dropped > 0 {
                added
                    .series_dropped
                    .push((counter.name.clone(), dropped as u64));
            }
            self.families.insert(name, text);
        }
        histograms(config, snapshot, namespace, &mut exposed)?;
        for (histogram, family) in config.metrics.histograms.iter().zip(&mut exposed.families) {
            let dropped = cap_series(family, config.max_series(&histogram.name));
            if dropped > 0 {
                added
                    .series_dropped
                    .push((histogram.name.clone(), dropped as u64));
            }
        }
        self.add_all_ref(&exposed.families)?;
        added.decode_errors = exposed.decode_errors;
        Ok(added)
    }

    /// [`Exposition::add_all`] by reference (see [`Exposition::add_ref`]).
    pub fn add_all_ref<'f>(
        &mut self,
        families: impl IntoIterator<Item = &'f MetricFamily>,
    ) -> Result<()> {
        families
            .into_iter()
            .try_for_each(|family| self.add_ref(family))
    }

    /// Number of families with at least one series.
    pub fn len(&self) -> usize {
        self.families.len()
    }

    pub fn is_empty(&self) -> bool {
        self.families.is_empty()
    }

    /// Each family's name and text, in order: for a sink that writes them
    /// one after another instead of joining them.
    pub fn parts(&self) -> impl Iterator<Item = (&str, &str)> {
        self.families
            .iter()
            .map(|(name, text)| (name.as_str(), text.as_str()))
    }

    /// The text, without copying the largest family's (for a big map,
    /// nearly all of it): the others are put around it in place.
    pub fn into_text(self) -> String {
        let Some(largest) = self
            .families
            .iter()
            .max_by_key(|(_, text)| text.len())
            .map(|(name, _)| name.clone())
        else {
            return String::new();
        };
        let total = self.families.values().map(String::len).sum::<usize>();
        let (mut before, mut text, mut after) = (String::new(), String::new(), Vec::new());
        for (name, family) in self.families {
            match name.cmp(&largest) {
                Ordering::Less => before.push_str(&family),
                Ordering::Equal => text = family,
                Ordering::Greater => after.push(family),
            }
        }
        text.reserve(total - text.len());
        if !before.is_empty() {
            // (Inserting even "" moves every byte after the insertion point.)
            text.insert_str(0, &before);
        }
        for family in after {
            text.push_str(&family);
        }
        text
    }

    pub fn text(&self) -> String {
        let mut text = String::with_capacity(self.families.values().map(String::len).sum());
        for family in self.families.values() {
            text.push_str(family);
        }
        text
    }
}

/// What [`Exposition::add_snapshot`] reports besides the text.
#[derive(Debug, Default, PartialEq)]
pub struct Added {
    /// (decoder, count) of keys skipped because a decoder rejected them.
    pub decode_errors: BTreeMap<&'static str, u64>,
    /// (metric without namespace, count) of series left out over `max_series`.
    pub series_dropped: Vec<(String, u64)>,
}

/// Keeps the `cap` series of a family with the largest values (counts for
/// histograms; on equal values, the first in label order): node_exporter and
/// the disk are protected, and what is kept is what matters most. Returns
/// how many were dropped.
fn cap_series(family: &mut MetricFamily, cap: usize) -> usize {
    let total = family.get_metric().len();
    if total <= cap {
        return 0;
    }
    let cap = cap.max(1);
    let kind = family.get_field_type();
    let weight = |m: &Metric| match kind {
        MetricType::HISTOGRAM => m.get_histogram().get_sample_count() as f64,
        MetricType::GAUGE => m.get_gauge().get_value(),
        _ => m.get_counter().get_value(),
    };
    let mut order: Vec<usize> = (0..total).collect();
    let metrics = family.get_metric();
    order.sort_by(|&a, &b| {
        weight(&metrics[b])
            .total_cmp(&weight(&metrics[a]))
            .then(a.cmp(&b))
    });
    let mut kept = vec![false; total];
    for &i in &order[..cap] {
        kept[i] = true;
    }
    let mut index = 0;
    family.mut_metric().retain(|_| {
        index += 1;
        kept[index - 1]
    });
    total - cap
}

/// Every family `config` defines from `snapshot`, each capped at its
/// `max_series`: what [`Exposition::add_snapshot`] encodes, as
/// `MetricFamily`s for views that need the structure (the terminal view).
pub fn families(
    config: &Config,
    snapshot: &Snapshot,
    namespace: &str,
) -> Result<(Vec<MetricFamily>, Added)> {
    let mut exposed = counters(config, snapshot, namespace)?;
    histograms(config, snapshot, namespace, &mut exposed)?;
    let mut added = Added::default();
    let metrics = config
        .map_counters()
        .map(|c| &c.name)
        .chain(config.metrics.histograms.iter().map(|h| &h.name));
    for (metric, family) in metrics.zip(&mut exposed.families) {
        let dropped = cap_series(family, config.max_series(metric));
        if dropped > 0 {
            added.series_dropped.push((metric.clone(), dropped as u64));
        }
    }
    added.decode_errors = exposed.decode_errors;
    Ok((exposed.families, added))
}

/// Series order: by label (name, value) pairs, lexicographically.
fn label_order(a: &Metric, b: &Metric) -> Ordering {
    let (a, b) = (a.get_label(), b.get_label());
    a.iter()
        .map(|l| (l.name(), l.value()))
        .cmp(b.iter().map(|l| (l.name(), l.value())))
}

/// Encodes `families` in one go (see [`Exposition`]).
pub fn encode(families: Vec<MetricFamily>) -> Result<String> {
    let mut exposition = Exposition::default();
    exposition.add_all(families)?;
    Ok(exposition.text())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: &str = r#"
[[metrics.counters]]
name = "events_total"
help = "Events."
[[metrics.counters.labels]]
name = "kind"
size = 4
decoders = [{ name = "uint" }]
[[metrics.counters.labels]]
name = "comm"
size = 4
decoders = [{ name = "string" }]
"#;

    fn key(kind: u32, comm: &[u8; 4]) -> Vec<u8> {
        let mut key = kind.to_ne_bytes().to_vec();
        key.extend_from_slice(comm);
        key
    }

    fn snapshot(entries: &[(Vec<u8>, [u64; 2])], is_array: bool) -> Snapshot {
        Snapshot {
            events_lost: Vec::new(),
            maps: vec![MapData {
                name: "events_total".into(),
                key_size: 8,
                values_per_key: 2,
                is_array,
                per_cpu: true,
                keys: entries.iter().flat_map(|(k, _)| k.clone()).collect(),
                values: entries.iter().flat_map(|(_, v)| *v).collect(),
            }],
        }
    }

    #[test]
    fn decodes_sums_cpus_merges_and_sorts() {
        let config = Config::parse("t", "t", SPEC, crate::config::Format::Toml).unwrap();
        let snap = snapshot(
            &[
                (key(2, b"sh\0\0"), [1, 2]),
                (key(1, b"zsh\0"), [5, 0]),
                (key(1, b"bash"), [0, 7]),
                (key(1, b"bash"), [1, 0]),    // same labels again: added
                (key(3, b"x\0\0\0"), [0, 0]), // zero: kept in a hash map
            ],
            false,
        );
        let text = encode(counters(&config, &snap, "bpfsnap").unwrap().families).unwrap();
        assert_eq!(
            text,
            "# HELP bpfsnap_events_total Events.\n\
             # TYPE bpfsnap_events_total counter\n\
             bpfsnap_events_total{kind=\"1\",comm=\"bash\"} 8\n\
             bpfsnap_events_total{kind=\"1\",comm=\"zsh\"} 5\n\
             bpfsnap_events_total{kind=\"2\",comm=\"sh\"} 3\n\
             bpfsnap_events_total{kind=\"3\",comm=\"x\"} 0\n"
        );
    }

    #[test]
    fn array_zeros_are_left_out() {
        let config = Config::parse("t", "t", SPEC, crate::config::Format::Toml).unwrap();
        let snap = snapshot(
            &[(key(1, b"a\0\0\0"), [0, 0]), (key(2, b"b\0\0\0"), [0, 1])],
            true,
        );
        let text = encode(counters(&config, &snap, "bpfsnap").unwrap().families).unwrap();
        assert!(!text.contains("comm=\"a\""));
        assert!(text.contains("comm=\"b\"} 1"));
    }

    #[test]
    fn escapes_label_values_and_replaces_invalid_utf8() {
        let config = Config::parse("t", "t", SPEC, crate::config::Format::Toml).unwrap();
        let snap = snapshot(
            &[
                (key(1, b"a\"\\\n"), [1, 0]),
                (key(2, b"\xff\xfeok"), [1, 0]),
            ],
            false,
        );
        let text = encode(counters(&config, &snap, "bpfsnap").unwrap().families).unwrap();
        assert!(text.contains(r#"comm="a\"\\\n"} 1"#), "{text}");
        assert!(text.contains("comm=\"\u{fffd}\u{fffd}ok\"} 1"), "{text}");
    }

    #[test]
    fn a_key_that_fails_to_decode_is_skipped_and_counted() {
        let spec = SPEC.replace("\"string\"", "\"string\" }, { name = \"syscall\"");
        let config = Config::parse("t", "t", &spec, crate::config::Format::Toml).unwrap();
        let snap = snapshot(
            &[(key(1, b"39\0\0"), [1, 0]), (key(2, b"bad\0"), [1, 0])],
            false,
        );
        let exposed = counters(&config, &snap, "bpfsnap").unwrap();
        assert_eq!(exposed.decode_errors.get("syscall"), Some(&1));
        let text = encode(exposed.families).unwrap();
        assert!(text.contains("kind=\"1\""));
        assert!(!text.contains("kind=\"2\""));
    }

    #[test]
    fn families_sorted_by_name_empty_ones_dropped_duplicates_refused() {
        let families = vec![
            gauge("b_seconds", "B.", 1.5),
            gauge("a_seconds", "A with \\ and\nnewline.", 0.001),
            family("c_total", "C.", MetricType::COUNTER, vec![]),
        ];
        assert_eq!(
            encode(families).unwrap(),
            "# HELP a_seconds A with \\\\ and\\nnewline.\n# TYPE a_seconds gauge\na_seconds 0.001\n\
             # HELP b_seconds B.\n# TYPE b_seconds gauge\nb_seconds 1.5\n"
        );
        let err = encode(vec![gauge("x", "X.", 1.0), gauge("x", "X.", 2.0)])
            .unwrap_err()
            .to_string();
        assert!(err.contains("metric x is defined twice"), "{err}");
    }

    /// The series the original algorithm gives: every key decoded on its
    /// own into a `BTreeMap<Vec<String>, f64>`.
    fn reference(
        config: &Config,
        snapshot: &Snapshot,
        namespace: &str,
    ) -> (Vec<MetricFamily>, BTreeMap<&'static str, u64>) {
        let mut errors = BTreeMap::new();
        let mut families = Vec::new();
        for counter in config.map_counters() {
            let map = snapshot.map(&counter.name).unwrap();
            let keys = KeyDecoder::new(&counter.labels, map).unwrap();
            let mut series: BTreeMap<Vec<String>, f64> = BTreeMap::new();
            for (key, values) in map.entries() {
                if let Some(size) = keys.cpu_label {
                    for (cpu, value) in values.iter().enumerate().filter(|(_, v)| **v != 0) {
                        let mut full = key.to_vec();
                        full.extend_from_slice(&(cpu as u64).to_ne_bytes()[..size.min(8)]);
                        if let Some(labels) = keys.decode(&full, &mut errors) {
                            *series.entry(labels).or_default() += *value as f64;
                        }
                    }
                    continue;
                }
                let total: u64 = values.iter().fold(0u64, |sum, v| sum.wrapping_add(*v));
                if map.is_array && total == 0 {
                    continue;
                }
                if let Some(labels) = keys.decode(key, &mut errors) {
                    *series.entry(labels).or_default() += total as f64;
                }
            }
            families.push(labelled_counter(
                &metric_name(namespace, &counter.name),
                &counter.help,
                &keys.names(),
                series.into_iter().collect(),
            ));
        }
        (families, errors)
    }

    /// xorshift64*: deterministic test data without a crate.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// Specs and maps exercising the fast path: per-CPU sums and the `cpu`
    /// label, array zeros, labels over 8 bytes, padding, decode errors and
    /// skips, keys merging into one series, escaping, many labels (rows
    /// too wide to pack into 64 bits).
    fn cases() -> Vec<(String, MapData)> {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut cases = Vec::new();
        // {u32 kind, char comm[12]} per-CPU hash; comm through regexp (skips)
        // and syscall (errors on non-numbers).
        // kind: numbers below 300 are mapped to names, which `syscall` then
        // rejects (decode errors); the others pass through to `syscall`.
        let names: Vec<String> = (0..300)
            .map(|k| match k {
                7 => format!("\"{k}\" = 'a\\\"b\\\\c\\nd'"),
                _ => format!("\"{k}\" = \"v{}\"", k / 2),
            })
            .collect();
        let spec = format!(
            r#"
[[metrics.counters]]
name = "m_total"
help = "M."
[[metrics.counters.labels]]
name = "kind"
size = 2
padding = 2
decoders = [{{ name = "uint" }}, {{ name = "static_map", allow_unknown = true, static_map = {{ {} }} }}, {{ name = "syscall" }}]
[[metrics.counters.labels]]
name = "comm"
size = 12
decoders = [{{ name = "string" }}, {{ name = "regexp", regexps = ["^(x.*|[0-9]+)$"] }}]
"#,
            names.join(", ")
        );
        let spec = spec.as_str();
        let words: [&[u8]; 7] = [
            b"x\"q\\",
            b"xa\nb",
            b"12",
            b"x",
            b"nope",
            b"x\xff\xfe",
            b"123456789012",
        ];
        let mut keys = Vec::new();
        let mut values = Vec::new();
        for _ in 0..3000 {
            let kind = rng.below(600) as u16;
            keys.extend_from_slice(&kind.to_ne_bytes());
            keys.extend_from_slice(&[rng.below(256) as u8, 0]); // padding: ignored
            let mut comm = [0u8; 12];
            let word = words[rng.below(words.len() as u64) as usize];
            comm[..word.len()].copy_from_slice(word);
            if rng.below(4) == 0 {
                comm[11] = b'z'; // junk after the NUL, or a longer word
            }
            keys.extend_from_slice(&comm);
            values.extend([rng.below(1 << 60), rng.below(3)]);
        }
        cases.push((
            spec.to_string(),
            MapData {
                name: "m_total".into(),
                key_size: 16,
                values_per_key: 2,
                is_array: false,
                per_cpu: true,
                keys: keys.clone(),
                values: values.clone(),
            },
        ));
        // The same keys split by CPU (last label `cpu`), as an array with zeros.
        let cpu_spec = spec.to_string()
            + "[[metrics.counters.labels]]\nname = \"cpu\"\nsize = 4\ndecoders = [{ name = \"uint\" }]\n";
        let zeroed: Vec<u64> = values
            .iter()
            .enumerate()
            .map(|(i, v)| if i % 5 == 0 { 0 } else { *v })
            .collect();
        cases.push((
            cpu_spec,
            MapData {
                name: "m_total".into(),
                key_size: 16,
                values_per_key: 2,
                is_array: true,
                per_cpu: true,
                keys: keys.clone(),
                values: zeroed.clone(),
            },
        ));
        // Array zeros without the cpu label.
        cases.push((
            spec.to_string(),
            MapData {
                name: "m_total".into(),
                key_size: 16,
                values_per_key: 2,
                is_array: true,
                per_cpu: true,
                keys,
                values: zeroed,
            },
        ));
        // 1-byte labels of ~200 values each: 7 of them (56 bits) pack into
        // a u64 but not with the key's index; 9 (72 bits) do not pack.
        for width in [7usize, 9] {
            let mut wide =
                String::from("[[metrics.counters]]\nname = \"w_total\"\nhelp = \"W.\"\n");
            for i in 0..width {
                wide += &format!(
                    "[[metrics.counters.labels]]\nname = \"l{i}\"\nsize = 1\ndecoders = [{{ name = \"uint\" }}]\n"
                );
            }
            let keys: Vec<u8> = (0..width * 4000).map(|_| rng.below(200) as u8).collect();
            // Some duplicate keys, to merge.
            let keys = [keys.clone(), keys[..width * 500].to_vec()].concat();
            let values = (0..4500).map(|_| rng.below(1000)).collect();
            cases.push((
                wide,
                MapData {
                    name: "w_total".into(),
                    key_size: width,
                    values_per_key: 1,
                    is_array: false,
                    per_cpu: false,
                    keys,
                    values,
                },
            ));
        }
        cases
    }

    #[test]
    fn fast_series_match_the_original_algorithm() {
        for (spec, map) in cases() {
            let config = Config::parse("t", "t", &spec, crate::config::Format::Toml).unwrap();
            let snapshot = Snapshot {
                maps: vec![map],
                ..Snapshot::default()
            };
            let (want, want_errors) = reference(&config, &snapshot, "ns");
            let exposed = counters(&config, &snapshot, "ns").unwrap();
            assert!(
                want[0].get_metric().len() > 10,
                "{spec}: too few series to mean much"
            );
            assert_eq!(exposed.families, want, "{spec}");
            assert_eq!(exposed.decode_errors, want_errors, "{spec}");
            assert!(!want_errors.is_empty() || spec.contains("w_total"));

            // add_snapshot: the same text, straight from the table.
            let mut streamed = Exposition::default();
            let added = streamed.add_snapshot(&config, &snapshot, "ns").unwrap();
            assert_eq!(added.decode_errors, want_errors);
            assert!(added.series_dropped.is_empty());
            assert_eq!(streamed.text(), encode(want).unwrap(), "{spec}");
        }
    }

    #[test]
    fn add_snapshot_matches_counters_and_histograms_encoded() {
        let spec = format!(
            "{SPEC}{}",
            r#"
[[metrics.histograms]]
name = "latency_seconds"
help = "Latency."
bucket_type = "exp2"
bucket_min = 0
bucket_max = 3
[[metrics.histograms.labels]]
name = "op"
size = 4
decoders = [{ name = "uint" }]
[[metrics.histograms.labels]]
name = "bucket"
size = 4
decoders = [{ name = "uint" }]
"#
        );
        let config = Config::parse("t", "t", &spec, crate::config::Format::Toml).unwrap();
        let mut snap = snapshot(
            &[
                (key(2, b"sh\0\0"), [1, 2]),
                (key(1, b"zsh\0"), [5, 0]),
                (key(1, b"bash"), [0, 7]),
                (key(1, b"bash"), [1, 0]),
            ],
            false,
        );
        snap.maps.push(MapData {
            name: "latency_seconds".into(),
            key_size: 8,
            values_per_key: 1,
            is_array: false,
            per_cpu: false,
            keys: [(1u32, 0u32), (1, 2), (2, 4)]
                .iter()
                .flat_map(|(op, b)| [op.to_ne_bytes(), b.to_ne_bytes()].concat())
                .collect(),
            values: vec![3, 4, 5],
        });
        let mut exposed = counters(&config, &snap, "bpfsnap").unwrap();
        histograms(&config, &snap, "bpfsnap", &mut exposed).unwrap();
        let mut streamed = Exposition::default();
        streamed.add_snapshot(&config, &snap, "bpfsnap").unwrap();
        assert_eq!(streamed.len(), 2);
        assert_eq!(streamed.text(), encode(exposed.families).unwrap());
        // A name already added is refused, as by `add`.
        let err = streamed
            .add_snapshot(&config, &snap, "bpfsnap")
            .unwrap_err();
        assert!(err.to_string().contains("defined twice"), "{err}");
    }

    #[test]
    fn unsorted_families_are_sorted_by_labels_as_before() {
        let family = labelled_counter(
            "x_total",
            "X.",
            &["a", "b"],
            vec![
                (vec!["2".into(), "a".into()], 1.0),
                (vec!["10".into(), "b".into()], 2.0),
                (vec!["2".into(), "".into()], 3.0),
                (vec!["10".into(), "b".into()], 4.0), // equal labels: kept in order
            ],
        );
        let mut by_key = family.clone();
        let mut metrics = by_key.take_metric();
        metrics.sort_by_cached_key(|m| {
            m.get_label()
                .iter()
                .map(|l| (l.name().to_string(), l.value().to_string()))
                .collect::<Vec<_>>()
        });
        by_key.set_metric(metrics);
        let want = prometheus::TextEncoder::new()
            .encode_to_string(&[by_key])
            .unwrap();
        assert_eq!(encode(vec![family]).unwrap(), want);
        assert!(want.find("b=\"b\"} 2").unwrap() < want.find("b=\"b\"} 4").unwrap());
    }

    #[test]
    fn add_snapshot_keeps_the_largest_series_up_to_max_series() {
        let spec = SPEC.replace("help = \"Events.\"", "help = \"Events.\"\nmax_series = 2");
        let config = Config::parse("t", "t", &spec, crate::config::Format::Toml).unwrap();
        let snap = snapshot(
            &[
                (key(1, b"a\0\0\0"), [1, 0]),
                (key(4, b"d\0\0\0"), [5, 0]), // ties with c, which comes first
                (key(2, b"b\0\0\0"), [9, 0]),
                (key(3, b"c\0\0\0"), [5, 0]),
                (key(5, b"e\0\0\0"), [2, 0]),
            ],
            false,
        );
        let mut streamed = Exposition::default();
        let added = streamed.add_snapshot(&config, &snap, "bpfsnap").unwrap();
        assert_eq!(added.series_dropped, [("events_total".to_string(), 3)]);
        // The families of the terminal view keep the same series.
        let (built, built_added) = families(&config, &snap, "bpfsnap").unwrap();
        assert_eq!(built_added, added);
        assert_eq!(encode(built).unwrap(), streamed.text());
        assert_eq!(
            streamed.into_text(),
            "# HELP bpfsnap_events_total Events.\n\
             # TYPE bpfsnap_events_total counter\n\
             bpfsnap_events_total{kind=\"2\",comm=\"b\"} 9\n\
             bpfsnap_events_total{kind=\"3\",comm=\"c\"} 5\n"
        );
    }

    #[test]
    fn add_snapshot_caps_histograms_by_count() {
        let spec = r#"
[[metrics.histograms]]
name = "latency_seconds"
help = "Latency."
max_series = 1
bucket_type = "exp2"
bucket_min = 0
bucket_max = 1
[[metrics.histograms.labels]]
name = "op"
size = 4
decoders = [{ name = "uint" }]
[[metrics.histograms.labels]]
name = "bucket"
size = 4
decoders = [{ name = "uint" }]
"#;
        let config = Config::parse("t", "t", spec, crate::config::Format::Toml).unwrap();
        let snap = Snapshot {
            maps: vec![MapData {
                name: "latency_seconds".into(),
                key_size: 8,
                values_per_key: 1,
                is_array: false,
                per_cpu: false,
                keys: [(1u32, 0u32), (2, 1), (3, 0)]
                    .iter()
                    .flat_map(|(op, b)| [op.to_ne_bytes(), b.to_ne_bytes()].concat())
                    .collect(),
                values: vec![3, 7, 1],
            }],
            ..Snapshot::default()
        };
        let mut streamed = Exposition::default();
        let added = streamed.add_snapshot(&config, &snap, "bpfsnap").unwrap();
        assert_eq!(added.series_dropped, [("latency_seconds".to_string(), 2)]);
        let (built, built_added) = families(&config, &snap, "bpfsnap").unwrap();
        assert_eq!(built_added, added);
        assert_eq!(encode(built).unwrap(), streamed.text());
        let text = streamed.into_text();
        assert!(text.contains("_count{op=\"2\"} 7\n"), "{text}");
        assert!(
            !text.contains("op=\"1\"") && !text.contains("op=\"3\""),
            "{text}"
        );
    }
}
