//! Reading and checking what bpfsnap writes, the Prometheus text format:
//! the value of one sample or of every sample of a metric, a grammar check
//! of every line, and promtool's own check.

use std::io::Write;
use std::process::{Command, Output, Stdio};

/// The value of the sample `series` (name and labels exactly as printed,
/// but for the `output` label of a textfile's self metrics, which tests
/// that do not look for it leave out).
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let line = without_output_label(line);
        line.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// Every sample of `metric` as (the text between its braces, value): for
/// `m{a="1",b="x"} 5`, `("a=\"1\",b=\"x\"", 5.0)`; an unlabelled sample has "".
pub fn samples(text: &str, metric: &str) -> Vec<(String, f64)> {
    text.lines()
        .map(without_output_label)
        .filter_map(|line| {
            let rest = line.strip_prefix(metric)?;
            let (labels, value) = match rest.strip_prefix('{') {
                Some(labelled) => labelled.rsplit_once("} ")?,
                None => ("", rest.strip_prefix(' ')?),
            };
            Some((labels.to_string(), value.trim().parse().ok()?))
        })
        .collect()
}

/// `line` without its `output="..."` label, if it has one (bpfsnap writes
/// it last).
pub fn without_output_label(line: &str) -> std::borrow::Cow<'_, str> {
    let Some(at) = line.find("output=\"") else {
        return line.into();
    };
    let Some(end) = line[at..].find("\"}").map(|end| at + end + 1) else {
        return line.into();
    };
    match &line[..at] {
        // The only label: the braces go too.
        before if before.ends_with('{') => {
            format!("{}{}", &before[..before.len() - 1], &line[end + 1..]).into()
        }
        before if before.ends_with(',') => {
            format!("{}{}", &before[..before.len() - 1], &line[end..]).into()
        }
        _ => line.into(),
    }
}

/// Events the run's programs missed because one was already running on that
/// CPU (a hardirq hitting the hook it ran for in softirq, say): the kernel
/// skips the nested run, so a count may fall short of the load by this much.
pub fn recursion_misses(text: &str) -> f64 {
    samples(text, "bpfsnap_program_recursion_misses_total")
        .iter()
        .map(|(_, count)| count)
        .sum()
}

/// `promtool test rules` on a test file's `yaml`: Err with what promtool
/// said when a test fails.
pub fn promtool_test_rules(yaml: &str) -> Result<(), String> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("test.yml");
    std::fs::write(&file, yaml).unwrap();
    let output = Command::new("promtool")
        .args(["test", "rules"])
        .arg(&file)
        .output()
        .expect("run promtool (make test-deps installs the prometheus package)");
    match output.status.success() {
        true => Ok(()),
        false => Err(format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )),
    }
}

/// `promtool check metrics` on `text`: must exit 0 and print no lint problem.
pub fn promtool_check(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool (make test-deps installs the prometheus package)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("feed promtool");
    let Output {
        status,
        stdout,
        stderr,
    } = child.wait_with_output().expect("promtool");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&stdout),
        String::from_utf8_lossy(&stderr)
    );
    assert!(
        status.success() && said.trim().is_empty(),
        "promtool check metrics: {status}: {said}\n--- text ---\n{text}"
    );
}

/// Checks that `text` is a complete exposition in the text format: non-empty,
/// ending in a newline, every line a `# HELP`/`# TYPE` comment or a sample
/// `name{label="value",...} number` with valid names and escapes. Returns
/// the number of samples.
pub fn assert_complete_exposition(text: &str) -> usize {
    assert!(
        !text.is_empty() && text.ends_with('\n'),
        "not a complete file: {text:?}"
    );
    let mut samples = 0;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# ") {
            assert!(
                rest.starts_with("HELP ") || rest.starts_with("TYPE "),
                "bad comment {line:?}"
            );
            continue;
        }
        if let Err(err) = parse_sample(line) {
            panic!("bad sample line {line:?}: {err}\n--- text ---\n{text}");
        }
        samples += 1;
    }
    samples
}

/// Parses one sample line of the text format.
pub fn parse_sample(line: &str) -> Result<(), String> {
    fn valid_name(name: &str, colons: bool) -> bool {
        !name.is_empty()
            && name.chars().enumerate().all(|(i, c)| {
                c.is_ascii_alphabetic()
                    || c == '_'
                    || (colons && c == ':')
                    || (i > 0 && c.is_ascii_digit())
            })
    }
    let bytes = line.as_bytes();
    let mut i = 0;
    while i < bytes.len() && bytes[i] != b'{' && bytes[i] != b' ' {
        i += 1;
    }
    if !valid_name(&line[..i], true) {
        return Err(format!("bad metric name {:?}", &line[..i]));
    }
    if bytes.get(i) == Some(&b'{') {
        i += 1;
        while bytes.get(i) != Some(&b'}') {
            let start = i;
            while i < bytes.len() && bytes[i] != b'=' {
                i += 1;
            }
            if !valid_name(&line[start..i], false) {
                return Err(format!("bad label name {:?}", &line[start..i]));
            }
            if bytes.get(i + 1) != Some(&b'"') {
                return Err("label value not quoted".into());
            }
            i += 2;
            loop {
                match bytes.get(i) {
                    None => return Err("unterminated label value".into()),
                    Some(b'\\') => match bytes.get(i + 1) {
                        Some(b'\\' | b'"' | b'n') => i += 2,
                        _ => return Err("bad escape in a label value".into()),
                    },
                    Some(b'"') => {
                        i += 1;
                        break;
                    }
                    Some(b'\n') => return Err("raw newline in a label value".into()),
                    Some(_) => i += 1,
                }
            }
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
    let number = matches!(value, "+Inf" | "-Inf" | "NaN") || value.parse::<f64>().is_ok();
    if !number {
        return Err(format!("bad value {value:?} (a timestamp or junk?)"));
    }
    Ok(())
}
