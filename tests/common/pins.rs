//! Pin directories on bpffs for tests of `--pin`, which outlive bpfsnap by
//! design: each test's is its own and is removed however the test ends.

use std::path::PathBuf;

use super::{bpfsnap, path_str};

/// A pin directory on bpffs, named after this test process and `tag`;
/// removed when dropped: `bpfsnap stop`, then by hand for what a run killed
/// while pinning left where `stop` does not look.
pub struct PinDir(pub PathBuf);

impl PinDir {
    pub fn new(tag: &str) -> PinDir {
        PinDir(PathBuf::from(format!(
            "/sys/fs/bpf/bpfsnap-test-{tag}-{}",
            std::process::id()
        )))
    }
}

impl PinDir {
    /// `bpfsnap stop --pin` on this directory, which must succeed.
    pub fn stop(&self) {
        let stopped = bpfsnap()
            .args(["stop", "--pin", path_str(&self.0)])
            .output()
            .unwrap();
        assert!(
            stopped.status.success(),
            "bpfsnap stop: {}",
            String::from_utf8_lossy(&stopped.stderr)
        );
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = bpfsnap()
            .args(["stop", "--pin", path_str(&self.0)])
            .output();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
