//! node_exporter's textfile collector drops, silently, a family that two
//! files define differently or a series that two files both carry (see the
//! textfile notes). So before replacing its file, a textfile output checks
//! that no other `*.prom` file in the directory defines a family it writes.
//! Two bpfsnap outputs in one directory therefore need different
//! `--namespace`s: they would otherwise both define `bpfsnap_up` and the
//! other self metrics.

use std::collections::BTreeSet;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::Path;

use anyhow::{bail, Result};

/// Family names a text exposition defines (its `# TYPE` lines).
pub fn families(text: &str) -> BTreeSet<&str> {
    // Found by substring search, not line by line: the text can be tens of
    // MB of samples. A label value never holds a raw newline (it is
    // escaped), so "\n# TYPE " always starts a line.
    const MARKER: &str = "\n# TYPE ";
    let first = text.strip_prefix("# TYPE ");
    let rest =
        memchr::memmem::find_iter(text.as_bytes(), MARKER).map(|at| &text[at + MARKER.len()..]);
    first
        .into_iter()
        .chain(rest)
        .filter_map(|line| line.split([' ', '\n']).next())
        .collect()
}

/// Fails if a `*.prom` file beside `target` defines one of `ours`.
pub fn check(target: &Path, ours: &BTreeSet<&str>) -> Result<()> {
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
    for entry in entries.flatten() {
        let path = entry.path();
        let is_prom = path.extension().is_some_and(|e| e == "prom");
        if !is_prom || path.file_name() == target.file_name() || !path.is_file() {
            continue;
        }
        let Ok(file) = fs::File::open(&path) else {
            continue;
        };
        for line in BufReader::new(file).lines().map_while(Result::ok) {
            let Some(name) = line
                .strip_prefix("# TYPE ")
                .and_then(|rest| rest.split(' ').next())
            else {
                continue;
            };
            if ours.contains(name) {
                bail!(
                    "{} already defines {name}: node_exporter would silently drop one of the two; \
                     give each bpfsnap output in {} its own --namespace (or remove {} if it is stale)",
                    path.display(),
                    dir.display(),
                    path.display()
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_a_family_another_file_defines() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("bpfsnap.prom");
        let text = "# HELP bpfsnap_up Up.\n# TYPE bpfsnap_up gauge\nbpfsnap_up 1\n";
        let ours = families(text);
        assert_eq!(ours, BTreeSet::from(["bpfsnap_up"]));
        // At the start, at the end without a newline, and never inside a
        // label value (where a newline is escaped).
        assert_eq!(
            families("# TYPE a counter\nx{v=\"\\n# TYPE b gauge\"} 1\n# TYPE c gauge"),
            BTreeSet::from(["a", "c"])
        );
        check(&target, &ours).unwrap();
        fs::write(&target, text).unwrap(); // our own previous file is fine
        fs::write(dir.path().join("other.prom.tmp"), text).unwrap(); // not read by node_exporter
        check(&target, &ours).unwrap();
        fs::write(
            dir.path().join("node.prom"),
            "# TYPE node_x gauge\nnode_x 1\n",
        )
        .unwrap();
        check(&target, &ours).unwrap();
        fs::write(dir.path().join("fast.prom"), text).unwrap();
        let err = check(&target, &ours).unwrap_err().to_string();
        assert!(
            err.contains("fast.prom already defines bpfsnap_up") && err.contains("--namespace"),
            "{err}"
        );
    }
}
