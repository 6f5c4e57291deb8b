//! Exposition: turn map snapshots into Prometheus metric families and text.
//!
//! Each key is split into its labels (size + padding, in config order) and each
//! label decoded by its decoder chain; per-CPU values are summed. Keys whose
//! labels decode to the same values are added together. A key a decoder
//! rejects is skipped and counted in `bpfsnap_decoder_errors_total`. Families
//! come out sorted by name and series by label values, so the text of two runs
//! over the same data is identical.

pub mod decoder;

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use prometheus::proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType};

use crate::config::{self, Config, METRIC_PREFIX};
use crate::snapshot::Snapshot;

/// Families built from one config's snapshot, plus keys that failed to decode.
#[derive(Debug, Default)]
pub struct Exposed {
    pub families: Vec<MetricFamily>,
    /// (decoder, count) of keys skipped because a decoder rejected them.
    pub decode_errors: BTreeMap<&'static str, u64>,
}

/// Builds the counter families `config` defines from `snapshot`.
pub fn counters(config: &Config, snapshot: &Snapshot) -> Result<Exposed> {
    let mut exposed = Exposed::default();
    for counter in &config.metrics.counters {
        let map = snapshot
            .map(&counter.name)
            .with_context(|| format!("{}: no snapshot of map {}", config.name, counter.name))?;
        if map.key_size != config::key_size(&counter.labels) {
            bail!(
                "{}: metric {}: label sizes do not match the map's key size",
                config.name,
                counter.name
            );
        }
        let chains = counter
            .labels
            .iter()
            .map(|label| decoder::Chain::build(&label.decoders, label.size))
            .collect::<Result<Vec<_>>>()?;

        let mut series: BTreeMap<Vec<String>, f64> = BTreeMap::new();
        'keys: for (key, values) in map.entries() {
            let total: u64 = values.iter().fold(0u64, |sum, v| sum.wrapping_add(*v));
            if map.is_array && total == 0 {
                continue;
            }
            let mut label_values = Vec::with_capacity(counter.labels.len());
            let mut offset = 0;
            for (label, chain) in counter.labels.iter().zip(&chains) {
                match chain.decode(&key[offset..offset + label.size]) {
                    Ok(value) => label_values.push(value),
                    Err(err) if err.skip => continue 'keys,
                    Err(err) => {
                        *exposed.decode_errors.entry(err.decoder).or_default() += 1;
                        continue 'keys;
                    }
                }
                offset += label.span();
            }
            *series.entry(label_values).or_default() += total as f64;
        }

        let names: Vec<&str> = counter
            .labels
            .iter()
            .map(|label| label.name.as_str())
            .collect();
        exposed.families.push(labelled_counter(
            &format!("{METRIC_PREFIX}{}", counter.name),
            &counter.help,
            &names,
            series.into_iter().collect(),
        ));
    }
    Ok(exposed)
}

fn label_pairs(names: &[&str], values: Vec<String>) -> Vec<LabelPair> {
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

fn family(name: &str, help: &str, kind: MetricType, metrics: Vec<Metric>) -> MetricFamily {
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

/// A counter family with one series per (label values, value).
pub fn labelled_counter(
    name: &str,
    help: &str,
    labels: &[&str],
    series: Vec<(Vec<String>, f64)>,
) -> MetricFamily {
    let metrics = series
        .into_iter()
        .map(|(values, value)| {
            let mut metric = Metric::from_label(label_pairs(labels, values));
            let mut sample = Counter::default();
            sample.set_value(value);
            metric.set_counter(sample);
            metric
        })
        .collect();
    family(name, help, MetricType::COUNTER, metrics)
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
        let mut metrics = family.take_metric();
        metrics.sort_by_cached_key(|m| {
            m.get_label()
                .iter()
                .map(|l| (l.name().to_string(), l.value().to_string()))
                .collect::<Vec<_>>()
        });
        family.set_metric(metrics);
        let text = prometheus::TextEncoder::new()
            .encode_to_string(std::slice::from_ref(&family))
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
        self.families.values().map(String::as_str).collect()
    }
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
    use crate::snapshot::MapData;

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
            maps: vec![MapData {
                name: "events_total".into(),
                key_size: 8,
                values_per_key: 2,
                is_array,
                keys: entries.iter().flat_map(|(k, _)| k.clone()).collect(),
                values: entries.iter().flat_map(|(_, v)| *v).collect(),
            }],
        }
    }

    #[test]
    fn decodes_sums_cpus_merges_and_sorts() {
        let config = Config::parse("t", "t", SPEC).unwrap();
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
        let text = encode(counters(&config, &snap).unwrap().families).unwrap();
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
        let config = Config::parse("t", "t", SPEC).unwrap();
        let snap = snapshot(
            &[(key(1, b"a\0\0\0"), [0, 0]), (key(2, b"b\0\0\0"), [0, 1])],
            true,
        );
        let text = encode(counters(&config, &snap).unwrap().families).unwrap();
        assert!(!text.contains("comm=\"a\""));
        assert!(text.contains("comm=\"b\"} 1"));
    }

    #[test]
    fn escapes_label_values_and_replaces_invalid_utf8() {
        let config = Config::parse("t", "t", SPEC).unwrap();
        let snap = snapshot(
            &[
                (key(1, b"a\"\\\n"), [1, 0]),
                (key(2, b"\xff\xfeok"), [1, 0]),
            ],
            false,
        );
        let text = encode(counters(&config, &snap).unwrap().families).unwrap();
        assert!(text.contains(r#"comm="a\"\\\n"} 1"#), "{text}");
        assert!(text.contains("comm=\"\u{fffd}\u{fffd}ok\"} 1"), "{text}");
    }

    #[test]
    fn a_key_that_fails_to_decode_is_skipped_and_counted() {
        let spec = SPEC.replace("\"string\"", "\"string\" }, { name = \"syscall\"");
        let config = Config::parse("t", "t", &spec).unwrap();
        let snap = snapshot(
            &[(key(1, b"39\0\0"), [1, 0]), (key(2, b"bad\0"), [1, 0])],
            false,
        );
        let exposed = counters(&config, &snap).unwrap();
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
