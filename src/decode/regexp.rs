//! `regexp`: keeps only label values matching one of the spec's `regexps`
//! (tried in order, unanchored); a value matching none drops the label set.
//!
//! As in ebpf_exporter, the first matching pattern decides the output: the
//! text its one capture group matched, or the whole match if it has none.

use anyhow::{anyhow, bail, Result};
use regex::Regex;

use super::{DecodeError, Decoder};
use crate::spec::DecoderSpec;

pub struct RegexpFilter {
    patterns: Vec<Regex>,
}

impl RegexpFilter {
    /// Compiles every pattern; each may have at most one capture group.
    pub fn new(patterns: &[String]) -> Result<RegexpFilter> {
        if patterns.is_empty() {
            bail!("decoder regexp needs at least one pattern in regexps");
        }
        let patterns = patterns
            .iter()
            .map(|pattern| {
                let regex = Regex::new(pattern).map_err(|err| {
                    anyhow!(
                        "decoder regexp: invalid pattern {pattern:?}: {}",
                        one_line(&err)
                    )
                })?;
                // ebpf_exporter never outputs anything for a pattern with two or
                // more groups (it silently moves on); refuse it instead.
                if regex.captures_len() > 2 {
                    bail!(
                        "decoder regexp: pattern {pattern:?} has {} capture groups; \
                         use at most one (the value to output), or (?:...) for grouping",
                        regex.captures_len() - 1
                    );
                }
                Ok(regex)
            })
            .collect::<Result<_>>()?;
        Ok(RegexpFilter { patterns })
    }
}

impl RegexpFilter {
    /// Whether one of the patterns matches somewhere in `text`.
    pub fn matches(&self, text: &str) -> bool {
        self.patterns.iter().any(|regex| regex.is_match(text))
    }
}

impl Decoder for RegexpFilter {
    fn decode(&self, input: &[u8], out: &mut Vec<u8>) -> Result<(), DecodeError> {
        // Go's regexp reads invalid UTF-8 as U+FFFD; so does a lossy conversion
        // (which borrows when the input is valid, the usual case).
        let text = String::from_utf8_lossy(input);
        for regex in &self.patterns {
            let matched = if regex.captures_len() == 2 {
                // A group that did not take part (`(a)?b` on "b") outputs "".
                regex
                    .captures(&text)
                    .map(|captures| captures.get(1).map_or("", |m| m.as_str()))
            } else {
                regex.find(&text).map(|m| m.as_str())
            };
            if let Some(matched) = matched {
                out.extend_from_slice(matched.as_bytes());
                return Ok(());
            }
        }
        Err(DecodeError::skip("regexp"))
    }
}

/// Builds `regexp` for a label of `size` bytes.
/// The regex crate's error as one line: its message draws the pattern with a
/// caret over several lines; the last line says what is wrong.
fn one_line(err: &regex::Error) -> String {
    let text = err.to_string();
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_default()
        .trim()
        .trim_start_matches("error: ")
        .to_string()
}

pub fn build(spec: &DecoderSpec, _size: usize) -> Result<Box<dyn Decoder>> {
    if spec.static_map.is_some() || spec.allow_unknown {
        bail!("decoder regexp takes only regexps (not static_map or allow_unknown)");
    }
    let Some(patterns) = &spec.regexps else {
        bail!("decoder regexp needs a regexps list (values matching none are dropped)");
    };
    Ok(Box::new(RegexpFilter::new(patterns)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::check_table;

    fn filter(patterns: &[&str]) -> RegexpFilter {
        let patterns: Vec<String> = patterns.iter().map(|p| p.to_string()).collect();
        RegexpFilter::new(&patterns).unwrap()
    }

    fn build_err(spec: &DecoderSpec) -> String {
        build(spec, 16).err().unwrap().to_string()
    }

    fn spec(patterns: &[&str]) -> DecoderSpec {
        DecoderSpec {
            regexps: Some(patterns.iter().map(|p| p.to_string()).collect()),
            ..DecoderSpec::named("regexp")
        }
    }

    #[test]
    fn outputs_the_match_or_its_capture_group() {
        check_table(
            &filter(&["^systemd-journal$", "^syslog-ng$"]),
            &[
                (b"systemd-journal", Ok("systemd-journal")),
                (b"syslog-ng", Ok("syslog-ng")),
                (b"systemd-bananad", Err("label set skipped")),
                (b"", Err("label set skipped")),
            ],
        );
        check_table(
            &filter(&["^(systemd).*$", "^syslog-ng$"]),
            &[
                (b"systemd-bananad", Ok("systemd")),
                (b"syslog-ng", Ok("syslog-ng")),
                (b"rsyslog-ng", Err("label set skipped")),
            ],
        );
        // Unanchored: only the matched part is output, and the first pattern
        // that matches wins even if a later one would match more.
        check_table(
            &filter(&["sys", "^sys.*"]),
            &[(b"rsyslogd", Ok("sys")), (b"systemd", Ok("sys"))],
        );
        check_table(
            &filter(&["^(?:kworker|ksoftirqd)/(\\d+)", "^(a)?b$", ".*"]),
            &[
                (b"kworker/3:1", Ok("3")),
                (b"ksoftirqd/12", Ok("12")),
                (b"b", Ok("")), // the group took no part
                (b"bash\xff", Ok("bash\u{fffd}")),
                (b"", Ok("")),
            ],
        );
    }

    #[test]
    fn is_a_skip_not_an_error() {
        let mut out = Vec::new();
        let err = filter(&["^x$"]).decode(b"y", &mut out).unwrap_err();
        assert!(err.skip, "{err}");
        assert_eq!(err.decoder, "regexp");
    }

    #[test]
    fn build_checks_the_patterns() {
        assert!(build(&spec(&["^a$", "(b)"]), 16).is_ok());
        let err = build_err(&spec(&["^ok$", "(unclosed"]));
        assert!(err.contains("invalid pattern \"(unclosed\""), "{err}");
        let err = build_err(&spec(&["(a)(b)"]));
        assert!(err.contains("\"(a)(b)\" has 2 capture groups"), "{err}");
        let err = build_err(&spec(&[]));
        assert!(err.contains("at least one pattern"), "{err}");
        let err = build_err(&DecoderSpec::named("regexp"));
        assert!(err.contains("needs a regexps list"), "{err}");
        let mut with_unknown = spec(&["a"]);
        with_unknown.allow_unknown = true;
        assert!(build_err(&with_unknown).contains("takes only regexps"));
    }
}
