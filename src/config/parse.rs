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
pub fn deserialize<T: DeserializeOwned>(text: &str, format: Format) -> Result<T, String> {
    match format {
        Format::Toml => {
            let deserializer = toml::Deserializer::new(text);
            serde_path_to_error::deserialize(deserializer).map_err(|err| {
                let line = err.inner().span().map(|span| line_of(text, span.start));
                describe(line, &err.path().to_string(), err.inner().message())
            })
        }
        Format::Yaml => {
            let deserializer = serde_yaml_ng::Deserializer::from_str(text);
            serde_path_to_error::deserialize(deserializer).map_err(|err| {
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
                describe(line, &path, message)
            })
        }
    }
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
