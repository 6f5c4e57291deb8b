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
pub mod text;

pub use histogram::histograms;

use std::cmp::Ordering;
use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use prometheus::proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType};

use crate::config::{Config, Label};
use crate::probe;
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
        let labels = labels
            .iter()
            .map(|label| Ok((label, decoder::Chain::build(&label.decoders, label.size)?)))
            .collect::<Result<Vec<_>>>()?;
        let cpu_label = match labels.last() {
            Some((last, _)) if map.per_cpu && last.name == "cpu" => Some(last.size),
            _ => None,
        };
        Ok(KeyDecoder { labels, cpu_label })
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

    /// `key` followed by `cpu` in the cpu label's size, host-endian.
    pub fn key_with_cpu(key: &[u8], cpu: usize, size: usize) -> Vec<u8> {
        let mut full = key.to_vec();
        let cpu = cpu as u64;
        match size {
            1 => full.push(cpu as u8),
            2 => full.extend_from_slice(&(cpu as u16).to_ne_bytes()),
            4 => full.extend_from_slice(&(cpu as u32).to_ne_bytes()),
            _ => full.extend_from_slice(&cpu.to_ne_bytes()[..size.min(8)]),
        }
        full
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
        let map = snapshot
            .map(&counter.name)
            .with_context(|| format!("{}: no snapshot of map {}", config.name, counter.name))?;
        if map.key_size != probe::expected_key_size(&counter.labels, map.per_cpu) {
            bail!(
                "{}: metric {}: label sizes do not match the map's key size",
                config.name,
                counter.name
            );
        }
        let keys = KeyDecoder::new(&counter.labels, map)?;
        let mut series: BTreeMap<Vec<String>, f64> = BTreeMap::new();
        for (key, values) in map.entries() {
            if let Some(size) = keys.cpu_label {
                for (cpu, value) in values.iter().enumerate().filter(|(_, v)| **v != 0) {
                    let full = KeyDecoder::key_with_cpu(key, cpu, size);
                    if let Some(labels) = keys.decode(&full, &mut exposed.decode_errors) {
                        *series.entry(labels).or_default() += *value as f64;
                    }
                }
                continue;
            }
            let total: u64 = values.iter().fold(0u64, |sum, v| sum.wrapping_add(*v));
            if map.is_array && total == 0 {
                continue;
            }
            if let Some(labels) = keys.decode(key, &mut exposed.decode_errors) {
                *series.entry(labels).or_default() += total as f64;
            }
        }
        exposed.families.push(labelled_counter(
            &metric_name(namespace, &counter.name),
            &counter.help,
            &keys.names(),
            series.into_iter().collect(),
        ));
    }
    Ok(exposed)
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
    pub fn add(&mut self, mut family: MetricFamily) -> Result<()> {
        if family.get_metric().is_empty() {
            return Ok(());
        }
        if self.families.contains_key(family.name()) {
            bail!(
                "metric {} is defined twice: rename one of them",
                family.name()
            );
        }
        // Series in label order; as the families built here already are,
        // which a comparison without copies confirms.
        let in_order = |a: &Metric, b: &Metric| label_order(a, b) != Ordering::Greater;
        if !family.get_metric().is_sorted_by(in_order) {
            family.mut_metric().sort_by(label_order);
        }
        let mut text = String::new();
        text::encode_family(&family, &mut text)
            .with_context(|| format!("encoding {}", family.name()))?;
        self.families.insert(family.name().to_string(), text);
        Ok(())
    }

    pub fn add_all(&mut self, families: Vec<MetricFamily>) -> Result<()> {
        families.into_iter().try_for_each(|family| self.add(family))
    }

    /// Number of families with at least one series.
    pub fn len(&self) -> usize {
        self.families.len()
    }

    pub fn is_empty(&self) -> bool {
        self.families.is_empty()
    }

    pub fn text(&self) -> String {
        let mut text = String::with_capacity(self.families.values().map(String::len).sum());
        for family in self.families.values() {
            text.push_str(family);
        }
        text
    }
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
}
