//! Plan: each config compiled once, before anything is loaded, into what
//! reading its maps needs at every window or scrape.
//!
//! Per metric: its kind (counter, or histogram with its bucket layout), its
//! labels with their decoder chains built (regexps compiled, tables loaded),
//! the key layout, and its series cap. `check`, `run` and `serve` all go
//! through [`parse`] or [`Plan::compile`], so a decoder problem is found
//! before load and reported with the config's other problems.
//!
//! Takes a [`crate::spec::Config`]; hands on a [`Plan`] (to the session, which keeps
//! it beside each loaded program, and to the exposition stage, which reads
//! the snapshots through it). Imports the spec and decode stages only.

mod buckets;

use anyhow::Result;

use crate::decode::Chain;
use crate::spec::{Config, Format, Problems};

pub use buckets::{without_float_noise, Layout, Observed};

/// One config, compiled.
pub struct Plan {
    /// The config's name, for messages.
    pub config: String,
    /// Counters first, then histograms, each in config order.
    pub metrics: Vec<Metric>,
}

/// What a metric's map is read as.
pub enum Kind {
    /// Every key a series, its value (summed over CPUs) the sample.
    Counter,
    /// The last label is the bucket; the labels before it the series.
    Histogram(Layout),
}

/// One metric of a config.
pub struct Metric {
    /// Without the namespace; also its map's name.
    pub name: String,
    pub help: String,
    pub kind: Kind,
    pub labels: Vec<Label>,
    /// Most series written; the rest are counted as dropped.
    pub max_series: usize,
}

/// A slice of the map key and the chain that decodes it.
pub struct Label {
    pub name: String,
    /// Where its bytes start in the key (a key split by CPU: with the `cpu`
    /// label's bytes in their place).
    pub offset: usize,
    /// Bytes of the key it reads.
    pub size: usize,
    /// Bytes skipped after it.
    pub padding: usize,
    /// Whether it reads an earlier label's bytes (`same_bytes_as`) rather
    /// than bytes of its own.
    pub shares_bytes: bool,
    pub decoders: Chain,
}

impl Label {
    /// Bytes of its own it takes in the key, padding included.
    pub fn span(&self) -> usize {
        if self.shares_bytes {
            0
        } else {
            self.size + self.padding
        }
    }
}

impl Metric {
    pub fn is_histogram(&self) -> bool {
        matches!(self.kind, Kind::Histogram(_))
    }

    pub fn label_names(&self) -> Vec<&str> {
        self.labels
            .iter()
            .map(|label| label.name.as_str())
            .collect()
    }

    /// The label bpfsnap fills with the CPU number on a per-CPU map instead
    /// of reading it from the key: the last label that names a series, when
    /// it is named `cpu` (a counter's last label, a histogram's label before
    /// the bucket).
    pub fn cpu_label_named(&self) -> Option<usize> {
        let index = self
            .labels
            .len()
            .checked_sub(if self.is_histogram() { 2 } else { 1 })?;
        (self.labels[index].name == "cpu").then_some(index)
    }

    /// On a per-CPU map (`per_cpu`), the index of the label bpfsnap fills
    /// with the CPU number ([`Metric::cpu_label_named`]).
    pub fn cpu_label(&self, per_cpu: bool) -> Option<usize> {
        self.cpu_label_named().filter(|_| per_cpu)
    }

    /// Bytes the map's keys must have: all the labels', less a `cpu` label
    /// on a per-CPU map. The plan alone says how a key is laid out.
    pub fn key_size(&self, per_cpu: bool) -> usize {
        let all: usize = self.labels.iter().map(Label::span).sum();
        all - self
            .cpu_label(per_cpu)
            .map_or(0, |index| self.labels[index].span())
    }
}

impl Plan {
    /// Compiles a valid config (see [`parse`] for one still to check); a
    /// decoder that cannot be built for its label is a [`Problems`].
    pub fn compile(config: &Config) -> Result<Plan> {
        let mut chains = Vec::new();
        let mut problems = Vec::new();
        for metric in config.metrics() {
            for label in metric.labels {
                match Chain::build(&label.decoders, label.size) {
                    Ok(chain) => chains.push(chain),
                    Err(err) => problems.push(format!(
                        "metric {:?}: label {:?}: {err:#}",
                        metric.name, label.name
                    )),
                }
            }
        }
        if !problems.is_empty() {
            return Err(Problems {
                origin: config.origin.clone(),
                problems,
            }
            .into());
        }
        Ok(Plan::with_chains(config, chains))
    }

    /// Lets every decoder start, in the background, what it will need
    /// (kallsyms for `ksym`): called once the probes are attached.
    pub fn prepare(&self) {
        for label in self.metrics.iter().flat_map(|metric| &metric.labels) {
            label.decoders.prepare();
        }
    }

    pub fn metric(&self, name: &str) -> Option<&Metric> {
        self.metrics.iter().find(|metric| metric.name == name)
    }

    /// The plan of a valid config whose labels' chains are `chains`, in
    /// order (metrics in [`Config::metrics`] order, labels in theirs).
    fn with_chains(config: &Config, chains: Vec<Chain>) -> Plan {
        let mut chains = chains.into_iter();
        let metrics = config
            .metrics()
            .map(|metric| Metric {
                name: metric.name.to_string(),
                help: metric.help.to_string(),
                kind: match metric.histogram {
                    Some(histogram) => Kind::Histogram(Layout::of(histogram)),
                    None => Kind::Counter,
                },
                labels: laid_out(metric.labels, chains.by_ref()),
                max_series: metric.max_series,
            })
            .collect();
        Plan {
            config: config.name.clone(),
            metrics,
        }
    }
}

/// A metric's labels with their chains, each at its offset in the key: the
/// next bytes for a label of its own, those of the label it names for one
/// with `same_bytes_as`.
fn laid_out(labels: &[crate::spec::Label], chains: impl Iterator<Item = Chain>) -> Vec<Label> {
    let mut next = 0;
    let mut laid: Vec<Label> = Vec::with_capacity(labels.len());
    for (label, decoders) in labels.iter().zip(chains) {
        let origin = label.same_bytes_as.as_ref().and_then(|origin| {
            laid.iter()
                .find(|l| &l.name == origin && !l.shares_bytes)
                .map(|l| l.offset)
        });
        let offset = origin.unwrap_or(next);
        next += label.span();
        laid.push(Label {
            name: label.name.clone(),
            offset,
            size: label.size,
            padding: label.padding,
            shares_bytes: label.same_bytes_as.is_some(),
            decoders,
        });
    }
    laid
}

/// Parses a config's text and compiles it: each label's decoder chain is
/// built where validation checks it, so its problems come in one
/// [`Problems`] with the spec's, in order (`check` lists them all), and
/// nothing is built twice.
pub fn parse(name: &str, origin: &str, text: &str, format: Format) -> Result<(Config, Plan)> {
    let mut chains = Vec::new();
    let config = Config::parse_checking(name, origin, text, format, &mut |label| {
        chains.push(Chain::build(&label.decoders, label.size)?);
        Ok(())
    })?;
    let plan = Plan::with_chains(&config, chains);
    Ok((config, plan))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{
        self, problem_lines,
        tests::{GOOD, GOOD_YAML},
    };

    /// A config's text parsed and compiled, as `check` and `run` do.
    fn parse(text: &str, format: Format) -> Result<Config> {
        super::parse("t", "t.cfg", text, format).map(|(config, _)| config)
    }

    fn config(decoders: &str) -> String {
        format!(
            "[[metrics.counters]]\nname = \"a_total\"\nhelp = \"A.\"\n\
             [[metrics.counters.labels]]\nname = \"x\"\nsize = 4\ndecoders = [{decoders}]\n"
        )
    }

    /// A one-metric plan: a counter, or a histogram (exp2, its last label the
    /// bucket), with labels of (name, size, padding) decoded as uint.
    fn one_metric(labels: &[(&str, usize, usize)], histogram: bool) -> Plan {
        let mut text = match histogram {
            true => "[[metrics.histograms]]\nname = \"m\"\nhelp = \"M.\"\nbucket_type = \"exp2\"\n\
                     bucket_max = 3\n"
                .to_string(),
            false => "[[metrics.counters]]\nname = \"m_total\"\nhelp = \"M.\"\n".to_string(),
        };
        let table = if histogram { "histograms" } else { "counters" };
        for (name, size, padding) in labels {
            text += &format!(
                "[[metrics.{table}.labels]]\nname = \"{name}\"\nsize = {size}\npadding = {padding}\n\
                 decoders = [{{ name = \"uint\" }}]\n"
            );
        }
        super::parse("t", "t.toml", &text, Format::Toml).unwrap().1
    }

    #[test]
    fn a_cpu_label_is_left_out_of_per_cpu_keys() {
        let counter = [("comm", 8, 0), ("cpu", 2, 0)];
        let histogram = [("op", 4, 0), ("cpu", 2, 2), ("bucket", 4, 0)];
        let no_cpu = [("comm", 8, 0), ("bucket", 4, 0)];
        /// Labels, histogram, per-CPU map, the cpu label's index, key bytes.
        type Case<'a> = (
            &'a [(&'a str, usize, usize)],
            bool,
            bool,
            Option<usize>,
            usize,
        );
        let cases: [Case; 8] = [
            (&counter, false, true, Some(1), 8),
            (&counter, false, false, None, 10),
            (&counter[..1], false, true, None, 8),
            (&histogram, true, true, Some(1), 8),
            (&histogram, true, false, None, 12),
            // A histogram's last label is its bucket, never the CPU.
            (&counter, true, true, None, 10),
            (&no_cpu, true, true, None, 12),
            (&no_cpu, false, true, None, 12),
        ];
        for (labels, histogram, per_cpu, cpu, bytes) in cases {
            let plan = one_metric(labels, histogram);
            let metric = &plan.metrics[0];
            let what = format!("{labels:?} histogram={histogram} per_cpu={per_cpu}");
            assert_eq!(metric.cpu_label(per_cpu), cpu, "{what}");
            assert_eq!(metric.key_size(per_cpu), bytes, "{what}");
        }
    }

    #[test]
    fn compiles_each_metric_once_with_its_layout() {
        let text = config("{ name = \"uint\" }")
            + "[[metrics.histograms]]\nname = \"h\"\nhelp = \"H.\"\nbucket_type = \"exp2\"\n\
               bucket_max = 3\n[[metrics.histograms.labels]]\nname = \"cpu\"\nsize = 4\n\
               decoders = [{ name = \"uint\" }]\n[[metrics.histograms.labels]]\nname = \"bucket\"\n\
               size = 4\ndecoders = [{ name = \"uint\" }]\n";
        let (_, plan) = super::parse("t", "t.toml", &text, Format::Toml).unwrap();
        let names: Vec<&str> = plan.metrics.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["a_total", "h"]);
        let histogram = plan.metric("h").unwrap();
        assert!(histogram.is_histogram());
        assert_eq!(histogram.cpu_label(true), Some(0));
        assert_eq!(histogram.cpu_label(false), None);
        assert_eq!(
            (histogram.key_size(true), histogram.key_size(false)),
            (4, 8)
        );
        assert_eq!(
            plan.metric("a_total").unwrap().max_series,
            spec::DEFAULT_MAX_SERIES
        );
    }

    #[test]
    fn lists_decoder_problems_among_the_specs() {
        let text = config("{ name = \"nope\" }").replace("help = \"A.\"", "help = \"\"");
        let err = super::parse("t", "t.toml", &text, Format::Toml)
            .err()
            .unwrap();
        let lines = spec::problem_lines(&err);
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(
            lines[0]
                .starts_with("t.toml: metric \"a_total\": label \"x\": unknown decoder \"nope\""),
            "{lines:?}"
        );
        assert!(lines[1].contains("has no help text"), "{lines:?}");
    }

    /// Independent problems of one config are all reported, one line each.
    #[test]
    fn every_independent_problem_is_reported() {
        let text = GOOD_YAML
            .replace("name: kind", "name: 9kind")
            .replace("help: Latency.", "help: ''")
            .replace("name: bucket", "name: bucket\n          padding: 0")
            .replace("            - name: uint\n", "            - name: nosuch\n")
            + "        - name: second\n          size: 4\n          decoders:\n            - name: regexp\n              regexps: ['(']\n";
        let err = parse(&text, Format::Yaml).unwrap_err();
        let lines = problem_lines(&err);
        let expected = [
            "t.cfg: metric \"things_total\": label name \"9kind\" is not valid",
            "t.cfg: metric \"latency_seconds\": label \"bucket\": unknown decoder \"nosuch\"",
            "t.cfg: metric \"latency_seconds\": label \"second\":",
            "t.cfg: histogram \"latency_seconds\": no help text",
        ];
        assert_eq!(lines.len(), expected.len(), "{lines:#?}");
        for (line, expected) in lines.iter().zip(expected) {
            assert!(
                line.starts_with(expected),
                "{line:?} should start with {expected:?}"
            );
        }
        assert!(lines[2].contains("regex"), "{lines:#?}");
        // Elsewhere it is one line.
        assert!(!format!("{err:#}").contains('\n'), "{err:#}");
    }

    #[test]
    fn rejects_bad_configs_with_path_and_line() {
        assert_each_rejected(&syntax_and_type_mistakes());
        assert_each_rejected(&metric_and_label_mistakes());
        assert_each_rejected(&bucket_mistakes());
    }

    /// Asserts that each (text, format) fails to parse with a one-line
    /// error that contains its expected text.
    fn assert_each_rejected(cases: &[(String, Format, &str)]) {
        for (text, format, expected) in cases {
            let err = format!("{:#}", parse(text, *format).unwrap_err());
            assert!(
                err.contains(expected),
                "{err:?} should contain {expected:?}"
            );
            assert!(!err.contains('\n'), "error is one line: {err:?}");
        }
    }

    /// Configs the deserializer refuses (unknown keys, wrong types, broken
    /// syntax), with the error each must contain.
    fn syntax_and_type_mistakes() -> Vec<(String, Format, &'static str)> {
        vec![
            (
                GOOD.replace("padding", "paddin"),
                Format::Toml,
                "line 9: metrics.counters[0].labels[0].paddin: unknown field `paddin`",
            ),
            (
                GOOD_YAML.replace("size: 4", "size: four"),
                Format::Yaml,
                "metrics.counters[0].labels[0].size: invalid type",
            ),
            (
                GOOD_YAML.replace("2: two", "2: [two]"),
                Format::Yaml,
                "invalid type: sequence, expected a string",
            ),
            (
                GOOD_YAML.replace("bucket_type: exp2", "bucket_type: log"),
                Format::Yaml,
                "unknown variant `log`",
            ),
            (
                "metrics = 3".into(),
                Format::Toml,
                "line 1: metrics: invalid type",
            ),
            (
                "description: 'open\n".into(),
                Format::Yaml,
                "line 2: description: found unexpected end of stream",
            ),
        ]
    }

    /// Configs that parse but whose metrics or labels are wrong (names,
    /// sizes, decoders, help, none at all, one twice), with the error each
    /// must contain.
    fn metric_and_label_mistakes() -> Vec<(String, Format, &'static str)> {
        vec![
            (
                GOOD.replace("things_total", "9things_total"),
                Format::Toml,
                "is not valid",
            ),
            (
                GOOD.replace("\"kind\"", "\"__kind\""),
                Format::Toml,
                "label name \"__kind\" is not valid",
            ),
            (
                GOOD.replace("size = 4", "size = 0"),
                Format::Toml,
                "has no size (or 0)",
            ),
            (
                GOOD.replace("\"uint\"", "\"nosuch\""),
                Format::Toml,
                "unknown decoder \"nosuch\"",
            ),
            (
                GOOD.replace("decoders = [{ name = \"uint\" }]", ""),
                Format::Toml,
                "has no decoders",
            ),
            (
                GOOD.replace("help = \"Things.\"", "help = \"\""),
                Format::Toml,
                "has no help text",
            ),
            (
                "description = \"x\"\n".into(),
                Format::Toml,
                "defines no metrics",
            ),
            ("".into(), Format::Yaml, "defines no metrics"),
            (
                GOOD_YAML.replace("latency_seconds", "things_total"),
                Format::Yaml,
                "defined twice",
            ),
        ]
    }

    /// Configs whose histogram buckets are wrong, with the error each must
    /// contain.
    fn bucket_mistakes() -> Vec<(String, Format, &'static str)> {
        vec![
            (
                GOOD_YAML.replace("bucket_max: 26", "bucket_max: 0"),
                Format::Yaml,
                "empty range",
            ),
            (
                GOOD_YAML.replace("bucket_multiplier: 0.000001", "bucket_multiplier: 0"),
                Format::Yaml,
                "bucket_multiplier must be a positive",
            ),
            (
                GOOD_YAML.replace("bucket_max: 26", "bucket_keys: [1]"),
                Format::Yaml,
                "bucket_keys only applies",
            ),
            (
                GOOD_YAML.replace("bucket_type: exp2", "bucket_type: fixed"),
                Format::Yaml,
                "fixed needs bucket_keys",
            ),
            (
                GOOD_YAML.replace(
                    "bucket_type: exp2",
                    "bucket_type: fixed\n      bucket_keys: [5, 1]",
                ),
                Format::Yaml,
                "sorted ascending",
            ),
            (
                GOOD_YAML.replace("bucket_max: 26", "bucket_max: 100"),
                Format::Yaml,
                "too large",
            ),
            (
                GOOD_YAML
                    .replace("bucket_type: exp2", "bucket_type: linear")
                    .replace("bucket_max: 26", "bucket_max: 1000000000000"),
                Format::Yaml,
                "at most 4096 per histogram",
            ),
        ]
    }
}
