//! The terminal view (`--format pretty`, the default when the metrics go to
//! a terminal), fitted to the terminal's width:
//!
//! - each counter a table sorted by value, one aligned column per label,
//!   its top rows (`--top`) and how many more there were;
//! - each histogram its count, sum and p50/p90/p99 (estimated within the
//!   buckets as `histogram_quantile` does) with bars in the manner of
//!   bpftrace's `hist()`; one with several label sets a table of those
//!   figures per set, then the bars of all of them together;
//! - bpfsnap's own metrics as one summary line after the user's (all of
//!   them, as tables, in [`View::all`]).
//!
//! Files and pipes get the text exposition format instead.

use std::fmt::Write as _;

use prometheus::proto::Metric;

use super::{Family, Kind, Series};

/// How the view is laid out.
#[derive(Debug, Clone, Copy)]
pub struct View {
    /// Columns of the terminal.
    pub width: usize,
    /// Rows shown per table (0: all).
    pub top: usize,
    /// Also bpfsnap's own metrics in full, not only their summary.
    pub all: bool,
}

impl Default for View {
    fn default() -> View {
        View {
            width: 100,
            top: 10,
            all: false,
        }
    }
}

/// Narrowest layout: below it, lines wrap on the terminal instead.
const MIN_WIDTH: usize = 40;

/// The user's `families` (by name), then a summary of bpfsnap's `own`.
pub fn render(families: &[Family], own: &[Family], view: &View) -> String {
    let view = View {
        width: view.width.max(MIN_WIDTH),
        ..*view
    };
    let mut out = String::new();
    let mut sorted: Vec<&Family> = families.iter().filter(|f| !f.is_empty()).collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    for family in sorted {
        family_view(&mut out, family, &view);
    }
    if view.all {
        let mut own_sorted: Vec<&Family> = own.iter().filter(|f| !f.is_empty()).collect();
        own_sorted.sort_by(|a, b| a.name.cmp(&b.name));
        for family in own_sorted {
            family_view(&mut out, family, &view);
        }
    }
    let summary = summary(own, view.all);
    for (i, line) in wrap(&summary, view.width.saturating_sub(2))
        .iter()
        .enumerate()
    {
        let indent = if i == 0 { "" } else { "  " };
        let _ = writeln!(out, "{indent}{line}");
    }
    out
}

fn family_view(out: &mut String, family: &Family, view: &View) {
    match (family.kind, &family.series) {
        (Kind::Histogram, Series::Metrics(metrics)) => histogram(out, family, metrics, view),
        (Kind::Histogram, _) => {}
        _ => table(out, family, view),
    }
}

/// `name`, then its help wrapped to the width, indented.
fn title(out: &mut String, family: &Family, view: &View) {
    out.push_str(&family.name);
    out.push('\n');
    for line in wrap(&family.help, view.width.saturating_sub(2)) {
        let _ = writeln!(out, "  {line}");
    }
}

/// `text` in lines of at most `width` characters, broken between words (a
/// word longer than that gets a line of its own).
pub(crate) fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

/// A counter's (or labelled gauge's) series: non-zero rows by value.
fn table(out: &mut String, family: &Family, view: &View) {
    let unit = unit_of(&family.name);
    let mut header: Vec<String> = Vec::new();
    let mut rows: Vec<(Vec<String>, f64)> = Vec::new();
    family.for_each_sample(|labels, value| {
        if header.is_empty() {
            header = labels.iter().map(|(name, _)| name.to_string()).collect();
        }
        if value != 0.0 {
            rows.push((labels.iter().map(|(_, v)| v.to_string()).collect(), value));
        }
    });
    if family.kind == Kind::Gauge && header.is_empty() {
        // An unlabelled gauge: one line.
        if let Some((_, value)) = rows.first() {
            let _ = writeln!(out, "{} {}\n", family.name, human(*value, unit));
        }
        return;
    }
    title(out, family, view);
    if rows.is_empty() {
        out.push_str("  (none)\n\n");
        return;
    }
    rows.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let total: f64 = rows.iter().map(|(_, v)| v).sum();
    let shown = shown(rows.len(), view.top);
    let values: Vec<String> = rows[..shown].iter().map(|(_, v)| human(*v, unit)).collect();
    let figure = if family.kind == Kind::Counter {
        "count"
    } else {
        "value"
    };
    let mut grid = Grid::new(header, figure);
    for ((labels, _), value) in rows[..shown].iter().zip(values) {
        grid.row(labels.clone(), vec![value]);
    }
    grid.write(out, view.width);
    if rows.len() > shown {
        let _ = writeln!(
            out,
            "  … {} more rows; {} in all",
            rows.len() - shown,
            human(total, unit)
        );
    }
    out.push('\n');
}

/// How many of `rows` a table shows.
fn shown(rows: usize, top: usize) -> usize {
    match top {
        0 => rows,
        top => rows.min(top),
    }
}

/// A table row: label cells, then figure cells.
type Row = (Vec<String>, Vec<String>);

/// A histogram's buckets: (lower bound, upper bound, count).
type Buckets = Vec<(f64, f64, u64)>;

/// Rows of label columns (left-aligned) and figure columns (right-aligned),
/// laid out to a width: the widest label column gives way first.
struct Grid {
    labels: Vec<String>,
    figures: Vec<String>,
    rows: Vec<Row>,
}

impl Grid {
    fn new(labels: Vec<String>, figure: &str) -> Grid {
        Grid::with_figures(labels, &[figure])
    }

    fn with_figures(labels: Vec<String>, figures: &[&str]) -> Grid {
        Grid {
            labels,
            figures: figures.iter().map(|f| f.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    fn row(&mut self, labels: Vec<String>, figures: Vec<String>) {
        self.rows.push((labels, figures));
    }

    fn widths(&self, width: usize) -> (Vec<usize>, Vec<usize>) {
        let column = |header: &String, cell: &dyn Fn(&Row) -> usize| {
            self.rows
                .iter()
                .map(cell)
                .chain([header.chars().count()])
                .max()
                .unwrap_or(0)
        };
        let mut labels: Vec<usize> = (0..self.labels.len())
            .map(|i| column(&self.labels[i], &|row| row.0[i].chars().count()))
            .collect();
        let figures: Vec<usize> = (0..self.figures.len())
            .map(|i| column(&self.figures[i], &|row| row.1[i].chars().count()))
            .collect();
        let used =
            |labels: &[usize]| 2 + labels.iter().chain(&figures).map(|w| w + 2).sum::<usize>();
        while used(&labels) > width {
            let Some(widest) = (0..labels.len()).max_by_key(|&i| labels[i]) else {
                break;
            };
            if labels[widest] <= 8 {
                break;
            }
            labels[widest] -= 1;
        }
        (labels, figures)
    }

    fn write(&self, out: &mut String, width: usize) {
        let (label_widths, figure_widths) = self.widths(width);
        let line = |out: &mut String, labels: &[String], figures: &[String]| {
            out.push_str("  ");
            for (text, &w) in labels.iter().zip(&label_widths) {
                let _ = write!(out, "{:<w$}  ", fit(text, w));
            }
            for (text, &w) in figures.iter().zip(&figure_widths) {
                let _ = write!(out, "{text:>w$}  ");
            }
            out.truncate(out.trim_end().len());
            out.push('\n');
        };
        line(out, &self.labels, &self.figures);
        for (labels, figures) in &self.rows {
            line(out, labels, figures);
        }
    }
}

/// `text` cut to `width` characters, the last one `…` where cut.
fn fit(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_string();
    }
    let mut cut: String = text.chars().take(width.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// One histogram's buckets as (lower bound, upper bound, count), the
/// overflow above the last bound included.
fn buckets(metric: &Metric) -> Buckets {
    let sample = metric.get_histogram();
    let mut rows = Vec::new();
    let (mut previous, mut below) = (0.0, 0);
    for bucket in sample.get_bucket() {
        let n = bucket.cumulative_count().saturating_sub(below);
        below = bucket.cumulative_count();
        rows.push((previous, bucket.upper_bound(), n));
        previous = bucket.upper_bound();
    }
    let count = sample.get_sample_count();
    if count > below {
        rows.push((previous, f64::INFINITY, count - below));
    }
    rows
}

/// The `q` quantile as Prometheus's `histogram_quantile` estimates it:
/// linearly within the bucket it falls in; in the overflow, the last bound.
fn quantile(q: f64, rows: &[(f64, f64, u64)]) -> Option<f64> {
    let count: u64 = rows.iter().map(|r| r.2).sum();
    if count == 0 {
        return None;
    }
    let rank = q * count as f64;
    let mut below = 0.0;
    for &(low, high, n) in rows {
        let n = n as f64;
        if below + n >= rank && n > 0.0 {
            if high.is_infinite() {
                return Some(low);
            }
            return Some(low + (high - low) * (rank - below) / n);
        }
        below += n;
    }
    rows.last().map(|r| r.0)
}

/// `p50 1.2ms  p90 4ms  p99 9.9ms` figures of `rows`.
fn percentiles(rows: &[(f64, f64, u64)], unit: Unit) -> [String; 3] {
    [0.5, 0.9, 0.99].map(|q| quantile(q, rows).map_or("-".into(), |v| human(v, unit)))
}

/// Buckets of several histograms added up (their bounds are the same).
fn merged(metrics: &[Metric]) -> Buckets {
    let mut total: Buckets = Vec::new();
    for metric in metrics {
        for (i, (low, high, n)) in buckets(metric).into_iter().enumerate() {
            match total.get_mut(i) {
                Some(row) => row.2 += n,
                None => total.push((low, high, n)),
            }
        }
    }
    total
}

fn histogram(out: &mut String, family: &Family, metrics: &[Metric], view: &View) {
    let unit = unit_of(&family.name);
    title(out, family, view);
    let mut sets: Vec<(&Metric, Buckets)> = metrics
        .iter()
        .map(|m| (m, buckets(m)))
        .filter(|(m, _)| m.get_histogram().get_sample_count() > 0)
        .collect();
    if sets.is_empty() {
        out.push_str("  (none)\n\n");
        return;
    }
    let all = merged(metrics);
    let count: u64 = all.iter().map(|r| r.2).sum();
    let sum: f64 = metrics
        .iter()
        .map(|m| m.get_histogram().get_sample_sum())
        .sum();
    if sets.len() > 1 {
        sets.sort_by_key(|(m, _)| std::cmp::Reverse(m.get_histogram().get_sample_count()));
        set_table(out, &sets, unit, view);
    }
    let [p50, p90, p99] = percentiles(&all, unit);
    let which = if sets.len() > 1 { "all: " } else { "" };
    let _ = writeln!(
        out,
        "  {which}count {count}, sum {}, p50 {p50}, p90 {p90}, p99 {p99}",
        human(sum, unit)
    );
    bars(out, &all, unit, view);
    out.push('\n');
}

/// One row per label set: count and percentiles, the largest first.
fn set_table(out: &mut String, sets: &[(&Metric, Buckets)], unit: Unit, view: &View) {
    let names: Vec<String> = sets[0]
        .0
        .get_label()
        .iter()
        .map(|l| l.name().to_string())
        .collect();
    let mut grid = Grid::with_figures(names, &["count", "p50", "p90", "p99"]);
    let shown = shown(sets.len(), view.top);
    for (metric, rows) in &sets[..shown] {
        let labels = metric
            .get_label()
            .iter()
            .map(|l| l.value().to_string())
            .collect();
        let count = metric.get_histogram().get_sample_count().to_string();
        let [p50, p90, p99] = percentiles(rows, unit);
        grid.row(labels, vec![count, p50, p90, p99]);
    }
    grid.write(out, view.width);
    if sets.len() > shown {
        let _ = writeln!(out, "  … {} more label sets", sets.len() - shown);
    }
}

/// Bars of the non-empty range of buckets, fitted to the width.
fn bars(out: &mut String, rows: &[(f64, f64, u64)], unit: Unit, view: &View) {
    let first = rows.iter().position(|r| r.2 > 0).unwrap_or(rows.len());
    let last = rows.iter().rposition(|r| r.2 > 0).map_or(first, |i| i + 1);
    let rows = &rows[first..last.max(first)];
    let most = rows.iter().map(|r| r.2).max().unwrap_or(0).max(1);
    let ranges: Vec<String> = rows
        .iter()
        .map(|&(low, high, _)| match (low, high) {
            (low, high) if high.is_infinite() => format!("({}, …)", human(low, unit)),
            (0.0, high) => format!("[0, {}]", human(high, unit)),
            (low, high) => format!("({}, {}]", human(low, unit), human(high, unit)),
        })
        .collect();
    let range_width = ranges.iter().map(|r| r.chars().count()).max().unwrap_or(0);
    let counts: Vec<String> = rows.iter().map(|r| r.2.to_string()).collect();
    let count_width = counts.iter().map(String::len).max().unwrap_or(0);
    let bar_width = view
        .width
        .saturating_sub(2 + range_width + 1 + count_width + 3)
        .clamp(10, 60);
    for ((range, n), (_, _, count)) in ranges.iter().zip(&counts).zip(rows) {
        let bar = "@".repeat((*count as usize * bar_width).div_ceil(most as usize));
        let _ = writeln!(
            out,
            "  {range:<range_width$} {n:>count_width$} |{bar:<bar_width$}|"
        );
    }
}

/// bpfsnap's own health in one line: configs up, the window, the snapshot's
/// cost, and any count of things that went wrong.
fn summary(own: &[Family], all: bool) -> String {
    let find = |suffix: &str| own.iter().find(|f| f.name.ends_with(suffix));
    let sum = |suffix: &str| {
        let mut total = 0.0;
        if let Some(family) = find(suffix) {
            family.for_each_sample(|_, value| total += value);
        }
        total
    };
    let mut configs = (0, 0);
    if let Some(family) = find("_config_up") {
        family.for_each_sample(|_, value| {
            configs.1 += 1;
            configs.0 += usize::from(value == 1.0);
        });
    }
    let mut parts = Vec::new();
    if configs.1 > 0 {
        parts.push(format!("{} of {} configs up", configs.0, configs.1));
    }
    if let Some(window) = find("_window_seconds") {
        parts.push(format!(
            "window {}",
            human(sum(&window.name), Unit::Seconds)
        ));
    }
    if let Some(snapshot) = find("_snapshot_duration_seconds") {
        parts.push(format!(
            "snapshot {}",
            human(sum(&snapshot.name), Unit::Seconds)
        ));
    }
    let problems: Vec<String> = [
        ("_decoder_errors_total", "keys a decoder rejected"),
        ("_series_dropped_total", "series dropped over max_series"),
        ("_events_lost_total", "events lost"),
        ("_events_dropped_total", "events dropped"),
        (
            "_program_recursion_misses_total",
            "events missed (recursion)",
        ),
    ]
    .iter()
    .filter_map(|(suffix, what)| {
        let n = sum(suffix);
        (n > 0.0).then(|| format!("{} {what}", number(n)))
    })
    .collect();
    parts.push(match problems.is_empty() {
        true => "no keys rejected, no series or events dropped".into(),
        false => problems.join(", "),
    });
    let more = if all {
        ""
    } else {
        " (-v: all of bpfsnap's own metrics)"
    };
    format!("bpfsnap: {}{more}", parts.join("; "))
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

/// Three significant digits (at most two after the point), without
/// trailing zeros: 1.02, 12.3, 461.
fn short(value: f64) -> String {
    let decimals = match value.abs() {
        v if v >= 100.0 => 0,
        v if v >= 10.0 => 1,
        _ => 2,
    };
    let text = format!("{value:.decimals$}");
    if decimals == 0 {
        return text;
    }
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

    fn calls(rows: Vec<(Vec<String>, f64)>) -> Family {
        Family::samples(
            "calls_total",
            "Calls.",
            Kind::Counter,
            &["comm", "syscall"],
            rows,
        )
    }

    fn row(comm: &str, syscall: &str, value: f64) -> (Vec<String>, f64) {
        (vec![comm.into(), syscall.into()], value)
    }

    #[test]
    fn one_aligned_column_per_label_sorted_by_value() {
        let family = calls(vec![
            row("tmux: client", "read", 5.0),
            row("bash", "getpid", 100.0),
            row("idle", "none", 0.0),
        ]);
        let text = render(&[family], &[], &View::default());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[2], "  comm          syscall  count", "{text}");
        assert_eq!(lines[3], "  bash          getpid     100", "{text}");
        assert_eq!(lines[4], "  tmux: client  read         5", "{text}");
        assert!(!text.contains("idle"), "zero rows are left out: {text}");
    }

    #[test]
    fn top_rows_then_how_many_more() {
        let rows = (0..30)
            .map(|i| row(&format!("c{i}"), "read", 1.0 + i as f64))
            .collect();
        let view = View {
            top: 3,
            ..View::default()
        };
        let text = render(&[calls(rows)], &[], &view);
        assert!(text.contains("c29") && !text.contains("c26"), "{text}");
        assert!(text.contains("… 27 more rows; 465 in all"), "{text}");
    }

    #[test]
    fn fits_the_width_and_wraps_help_between_words() {
        let long = "x".repeat(120);
        let mut family = calls(vec![row(&long, "read", 5.0)]);
        family.help = "word ".repeat(30);
        let view = View {
            width: 60,
            ..View::default()
        };
        let text = render(&[family], &[], &view);
        for line in text.lines() {
            assert!(line.chars().count() <= 60, "{line:?} in\n{text}");
            assert!(!line.ends_with("wor"), "{text}");
        }
        assert!(text.contains('…'), "{text}");
    }

    #[test]
    fn quantiles_interpolate_within_buckets_as_prometheus_does() {
        // 10 observations in (0, 1], 10 in (1, 2], none above.
        let rows = [(0.0, 1.0, 10), (1.0, 2.0, 10), (2.0, f64::INFINITY, 0)];
        assert_eq!(quantile(0.5, &rows), Some(1.0));
        assert_eq!(quantile(0.75, &rows), Some(1.5));
        assert_eq!(quantile(0.25, &rows), Some(0.5));
        let overflow = [(0.0, 1.0, 1), (1.0, f64::INFINITY, 9)];
        assert_eq!(quantile(0.99, &overflow), Some(1.0));
        assert_eq!(quantile(0.5, &[]), None);
    }

    #[test]
    fn own_metrics_are_one_summary_line_unless_all() {
        let own = vec![
            Family::gauge("bpfsnap_window_seconds", "W.", 1.5),
            Family::samples(
                "bpfsnap_decoder_errors_total",
                "E.",
                Kind::Counter,
                &["config", "decoder"],
                vec![(vec!["a".into(), "ksym".into()], 2.0)],
            ),
        ];
        let text = render(&[], &own, &View::default());
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(
            text.contains("window 1.5s") && text.contains("2 keys a decoder rejected"),
            "{text}"
        );
        let all = render(
            &[],
            &own,
            &View {
                all: true,
                ..View::default()
            },
        );
        assert!(all.contains("bpfsnap_decoder_errors_total"), "{all}");
    }
}
