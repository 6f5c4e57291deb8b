//! Variants: alternative programs in one object for kernels that differ.
//!
//! A built-in's spec may list `[[builtin.variants]]`, each naming programs
//! (and maps only they use) with what they need of the kernel: tracepoint
//! arguments as the kernel's BTF declares them, map types it can create. The
//! probe stage loads the first variant whose needs the running kernel meets
//! and leaves the others' programs and maps out; programs no variant names
//! always load. This module is the spec side: the keys and their syntax.

use serde::Deserialize;

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Variant {
    /// The programs this variant loads.
    pub programs: Vec<String>,
    /// Maps only this variant's programs use: not created unless it is chosen.
    #[serde(default)]
    pub maps: Vec<String>,
    /// Tracepoints the programs attach to with the arguments they read, as
    /// `NAME(TYPE, ...)` in the kernel's BTF spelling (what `bpftool btf dump`
    /// prints for `btf_trace_NAME`, without its leading `void *`): met when
    /// the kernel passes at least these, of these types.
    #[serde(default)]
    pub tracepoints: Vec<String>,
    /// Map types the kernel must be able to create (libbpf's names:
    /// `task_storage`, `ringbuf`, ...).
    #[serde(default)]
    pub map_types: Vec<String>,
}

/// A tracepoint as a variant needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TracepointNeed {
    pub name: String,
    pub args: Vec<String>,
}

impl TracepointNeed {
    /// Parses `NAME(TYPE, TYPE, ...)`; types are normalised to single
    /// spaces, with `*` written as in `struct sk_buff *`.
    pub fn parse(text: &str) -> Result<TracepointNeed, String> {
        let bad = || {
            format!(
                "tracepoint {text:?}: write it as NAME(TYPE, ...), e.g. \
                 \"kfree_skb(struct sk_buff *, void *)\""
            )
        };
        let (name, rest) = text.trim().split_once('(').ok_or_else(bad)?;
        let args = rest.strip_suffix(')').ok_or_else(bad)?;
        let name = name.trim();
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(bad());
        }
        let args: Vec<String> = if args.trim().is_empty() {
            Vec::new()
        } else {
            args.split(',').map(normalise_type).collect()
        };
        if args.iter().any(String::is_empty) {
            return Err(bad());
        }
        Ok(TracepointNeed {
            name: name.to_string(),
            args,
        })
    }
}

/// A C type name with single spaces and a space before each `*`.
pub fn normalise_type(text: &str) -> String {
    text.replace('*', " * ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Every problem with `variants`, one line each.
pub fn problems(variants: &[Variant]) -> Vec<String> {
    let mut problems = Vec::new();
    for (index, variant) in variants.iter().enumerate() {
        let context = format!("builtin.variants[{index}]");
        if variant.programs.is_empty() {
            problems.push(format!("{context}: names no programs"));
        }
        for tracepoint in &variant.tracepoints {
            if let Err(err) = TracepointNeed::parse(tracepoint) {
                problems.push(format!("{context}: {err}"));
            }
        }
        for other in &variants[..index] {
            if let Some(program) = variant.programs.iter().find(|p| other.programs.contains(p)) {
                problems.push(format!(
                    "{context}: program {program:?} is in two variants: each variant names its own"
                ));
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The name and arguments parsed, or part of the error.
    type Parsed = Result<(&'static str, &'static [&'static str]), &'static str>;

    #[test]
    fn tracepoint_needs_parse_and_normalise() {
        let cases: &[(&str, Parsed)] = &[
            (
                "kfree_skb(struct sk_buff *, void*, enum skb_drop_reason)",
                Ok((
                    "kfree_skb",
                    &["struct sk_buff *", "void *", "enum skb_drop_reason"],
                )),
            ),
            (
                " sched_process_exit( struct  task_struct*,bool ) ",
                Ok(("sched_process_exit", &["struct task_struct *", "bool"])),
            ),
            ("softirq_entry()", Ok(("softirq_entry", &[]))),
            (
                "const char **x(char **)",
                Err("write it as NAME(TYPE, ...)"),
            ),
            ("kfree_skb", Err("write it as NAME(TYPE, ...)")),
            ("kfree_skb(int", Err("write it as NAME(TYPE, ...)")),
            ("kfree_skb(int,)", Err("write it as NAME(TYPE, ...)")),
            ("(int)", Err("write it as NAME(TYPE, ...)")),
        ];
        for (text, want) in cases {
            let got = TracepointNeed::parse(text);
            match want {
                Ok((name, args)) => {
                    let need = got.unwrap_or_else(|err| panic!("{text:?}: {err}"));
                    assert_eq!(need.name, *name, "{text:?}");
                    assert_eq!(need.args, *args, "{text:?}");
                }
                Err(message) => {
                    let err = got.expect_err(text);
                    assert!(err.contains(message), "{text:?}: {err}");
                }
            }
        }
    }

    #[test]
    fn problems_name_the_variant() {
        let variant = |programs: &[&str], tracepoints: &[&str]| Variant {
            programs: programs.iter().map(|p| p.to_string()).collect(),
            tracepoints: tracepoints.iter().map(|t| t.to_string()).collect(),
            ..Variant::default()
        };
        assert!(problems(&[variant(&["a"], &["t(int)"]), variant(&["b"], &[])]).is_empty());
        let found = problems(&[
            variant(&[], &[]),
            variant(&["a"], &["t(int"]),
            variant(&["a"], &[]),
        ]);
        assert_eq!(found.len(), 3, "{found:?}");
        assert!(found[0].starts_with("builtin.variants[0]: names no programs"));
        assert!(found[1].starts_with("builtin.variants[1]: tracepoint \"t(int\""));
        assert!(found[2].contains("program \"a\" is in two variants"));
    }
}
