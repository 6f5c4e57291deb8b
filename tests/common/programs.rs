//! The BPF programs loaded in the kernel, as bpftool and /proc list them:
//! for tests that check bpfsnap unloads everything it loaded.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use super::PATIENCE;

/// Ids of every BPF program loaded in the kernel.
pub fn loaded_program_ids() -> BTreeSet<u64> {
    let output = Command::new("bpftool")
        .args(["prog", "show", "--json"])
        .output()
        .expect("run bpftool (make test-deps installs it)");
    assert!(
        output.status.success(),
        "bpftool prog show: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let programs: Vec<serde_json::Value> =
        serde_json::from_slice(&output.stdout).expect("bpftool JSON");
    programs.iter().filter_map(|p| p["id"].as_u64()).collect()
}

/// Waits until none of `ids` is loaded any more; returns those still loaded
/// after [`PATIENCE`]. The kernel frees a program asynchronously once its
/// last link and fd are closed (tracing links wait for an RCU grace period),
/// so "gone" is a poll, not an instant check.
pub fn still_loaded_after_exit(ids: &BTreeSet<u64>) -> Vec<u64> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let left: Vec<u64> = loaded_program_ids().intersection(ids).copied().collect();
        if left.is_empty() || Instant::now() >= deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Ids of the BPF programs process `pid` holds a descriptor of.
pub fn programs_held_by(pid: u32) -> BTreeSet<u64> {
    let mut ids = BTreeSet::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let is_prog = std::fs::read_link(fd.path())
            .is_ok_and(|target| target.as_os_str() == "anon_inode:bpf-prog");
        if !is_prog {
            continue;
        }
        let info = std::fs::read_to_string(format!(
            "/proc/{pid}/fdinfo/{}",
            fd.file_name().to_string_lossy()
        ))
        .unwrap_or_default();
        ids.extend(info.lines().find_map(|line| {
            line.strip_prefix("prog_id:")
                .and_then(|id| id.trim().parse::<u64>().ok())
        }));
    }
    ids
}
