//! Program configs: what a BPF object's maps mean as metrics.
//!
//! A config names the object's maps as metrics and describes how each map key
//! splits into labels (`size`, `padding`) and how each label's bytes are decoded
//! (a chain of decoders). It follows cloudflare/ebpf_exporter's model key for key
//! so existing programs come over unchanged; built-in programs use the very same
//! format (`bpf/NAME.toml`). Parsing rejects unknown keys, and [`Config::parse`]
//! validates everything that can be checked without the object (names, sizes,
//! decoders); checks against the object's maps happen when it is loaded.

use std::collections::{BTreeMap, HashSet};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::expose::decoder;

/// Prefix of every metric a config defines (ebpf_exporter uses `ebpf_exporter_`).
pub const METRIC_PREFIX: &str = "bpfsnap_";

/// One program: a BPF object plus the metrics read from its maps.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Set after parsing: the config's name (file stem or built-in name).
    #[serde(skip)]
    pub name: String,
    /// One line saying what the program measures.
    #[serde(default)]
    pub description: String,
    /// Facts only built-in programs carry.
    #[serde(default)]
    pub builtin: BuiltinInfo,
    pub metrics: Metrics,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuiltinInfo {
    /// Part of the set `bpfsnap run` uses when no program is named.
    #[serde(default)]
    pub default: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metrics {
    #[serde(default)]
    pub counters: Vec<Counter>,
}

/// A counter: every key of the map named `name` is a series, its u64 value
/// (summed over CPUs for per-CPU maps) the sample.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Counter {
    /// Metric name without the `bpfsnap_` prefix; also the map's name.
    pub name: String,
    pub help: String,
    #[serde(default)]
    pub labels: Vec<Label>,
}

/// A slice of the map key that becomes one label.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Label {
    pub name: String,
    /// Bytes of the key this label takes.
    pub size: usize,
    /// Bytes skipped after it (C struct alignment).
    #[serde(default)]
    pub padding: usize,
    #[serde(default)]
    pub decoders: Vec<DecoderSpec>,
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

impl Config {
    /// Parses and validates a TOML config; `origin` names it in errors (a path
    /// or `built-in NAME`).
    pub fn parse(name: &str, origin: &str, text: &str) -> Result<Config> {
        let mut config: Config = toml::from_str(text).map_err(|err| {
            let line = err
                .span()
                .map(|span| text[..span.start].matches('\n').count() + 1)
                .map(|line| format!(" line {line}:"))
                .unwrap_or_default();
            anyhow::anyhow!("{origin}:{line} {}", err.message().trim_end())
        })?;
        config.name = name.to_string();
        config.validate().with_context(|| origin.to_string())?;
        Ok(config)
    }

    fn validate(&self) -> Result<()> {
        if self.metrics.counters.is_empty() {
            bail!("defines no metrics: add a [[metrics.counters]] table");
        }
        let mut names = HashSet::new();
        for counter in &self.metrics.counters {
            check_metric_name(&counter.name)?;
            if !names.insert(&counter.name) {
                bail!("metric {:?} is defined twice", counter.name);
            }
            if !counter.name.ends_with("_total") {
                bail!(
                    "counter {:?} should end in _total (Prometheus naming convention)",
                    counter.name
                );
            }
            check_labels(&counter.name, &counter.labels)?;
        }
        Ok(())
    }
}

impl Label {
    /// Bytes this label takes in the key, padding included.
    pub fn span(&self) -> usize {
        self.size + self.padding
    }
}

/// Bytes a key with these labels must have.
pub fn key_size(labels: &[Label]) -> usize {
    labels.iter().map(Label::span).sum()
}

fn check_metric_name(name: &str) -> Result<()> {
    let valid = name.chars().enumerate().all(|(i, c)| {
        c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit())
    });
    if name.is_empty() || !valid {
        bail!("metric name {name:?} is not valid: use letters, digits, '_' and ':', not starting with a digit");
    }
    Ok(())
}

fn check_labels(metric: &str, labels: &[Label]) -> Result<()> {
    let mut names = HashSet::new();
    for label in labels {
        let valid = label
            .name
            .chars()
            .enumerate()
            .all(|(i, c)| c.is_ascii_alphabetic() || c == '_' || (i > 0 && c.is_ascii_digit()));
        if label.name.is_empty() || !valid || label.name.starts_with("__") {
            bail!(
                "metric {metric:?}: label name {:?} is not valid: use letters, digits and '_', \
                 not starting with a digit or '__'",
                label.name
            );
        }
        if !names.insert(&label.name) {
            bail!("metric {metric:?}: label {:?} appears twice", label.name);
        }
        if label.size == 0 {
            bail!(
                "metric {metric:?}: label {:?} has size 0: give the bytes it takes in the key",
                label.name
            );
        }
        decoder::Chain::build(&label.decoders, label.size)
            .with_context(|| format!("metric {metric:?}: label {:?}", label.name))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
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

    #[test]
    fn parses_a_valid_config() {
        let config = Config::parse("t", "t.toml", GOOD).unwrap();
        assert_eq!(config.name, "t");
        let counter = &config.metrics.counters[0];
        assert_eq!(counter.name, "things_total");
        assert_eq!(key_size(&counter.labels), 8);
    }

    #[test]
    fn rejects_bad_configs_with_a_useful_message() {
        let cases: &[(&str, &str)] = &[
            (
                &GOOD.replace("padding", "paddin"),
                "line 9: unknown field `paddin`",
            ),
            (
                &GOOD.replace("things_total", "things"),
                "should end in _total",
            ),
            (
                &GOOD.replace("things_total", "9things_total"),
                "is not valid",
            ),
            (
                &GOOD.replace("\"kind\"", "\"__kind\""),
                "label name \"__kind\" is not valid",
            ),
            (&GOOD.replace("size = 4", "size = 0"), "has size 0"),
            (
                &GOOD.replace("\"uint\"", "\"nosuch\""),
                "unknown decoder \"nosuch\"",
            ),
            ("description = \"x\"\n[metrics]\n", "defines no metrics"),
            ("metrics = 3", "line 1: invalid type"),
        ];
        for (text, expected) in cases {
            let err = format!("{:#}", Config::parse("t", "t.toml", text).unwrap_err());
            assert!(
                err.contains(expected),
                "{err:?} should contain {expected:?}"
            );
            assert!(!err.contains('\n'), "error is one line: {err:?}");
        }
    }
}
