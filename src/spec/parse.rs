//! The two spellings of a config: TOML (bpfsnap's own) and YAML
//! (ebpf_exporter's, read unchanged). Both go through the same serde model,
//! and errors name the line and the key path (`metrics.counters[0].labels[1]`)
//! so a mistake in a long file is found at once.

use std::path::Path;

use serde::de::DeserializeOwned;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Toml,
    Yaml,
}

impl Format {
    /// The format a file's extension says, if any.
    pub fn of(path: &Path) -> Option<Format> {
        match path.extension()?.to_str()? {
            "toml" => Some(Format::Toml),
            "yaml" | "yml" => Some(Format::Yaml),
            _ => None,
        }
    }
}

/// Deserializes `text`; the error is one line: `line N: PATH: what is wrong`.
/// TOML is strict: a key the model does not know is an error. YAML follows
/// ebpf_exporter, whose reader ignores such keys: each is left out with a
/// warning in the same form, returned beside the value.
pub fn deserialize<T: DeserializeOwned>(
    text: &str,
    format: Format,
) -> Result<(T, Vec<String>), String> {
    match format {
        Format::Toml => {
            let deserializer = toml::Deserializer::parse(text).map_err(|err| {
                let span = err.span();
                let line = span.clone().map(|span| line_of(text, span.start));
                // The parser's message leaves out what it is about (a
                // duplicate key's name): the text it points at says.
                let at = span.and_then(|span| text.get(span)).unwrap_or("");
                let message = match at.trim() {
                    at if at.is_empty() || at.len() > 40 || at.contains('\n') => {
                        err.message().to_string()
                    }
                    at => format!("{}: `{at}`", err.message()),
                };
                describe(line, "", &message)
            })?;
            let value = serde_path_to_error::deserialize(deserializer).map_err(|err| {
                let line = err.inner().span().map(|span| line_of(text, span.start));
                describe(line, &err.path().to_string(), err.inner().message())
            })?;
            Ok((value, Vec::new()))
        }
        Format::Yaml => deserialize_yaml_leniently(text),
    }
}

/// Keys a YAML config may carry that the model does not know, at most: each
/// costs a parse.
const MAX_UNKNOWN_YAML_KEYS: usize = 64;

/// YAML with unknown keys left out: each time the strict parse stops at one,
/// that key and its value are blanked out of the text (lines kept, so later
/// messages keep their line numbers) and the parse starts again.
fn deserialize_yaml_leniently<T: DeserializeOwned>(text: &str) -> Result<(T, Vec<String>), String> {
    let mut text = text.to_string();
    let mut warnings = Vec::new();
    loop {
        let deserializer = serde_yaml_ng::Deserializer::from_str(&text);
        let err = match serde_path_to_error::deserialize(deserializer) {
            Ok(value) => return Ok((value, warnings)),
            Err(err) => err,
        };
        let (line, path, message) = yaml_error(&err);
        let message = message.as_str();
        let unknown = message
            .strip_prefix("unknown field `")
            .and_then(|rest| rest.split_once('`'));
        let blanked = match (unknown, line) {
            (Some((key, _)), Some(line)) if warnings.len() < MAX_UNKNOWN_YAML_KEYS => {
                blank_out_key(&text, line, key)
            }
            _ => None,
        };
        let Some(blanked) = blanked else {
            return Err(describe(line, &path, message));
        };
        let key = unknown.map_or("", |(key, _)| key);
        // The path ends with the key itself: name where it is.
        let parent = path
            .strip_suffix(key)
            .map_or(path.as_str(), |parent| parent.trim_end_matches('.'));
        warnings.push(describe(
            line,
            parent,
            &format!("unknown key `{key}` ignored (as ebpf_exporter does)"),
        ));
        text = blanked;
    }
}

/// Deserializes YAML `text` strictly, as Go's yaml.UnmarshalStrict does
/// (for files of the Prometheus ecosystem, like exporter-toolkit's web
/// config): a key the model does not know is an error. The error is one
/// line: `line N: PATH: what is wrong`.
pub fn deserialize_yaml_strictly<T: DeserializeOwned>(text: &str) -> Result<T, String> {
    let deserializer = serde_yaml_ng::Deserializer::from_str(text);
    serde_path_to_error::deserialize(deserializer).map_err(|err| {
        let (line, path, message) = yaml_error(&err);
        // An unknown key ends the path: name where it is, once.
        let unknown = message
            .strip_prefix("unknown field `")
            .and_then(|rest| rest.split_once('`'))
            .map(|(key, _)| key);
        let path = match unknown.and_then(|key| path.strip_suffix(key)) {
            Some(parent) => parent.trim_end_matches('.'),
            None => path.as_str(),
        };
        describe(line, path, &message)
    })
}

/// A YAML error's line, key path and message (without the position and the
/// path serde_yaml_ng puts in it).
fn yaml_error(
    err: &serde_path_to_error::Error<serde_yaml_ng::Error>,
) -> (Option<usize>, String, String) {
    let line = err.inner().location().map(|at| at.line());
    // serde_yaml_ng appends " at line L column C" itself.
    let message = err.inner().to_string();
    let message = message.split(" at line ").next().unwrap_or_default();
    // ...and sometimes starts with the path too.
    let path = err.path().to_string();
    let message = match message.split_once(": ") {
        Some((prefix, rest)) if path.starts_with(prefix) => rest,
        _ => message,
    };
    (line, path, message.to_string())
}

/// `text` with the mapping entry `key` at line `line` (1-based) and the more
/// indented lines of its value blanked out; None if that line does not start
/// with that key in block style (`key:` or `- key:`).
fn blank_out_key(text: &str, line: usize, key: &str) -> Option<String> {
    let mut lines: Vec<String> = text.split('\n').map(str::to_string).collect();
    let at = line.checked_sub(1)?;
    let key_line = lines.get(at)?.clone();
    let indent = key_line.len() - key_line.trim_start().len();
    let rest = &key_line[indent..];
    let (item, entry) = match rest.strip_prefix("- ") {
        Some(entry) => (true, entry.trim_start()),
        None => (false, rest),
    };
    let after_key = entry.strip_prefix(key)?.trim_start();
    if !after_key.starts_with(':') {
        return None;
    }
    let key_column = key_line.len() - entry.len();
    // A list item's first key: the item stays, with the rest of its mapping
    // on the following lines.
    lines[at] = if item {
        format!("{}-", " ".repeat(indent))
    } else {
        String::new()
    };
    for next in lines.iter_mut().skip(at + 1) {
        let trimmed = next.trim_start();
        let deeper = next.len() - trimmed.len() > key_column;
        if !(deeper || trimmed.is_empty() || trimmed.starts_with('#')) {
            break;
        }
        next.clear();
    }
    Some(lines.join("\n"))
}

fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset)
        .map_or(0, |before| before.matches('\n').count())
        + 1
}

fn describe(line: Option<usize>, path: &str, message: &str) -> String {
    let mut out = String::new();
    if let Some(line) = line {
        out.push_str(&format!("line {line}: "));
    }
    if !path.is_empty() && path != "." {
        // Keys are the user's text and may hold any character: escape
        // control characters so the error stays one line.
        let path: String = path
            .chars()
            .flat_map(|c| {
                let escaped: Vec<char> = if c.is_control() {
                    c.escape_debug().collect()
                } else {
                    vec![c]
                };
                escaped
            })
            .collect();
        out.push_str(&format!("{path}: "));
    }
    // One line: TOML messages can carry newlines.
    out.push_str(&message.trim().replace('\n', " "));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Doc {
        items: Vec<Item>,
    }

    #[derive(Debug, serde::Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Item {
        name: String,
        #[serde(default)]
        size: u32,
    }

    /// YAML text → (names and sizes read, warnings or the error).
    #[test]
    fn unknown_yaml_keys_are_warnings_with_their_line_and_toml_keys_errors() {
        let cases: &[(&str, Result<&[&str], &str>)] = &[
            ("items:\n  - name: a\n    size: 4\n", Ok(&[])),
            (
                "extra: 1\nitems:\n  - name: a\n",
                Ok(&["line 1: unknown key `extra` ignored (as ebpf_exporter does)"]),
            ),
            (
                "items:\n  - name: a\n    skip_cache_size: 100\n    size: 4\n",
                Ok(&["line 3: items[0]: unknown key `skip_cache_size` ignored (as ebpf_exporter does)"]),
            ),
            (
                // The item's first key, with a block value of its own.
                "items:\n  - values:\n      - x: 1\n        y: 2\n    name: a\n    size: 4\ntracing:\n  spans: []\n",
                Ok(&[
                    "line 2: items[0]: unknown key `values` ignored (as ebpf_exporter does)",
                    "line 7: unknown key `tracing` ignored (as ebpf_exporter does)",
                ]),
            ),
            // After a blanked key, an error keeps its line.
            ("other: 1\nitems:\n  - name: a\n    size: big\n", Err("line 4: items[0].size:")),
        ];
        for (text, want) in cases {
            let got = deserialize::<Doc>(text, Format::Yaml);
            match (want, got) {
                (Ok(warnings), Ok((doc, got))) => {
                    assert_eq!(doc.items[0].name, "a", "{text}");
                    assert_eq!(got, *warnings, "{text}");
                }
                (Err(want), Err(got)) => assert!(got.starts_with(want), "{got} for {text}"),
                (want, got) => panic!("{text}: want {want:?}, got {got:?}"),
            }
        }
        let toml = deserialize::<Doc>("extra = 1\n[[items]]\nname = \"a\"\n", Format::Toml);
        assert!(toml.unwrap_err().contains("unknown field `extra`"));
    }

    /// TOML that does not parse: one line, with the line and what the
    /// parser points at.
    #[test]
    fn toml_syntax_errors_name_their_line_and_what_is_wrong() {
        let cases = [
            (
                "[[items]]\nname = \"a\"\nname = \"b\"\n",
                "line 3: duplicate key: `name`",
            ),
            ("[[items]]\nname = \"a\n", "line 2: invalid basic string"),
            (
                "[[items]]\nname = a b\n",
                "line 2: string values must be quoted",
            ),
            ("[[items]\n", "line 1: unclosed array table"),
            ("[[items]]\nsize = [1,\n", "line 2: unclosed array"),
        ];
        for (text, want) in cases {
            let err = deserialize::<Doc>(text, Format::Toml).unwrap_err();
            assert!(
                err.starts_with(want) && !err.contains('\n'),
                "{err:?} for {text:?}"
            );
        }
    }
}
