//! A stand-in for the journal: a file as a child's stderr, and the
//! JOURNAL_STREAM value systemd would have set for it (`DEV:INODE` of the
//! stream, systemd.exec(5)).

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// A file to give a child as stderr, the JOURNAL_STREAM naming it, and its
/// path to read what the child wrote.
pub fn journal_stderr(dir: &Path) -> (File, String, PathBuf) {
    let path = dir.join("journal-stderr");
    let file = File::create(&path).expect("create the stderr file");
    let stat = file.metadata().expect("fstat the stderr file");
    (file, format!("{}:{}", stat.dev(), stat.ino()), path)
}
