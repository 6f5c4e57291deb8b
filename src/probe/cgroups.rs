//! ebpf_exporter's `cgroup_id_map`: a BPF map bpfsnap keeps holding the
//! cgroups (v2) whose path matches the config's regexps, so a program can
//! tell "in a cgroup of interest" with one lookup of
//! `bpf_get_current_cgroup_id()`. Filled before the programs attach, and
//! again at every snapshot (each window of `run`, each scrape of `serve`):
//! cgroups made since are added, ids of cgroups gone are removed.
//!
//! As in ebpf_exporter: a cgroup's id is its directory's inode number on the
//! cgroup2 file system, a path is matched whole (`/sys/fs/cgroup/…`), and the
//! value is 1. A `hash` map is keyed by the u64 id; a `cgrp_storage` map
//! (Linux 6.2+) by a descriptor of the cgroup's directory, and the kernel
//! frees a cgroup's entry with the cgroup.

use std::collections::BTreeMap;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use libbpf_rs::{AsRawLibbpf, MapCore, MapFlags, MapHandle, Object};
use regex::Regex;

use crate::spec::{CgroupIdMap as Spec, CgroupMapKind};

/// A config's cgroup id map and the cgroups it holds.
pub struct CgroupIdMap {
    map: MapHandle,
    kind: CgroupMapKind,
    regexps: Vec<Regex>,
    root: PathBuf,
    /// Id → path of the cgroups in the map.
    present: BTreeMap<u64, PathBuf>,
}

impl CgroupIdMap {
    /// The map `spec` names in the loaded `object`, checked against what
    /// its type needs, and filled.
    pub fn open(spec: &Spec, object: &Object) -> Result<CgroupIdMap> {
        let context = || format!("cgroup_id_map {:?}", spec.name);
        let found = object
            .maps()
            .find(|map| map.name() == spec.name.as_str())
            .with_context(|| format!("{}: the object has no map of that name", context()))?;
        // libbpf-rs has no name for cgrp_storage maps: compare numbers. A
        // hash may be an LRU one, as ebpf_exporter's example has it.
        let (key, types): (u32, &[u32]) = match spec.kind {
            CgroupMapKind::Hash => (
                8,
                &[
                    libbpf_sys::BPF_MAP_TYPE_HASH,
                    libbpf_sys::BPF_MAP_TYPE_LRU_HASH,
                ],
            ),
            CgroupMapKind::CgrpStorage => (4, &[libbpf_sys::BPF_MAP_TYPE_CGRP_STORAGE]),
        };
        // SAFETY: a getter on the object's own map.
        let map_type = unsafe { libbpf_sys::bpf_map__type(found.as_libbpf_object().as_ptr()) };
        if !types.contains(&map_type) || found.key_size() != key || found.value_size() != 8 {
            bail!(
                "{}: a {} map needs {key}-byte keys and 8-byte values; the object's is a {} map \
                 with {}-byte keys and {}-byte values",
                context(),
                type_name(types[0]),
                type_name(map_type),
                found.key_size(),
                found.value_size()
            );
        }
        let regexps = spec
            .regexps
            .iter()
            .map(|pattern| Regex::new(pattern))
            .collect::<Result<Vec<_>, _>>()
            .with_context(context)?;
        let mut map = CgroupIdMap {
            map: MapHandle::try_from(&found).with_context(context)?,
            kind: spec.kind,
            regexps,
            root: cgroup2_root()?,
            present: BTreeMap::new(),
        };
        map.refresh().with_context(context)?;
        Ok(map)
    }

    /// Adds the matching cgroups made since the last call, and removes the
    /// ids of those gone (a `cgrp_storage` entry goes with its cgroup).
    pub fn refresh(&mut self) -> Result<()> {
        let mut wanted = BTreeMap::new();
        walk(&self.root, &mut |path, id| {
            let text = path.to_string_lossy();
            if self.regexps.iter().any(|regexp| regexp.is_match(&text)) {
                wanted.insert(id, path.to_path_buf());
            }
        })?;
        for (id, path) in wanted
            .iter()
            .filter(|(id, _)| !self.present.contains_key(id))
        {
            self.add(*id, path)?;
        }
        if self.kind == CgroupMapKind::Hash {
            for id in self.present.keys().filter(|id| !wanted.contains_key(id)) {
                // Already gone is as good as removed.
                let _ = self.map.delete(&id.to_ne_bytes());
            }
        }
        self.present = wanted;
        Ok(())
    }

    fn add(&self, id: u64, path: &Path) -> Result<()> {
        let one = 1u64.to_ne_bytes();
        match self.kind {
            CgroupMapKind::Hash => self.map.update(&id.to_ne_bytes(), &one, MapFlags::ANY),
            CgroupMapKind::CgrpStorage => {
                let Ok(dir) = std::fs::File::open(path) else {
                    return Ok(()); // gone meanwhile
                };
                let fd = dir.as_raw_fd() as u32;
                self.map.update(&fd.to_ne_bytes(), &one, MapFlags::ANY)
            }
        }
        .with_context(|| format!("adding cgroup {} (id {id})", path.display()))
    }

    /// The cgroups in the map, by id (for tests and `-v`).
    pub fn present(&self) -> impl Iterator<Item = (&u64, &PathBuf)> {
        self.present.iter()
    }
}

/// libbpf's name of map type `number` (`hash`, `cgrp_storage`).
fn type_name(number: u32) -> String {
    // SAFETY: returns a static NUL-terminated string, or NULL.
    let name = unsafe { libbpf_sys::libbpf_bpf_map_type_str(number) };
    if name.is_null() {
        return format!("type {number}");
    }
    // SAFETY: as above, not NULL.
    unsafe { std::ffi::CStr::from_ptr(name) }
        .to_string_lossy()
        .into_owned()
}

/// Where the cgroup2 file system is mounted: /sys/fs/cgroup on current
/// distributions, /sys/fs/cgroup/unified beside cgroup v1 on older ones.
fn cgroup2_root() -> Result<PathBuf> {
    let mounts =
        std::fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    // Fields: ID PARENT DEV ROOT MOUNTPOINT OPTIONS... - FSTYPE SOURCE ...
    let mut roots: Vec<PathBuf> = mounts
        .lines()
        .filter(|line| {
            line.split(" - ")
                .nth(1)
                .is_some_and(|fs| fs.starts_with("cgroup2 "))
        })
        .filter_map(|line| line.split(' ').nth(4).map(PathBuf::from))
        .collect();
    roots.sort_by_key(|root| root != Path::new("/sys/fs/cgroup"));
    roots.into_iter().next().context(
        "cgroup_id_map needs the cgroup2 file system, which is not mounted: \
         mount -t cgroup2 none /sys/fs/cgroup (or /sys/fs/cgroup/unified beside cgroup v1)",
    )
}

/// Calls `found(path, id)` for `dir` and every cgroup below it; a cgroup
/// removed during the walk is skipped.
fn walk(dir: &Path, found: &mut impl FnMut(&Path, u64)) -> Result<()> {
    let Ok(meta) = std::fs::metadata(dir) else {
        return Ok(());
    };
    found(dir, meta.ino());
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(err) => return Err(err).with_context(|| format!("reading {}", dir.display())),
    };
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|kind| kind.is_dir()) {
            walk(&entry.path(), found)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The walk finds every directory with its inode, the root first, and
    /// does not fail on a directory that vanishes.
    #[test]
    fn walks_a_tree_with_each_directorys_inode() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
        std::fs::create_dir_all(dir.path().join("c")).unwrap();
        std::fs::write(dir.path().join("a/cgroup.procs"), "").unwrap();
        let mut seen = Vec::new();
        walk(dir.path(), &mut |path, id| {
            assert_eq!(std::fs::metadata(path).unwrap().ino(), id);
            seen.push(path.strip_prefix(dir.path()).unwrap().to_path_buf());
        })
        .unwrap();
        seen.sort();
        let want: Vec<PathBuf> = ["", "a", "a/b", "c"].iter().map(PathBuf::from).collect();
        assert_eq!(seen, want);
        walk(&dir.path().join("gone"), &mut |_, _| {
            panic!("nothing to find")
        })
        .unwrap();
    }
}
