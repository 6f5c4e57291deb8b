//! `bpfsnap list`: the built-in programs, what they measure, whether they are
//! in the default set, and whether they can attach on this kernel (checked
//! without loading anything, so no privileges are needed).

use std::fmt::Write as _;

use anyhow::Result;

use crate::builtin;
use crate::probe::{self, availability::KernelTypes};
use crate::program::{ObjectSource, Program};

pub fn list(long: bool) -> Result<String> {
    let kernel = KernelTypes::load();
    let mut rows = Vec::new();
    for source in builtin::BUILTINS {
        let config = source.config()?;
        let program = Program {
            config,
            object: ObjectSource::Embedded(source.object),
        };
        let here = match probe::unavailable(&program, &kernel) {
            Ok(None) => "yes".to_string(),
            Ok(Some(reason)) => format!("no: {reason}"),
            Err(err) => format!("no: {err:#}"),
        };
        rows.push((program, here));
    }
    let mut out = String::new();
    if !long {
        let width = rows
            .iter()
            .map(|(p, _)| p.config.name.len())
            .max()
            .unwrap_or(4)
            .max(4);
        writeln!(out, "{:<width$}  DEFAULT  HERE  DESCRIPTION", "NAME")?;
        for (program, here) in &rows {
            let config = &program.config;
            let default = if config.builtin.default { "yes" } else { "" };
            let here = if here == "yes" { "yes" } else { "no" };
            writeln!(
                out,
                "{:<width$}  {default:<7}  {here:<4}  {}",
                config.name, config.description
            )?;
        }
        writeln!(
            out,
            "\n`bpfsnap list --long` shows metrics, attach points, cardinality and cost."
        )?;
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
            let labels: Vec<&str> = metric.labels.iter().map(|l| l.name.as_str()).collect();
            let labels = if metric.kind == "histogram" {
                &labels[..labels.len().saturating_sub(1)]
            } else {
                &labels
            };
            writeln!(
                out,
                "  {} bpfsnap_{}{{{}}}",
                metric.kind,
                metric.name,
                labels.join(",")
            )?;
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

fn sections(program: &Program) -> Vec<String> {
    probe::sections(program).unwrap_or_default()
}
