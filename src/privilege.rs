//! Least privilege: dropping capabilities once the probes are attached, and
//! refusing config and object files that someone other than root (or the
//! user running bpfsnap) could have changed — they become kernel code.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use anyhow::{bail, Context, Result};

/// Capabilities by name, as `--keep-caps` spells them.
const NAMES: &[(&str, u32)] = &[
    ("chown", 0),
    ("dac_override", 1),
    ("dac_read_search", 2),
    ("net_admin", 12),
    ("sys_admin", 21),
    ("sys_resource", 24),
    ("syslog", 34),
    ("perfmon", 38),
    ("bpf", 39),
];

/// Which capabilities survive the drop after attaching.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeepCaps {
    /// Keep everything (no drop).
    All,
    /// Keep only these (capability numbers); empty: drop every one.
    Only(Vec<u32>),
}

impl KeepCaps {
    /// Parses `none`, `all` or a comma-separated list of names
    /// (`syslog,dac_override`, with or without `cap_`).
    pub fn parse(text: &str) -> Result<KeepCaps, String> {
        match text {
            "all" => return Ok(KeepCaps::All),
            "none" | "" => return Ok(KeepCaps::Only(Vec::new())),
            _ => {}
        }
        let mut caps = Vec::new();
        for name in text.split(',') {
            let bare = name.trim().to_ascii_lowercase();
            let bare = bare.strip_prefix("cap_").unwrap_or(&bare);
            let Some((_, number)) = NAMES.iter().find(|(n, _)| *n == bare) else {
                let known: Vec<&str> = NAMES.iter().map(|(n, _)| *n).collect();
                return Err(format!(
                    "unknown capability {name:?}: use none, all, or some of {}",
                    known.join(", ")
                ));
            };
            caps.push(*number);
        }
        Ok(KeepCaps::Only(caps))
    }

    pub fn keeps(&self, cap: u32) -> bool {
        match self {
            KeepCaps::All => true,
            KeepCaps::Only(caps) => caps.contains(&cap),
        }
    }

    pub fn with(mut self, cap: u32) -> KeepCaps {
        if let KeepCaps::Only(caps) = &mut self {
            if !caps.contains(&cap) {
                caps.push(cap);
            }
        }
        self
    }
}

pub const CAP_SYS_ADMIN: u32 = 21;
pub const CAP_SYSLOG: u32 = 34;
pub const CAP_BPF: u32 = 39;

/// The calling thread's capability sets, as capget(2)/capset(2) (version 3)
/// exchange them: bit n of the 64-bit sets is capability n.
#[repr(C)]
#[derive(Default, Clone, Copy)]
struct CapSets([CapData; 2]);

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

const CAP_VERSION_3: u32 = 0x2008_0522;

impl CapSets {
    /// The calling thread's sets.
    fn get() -> Result<CapSets> {
        let mut header = CapHeader {
            version: CAP_VERSION_3,
            pid: 0,
        };
        let mut sets = CapSets::default();
        // SAFETY: a header and two data structs, as capget(2) expects for
        // version 3.
        if unsafe { libc::syscall(libc::SYS_capget, &mut header, sets.0.as_mut_ptr()) } != 0 {
            return Err(std::io::Error::last_os_error()).context("reading capabilities");
        }
        Ok(sets)
    }

    /// Makes these the calling thread's sets (capabilities are per thread).
    fn set(&self) -> Result<()> {
        let mut header = CapHeader {
            version: CAP_VERSION_3,
            pid: 0,
        };
        // SAFETY: as in `get`; the kernel only reads the data.
        if unsafe { libc::syscall(libc::SYS_capset, &mut header, self.0.as_ptr()) } != 0 {
            return Err(std::io::Error::last_os_error()).context("setting capabilities");
        }
        Ok(())
    }

    /// These sets reduced to `mask` (effective only, or all three).
    fn masked(&self, mask: u64, effective_only: bool) -> CapSets {
        let mut sets = *self;
        for (data, half) in sets.0.iter_mut().zip([mask as u32, (mask >> 32) as u32]) {
            data.effective &= half;
            if !effective_only {
                data.permitted &= half;
                data.inheritable &= half;
            }
        }
        sets
    }

    fn has_effective(&self, cap: u32) -> bool {
        self.0[(cap / 32) as usize].effective & (1 << (cap % 32)) != 0
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
    let KeepCaps::Only(caps) = keep else {
        return Ok(());
    };
    let mask = caps.iter().fold(0u64, |mask, cap| mask | 1 << cap);
    CapSets::get()?
        .masked(mask, false)
        .set()
        .context("dropping capabilities")?;
    // Ambient capabilities would survive in children; there are none to keep.
    // SAFETY: a plain prctl.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    };
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
pub fn capability_for_map_reads() -> Result<Option<u32>> {
    use libbpf_rs::{MapCore, MapFlags, MapHandle, MapType};

    let opts = libbpf_sys::bpf_map_create_opts {
        sz: std::mem::size_of::<libbpf_sys::bpf_map_create_opts>() as _,
        ..Default::default()
    };
    let map = MapHandle::create(MapType::Array, Some("bpfsnap_caps"), 4, 8, 1, &opts)
        .context("creating a map to test reads with")?;
    let held = CapSets::get()?;
    std::thread::scope(|scope| {
        scope
            .spawn(|| -> Result<Option<u32>> {
                let readable = |mask: u64| -> Result<bool> {
                    held.masked(mask, true).set()?;
                    Ok(map.lookup(&0u32.to_ne_bytes(), MapFlags::ANY).is_ok())
                };
                if readable(0)? {
                    return Ok(None);
                }
                for cap in [CAP_BPF, CAP_SYS_ADMIN] {
                    if held.has_effective(cap) && readable(1 << cap)? {
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
            KeepCaps::parse("syslog,CAP_DAC_OVERRIDE"),
            Ok(KeepCaps::Only(vec![34, 1]))
        );
        assert!(KeepCaps::parse("flying")
            .unwrap_err()
            .contains("unknown capability"));
        assert!(KeepCaps::parse("none")
            .unwrap()
            .with(CAP_SYSLOG)
            .keeps(CAP_SYSLOG));
        assert!(KeepCaps::All.keeps(3));
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
