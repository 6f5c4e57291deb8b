//! `bpfsnap list`: the built-in programs, what they measure, whether they are
//! in the default set, and whether they can attach on this kernel (checked
//! without loading anything, so no privileges are needed).

use std::fmt::Write as _;

use anyhow::Result;

use crate::builtin;
use crate::exposition::pretty::wrap;
use crate::probe::{self, availability::KernelTypes, variants};
use crate::program::{self, ObjectSource, Program};
use crate::spec::MetricRef;

pub fn list(long: bool) -> Result<String> {
    let kernel = KernelTypes::load();
    let mut rows = Vec::new();
    for source in builtin::BUILTINS {
        let config = source.config()?;
        let fit = variants::fit(&config, &kernel);
        // The variant this kernel runs, whose attach points `--long` lists.
        let left_out = fit.as_ref().map(|f| f.left_out.clone()).unwrap_or_default();
        let program = Program {
            left_out,
            ..program::from_builtin(source, config)?
        };
        let here = match fit.map(|_| probe::unavailable(&program, &kernel)) {
            Ok(Ok(None)) => "yes".to_string(),
            Ok(Ok(Some(reason))) | Err(reason) => format!("no: {reason}"),
            Ok(Err(err)) => format!("no: {err:#}"),
        };
        rows.push((program, here));
    }
    let mut out = String::new();
    if !long {
        short_table(&mut out, &rows)?;
        return Ok(out);
    }
    for (program, here) in &rows {
        let config = &program.config;
        writeln!(out, "{} — {}", config.name, config.description)?;
        writeln!(
            out,
            "  default set: {}",
            if config.builtin.default { "yes" } else { "no" }
        )?;
        writeln!(out, "  available here: {here}")?;
        for metric in config.metrics() {
            writeln!(out, "  {} {}", metric.kind, series(&metric))?;
        }
        if let ObjectSource::Embedded(_) = program.object {
            for section in sections(program) {
                writeln!(out, "  attaches to: {section}")?;
            }
        }
        if !config.builtin.cardinality.is_empty() {
            writeln!(out, "  cardinality: {}", config.builtin.cardinality)?;
        }
        if !config.builtin.overhead.is_empty() {
            writeln!(out, "  overhead: {}", config.builtin.overhead)?;
        }
        writeln!(out)?;
    }
    Ok(out)
}

/// Columns the short listing keeps within (descriptions are wrapped to fit).
const WIDTH: usize = 100;

/// One entry per built-in: a row with its name, whether it is in the default
/// set, whether it can attach here and its metrics (one per line, with their
/// labels), then its description (which names its attach points) indented
/// below, wrapped to [`WIDTH`] columns.
fn short_table(out: &mut String, rows: &[(Program, String)]) -> Result<()> {
    let width = rows
        .iter()
        .map(|(p, _)| p.config.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let metrics_column = width + "  DEFAULT  HERE  ".len();
    writeln!(out, "{:<width$}  DEFAULT  HERE  METRICS", "NAME")?;
    for (program, here) in rows {
        let config = &program.config;
        let default = if config.builtin.default { "yes" } else { "" };
        let here = if here == "yes" { "yes" } else { "no" };
        write!(out, "{:<width$}  {default:<7}  {here:<4}", config.name)?;
        let mut metrics = config.metrics().peekable();
        if metrics.peek().is_none() {
            writeln!(out)?;
        }
        for (i, metric) in metrics.enumerate() {
            let series = series(&metric);
            // One that does not fit in its column gets a line of its own.
            let fits = metrics_column + series.len() <= WIDTH;
            let indent = match (i, fits) {
                (0, true) => 2,
                (0, false) => {
                    out.truncate(out.trim_end_matches(' ').len());
                    writeln!(out)?;
                    2
                }
                (_, true) => metrics_column,
                (_, false) => 2,
            };
            writeln!(out, "{:indent$}{series}", "")?;
        }
        for line in wrap(&config.description, WIDTH - 2) {
            writeln!(out, "  {line}")?;
        }
    }
    writeln!(
        out,
        "\nDEFAULT: in the set `bpfsnap run` uses when no program is named. HERE: whether it can \
         attach on\nthis kernel. `bpfsnap list --long` adds the exact attach points, why a program \
         is unavailable,\nthe cardinality bound of its labels and its cost."
    )?;
    Ok(())
}

/// A metric's name as exported and its series' labels, e.g.
/// `bpfsnap_execs_total{comm}`; a histogram's bucket label becomes `le`, so
/// it is left out.
fn series(metric: &MetricRef) -> String {
    let mut labels: Vec<&str> = metric.labels.iter().map(|l| l.name.as_str()).collect();
    if metric.kind == crate::spec::MetricKind::Histogram {
        labels.pop();
    }
    if labels.is_empty() {
        format!("bpfsnap_{}", metric.name)
    } else {
        format!("bpfsnap_{}{{{}}}", metric.name, labels.join(","))
    }
}

fn sections(program: &Program) -> Vec<String> {
    probe::sections(program).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_breaks_at_spaces_within_the_width() {
        assert_eq!(wrap("aa bb cc", 5), ["aa bb", "cc"]);
        assert_eq!(wrap("a verylongword b", 4), ["a", "verylongword", "b"]);
        assert!(wrap("  ", 10).is_empty());
    }

    #[test]
    fn short_listing_fits_in_its_width() {
        let text = list(false).unwrap();
        for line in text.lines() {
            assert!(
                line.chars().count() <= WIDTH,
                "{} columns: {line}",
                line.len()
            );
        }
    }
}
