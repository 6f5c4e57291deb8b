//! Least privilege: dropping capabilities once the probes are attached, and
//! refusing config and object files that someone other than root (or the
//! user running bpfsnap) could have changed — they become kernel code.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use anyhow::{bail, Context, Result};
use caps::{CapSet, Capability, CapsHashSet};

/// Which capabilities survive the drop after attaching.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeepCaps {
    /// Keep everything (no drop).
    All,
    /// Keep only these; empty: drop every one.
    Only(Vec<Capability>),
}

impl KeepCaps {
    /// Parses `none`, `all` or a comma-separated list of capability names
    /// (`syslog,dac_override`, with or without `cap_`, any case).
    pub fn parse(text: &str) -> Result<KeepCaps, String> {
        match text {
            "all" => return Ok(KeepCaps::All),
            "none" | "" => return Ok(KeepCaps::Only(Vec::new())),
            _ => {}
        }
        let mut kept = Vec::new();
        for name in text.split(',') {
            let upper = name.trim().to_ascii_uppercase();
            let full = match upper.starts_with("CAP_") {
                true => upper,
                false => format!("CAP_{upper}"),
            };
            let cap = full.parse::<Capability>().map_err(|_| {
                format!(
                    "unknown capability {name:?}: use none, all, or names from capabilities(7) \
                     such as syslog,dac_override"
                )
            })?;
            kept.push(cap);
        }
        Ok(KeepCaps::Only(kept))
    }

    pub fn keeps(&self, cap: Capability) -> bool {
        match self {
            KeepCaps::All => true,
            KeepCaps::Only(kept) => kept.contains(&cap),
        }
    }

    pub fn with(mut self, cap: Capability) -> KeepCaps {
        if let KeepCaps::Only(kept) = &mut self {
            if !kept.contains(&cap) {
                kept.push(cap);
            }
        }
        self
    }
}

/// What the process kept once attached ([`drop_capabilities`]), for the
/// threads that were already running to apply to themselves.
static KEPT: std::sync::OnceLock<KeepCaps> = std::sync::OnceLock::new();

/// Reduces the calling thread's effective, permitted and inheritable sets
/// to `keep` (only ever dropping: a capability not held is not gained), and
/// has threads that started before (see [`follow_drop`]) do the same:
/// capset(2) changes the calling thread only, and a thread keeps the
/// capabilities it started with. Threads started afterwards inherit the
/// calling thread's.
pub fn drop_capabilities(keep: &KeepCaps) -> Result<()> {
    drop_own(keep)?;
    // Once per process: a later call (tests) keeps the first.
    let _ = KEPT.set(keep.clone());
    Ok(())
}

/// For a thread that started before [`drop_capabilities`]: whether the
/// drop has been made, and if so, made for this thread too.
pub fn follow_drop() -> Result<bool> {
    match KEPT.get() {
        Some(keep) => drop_own(keep).map(|()| true),
        None => Ok(false),
    }
}

/// [`drop_capabilities`] for the calling thread alone.
fn drop_own(keep: &KeepCaps) -> Result<()> {
    let KeepCaps::Only(kept) = keep else {
        return Ok(());
    };
    let kept: CapsHashSet = kept.iter().copied().collect();
    // Effective first: it may never hold more than permitted.
    for set in [CapSet::Effective, CapSet::Inheritable, CapSet::Permitted] {
        let held = caps::read(None, set).context("reading capabilities")?;
        let left: CapsHashSet = held.intersection(&kept).copied().collect();
        caps::set(None, set, &left).context("dropping capabilities")?;
    }
    // Ambient capabilities would survive in children; there are none to keep.
    caps::clear(None, CapSet::Ambient).context("clearing ambient capabilities")?;
    Ok(())
}

/// The capability this kernel wants for every bpf() command, reading a map
/// through a descriptor already open included, or None if reads need none.
/// Some kernels check `kernel.unprivileged_bpf_disabled` at the top of
/// bpf(2) for every command (Debian's 5.10 does; later kernels check it only
/// where a map or program is made), so dropping that capability after attach
/// would lose every window's reads. Found by trying: a thread of our own
/// lowers its effective set (capabilities are per thread; the rest of the
/// process keeps its own) and reads a one-entry map made for the purpose,
/// with no capability, then with CAP_BPF alone, then CAP_SYS_ADMIN alone.
pub fn capability_for_map_reads() -> Result<Option<Capability>> {
    use libbpf_rs::{MapCore, MapFlags, MapHandle, MapType};

    let opts = libbpf_sys::bpf_map_create_opts {
        sz: std::mem::size_of::<libbpf_sys::bpf_map_create_opts>() as _,
        ..Default::default()
    };
    let map = MapHandle::create(MapType::Array, Some("bpfsnap_caps"), 4, 8, 1, &opts)
        .context("creating a map to test reads with")?;
    let held = caps::read(None, CapSet::Effective).context("reading capabilities")?;
    std::thread::scope(|scope| {
        scope
            .spawn(|| -> Result<Option<Capability>> {
                let readable = |with: &[Capability]| -> Result<bool> {
                    let effective: CapsHashSet = with.iter().copied().collect();
                    caps::set(None, CapSet::Effective, &effective)
                        .context("lowering the test thread's capabilities")?;
                    Ok(map.lookup(&0u32.to_ne_bytes(), MapFlags::ANY).is_ok())
                };
                if readable(&[])? {
                    return Ok(None);
                }
                for cap in [Capability::CAP_BPF, Capability::CAP_SYS_ADMIN] {
                    if held.contains(&cap) && readable(&[cap])? {
                        return Ok(Some(cap));
                    }
                }
                anyhow::bail!("map reads fail even with CAP_BPF or CAP_SYS_ADMIN alone")
            })
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("the capability test thread panicked")))
    })
}

/// Refuses `path` if it could have been changed by someone other than root
/// or this user: group- or world-writable, owned by another user, or in a
/// directory (its own or, through a symlink, its target's) where others could
/// replace it.
pub fn check_file_owner(path: &Path) -> Result<()> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    check_trusted(path, &meta)?;
    check_directories(path)
}

/// Reads `path` through one descriptor whose own metadata is checked, so
/// what was checked is what is read, even if the file is swapped meanwhile.
pub fn read_trusted(path: &Path) -> Result<Vec<u8>> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let meta = file
        .metadata()
        .with_context(|| format!("cannot read {}", path.display()))?;
    check_trusted(path, &meta)?;
    check_directories(path)?;
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    std::io::Read::read_to_end(&mut file, &mut bytes)
        .with_context(|| format!("cannot read {}", path.display()))?;
    Ok(bytes)
}

/// The owner and mode of a file about to run in the kernel.
fn check_trusted(path: &Path, meta: &std::fs::Metadata) -> Result<()> {
    // SAFETY: plain getter.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != 0 && meta.uid() != me {
        bail!(
            "{} is owned by uid {}, not root or the user running bpfsnap: it would run in the kernel; \
             chown it, or pass --allow-untrusted-files",
            path.display(),
            meta.uid()
        );
    }
    if meta.mode() & 0o022 != 0 {
        bail!(
            "{} is writable by group or others (mode {:o}): it would run in the kernel; \
             chmod go-w it, or pass --allow-untrusted-files",
            path.display(),
            meta.mode() & 0o7777
        );
    }
    Ok(())
}

/// The directory of `path` and, through a symlink, its target's.
fn check_directories(path: &Path) -> Result<()> {
    check_directory(path)?;
    if let Ok(target) = std::fs::canonicalize(path) {
        check_directory(&target)?;
    }
    Ok(())
}

/// Others may replace files in a directory they can write, unless it is
/// sticky (only owners rename or delete) and owned by root or this user.
fn check_directory(path: &Path) -> Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let meta = std::fs::metadata(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    // SAFETY: plain getter.
    let me = unsafe { libc::geteuid() };
    let sticky_and_ours = meta.mode() & 0o1000 != 0 && (meta.uid() == 0 || meta.uid() == me);
    if meta.mode() & 0o022 != 0 && !sticky_and_ours {
        bail!(
            "{} is in {}, which group or others can write (mode {:o}): they could replace it with \
             code that runs in the kernel; chmod go-w the directory, or pass --allow-untrusted-files",
            path.display(),
            dir.display(),
            meta.mode() & 0o7777
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn parses_keep_caps() {
        assert_eq!(KeepCaps::parse("none"), Ok(KeepCaps::Only(vec![])));
        assert_eq!(KeepCaps::parse("all"), Ok(KeepCaps::All));
        assert_eq!(
            KeepCaps::parse("syslog,CAP_DAC_OVERRIDE,perfmon"),
            Ok(KeepCaps::Only(vec![
                Capability::CAP_SYSLOG,
                Capability::CAP_DAC_OVERRIDE,
                Capability::CAP_PERFMON
            ]))
        );
        assert!(KeepCaps::parse("flying")
            .unwrap_err()
            .contains("unknown capability"));
        assert!(KeepCaps::parse("none")
            .unwrap()
            .with(Capability::CAP_SYSLOG)
            .keeps(Capability::CAP_SYSLOG));
        assert!(KeepCaps::All.keeps(Capability::CAP_FOWNER));
    }

    #[test]
    fn refuses_writable_files() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("x.toml");
        std::fs::write(&file, "").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        check_file_owner(&file).unwrap();
        assert_eq!(read_trusted(&file).unwrap(), b"");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = check_file_owner(&file).unwrap_err().to_string();
        assert!(
            err.contains("which group or others can write (mode 777)"),
            "{err}"
        );
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
        check_file_owner(&file).unwrap();
        // A link from a safe directory into an open one: refused both ways.
        let safe = tempfile::tempdir().unwrap();
        std::fs::set_permissions(safe.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let link = safe.path().join("x.toml");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        for err in [
            check_file_owner(&link).unwrap_err(),
            read_trusted(&link).unwrap_err(),
        ] {
            assert!(
                err.to_string().contains("which group or others can write"),
                "{err}"
            );
        }
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666)).unwrap();
        let err = check_file_owner(&file).unwrap_err().to_string();
        assert!(
            err.contains("writable by group or others (mode 666)"),
            "{err}"
        );
    }
}
