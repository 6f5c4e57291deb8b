//! The terminal view (`--format pretty`, the default when the metrics go to a
//! terminal): counters as tables sorted by value, histograms as bars in the
//! manner of bpftrace's `hist()`, gauges as `name value`. Files and pipes get
//! the text exposition format instead.

use std::fmt::Write as _;

use prometheus::proto::Metric;

use super::{Family, Kind, Series};

/// Rows shown per counter before "… and N more".
const MAX_ROWS: usize = 25;
const BAR_WIDTH: usize = 40;

pub fn render(families: &[Family]) -> String {
    let mut families: Vec<&Family> = families.iter().filter(|f| !f.is_empty()).collect();
    families.sort_by(|a, b| a.name.cmp(&b.name));
    let mut out = String::new();
    let mut gauges = Vec::new();
    for family in families {
        match (family.kind, &family.series) {
            (Kind::Counter, _) => counter(&mut out, family),
            (Kind::Histogram, Series::Metrics(metrics)) => histogram(&mut out, family, metrics),
            _ => gauges.push(family),
        }
    }
    // Unlabelled gauges (the window, the snapshot cost); info-style gauges
    // and raw timestamps are for machines.
    for family in gauges
        .iter()
        .filter(|f| !f.name.ends_with("_timestamp_seconds"))
    {
        family.for_each_sample(|labels, value| {
            if labels.is_empty() {
                let _ = writeln!(
                    out,
                    "{} {}",
                    family.name,
                    human(value, unit_of(&family.name))
                );
            }
        });
    }
    out
}

fn title(out: &mut String, family: &Family) {
    let _ = writeln!(out, "{} — {}", family.name, family.help);
}

fn labels(metric: &Metric) -> String {
    let pairs: Vec<String> = metric
        .get_label()
        .iter()
        .map(|l| format!("{}={}", l.name(), l.value()))
        .collect();
    if pairs.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", pairs.join(", "))
    }
}

fn counter(out: &mut String, family: &Family) {
    title(out, family);
    let mut rows: Vec<(String, f64)> = Vec::new();
    let mut header: Vec<String> = Vec::new();
    family.for_each_sample(|labels, value| {
        if rows.is_empty() {
            header = labels.iter().map(|(name, _)| name.to_string()).collect();
        }
        let text: Vec<&str> = labels.iter().map(|(_, value)| *value).collect();
        let row = if text.is_empty() {
            "(total)".to_string()
        } else {
            text.join("  ")
        };
        rows.push((row, value));
    });
    rows.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let width = rows
        .iter()
        .take(MAX_ROWS)
        .map(|(l, _)| l.chars().count())
        .max()
        .unwrap_or(0);
    if !header.is_empty() {
        let _ = writeln!(out, "  {:<width$}  {:>12}", header.join("  "), "count");
    }
    for (label, value) in rows.iter().take(MAX_ROWS) {
        let _ = writeln!(out, "  {label:<width$}  {:>12}", number(*value));
    }
    if rows.len() > MAX_ROWS {
        let _ = writeln!(out, "  … and {} more", rows.len() - MAX_ROWS);
    }
    out.push('\n');
}

fn histogram(out: &mut String, family: &Family, metrics: &[Metric]) {
    title(out, family);
    let unit = unit_of(&family.name);
    for metric in metrics {
        let sample = metric.get_histogram();
        let count = sample.get_sample_count();
        let _ = writeln!(
            out,
            "  {}count {}, sum {}",
            labels(metric)
                .trim_start_matches('{')
                .trim_end_matches('}')
                .to_string()
                + if metric.get_label().is_empty() {
                    ""
                } else {
                    ": "
                },
            count,
            human(sample.get_sample_sum(), unit)
        );
        // (low, high, count) per bucket, then the overflow above the last bound.
        let mut rows = Vec::new();
        let mut previous: Option<f64> = None;
        let mut below = 0;
        for bucket in sample.get_bucket() {
            let n = bucket.cumulative_count() - below;
            below = bucket.cumulative_count();
            rows.push((previous, bucket.upper_bound(), n));
            previous = Some(bucket.upper_bound());
        }
        if count > below {
            rows.push((previous, f64::INFINITY, count - below));
        }
        // Leading and trailing empty buckets carry nothing.
        let first = rows.iter().position(|r| r.2 > 0).unwrap_or(rows.len());
        let last = rows.iter().rposition(|r| r.2 > 0).map_or(first, |i| i + 1);
        let rows = &rows[first..last.max(first)];
        let most = rows.iter().map(|r| r.2).max().unwrap_or(0).max(1);
        let ranges: Vec<String> = rows
            .iter()
            .map(|(low, high, _)| match low {
                None => format!("[0, {}]", human(*high, unit)),
                Some(low) if high.is_infinite() => format!("({}, …)", human(*low, unit)),
                Some(low) => format!("({}, {}]", human(*low, unit), human(*high, unit)),
            })
            .collect();
        let width = ranges.iter().map(|r| r.chars().count()).max().unwrap_or(0);
        for (range, (_, _, n)) in ranges.iter().zip(rows) {
            let bar = "@".repeat((*n as usize * BAR_WIDTH).div_ceil(most as usize));
            let _ = writeln!(out, "  {range:<width$} {n:>9} |{bar:<BAR_WIDTH$}|");
        }
    }
    out.push('\n');
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Unit {
    Seconds,
    Bytes,
    Plain,
}

fn unit_of(name: &str) -> Unit {
    if name.ends_with("_seconds") {
        Unit::Seconds
    } else if name.ends_with("_bytes") {
        Unit::Bytes
    } else {
        Unit::Plain
    }
}

/// A value with its unit scaled for reading: `1.02ms`, `4KiB`.
fn human(value: f64, unit: Unit) -> String {
    if value == 0.0 || !value.is_finite() {
        return number(value);
    }
    let scaled = |steps: &[(f64, &str)]| {
        let (scale, suffix) = steps
            .iter()
            .rev()
            .find(|(scale, _)| value.abs() >= *scale)
            .copied()
            .unwrap_or(steps[0]);
        format!("{}{suffix}", short(value / scale))
    };
    match unit {
        Unit::Seconds => scaled(&[(1e-9, "ns"), (1e-6, "µs"), (1e-3, "ms"), (1.0, "s")]),
        Unit::Bytes => scaled(&[
            (1.0, "B"),
            (1024.0, "KiB"),
            (1048576.0, "MiB"),
            (1073741824.0, "GiB"),
        ]),
        Unit::Plain => short(value),
    }
}

/// At most 3 significant digits after the point, without trailing zeros.
fn short(value: f64) -> String {
    let text = format!("{value:.2}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn number(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{}", value as i64)
    } else {
        format!("{value}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exposition::{Family, Kind};

    #[test]
    fn scales_units() {
        for (value, unit, want) in [
            (0.000001, Unit::Seconds, "1µs"),
            (0.001024, Unit::Seconds, "1.02ms"),
            (2.5, Unit::Seconds, "2.5s"),
            (4096.0, Unit::Bytes, "4KiB"),
            (3.0, Unit::Plain, "3"),
            (0.0, Unit::Seconds, "0"),
        ] {
            assert_eq!(human(value, unit), want);
        }
    }

    #[test]
    fn counters_sorted_by_value_with_gauges_last() {
        let families = vec![
            Family::gauge("w_seconds", "W.", 1.5),
            Family::samples(
                "calls_total",
                "Calls.",
                Kind::Counter,
                &["syscall"],
                vec![(vec!["read".into()], 5.0), (vec!["getpid".into()], 100.0)],
            ),
        ];
        let text = render(&families);
        let getpid = text.find("getpid").unwrap();
        let read = text.find("read").unwrap();
        assert!(getpid < read, "{text}");
        assert!(text.trim_end().ends_with("w_seconds 1.5s"), "{text}");
    }
}
