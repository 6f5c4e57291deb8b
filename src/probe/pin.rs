//! Persistent probes for cron (`--pin DIR`): programs stay attached and their
//! maps stay pinned in bpffs between runs, so each run only snapshots and
//! counters stay monotonic instead of restarting every window.
//!
//! bpffs holds only BPF objects and directories, so the pinned set describes
//! itself with those. Layout, one directory per config:
//! - `DIR/NAME/fingerprint-HASH/`: an empty directory whose name is a hash of
//!   config + object + bpfsnap version;
//! - `DIR/NAME/state`: a small array map: [0] when the programs were attached
//!   (counters count from there), [1] when the last snapshot was written (the
//!   start of the next window), [2] the time counted so far when the links
//!   are not pinned (below), in ns;
//! - `DIR/NAME/maps/MAP` and `DIR/NAME/links/PROGRAM_N` (bpffs refuses every
//!   name with a dot: `kernel/bpf/inode.c`, `bpf_lookup`).
//!
//! A kernel may refuse to pin a link: a link that is a perf event rather
//! than a BPF link object (kernels without BPF perf links attach
//! tracepoints, kprobes and perf events that way) cannot be pinned. Then
//! only the maps are pinned: each run attaches the programs for its window
//! and reuses the pinned maps, so counters still carry on across runs,
//! counting during the windows only, and slot [2] adds up those windows.
//!
//! A run whose fingerprint differs (changed config, new object, newer
//! bpfsnap) removes the old set and pins a new one; `bpfsnap stop --pin DIR`
//! removes everything, which detaches the programs.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use libbpf_rs::{MapCore, MapFlags, MapHandle, MapType};

pub(super) const STATE: &str = "state";
/// Slots of the state map.
const ATTACHED_AT: u32 = 0;
const LAST_SNAPSHOT: u32 = 1;
const COUNTED: u32 = 2;
/// Part of every fingerprint: a set pinned with another layout is replaced.
pub const LAYOUT: &[u8] = b"pin layout 2: links PROGRAM_N, state [attached, last, counted]";
const FINGERPRINT_PREFIX: &str = "fingerprint-";
/// statfs magic of bpffs.
const BPF_FS_MAGIC: i64 = 0xcafe4a11;

/// What a pinned config's directory says about itself.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    pub fingerprint: String,
    /// Unix time the programs were attached: counters count from here.
    pub attached_at: f64,
    /// Unix time of the last snapshot written (the start of the next window).
    pub last_snapshot: Option<f64>,
    /// Links pinned; 0 when the kernel refused to pin them: then only the
    /// maps persist, and each run attaches the programs again for its window.
    pub links: usize,
    /// Seconds the programs counted in the runs' windows, when the links are
    /// not pinned (with pinned links they count all the time).
    pub counted: f64,
    /// (program name, kernel id) of every pinned link.
    pub programs: Vec<(String, u32)>,
}

impl Manifest {
    /// Whether the programs stay attached between runs.
    pub fn links_pinned(&self) -> bool {
        self.links > 0
    }
}

/// A probe's pin directory and manifest.
#[derive(Debug, Clone)]
pub struct Pinned {
    pub dir: PathBuf,
    pub manifest: Manifest,
}

impl Pinned {
    /// Seconds the set's counters have counted by `now`: since they were
    /// attached, or (links not pinned) the earlier runs' windows and this
    /// run's, whose programs were attached at `attached_now`.
    pub fn counted_seconds(&self, now: f64, attached_now: f64) -> f64 {
        match self.manifest.links_pinned() {
            true => now - self.manifest.attached_at,
            false => self.manifest.counted + (now - attached_now).max(0.0),
        }
    }

    /// A set of maps only whose links the kernel has now pinned: from here
    /// its programs count all the time. Its start moves back by the time
    /// counted in earlier windows, so that the time counted stays right.
    pub fn links_now_pinned(&mut self, links: usize, attached_now: f64) -> Result<()> {
        let state = MapHandle::from_pinned_path(self.dir.join(STATE))
            .context("opening the pinned state")?;
        let start = stored_time(attached_now - self.manifest.counted);
        set_time(&state, ATTACHED_AT, start)?;
        self.manifest.attached_at = start;
        self.manifest.links = links;
        Ok(())
    }

    /// Records that a snapshot was written at `time` (the next window's
    /// start) and, links not pinned, the time this run counted so far
    /// (programs attached at `attached_now`); returns the manifest as the
    /// next run will read it.
    pub fn record_snapshot(&mut self, time: f64, attached_now: f64) -> Result<()> {
        let state = MapHandle::from_pinned_path(self.dir.join(STATE))
            .context("opening the pinned state")?;
        set_time(&state, LAST_SNAPSHOT, time)?;
        if !self.manifest.links_pinned() {
            // Stored from what the run found, so interval windows are not
            // added up twice.
            let counted = self.counted_seconds(time, attached_now);
            set_time(&state, COUNTED, counted)?;
        }
        Ok(())
    }
}

/// A stable 64-bit FNV-1a over everything that makes a pinned set current
/// (each part ended by a byte no UTF-8 text has, so parts cannot run into
/// each other).
pub fn fingerprint(parts: &[&[u8]]) -> String {
    use std::hash::Hasher;
    let mut hash = fnv::FnvHasher::default();
    for part in parts {
        hash.write(part);
        hash.write(&[0xff]);
    }
    format!("{:016x}", hash.finish())
}

/// `time` as it reads back from the state map (whole nanoseconds), so a run
/// and the next report the same value.
pub fn stored_time(time: f64) -> f64 {
    ((time * 1e9) as u64) as f64 / 1e9
}

fn set_time(state: &MapHandle, slot: u32, time: f64) -> Result<()> {
    let nanos = (time * 1e9) as u64;
    state
        .update(&slot.to_ne_bytes(), &nanos.to_ne_bytes(), MapFlags::ANY)
        .context("updating the pinned state")
}

fn get_time(state: &MapHandle, slot: u32) -> Option<f64> {
    let value = state.lookup(&slot.to_ne_bytes(), MapFlags::ANY).ok()??;
    let nanos = u64::from_ne_bytes(value.get(..8)?.try_into().ok()?);
    (nanos != 0).then_some(nanos as f64 / 1e9)
}

/// The manifest of a pinned config, if `dir` holds a complete one.
pub fn read_manifest(dir: &Path) -> Result<Option<Manifest>> {
    let Some(fingerprint) = fingerprint_in(dir) else {
        return Ok(None);
    };
    let Ok(state) = MapHandle::from_pinned_path(dir.join(STATE)) else {
        return Ok(None);
    };
    let Some(attached_at) = get_time(&state, ATTACHED_AT) else {
        return Ok(None);
    };
    let mut programs = Vec::new();
    let mut links = 0;
    for entry in fs::read_dir(dir.join("links"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let file = entry.file_name().to_string_lossy().into_owned();
        let name = program_of_link(&file).to_string();
        if let Some(id) = linked_program_id(&entry.path()) {
            links += 1;
            if !programs.iter().any(|(n, _)| *n == name) {
                programs.push((name, id));
            }
        }
    }
    programs.sort();
    Ok(Some(Manifest {
        fingerprint,
        attached_at,
        last_snapshot: get_time(&state, LAST_SNAPSHOT),
        links,
        counted: get_time(&state, COUNTED).unwrap_or(0.0),
        programs,
    }))
}

/// The pin name of link `index` of `program`: `PROGRAM_N`.
pub fn link_name(program: &str, index: usize) -> String {
    format!("{program}_{index}")
}

/// The program a link's pin name ([`link_name`]) is of.
fn program_of_link(file: &str) -> &str {
    match file.rsplit_once('_') {
        Some((program, index)) if index.bytes().all(|b| b.is_ascii_digit()) => program,
        _ => file,
    }
}

/// The fingerprint a set's marker directory in `dir` names, if any.
fn fingerprint_in(dir: &Path) -> Option<String> {
    fs::read_dir(dir).ok()?.flatten().find_map(|entry| {
        entry
            .file_name()
            .to_str()?
            .strip_prefix(FINGERPRINT_PREFIX)
            .map(str::to_string)
    })
}

/// The id of the program a pinned link attaches.
fn linked_program_id(path: &Path) -> Option<u32> {
    let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: a valid path; the fd is closed below.
    let fd = unsafe { libbpf_sys::bpf_obj_get(c_path.as_ptr()) };
    if fd < 0 {
        return None;
    }
    // SAFETY: bpf_link_info is plain data; the kernel fills at most `len` bytes.
    let mut info: libbpf_sys::bpf_link_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libbpf_sys::bpf_link_info>() as u32;
    let rc = unsafe { libbpf_sys::bpf_link_get_info_by_fd(fd, &mut info, &mut len) };
    // SAFETY: we own fd.
    unsafe { libc::close(fd) };
    (rc == 0).then_some(info.prog_id)
}

/// Writes the self-description of a freshly pinned set.
pub fn write_manifest(dir: &Path, manifest: &Manifest) -> Result<()> {
    fs::create_dir_all(dir.join(format!("{FINGERPRINT_PREFIX}{}", manifest.fingerprint)))
        .context("creating the fingerprint marker")?;
    // SAFETY: plain data; all-zero is the documented default.
    let opts = libbpf_sys::bpf_map_create_opts {
        sz: std::mem::size_of::<libbpf_sys::bpf_map_create_opts>() as _,
        ..unsafe { std::mem::zeroed() }
    };
    let mut state = MapHandle::create(MapType::Array, Some("bpfsnap_state"), 4, 8, 3, &opts)
        .context("creating the pinned state map")?;
    set_time(&state, ATTACHED_AT, manifest.attached_at)?;
    if let Some(last) = manifest.last_snapshot {
        set_time(&state, LAST_SNAPSHOT, last)?;
    }
    state.pin(dir.join(STATE)).context("pinning the state map")
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
/// maps, state and the fingerprint marker.
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
    for entry in fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .flatten()
    {
        let path = entry.path();
        let removed = if path.is_dir() {
            fs::remove_dir(&path)
        } else {
            fs::remove_file(&path)
        };
        removed.with_context(|| format!("removing {}", path.display()))?;
    }
    fs::remove_dir(dir).with_context(|| format!("removing {}", dir.display()))
}

/// Names of the pinned sets under `root`, complete or not: directories
/// holding what a set holds (maps, links, state, the fingerprint). Other
/// things under `root` are not ours and are left alone.
pub fn set_dirs(root: &Path) -> Vec<String> {
    let is_set = |dir: &Path| {
        ["maps", "links", STATE]
            .iter()
            .any(|part| dir.join(part).exists())
            || fingerprint_in(dir).is_some()
    };
    let mut names: Vec<String> = fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|entry| is_set(&entry.path()))
        .filter_map(|entry| entry.file_name().to_str().map(str::to_string))
        .filter(|name| name != super::pinning::REPLACED)
        .collect();
    names.sort();
    names
}

/// `bpfsnap stop --pin DIR`: removes every pinned set, complete or left
/// half-pinned or replaced by an interrupted run; the names removed.
pub fn stop(root: &Path) -> Result<Vec<String>> {
    if !root.exists() {
        return Ok(Vec::new());
    }
    let replaced = root.join(super::pinning::REPLACED);
    for name in set_dirs(&replaced) {
        remove(&replaced.join(name))?;
    }
    let _ = fs::remove_dir(&replaced);
    let names = set_dirs(root);
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
    fn link_names_have_no_dot_and_name_their_program() {
        for (program, index) in [("syscalls_enter", 0), ("count_2", 13), ("x", 7)] {
            let name = link_name(program, index);
            assert!(!name.contains('.'), "bpffs refuses {name}");
            assert_eq!(program_of_link(&name), program);
        }
        assert_eq!(program_of_link("odd"), "odd");
    }
}
