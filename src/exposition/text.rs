//! The text exposition format 0.0.4, streamed straight into a `String`.
//!
//! Byte for byte what `prometheus::TextEncoder` writes for the same family
//! (`# HELP` only when there is help, `\\` and newline escaped in it, `\\`,
//! newline and `"` escaped in label values, values printed as Rust's `f64`
//! `Display` does, `+Inf` added to histograms), without its intermediate
//! strings: no `to_string()` per value, no escaped copy per label, and the
//! label text of a histogram series written once for all its bucket lines.

use std::fmt::Write as _;

use anyhow::{bail, Result};
use prometheus::proto::{LabelPair, Metric};

use super::family::Kind;

/// How a family is written: the name and type its header gives, and the
/// name of its samples (they differ for an OpenMetrics counter).
#[derive(Debug, Clone, Copy)]
pub struct Written<'a> {
    pub header: &'a str,
    pub sample: &'a str,
    pub typed: Typed,
}

/// The type a family is written as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Typed {
    /// As what its values are (`counter`, `gauge`, `histogram`).
    Own,
    /// A counter whose counts restart (those of one window): a `gauge`.
    Gauge,
    /// A histogram of one window: OpenMetrics' `gaugehistogram`, or in the
    /// text format 0.0.4, which has no such type, the series Prometheus
    /// stores for one: `NAME_bucket` (untyped: a gauge may not carry `le`),
    /// `NAME_gcount` and `NAME_gsum` (gauges).
    GaugeHistogram { openmetrics: bool },
}

/// Appends a family's header and then `metrics` (its series, in the order
/// to write them) to `out`, named and typed as `written` says; `kind` is
/// what the metrics hold. A family without a name or without series is an
/// error, as for `TextEncoder`.
pub fn encode_metrics<'m>(
    written: Written<'_>,
    help: &str,
    kind: Kind,
    metrics: impl ExactSizeIterator<Item = &'m Metric> + Clone,
    out: &mut String,
) -> Result<()> {
    let name = written.sample;
    if name.is_empty() {
        bail!("a metric family has no name");
    }
    let total = metrics.len();
    if total == 0 {
        bail!("metric family {name} has no series");
    }
    if let (Typed::GaugeHistogram { openmetrics: false }, Kind::Histogram) = (written.typed, kind) {
        return gauge_histograms_0_0_4(name, help, metrics, out);
    }
    push_header(out, written.header, help, type_name(kind, written.typed))?;

    // Reserve for the whole family once the first series shows its size.
    let start = out.len();
    let mut labels = String::new();
    let mut bounds = BoundCache::default();
    for (i, metric) in metrics.enumerate() {
        match kind {
            // One line per series: labels straight into the output.
            Kind::Counter | Kind::Gauge => {
                out.push_str(name);
                let pairs = metric.get_label();
                if !pairs.is_empty() {
                    out.push('{');
                    push_labels(out, pairs);
                    out.push('}');
                }
                end_sample(out, metric, scalar(kind, metric));
            }
            Kind::Histogram => {
                labels.clear();
                push_labels(&mut labels, metric.get_label());
                let totals = match written.typed {
                    Typed::GaugeHistogram { .. } => ("_gsum", "_gcount"),
                    _ => ("_sum", "_count"),
                };
                histogram_samples(out, (name, totals), &labels, metric, &mut bounds);
            }
        }
        if i == 0 && total > 1 {
            out.reserve((out.len() - start) * (total - 1) + (total - 1) / 8);
        }
    }
    Ok(())
}

/// The value of a counter or gauge series.
fn scalar(kind: Kind, metric: &Metric) -> f64 {
    match kind {
        Kind::Counter => metric.get_counter().get_value(),
        _ => metric.get_gauge().get_value(),
    }
}

/// The word a `# TYPE` line gives a family of `kind` written as `typed`.
pub fn type_name(kind: Kind, typed: Typed) -> &'static str {
    match typed {
        Typed::Own => kind.as_str(),
        Typed::Gauge => "gauge",
        Typed::GaugeHistogram { .. } => "gaugehistogram",
    }
}

/// Histograms of one window in the text format 0.0.4: three families, as
/// [`Typed::GaugeHistogram`] says.
fn gauge_histograms_0_0_4<'m>(
    name: &str,
    help: &str,
    metrics: impl Iterator<Item = &'m Metric> + Clone,
    out: &mut String,
) -> Result<()> {
    let mut labels = String::new();
    let mut bounds = BoundCache::default();
    let bucket = format!("{name}_bucket");
    push_header(out, &bucket, help, "untyped")?;
    for metric in metrics.clone() {
        labels.clear();
        push_labels(&mut labels, metric.get_label());
        bucket_samples(out, name, &labels, metric, &mut bounds);
    }
    for (postfix, what) in [("_gcount", "count"), ("_gsum", "sum")] {
        let family = format!("{name}{postfix}");
        let help = format!("{help} The {what} of the observations.");
        push_header(out, &family, help.trim_start(), "gauge")?;
        for metric in metrics.clone() {
            labels.clear();
            push_labels(&mut labels, metric.get_label());
            let histogram = metric.get_histogram();
            let value = match what {
                "count" => histogram.get_sample_count() as f64,
                _ => histogram.get_sample_sum(),
            };
            sample(out, name, postfix, &labels, metric, value);
        }
    }
    Ok(())
}

/// One histogram series' bucket lines, then its sum and count lines under
/// the names `totals` gives (`_sum`, `_count`); `labels` is its escaped
/// label text.
fn histogram_samples(
    out: &mut String,
    (name, (sum, count)): (&str, (&str, &str)),
    labels: &str,
    metric: &Metric,
    bounds: &mut BoundCache,
) {
    bucket_samples(out, name, labels, metric, bounds);
    let histogram = metric.get_histogram();
    sample(out, name, sum, labels, metric, histogram.get_sample_sum());
    let total = histogram.get_sample_count() as f64;
    sample(out, name, count, labels, metric, total);
}

/// One histogram series' `_bucket` lines, `+Inf` included.
fn bucket_samples(
    out: &mut String,
    name: &str,
    labels: &str,
    metric: &Metric,
    bounds: &mut BoundCache,
) {
    let histogram = metric.get_histogram();
    let mut inf_seen = false;
    for (slot, bucket) in histogram.get_bucket().iter().enumerate() {
        let bound = bucket.upper_bound();
        let le = bounds.text(slot, bound);
        extra_sample(
            out,
            name,
            "_bucket",
            labels,
            ("le", le),
            metric,
            bucket.cumulative_count() as f64,
        );
        if bound.is_sign_positive() && bound.is_infinite() {
            inf_seen = true;
        }
    }
    if !inf_seen {
        let count = histogram.get_sample_count() as f64;
        extra_sample(out, name, "_bucket", labels, ("le", "+Inf"), metric, count);
    }
}

/// `# HELP` (when there is help) and `# TYPE` lines.
pub fn push_header(out: &mut String, name: &str, help: &str, type_name: &str) -> Result<()> {
    if name.is_empty() {
        bail!("a metric family has no name");
    }
    if !help.is_empty() {
        out.push_str("# HELP ");
        out.push_str(name);
        out.push(' ');
        push_escaped(out, help, false);
        out.push('\n');
    }
    out.push_str("# TYPE ");
    out.push_str(name);
    out.push(' ');
    out.push_str(type_name);
    out.push('\n');
    Ok(())
}

/// `name_postfix{labels} value[ timestamp]\n`; `labels` is the escaped
/// `a="x",b="y"` text of the series (empty: no braces).
fn sample(out: &mut String, name: &str, postfix: &str, labels: &str, metric: &Metric, value: f64) {
    out.push_str(name);
    out.push_str(postfix);
    if !labels.is_empty() {
        out.push('{');
        out.push_str(labels);
        out.push('}');
    }
    end_sample(out, metric, value);
}

/// A sample with one more label after the series' own (`le`, `quantile`).
fn extra_sample(
    out: &mut String,
    name: &str,
    postfix: &str,
    labels: &str,
    (extra_name, extra_value): (&str, &str),
    metric: &Metric,
    value: f64,
) {
    out.push_str(name);
    out.push_str(postfix);
    out.push('{');
    if !labels.is_empty() {
        out.push_str(labels);
        out.push(',');
    }
    out.push_str(extra_name);
    out.push_str("=\"");
    push_escaped(out, extra_value, true);
    out.push_str("\"}");
    end_sample(out, metric, value);
}

fn end_sample(out: &mut String, metric: &Metric, value: f64) {
    out.push(' ');
    push_float(out, value);
    let timestamp = metric.timestamp_ms();
    if timestamp != 0 {
        out.push(' ');
        push_integer(out, timestamp);
    }
    out.push('\n');
}

/// `a="x",b="y"`, values escaped.
fn push_labels(out: &mut String, pairs: &[LabelPair]) {
    for (i, pair) in pairs.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(pair.name());
        out.push_str("=\"");
        push_escaped(out, pair.value(), true);
        out.push('"');
    }
}

/// Appends `text` with `\` → `\\`, newline → `\n` and, for label values,
/// `"` → `\"`.
pub fn push_escaped(out: &mut String, text: &str, quotes: bool) {
    let needs = |b: u8| b == b'\\' || b == b'\n' || (quotes && b == b'"');
    let bytes = text.as_bytes();
    if !bytes.iter().any(|&b| needs(b)) {
        out.push_str(text);
        return;
    }
    let mut from = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if needs(b) {
            // Every byte escaped is ASCII, so `from..i` lies on char boundaries.
            out.push_str(&text[from..i]);
            out.push_str(match b {
                b'\\' => "\\\\",
                b'\n' => "\\n",
                _ => "\\\"",
            });
            from = i + 1;
        }
    }
    out.push_str(&text[from..]);
}

/// `value` as `f64`'s `Display` writes it (`1`, `0.25`, `-0`, `NaN`, `inf`),
/// with integers (the usual counter value) printed without the float
/// formatting machinery.
pub fn push_float(out: &mut String, value: f64) {
    // Below 2^53 an integral f64 is an exact integer and Display prints its
    // digits (never an exponent); -0 keeps its sign.
    if value.fract() == 0.0 && value.abs() < 9_007_199_254_740_992.0 && value != 0.0 {
        push_integer(out, value as i64);
    } else if value == 0.0 && value.is_sign_positive() {
        out.push('0');
    } else {
        let _ = write!(out, "{value}");
    }
}

/// Appends `value` in decimal.
pub fn push_u64(out: &mut String, value: u64) {
    out.push_str(itoa::Buffer::new().format(value));
}

fn push_integer(out: &mut String, value: i64) {
    if value < 0 {
        out.push('-');
    }
    push_u64(out, value.unsigned_abs());
}

/// The `le` text of each bucket slot, kept from one series to the next: the
/// series of a histogram family nearly always share their bounds.
#[derive(Default)]
struct BoundCache {
    slots: Vec<(u64, String)>,
}

impl BoundCache {
    fn text(&mut self, slot: usize, bound: f64) -> &str {
        let bits = bound.to_bits();
        if slot >= self.slots.len() {
            self.slots.resize_with(slot + 1, || (!bits, String::new()));
        }
        let (cached, text) = &mut self.slots[slot];
        if *cached != bits || text.is_empty() {
            *cached = bits;
            text.clear();
            push_float(text, bound);
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::super::Family;
    use super::*;
    use prometheus::proto::{Bucket, Counter, Gauge, Histogram, LabelPair};

    fn pairs(labels: &[(&str, &str)]) -> Vec<LabelPair> {
        labels
            .iter()
            .map(|(name, value)| {
                let mut pair = LabelPair::default();
                pair.set_name(name.to_string());
                pair.set_value(value.to_string());
                pair
            })
            .collect()
    }

    fn family(name: &str, help: &str, kind: Kind, metrics: Vec<Metric>) -> Family {
        Family::metrics(name, help, kind, metrics)
    }

    fn encoded(family: &Family) -> Result<String> {
        let mut out = String::new();
        let written = Written {
            header: &family.name,
            sample: &family.name,
            typed: Typed::Own,
        };
        family.encode(written, None, &mut out, None)?;
        Ok(out)
    }

    fn counter(labels: &[(&str, &str)], value: f64) -> Metric {
        let mut metric = Metric::from_label(pairs(labels));
        let mut sample = Counter::default();
        sample.set_value(value);
        metric.set_counter(sample);
        metric
    }

    fn gauge(labels: &[(&str, &str)], value: f64, timestamp: i64) -> Metric {
        let mut metric = Metric::from_label(pairs(labels));
        let mut sample = Gauge::default();
        sample.set_value(value);
        metric.set_gauge(sample);
        metric.set_timestamp_ms(timestamp);
        metric
    }

    fn histogram(labels: &[(&str, &str)], bounds: &[f64], count: u64, sum: f64) -> Metric {
        let mut metric = Metric::from_label(pairs(labels));
        let mut sample = Histogram::default();
        sample.set_bucket(
            bounds
                .iter()
                .enumerate()
                .map(|(i, bound)| {
                    let mut bucket = Bucket::default();
                    bucket.set_upper_bound(*bound);
                    bucket.set_cumulative_count(i as u64 * 3);
                    bucket
                })
                .collect(),
        );
        sample.set_sample_count(count);
        sample.set_sample_sum(sum);
        metric.set_histogram(sample);
        metric
    }

    /// Families covering every path of the encoder: help escaping, no help,
    /// label escaping (and non-ASCII), no labels, odd values, timestamps,
    /// histograms with and without labels, shared and differing bounds, an
    /// explicit +Inf bucket.
    fn varied() -> Vec<Family> {
        vec![
            odd_values_family(),
            escaped_labels_family(),
            gauge_family(),
            histogram_family(),
        ]
    }

    /// Values whose text is easy to get wrong: signed zeros, long
    /// fractions, exponents, the extremes, infinities and NaN.
    const ODD_VALUES: [f64; 17] = [
        0.0,
        -0.0,
        1.0,
        -1.0,
        0.1 + 0.2,
        1e-7,
        123456789.125,
        1e15,
        9_007_199_254_740_992.0,
        1e21,
        -3e300,
        f64::MAX,
        f64::MIN_POSITIVE,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::NAN,
        u64::MAX as f64,
    ];

    /// Counters of [`ODD_VALUES`] under a help text to escape.
    fn odd_values_family() -> Family {
        family(
            "a_total",
            "Help with \\ backslash,\nnewline and \"quotes\".",
            Kind::Counter,
            ODD_VALUES
                .iter()
                .enumerate()
                .map(|(i, v)| counter(&[("i", &i.to_string()), ("kind", "x")], *v))
                .collect(),
        )
    }

    /// Counters without help, with no label and with label values to
    /// escape (and non-ASCII ones).
    fn escaped_labels_family() -> Family {
        family(
            "b_total",
            "",
            Kind::Counter,
            vec![
                counter(&[], 7.0),
                counter(&[("v", "a\"b\\c\nd")], 1.0),
                counter(&[("v", "\\\\\"\"\n\n")], 2.0),
                counter(&[("v", "ünïcödé \u{fffd} ✓")], 3.0),
                counter(&[("v", "")], 4.0),
            ],
        )
    }

    /// Gauges, one with a timestamp.
    fn gauge_family() -> Family {
        family(
            "c",
            "Gauges.",
            Kind::Gauge,
            vec![
                gauge(&[], 0.5, 0),
                gauge(&[("at", "t")], -2.5, 1_700_000_000_123),
            ],
        )
    }

    /// Histograms with and without labels, with shared and differing
    /// bounds, an explicit +Inf bucket and none at all.
    fn histogram_family() -> Family {
        family(
            "d_seconds",
            "Histograms.",
            Kind::Histogram,
            vec![
                histogram(
                    &[("op", "read")],
                    &[0.000001, 0.000002, 0.3, 1.0, 1e20],
                    40,
                    0.75,
                ),
                histogram(
                    &[("op", "wr\"ite")],
                    &[0.000001, 0.000002, 0.3, 1.0, 1e20],
                    41,
                    0.0,
                ),
                histogram(&[("op", "x")], &[0.0, 5.0], 2, 1e-9),
                histogram(&[], &[1.0, f64::INFINITY], 3, 2.0),
                histogram(&[("op", "none")], &[], 0, 0.0),
            ],
        )
    }

    #[test]
    fn matches_the_prometheus_text_encoder_byte_for_byte() {
        for family in varied() {
            let ours = encoded(&family).unwrap();
            let theirs = prometheus::TextEncoder::new()
                .encode_to_string(&[family.to_proto()])
                .unwrap();
            assert_eq!(ours, theirs, "family {}", family.name);
        }
    }

    #[test]
    fn floats_print_as_display_does() {
        let mut values = vec![
            0.0,
            -0.0,
            0.5,
            3.0,
            -7.0,
            1e15,
            1e16,
            2e53,
            4503599627370497.0,
        ];
        values.extend((0..2000).map(|i| (i as f64 - 1000.0) * 1.37e11));
        values.extend((0..64).map(|i| 2f64.powi(i) - 1.0));
        values.extend((0..64).map(|i| -(2f64.powi(i))));
        for value in values {
            let mut text = String::new();
            push_float(&mut text, value);
            assert_eq!(text, value.to_string(), "{value:?}");
        }
    }

    #[test]
    fn escaping() {
        let escaped = |text: &str, quotes: bool| {
            let mut out = String::new();
            push_escaped(&mut out, text, quotes);
            out
        };
        assert_eq!(escaped("plain", true), "plain");
        assert_eq!(escaped("a\\b\nc\"d", true), "a\\\\b\\nc\\\"d");
        assert_eq!(escaped("a\\b\nc\"d", false), "a\\\\b\\nc\"d");
        assert_eq!(escaped("é\"é", true), "é\\\"é");
    }

    #[test]
    fn refuses_what_text_encoder_refuses() {
        assert!(encoded(&family("", "h", Kind::Gauge, vec![gauge(&[], 1.0, 0)])).is_err());
        assert!(encoded(&family("x", "h", Kind::Gauge, vec![])).is_err());
    }
}
