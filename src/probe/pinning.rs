//! One pinned run's changes to its pin directory, kept only if the run
//! succeeds.
//!
//! A run that fails (a config that does not load, an output it cannot write)
//! leaves bpffs as it found it: the sets it pinned are removed, the outdated
//! sets it replaced are put back, and the sets of configs it no longer
//! selects are removed only once it has succeeded. What this run created is
//! told apart from what earlier runs pinned by each set's `state` map: an
//! earlier run's set keeps its map (and id); a set pinned by this run has a
//! new one. So every error path is covered, including those that return
//! before the probes they attached reach the caller.
//!
//! An outdated set is replaced by renaming it into `DIR/_replaced/` first
//! (bpffs refuses names with dots, so the name is reserved this way), pinning
//! the new set in its place, and removing the old one once the run succeeds.
//! A run killed half-way (SIGKILL) leaves a half-pinned set, or a replaced
//! one, behind: the next run and `bpfsnap stop` recognise and remove them;
//! a complete set it left is adopted by the next run.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use libbpf_rs::{MapCore, MapHandle};

use super::pin;

/// Where a set being replaced waits until the run that replaces it ends.
pub const REPLACED: &str = "_replaced";

/// A pinned run's changes to `root`; rolled back when dropped uncommitted.
pub struct Pinning {
    root: PathBuf,
    /// Each set present when the run began: its `state` map's id.
    before: BTreeMap<String, Option<u32>>,
    /// Configs the run selects (the sets of others go once it succeeds).
    selected: Vec<String>,
    /// Committed or rolled back: nothing more to do.
    done: bool,
    committed: bool,
}

/// What a rolled-back run left: paths it could not remove or restore.
#[derive(Debug, Default)]
pub struct RolledBack {
    pub left: Vec<String>,
    /// Sets of earlier runs, as they were.
    pub earlier: Vec<String>,
}

impl Pinning {
    /// Begins a pinned run on `root` (made on bpffs if need be) for the
    /// configs `selected`, after removing what an interrupted run left
    /// there; returns it and a line for each thing removed.
    pub fn begin(root: &Path, selected: &[&str]) -> Result<(Pinning, Vec<String>)> {
        pin::ensure_bpffs(root)?;
        let recovered = recover(root)?;
        let before = pin::set_dirs(root)
            .into_iter()
            .map(|name| {
                let id = state_id(&root.join(&name));
                (name, id)
            })
            .collect();
        let pinning = Pinning {
            root: root.to_path_buf(),
            before,
            selected: selected.iter().map(|s| s.to_string()).collect(),
            done: false,
            committed: false,
        };
        Ok((pinning, recovered))
    }

    /// Whether the set in `dir` was pinned by an earlier run (and is reused).
    pub fn is_earlier(&self, dir: &Path) -> bool {
        let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        self.before
            .get(name)
            .is_some_and(|id| id.is_some() && *id == state_id(dir))
    }

    /// Keeps what the run pinned: removes the sets it replaced and those of
    /// configs no longer selected; a line for each set removed.
    pub fn commit(&mut self) -> Result<Vec<String>> {
        if self.done {
            return Ok(Vec::new());
        }
        self.done = true;
        self.committed = true;
        let mut said = Vec::new();
        for name in pin::set_dirs(&self.root.join(REPLACED)) {
            pin::remove(&self.root.join(REPLACED).join(&name))?;
        }
        remove_empty_dir(&self.root.join(REPLACED));
        for name in pin::set_dirs(&self.root) {
            if !self.selected.contains(&name) {
                said.push(format!("unpinning {name}: no longer selected"));
                pin::remove(&self.root.join(&name))?;
            }
        }
        Ok(said)
    }

    /// Undoes the run: removes every set it pinned and puts back the sets it
    /// replaced.
    pub fn roll_back(&mut self) -> RolledBack {
        self.done = true;
        let mut rolled = RolledBack::default();
        for name in pin::set_dirs(&self.root) {
            let dir = self.root.join(&name);
            if self.is_earlier(&dir) {
                rolled.earlier.push(name);
                continue;
            }
            if let Err(err) = pin::remove(&dir) {
                rolled.left.push(format!("{} ({err:#})", dir.display()));
            }
        }
        let replaced = self.root.join(REPLACED);
        for name in pin::set_dirs(&replaced) {
            let (from, to) = (replaced.join(&name), self.root.join(&name));
            match fs::rename(&from, &to) {
                Ok(()) => rolled.earlier.push(name),
                Err(err) => rolled.left.push(format!("{} ({err})", from.display())),
            }
        }
        remove_empty_dir(&replaced);
        rolled.earlier.sort();
        rolled
    }

    /// The line a failed run's error ends with: what is left pinned, and
    /// how to remove it.
    pub fn failed_note(&mut self) -> String {
        let root = self.root.display().to_string();
        if self.committed {
            return format!(
                "--pin: the sets pinned in {root} stay (`bpfsnap stop --pin {root}` removes them)"
            );
        }
        let rolled = self.roll_back();
        if !rolled.left.is_empty() {
            return format!(
                "--pin: left pinned: {} (`bpfsnap stop --pin {root}` removes them)",
                rolled.left.join(", ")
            );
        }
        match rolled.earlier.is_empty() {
            true => "--pin: nothing is left pinned".to_string(),
            false => format!(
                "--pin: this run left nothing pinned; the sets of earlier runs ({}) are as they \
                 were (`bpfsnap stop --pin {root}` removes them)",
                rolled.earlier.join(", "),
            ),
        }
    }
}

impl Drop for Pinning {
    fn drop(&mut self) {
        if !self.done {
            self.roll_back();
        }
    }
}

/// Sets `dir` (an outdated or broken set) aside until the run that replaces
/// it ends (see [`Pinning`]).
pub fn set_aside(root: &Path, dir: &Path) -> Result<PathBuf> {
    let replaced = root.join(REPLACED);
    fs::create_dir_all(&replaced).with_context(|| format!("creating {}", replaced.display()))?;
    let aside = replaced.join(dir.file_name().unwrap_or_default());
    pin::remove(&aside)?;
    fs::rename(dir, &aside)
        .with_context(|| format!("moving {} to {}", dir.display(), aside.display()))?;
    Ok(aside)
}

/// Removes what an interrupted run left under `root`: sets it was replacing
/// and sets it had not finished pinning. A line for each.
fn recover(root: &Path) -> Result<Vec<String>> {
    let mut said = Vec::new();
    let replaced = root.join(REPLACED);
    for name in pin::set_dirs(&replaced) {
        said.push(format!(
            "removing the outdated set of {name} an interrupted run was replacing"
        ));
        pin::remove(&replaced.join(&name))?;
    }
    remove_empty_dir(&replaced);
    for name in pin::set_dirs(root) {
        let dir = root.join(&name);
        if pin::read_manifest(&dir)?.is_none() {
            said.push(format!(
                "removing {name}: an interrupted run left it half-pinned"
            ));
            pin::remove(&dir)?;
        }
    }
    Ok(said)
}

/// The id of the `state` map of the set in `dir`.
fn state_id(dir: &Path) -> Option<u32> {
    let map = MapHandle::from_pinned_path(dir.join(pin::STATE)).ok()?;
    map.info().ok().map(|info| info.info.id)
}

fn remove_empty_dir(dir: &Path) {
    // Not empty, or not there: either way nothing to do.
    let _ = fs::remove_dir(dir);
}
