//! What the fuzz targets share: a strict parser of the Prometheus text
//! exposition format (0.0.4) that every output is checked against, and small
//! helpers to turn fuzz bytes into values.

use std::collections::HashSet;

/// One sample line, label values unescaped.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

/// One line of the format.
#[derive(Debug, Clone, PartialEq)]
pub enum Line {
    Help { name: String, text: String },
    Type { name: String, kind: String },
    Sample(Sample),
}

pub fn valid_metric_name(name: &str) -> bool {
    !name.is_empty()
        && name.chars().enumerate().all(|(i, c)| {
            c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit())
        })
}

pub fn valid_label_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .enumerate()
            .all(|(i, c)| c.is_ascii_alphabetic() || c == '_' || (i > 0 && c.is_ascii_digit()))
}

/// A value as Go's strconv.ParseFloat (what node_exporter and promtool use)
/// accepts it in this format: a decimal number, or NaN / ±Inf spelled in
/// any case. Timestamps or junk after it are refused.
pub fn parse_value(text: &str) -> Result<f64, String> {
    let lower = text.to_ascii_lowercase();
    match lower.as_str() {
        "nan" => return Ok(f64::NAN),
        "inf" | "+inf" | "infinity" | "+infinity" => return Ok(f64::INFINITY),
        "-inf" | "-infinity" => return Ok(f64::NEG_INFINITY),
        _ => {}
    }
    let decimal = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-'));
    if !decimal {
        return Err(format!("bad value {text:?}"));
    }
    text.parse::<f64>()
        .map_err(|err| format!("bad value {text:?}: {err}"))
}

/// Unescapes a HELP text (`\\` and `\n`; other backslashes stay).
fn unescape_help(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('\\') => out.push('\\'),
            Some('n') => out.push('\n'),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

pub fn parse_line(line: &str) -> Result<Line, String> {
    if let Some(rest) = line.strip_prefix("# HELP ") {
        let (name, text) = rest.split_once(' ').unwrap_or((rest, ""));
        if !valid_metric_name(name) {
            return Err(format!("HELP for bad name {name:?}"));
        }
        return Ok(Line::Help {
            name: name.to_string(),
            text: unescape_help(text),
        });
    }
    if let Some(rest) = line.strip_prefix("# TYPE ") {
        let (name, kind) = rest.split_once(' ').ok_or("TYPE without a type")?;
        if !valid_metric_name(name) {
            return Err(format!("TYPE for bad name {name:?}"));
        }
        if !matches!(
            kind,
            "counter" | "gauge" | "histogram" | "summary" | "untyped"
        ) {
            return Err(format!("bad type {kind:?}"));
        }
        return Ok(Line::Type {
            name: name.to_string(),
            kind: kind.to_string(),
        });
    }
    if line.starts_with('#') {
        return Err("a comment other than HELP or TYPE".into());
    }
    let bytes = line.as_bytes();
    let mut i = 0;
    while i < bytes.len() && bytes[i] != b'{' && bytes[i] != b' ' {
        i += 1;
    }
    let name = &line[..i];
    if !valid_metric_name(name) {
        return Err(format!("bad metric name {name:?}"));
    }
    let mut labels = Vec::new();
    if bytes.get(i) == Some(&b'{') {
        i += 1;
        while bytes.get(i) != Some(&b'}') {
            let start = i;
            while i < bytes.len() && bytes[i] != b'=' {
                i += 1;
            }
            let label = &line[start..i];
            if !valid_label_name(label) {
                return Err(format!("bad label name {label:?}"));
            }
            if bytes.get(i + 1) != Some(&b'"') {
                return Err("label value not quoted".into());
            }
            i += 2;
            let mut value = Vec::new();
            loop {
                match bytes.get(i) {
                    None => return Err("unterminated label value".into()),
                    Some(b'\\') => {
                        match bytes.get(i + 1) {
                            Some(b'\\') => value.push(b'\\'),
                            Some(b'"') => value.push(b'"'),
                            Some(b'n') => value.push(b'\n'),
                            _ => return Err("bad escape in a label value".into()),
                        }
                        i += 2;
                    }
                    Some(b'"') => {
                        i += 1;
                        break;
                    }
                    Some(b'\n') => return Err("raw newline in a label value".into()),
                    Some(&b) => {
                        value.push(b);
                        i += 1;
                    }
                }
            }
            let value = String::from_utf8(value).map_err(|_| "label value not UTF-8")?;
            labels.push((label.to_string(), value));
            match bytes.get(i) {
                Some(b',') => i += 1,
                Some(b'}') => {}
                _ => return Err("expected , or } after a label".into()),
            }
        }
        i += 1;
    }
    let value = line[i..]
        .strip_prefix(' ')
        .ok_or("no space before the value")?;
    Ok(Line::Sample(Sample {
        name: name.to_string(),
        labels,
        value: parse_value(value)?,
    }))
}

/// Checks `text` as node_exporter's parser would take it, and more: every
/// line parses; HELP and TYPE come once per family, before its samples; a
/// family's samples are contiguous and belong to it (histograms: `_bucket`,
/// `_sum`, `_count`); no series appears twice; no label name twice in a
/// series. Returns the samples; panics with the text on any violation.
pub fn check_exposition(text: &str) -> Vec<Sample> {
    let fail = |why: String| -> ! { panic!("{why}\n--- text ---\n{text}") };
    if text.is_empty() {
        return Vec::new();
    }
    if !text.ends_with('\n') {
        fail("does not end in a newline".into());
    }
    let mut families = HashSet::new();
    let mut series = HashSet::new();
    let mut current: Option<(String, String)> = None;
    let mut samples = Vec::new();
    for line in text.lines() {
        match parse_line(line).unwrap_or_else(|err| fail(format!("line {line:?}: {err}"))) {
            Line::Help { name, .. } => {
                if !families.insert(name.clone()) {
                    fail(format!("family {name} declared twice"));
                }
                current = Some((name, String::new()));
            }
            Line::Type { name, kind } => match &mut current {
                Some((family, k)) if *family == name && k.is_empty() => *k = kind,
                _ => {
                    if !families.insert(name.clone()) {
                        fail(format!("family {name} declared twice"));
                    }
                    current = Some((name, kind));
                }
            },
            Line::Sample(sample) => {
                let Some((family, kind)) = &current else {
                    fail(format!("sample {line:?} before any HELP/TYPE"));
                };
                let belongs = sample.name == *family
                    || (kind == "histogram"
                        && ["_bucket", "_sum", "_count"]
                            .iter()
                            .any(|s| sample.name == format!("{family}{s}")))
                    || (kind == "summary"
                        && ["_sum", "_count"]
                            .iter()
                            .any(|s| sample.name == format!("{family}{s}")));
                if !belongs {
                    fail(format!("sample {line:?} outside its family {family}"));
                }
                let mut names = HashSet::new();
                for (label, _) in &sample.labels {
                    if !names.insert(label) {
                        fail(format!("label {label} twice in {line:?}"));
                    }
                }
                // The series as printed (labels come in one order per
                // family), without formatting a key.
                let key = line.rsplit_once(' ').map_or(line, |(series, _)| series);
                if !series.insert(key) {
                    fail(format!("series {line:?} appears twice"));
                }
                samples.push(sample);
            }
        }
    }
    samples
}

/// Reads fuzz bytes front to back; past the end everything is zero.
pub struct Bytes<'a>(pub &'a [u8]);

impl Bytes<'_> {
    pub fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((first, rest)) => {
                self.0 = rest;
                *first
            }
            None => 0,
        }
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    pub fn u64(&mut self) -> u64 {
        let mut bytes = [0u8; 8];
        bytes.iter_mut().for_each(|b| *b = self.u8());
        u64::from_le_bytes(bytes)
    }

    pub fn take(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        head
    }

    pub fn rest(&mut self) -> &[u8] {
        self.take(self.0.len())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_unescapes() {
        let text = "# HELP a_total A \\\\ b\\nc.\n# TYPE a_total counter\na_total{x=\"q\\\"\\\\\\n\",y=\"é\"} 3\n";
        let samples = check_exposition(text);
        assert_eq!(samples[0].labels[0].1, "q\"\\\n");
        assert_eq!(samples[0].labels[1].1, "é");
        assert!(parse_line("a 1 123").is_err(), "timestamps refused");
        assert!(parse_line("a{b=\"\\x\"} 1").is_err());
        assert_eq!(parse_value("inf"), Ok(f64::INFINITY));
    }
}
