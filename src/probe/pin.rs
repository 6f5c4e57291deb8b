//! Persistent probes for cron (`--pin DIR`): programs stay attached and their
//! maps stay pinned in bpffs between runs, so each run only snapshots and
//! counters stay monotonic instead of restarting every window.
//!
//! Layout, one directory per config: `DIR/NAME/manifest.toml` (what is
//! pinned, a fingerprint of config + object + bpfsnap version, when counting
//! started, when the last snapshot was taken), `DIR/NAME/maps/MAP` and
//! `DIR/NAME/links/PROGRAM.N`. A run whose fingerprint differs (changed
//! config, new object, newer bpfsnap) removes the old set and pins a new one;
//! `bpfsnap stop --pin DIR` removes everything, which detaches the programs.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

const MANIFEST: &str = "manifest.toml";
/// statfs magic of bpffs.
const BPF_FS_MAGIC: i64 = 0xcafe4a11;

/// What a pinned config's directory holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub fingerprint: String,
    /// Unix time the programs were attached: counters count from here.
    pub attached_at: f64,
    /// Unix time of the last snapshot written (the start of the next window).
    pub last_snapshot: Option<f64>,
    pub programs: Vec<PinnedProgram>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PinnedProgram {
    pub name: String,
    pub section: String,
    pub attach: String,
    pub id: u32,
    pub tag: String,
}

/// A probe's pin directory and manifest.
#[derive(Debug, Clone)]
pub struct Pinned {
    pub dir: PathBuf,
    pub manifest: Manifest,
}

impl Pinned {
    /// Records that a snapshot was written at `time` (the next window's start).
    pub fn record_snapshot(&mut self, time: f64) -> Result<()> {
        self.manifest.last_snapshot = Some(time);
        write_manifest(&self.dir, &self.manifest)
    }
}

/// A stable 64-bit FNV-1a over everything that makes a pinned set current.
pub fn fingerprint(parts: &[&[u8]]) -> String {
    let mut hash: u64 = 0xcbf29ce484222325;
    for part in parts {
        for byte in part.iter().chain(&[0xff]) {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x100000001b3);
        }
    }
    format!("{hash:016x}")
}

pub fn read_manifest(dir: &Path) -> Result<Option<Manifest>> {
    let path = dir.join(MANIFEST);
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(err).with_context(|| format!("reading {}", path.display())),
    };
    // A manifest we cannot read is treated as absent: the set is replaced.
    Ok(toml::from_str(&text).ok())
}

pub fn write_manifest(dir: &Path, manifest: &Manifest) -> Result<()> {
    let text = toml::to_string(manifest).context("encoding the pin manifest")?;
    crate::sink::write_atomic(&dir.join(MANIFEST), text.as_bytes())
}

/// Makes sure `root` is on bpffs, mounting bpffs at /sys/fs/bpf if that is
/// where it should be and nothing is mounted there.
pub fn ensure_bpffs(root: &Path) -> Result<()> {
    let on_bpffs = |path: &Path| {
        let Ok(c_path) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
            return false;
        };
        // SAFETY: statfs is plain data; the path is NUL-terminated.
        let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
        unsafe {
            libc::statfs(c_path.as_ptr(), &mut stat) == 0 && stat.f_type as i64 == BPF_FS_MAGIC
        }
    };
    let bpffs = Path::new("/sys/fs/bpf");
    if root.starts_with(bpffs) && !on_bpffs(bpffs) {
        fs::create_dir_all(bpffs).ok();
        // SAFETY: valid NUL-terminated strings.
        let rc = unsafe {
            libc::mount(
                c"bpf".as_ptr(),
                c"/sys/fs/bpf".as_ptr(),
                c"bpf".as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        if rc != 0 {
            bail!(
                "bpffs is not mounted at /sys/fs/bpf and mounting it failed ({}): run `mount -t bpf bpf /sys/fs/bpf`",
                std::io::Error::last_os_error()
            );
        }
    }
    fs::create_dir_all(root)
        .with_context(|| format!("creating pin directory {}", root.display()))?;
    if !on_bpffs(root) {
        bail!(
            "--pin {} is not on a bpf filesystem: use a directory under /sys/fs/bpf",
            root.display()
        );
    }
    Ok(())
}

/// Removes a config's pinned set: links first (detaching the programs), then
/// maps and the manifest.
pub fn remove(dir: &Path) -> Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    for sub in ["links", "maps"] {
        let sub = dir.join(sub);
        if let Ok(entries) = fs::read_dir(&sub) {
            for entry in entries.flatten() {
                fs::remove_file(entry.path())
                    .with_context(|| format!("unpinning {}", entry.path().display()))?;
            }
            fs::remove_dir(&sub).with_context(|| format!("removing {}", sub.display()))?;
        }
    }
    // Temporary files of an interrupted manifest write go too.
    for entry in fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .flatten()
    {
        fs::remove_file(entry.path())
            .with_context(|| format!("removing {}", entry.path().display()))?;
    }
    fs::remove_dir(dir).with_context(|| format!("removing {}", dir.display()))
}

/// Names of the pinned configs under `root` (directories with a manifest).
pub fn pinned_configs(root: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|entry| entry.path().join(MANIFEST).exists() || entry.path().join("links").is_dir())
        .filter_map(|entry| entry.file_name().to_str().map(str::to_string))
        .collect();
    names.sort();
    names
}

/// `bpfsnap stop --pin DIR`: removes every pinned config; the names removed.
pub fn stop(root: &Path) -> Result<Vec<String>> {
    if !root.exists() {
        return Ok(Vec::new());
    }
    let names = pinned_configs(root);
    for name in &names {
        remove(&root.join(name))?;
    }
    // The root itself, if now empty (it may hold other things: leave those).
    let _ = fs::remove_dir(root);
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_are_stable_and_sensitive() {
        let a = fingerprint(&[b"config", b"object"]);
        assert_eq!(a, fingerprint(&[b"config", b"object"]));
        assert_ne!(a, fingerprint(&[b"config", b"object2"]));
        assert_ne!(
            a,
            fingerprint(&[b"configo", b"bject"]),
            "parts are delimited"
        );
        assert_eq!(a.len(), 16);
    }

    #[test]
    fn manifest_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let manifest = Manifest {
            fingerprint: "abc".into(),
            attached_at: 1.5,
            last_snapshot: None,
            programs: vec![PinnedProgram {
                name: "p".into(),
                section: "tp_btf/x".into(),
                attach: "tp_btf".into(),
                id: 7,
                tag: "00ff".into(),
            }],
        };
        write_manifest(dir.path(), &manifest).unwrap();
        assert_eq!(read_manifest(dir.path()).unwrap(), Some(manifest));
        fs::write(dir.path().join(MANIFEST), "garbage = [").unwrap();
        assert_eq!(read_manifest(dir.path()).unwrap(), None);
        assert_eq!(read_manifest(&dir.path().join("none")).unwrap(), None);
    }
}
