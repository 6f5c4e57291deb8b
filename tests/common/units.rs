//! systemd units and the /etc/default files they read, as systemd reads
//! them: a key's value, an environment file's variables, and ExecStart=
//! with `$VAR` expanded.

use std::collections::BTreeMap;

/// Where the package's units and /etc/default files are kept.
pub const PACKAGING: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/packaging");

/// A unit file's `KEY=` value, if it has one.
pub fn unit_value_opt<'a>(unit: &'a str, key: &str) -> Option<&'a str> {
    unit.lines()
        .find_map(|line| line.strip_prefix(key)?.strip_prefix('='))
}

/// A unit file's `KEY=` value; panics if it has none.
pub fn unit_value<'a>(unit: &'a str, key: &str) -> &'a str {
    unit_value_opt(unit, key).unwrap_or_else(|| panic!("no {key}= in the unit"))
}

/// The keys set in a unit's `[section]`.
pub fn section_keys<'a>(unit: &'a str, section: &str) -> Vec<&'a str> {
    let header = format!("[{section}]");
    unit.lines()
        .skip_while(|line| line.trim() != header)
        .skip(1)
        .take_while(|line| !line.starts_with('['))
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .filter_map(|line| line.split_once('=').map(|(key, _)| key.trim()))
        .collect()
}

/// The variables of an environment file (`KEY="value"` lines, comments and
/// blank lines skipped). Only what the package's files use: a value in
/// double quotes or none, without backslashes, which systemd would read
/// differently.
pub fn environment_file(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| {
            let (key, value) = line
                .split_once('=')
                .unwrap_or_else(|| panic!("not KEY=VALUE: {line:?}"));
            assert!(!value.contains('\\'), "a backslash in {line:?}");
            let value = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(value);
            assert!(!value.contains('"'), "a quote inside {line:?}");
            (key.to_string(), value.to_string())
        })
        .collect()
}

/// ExecStart='s words, with each `$VAR` replaced by the words of its value
/// (systemd splits an unbraced variable at whitespace; an empty one
/// vanishes).
pub fn exec_start(unit: &str, environment: &BTreeMap<String, String>) -> Vec<String> {
    unit_value(unit, "ExecStart")
        .split_whitespace()
        .flat_map(|word| match word.strip_prefix('$') {
            Some(name) => environment
                .get(name)
                .unwrap_or_else(|| panic!("${name} is not in the environment file"))
                .split_whitespace()
                .map(str::to_string)
                .collect(),
            None => vec![word.to_string()],
        })
        .collect()
}
