//! node_exporter's textfile collector merges the families of all `*.prom`
//! files in its directory. A family two files define with the same HELP and
//! TYPE is merged series by series; a series both files carry (same name and
//! label values), or a family they define with another HELP or TYPE, is
//! dropped from one of them, silently (see the textfile notes). So several
//! bpfsnap outputs can share a directory: their self metrics carry an
//! `output` label, their series differ. Before replacing its file, a
//! textfile output checks that no other `*.prom` file in the directory
//! defines one of its families in a way node_exporter would drop: a family
//! of the output's own series with another HELP or TYPE, or any other family
//! (a config's metrics, which two outputs would write identically).

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::Path;

use anyhow::{bail, Result};

/// A family as a text defines it: its `# HELP` and `# TYPE` lines and its
/// first sample, which says whether its series are an output's own.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Family<'a> {
    pub help: Option<&'a str>,
    pub kind: Option<&'a str>,
    pub first_sample: Option<&'a str>,
}

/// The label that tells bpfsnap outputs sharing a directory apart: the output
/// file's name without `.prom`.
pub const OUTPUT_LABEL: &str = "output";

/// The `output` label value of a textfile output at `path`.
pub fn output_name(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    name.strip_suffix(".prom").unwrap_or(&name).to_string()
}

impl<'a> Family<'a> {
    /// The family a text of one family starts with (`# HELP`, `# TYPE`, then
    /// samples), read from its first lines only: it can be tens of MB.
    pub fn at_start_of(text: &'a str) -> Family<'a> {
        let mut family = Family::default();
        let mut rest = Some(text);
        while let Some(lines) = rest {
            let (line, after) = split_line(lines);
            rest = after;
            if line.starts_with("# HELP ") {
                family.help = Some(line);
            } else if line.starts_with("# TYPE ") {
                family.kind = Some(line);
            } else if !line.is_empty() && !line.starts_with('#') {
                family.first_sample = Some(line);
                break;
            }
        }
        family
    }
}

/// The families a text exposition defines, by name (its `# TYPE` lines).
pub fn families(text: &str) -> BTreeMap<&str, Family<'_>> {
    // Found by substring search, not line by line: the text can be tens of
    // MB of samples. A label value never holds a raw newline (it is
    // escaped), so "\n# TYPE " always starts a line.
    const MARKER: &str = "\n# TYPE ";
    let starts = text
        .starts_with("# TYPE ")
        .then_some(0)
        .into_iter()
        .chain(memchr::memmem::find_iter(text.as_bytes(), MARKER).map(|at| at + 1));
    starts
        .filter_map(|at| {
            let (type_line, after) = split_line(&text[at..]);
            let name = type_line.strip_prefix("# TYPE ")?.split(' ').next()?;
            let help = text[..at]
                .strip_suffix('\n')
                .and_then(|before| before.rsplit('\n').next())
                .filter(|line| line.starts_with(&format!("# HELP {name} ")));
            let first_sample = after.and_then(|rest| {
                Some(split_line(rest).0).filter(|line| !line.is_empty() && !line.starts_with('#'))
            });
            Some((
                name,
                Family {
                    help,
                    kind: Some(type_line),
                    first_sample,
                },
            ))
        })
        .collect()
}

/// The first line of `text` and what follows its newline, if anything.
fn split_line(text: &str) -> (&str, Option<&str>) {
    match text.split_once('\n') {
        Some((line, rest)) => (line, Some(rest)),
        None => (text, None),
    }
}

/// Fails if a `*.prom` file beside `target` defines one of `ours` in a way
/// node_exporter would drop (see the module's documentation).
pub fn check(target: &Path, ours: &BTreeMap<&str, Family<'_>>) -> Result<()> {
    let Some(dir) = target.parent() else {
        return Ok(());
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let Ok(entries) = fs::read_dir(dir) else {
        return Ok(());
    };
    let own_label = format!("{OUTPUT_LABEL}=\"{}\"", output_name(target));
    for entry in entries.flatten() {
        let path = entry.path();
        let is_prom = path.extension().is_some_and(|e| e == "prom");
        if !is_prom || path.file_name() == target.file_name() || !path.is_file() {
            continue;
        }
        let Ok(file) = fs::File::open(&path) else {
            continue;
        };
        let theirs = heads(comment_lines(file).into_iter());
        for (name, family) in ours {
            let Some((help, kind)) = theirs.get(*name) else {
                continue;
            };
            let own = family
                .first_sample
                .is_some_and(|sample| sample.contains(&own_label));
            if !own {
                bail!(
                    "{} already defines {name}, which this output writes too: node_exporter \
                     would drop the series both files have; write each config to one output \
                     only (or remove {} if it is stale)",
                    path.display(),
                    path.display()
                );
            }
            if family.help != help.as_deref() || family.kind != kind.as_deref() {
                bail!(
                    "{} defines {name} with another HELP or TYPE than this output: node_exporter \
                     would drop one of the two (another bpfsnap version? give this output its \
                     own --namespace, or remove {} if it is stale)",
                    path.display(),
                    path.display()
                );
            }
        }
    }
    Ok(())
}

/// The comment lines (`#` first, without the line end) of `file`, read in
/// blocks: sample lines, nearly all of a large file (another output's
/// million-key family), are skipped at memchr's speed, never decoded or
/// copied. A comment that is not UTF-8 is read lossily, and what follows
/// it is still read; a read error ends the file there.
fn comment_lines(file: fs::File) -> Vec<String> {
    let mut reader = BufReader::with_capacity(64 << 10, file);
    let (mut comments, mut line) = (Vec::new(), Vec::new());
    loop {
        let read = match reader.fill_buf() {
            Ok([]) | Err(_) => break,
            Ok([b'#', ..]) => {
                line.clear();
                let read = reader.read_until(b'\n', &mut line);
                let text = line.strip_suffix(b"\n").unwrap_or(&line);
                let text = text.strip_suffix(b"\r").unwrap_or(text);
                comments.push(String::from_utf8_lossy(text).into_owned());
                read
            }
            Ok(_) => reader.skip_until(b'\n'),
        };
        if read.is_err() {
            break;
        }
    }
    comments
}

/// The `# HELP` and `# TYPE` lines of a file's families, by family name.
fn heads(
    lines: impl Iterator<Item = String>,
) -> BTreeMap<String, (Option<String>, Option<String>)> {
    let mut heads: BTreeMap<String, (Option<String>, Option<String>)> = BTreeMap::new();
    for line in lines {
        let (prefix, slot) = if line.starts_with("# HELP ") {
            ("# HELP ", 0)
        } else if line.starts_with("# TYPE ") {
            ("# TYPE ", 1)
        } else {
            continue;
        };
        let Some(name) = line[prefix.len()..].split(' ').next() else {
            continue;
        };
        let head = heads.entry(name.to_string()).or_default();
        if slot == 0 {
            head.0 = Some(line);
        } else {
            head.1 = Some(line);
        }
    }
    heads
}

#[cfg(test)]
mod tests {
    use super::*;

    const UP: &str = "# HELP bpfsnap_up Up.\n# TYPE bpfsnap_up gauge\n";

    #[test]
    fn finds_each_familys_head_and_first_sample() {
        let text = format!(
            "{UP}bpfsnap_up{{output=\"a\"}} 1\n# TYPE x counter\nx{{v=\"\\n# TYPE b gauge\"}} 1\n# TYPE c gauge"
        );
        let found = families(&text);
        assert_eq!(
            found.keys().copied().collect::<Vec<_>>(),
            ["bpfsnap_up", "c", "x"]
        );
        assert_eq!(
            found["bpfsnap_up"],
            Family {
                help: Some("# HELP bpfsnap_up Up."),
                kind: Some("# TYPE bpfsnap_up gauge"),
                first_sample: Some("bpfsnap_up{output=\"a\"} 1"),
            }
        );
        assert_eq!(found["x"].help, None);
        assert_eq!(found["c"].first_sample, None);
        assert_eq!(output_name(Path::new("/d/fast.prom")), "fast");
    }

    /// A family is found after a sample that is not UTF-8, after more
    /// lines than one read holds, with CRLF line ends.
    #[test]
    fn finds_their_families_anywhere_in_a_long_file() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("bpfsnap.prom");
        let mut theirs = b"# TYPE node_x gauge\nnode_x{v=\"\xff\"} 1\n".to_vec();
        for i in 0..20_000 {
            writeln!(theirs, "node_x{{i=\"{i}\"}} 1").unwrap();
        }
        theirs.extend_from_slice(b"# HELP a_total A.\r\n# TYPE a_total counter\r\na_total 1\r\n");
        fs::write(dir.path().join("other.prom"), theirs).unwrap();
        let ours = "# HELP a_total A.\n# TYPE a_total counter\na_total{b=\"c\"} 1\n";
        let err = check(&target, &families(ours)).unwrap_err().to_string();
        assert!(err.contains("already defines a_total"), "{err}");
    }

    /// What another file in the directory may define, from node_exporter's
    /// rules: table of (other file, our text, refused with).
    #[test]
    fn refuses_only_what_node_exporter_would_drop() {
        let ours_self = format!("{UP}bpfsnap_up{{output=\"bpfsnap\"}} 1\n");
        let ours_config =
            "# HELP bpfsnap_execs_total Execs.\n# TYPE bpfsnap_execs_total counter\nbpfsnap_execs_total{comm=\"a\"} 1\n";
        let cases: &[(&str, &str, &str, Option<&str>)] = &[
            // Another output's own series of the same family: merged.
            ("fast.prom", &format!("{UP}bpfsnap_up{{output=\"fast\"}} 1\n"), &ours_self, None),
            // Not read by node_exporter.
            ("fast.prom.tmp", ours_config, ours_config, None),
            ("node.prom", "# TYPE node_x gauge\nnode_x 1\n", ours_config, None),
            // The same config's metrics in two files.
            ("fast.prom", ours_config, ours_config, Some("already defines bpfsnap_execs_total")),
            // Our own series, but another help text.
            (
                "fast.prom",
                "# HELP bpfsnap_up Other.\n# TYPE bpfsnap_up gauge\nbpfsnap_up{output=\"fast\"} 1\n",
                &ours_self,
                Some("with another HELP or TYPE"),
            ),
            // A series without our output label is not ours to share.
            (
                "fast.prom",
                &format!("{UP}bpfsnap_up 1\n"),
                &format!("{UP}bpfsnap_up 1\n"),
                Some("already defines bpfsnap_up"),
            ),
        ];
        for (other, their_text, our_text, refused) in cases {
            let dir = tempfile::tempdir().unwrap();
            let target = dir.path().join("bpfsnap.prom");
            fs::write(&target, our_text).unwrap(); // our own previous file is fine
            fs::write(dir.path().join(other), their_text).unwrap();
            let result = check(&target, &families(our_text));
            match refused {
                None => result.unwrap_or_else(|err| panic!("{other}: {err:#}")),
                Some(message) => {
                    let err = result.expect_err(other).to_string();
                    assert!(err.contains(message), "{err}");
                }
            }
        }
    }
}
