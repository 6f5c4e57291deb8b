//! Which containers' keys are kept: `--container-include FIELD=REGEX` and
//! `--container-exclude FIELD=REGEX`, FIELD one of `namespace`, `pod`,
//! `container` (like Tetragon's allow and deny lists of pods). A key whose
//! cgroup's container fails the filter is dropped by every container
//! decoder of its labels (as `regexp` drops one), before any series is
//! made. Patterns are the `regexp` decoder's (unanchored: `^shop$` for
//! exactly `shop`).
//!
//! Kept: the container matches, for each field with include patterns, one
//! of them, and no exclude pattern of any field. A cgroup that is no
//! container's has empty fields: an include pattern that needs text drops
//! it.

use anyhow::{anyhow, bail, Result};

use super::Identity;
use crate::decode::regexp::RegexpFilter;

/// The fields a filter rule names.
const FIELDS: [&str; 3] = ["namespace", "pod", "container"];

/// The rules, compiled; one pattern list per field and kind.
#[derive(Default)]
pub struct Filter {
    include: [Option<RegexpFilter>; 3],
    exclude: [Option<RegexpFilter>; 3],
}

impl Filter {
    /// Compiles the `FIELD=REGEX` rules of `--container-include` and
    /// `--container-exclude`.
    pub fn new(include: &[String], exclude: &[String]) -> Result<Filter> {
        Ok(Filter {
            include: compile(include, "--container-include")?,
            exclude: compile(exclude, "--container-exclude")?,
        })
    }

    /// Whether keys of `identity` (None: not a container's cgroup) are kept.
    pub fn keeps(&self, identity: Option<&Identity>) -> bool {
        let values = identity.map_or(["", "", ""], |identity| {
            [&identity.namespace, &identity.pod, &identity.name].map(String::as_str)
        });
        let included = self
            .include
            .iter()
            .zip(values)
            .all(|(patterns, value)| patterns.as_ref().is_none_or(|p| p.matches(value)));
        let excluded = self
            .exclude
            .iter()
            .zip(values)
            .any(|(patterns, value)| patterns.as_ref().is_some_and(|p| p.matches(value)));
        included && !excluded
    }
}

/// Each field's patterns among `rules` (`FIELD=REGEX`), compiled.
fn compile(rules: &[String], flag: &str) -> Result<[Option<RegexpFilter>; 3]> {
    let mut patterns: [Vec<String>; 3] = Default::default();
    for rule in rules {
        let Some((field, pattern)) = rule.split_once('=') else {
            bail!(
                "{flag} {rule:?}: write FIELD=REGEX, FIELD one of {}",
                FIELDS.join(", ")
            );
        };
        let Some(index) = FIELDS.iter().position(|f| *f == field) else {
            bail!(
                "{flag} {rule:?}: unknown field {field:?}, not one of {}",
                FIELDS.join(", ")
            );
        };
        patterns[index].push(pattern.to_string());
    }
    let mut compiled: [Option<RegexpFilter>; 3] = Default::default();
    for (slot, patterns) in compiled.iter_mut().zip(patterns) {
        if !patterns.is_empty() {
            let filter = RegexpFilter::new(&patterns).map_err(|err| anyhow!("{flag}: {err:#}"))?;
            *slot = Some(filter);
        }
    }
    Ok(compiled)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(rules: &[&str]) -> Vec<String> {
        rules.iter().map(|rule| rule.to_string()).collect()
    }

    fn identity(namespace: &str, pod: &str, name: &str) -> Identity {
        Identity {
            namespace: namespace.into(),
            pod: pod.into(),
            name: name.into(),
            ..Identity::default()
        }
    }

    #[test]
    fn keeps_what_is_included_and_not_excluded() {
        let shop_web = identity("shop", "web-1", "nginx");
        let shop_db = identity("shop", "db-0", "postgres");
        let system = identity("kube-system", "coredns-1", "coredns");
        let plain = identity("", "", "busy");
        // (include, exclude, [shop_web, shop_db, system, plain, host])
        let cases: [(&[&str], &[&str], [bool; 5]); 6] = [
            (&[], &[], [true; 5]),
            (
                &["namespace=^shop$"],
                &[],
                [true, true, false, false, false],
            ),
            (
                &["namespace=^shop$"],
                &["pod=^db-"],
                [true, false, false, false, false],
            ),
            (
                &[],
                &["namespace=^kube-system$"],
                [true, true, false, true, true],
            ),
            (
                &["container=^nginx$", "container=^busy$"],
                &[],
                [true, false, false, true, false],
            ),
            (
                &["namespace=^shop$", "container=postgres"],
                &[],
                [false, true, false, false, false],
            ),
        ];
        for (include, exclude, want) in cases {
            let filter = Filter::new(&rules(include), &rules(exclude)).unwrap();
            let got = [
                Some(&shop_web),
                Some(&shop_db),
                Some(&system),
                Some(&plain),
                None,
            ]
            .map(|identity| filter.keeps(identity));
            assert_eq!(got, want, "include {include:?} exclude {exclude:?}");
        }
    }

    #[test]
    fn a_bad_rule_is_one_line_naming_it() {
        let err = |include: &[&str]| Filter::new(&rules(include), &[]).err().unwrap().to_string();
        assert!(err(&["shop"]).contains("--container-include \"shop\": write FIELD=REGEX"));
        assert!(err(&["node=x"]).contains("unknown field \"node\""));
        let bad = err(&["pod=("]);
        assert!(
            bad.starts_with("--container-include: ") && !bad.contains('\n'),
            "{bad}"
        );
    }
}
