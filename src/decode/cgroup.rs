//! `cgroup`: a decimal cgroup id (from `uint`; on cgroup v2 the inode number
//! of the cgroup's directory, as `bpf_get_current_cgroup_id` returns) → the
//! cgroup's full path, e.g. `/sys/fs/cgroup/system.slice/ssh.service`; an id
//! with no directory becomes `unknown_cgroup_id:<id>`.
//!
//! ebpf_exporter compatible (input, full path, unknown form); on a hybrid
//! v1/v2 host only the v2 tree (`/sys/fs/cgroup/unified`) is walked, as v2
//! ids are what BPF sees and v1 inode numbers would collide with them.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{LazyLock, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Result;

use super::{DecodeError, Decoder};
use crate::spec::DecoderSpec;

/// Minimum time between two walks of the tree caused by unknown ids.
const SYSTEM_REWALK_INTERVAL: Duration = Duration::from_secs(1);

/// The id → path map of one cgroup tree, walked on first use and again on a
/// miss (at most once per interval). A cgroup that goes away is kept until
/// two walks in a row have not found it: a map read just after it went may
/// still hold its keys, and forgetting it then would leave that last read
/// without its path; forgetting it at all keeps the map to the cgroups that
/// live, not every one there has been (containers come and go by the
/// thousand). Ids are not reused, so a path kept a walk longer is never
/// another cgroup's.
pub struct CgroupPaths {
    root: fn() -> PathBuf,
    rewalk_interval: Duration,
    state: Mutex<State>,
}

struct State {
    paths: BTreeMap<u64, Known>,
    /// Walks so far; the number of the last one.
    walks: u64,
    walked: Option<Instant>,
}

/// A cgroup's path and the last walk that found it.
struct Known {
    path: PathBuf,
    seen: u64,
}

impl CgroupPaths {
    pub const fn new(root: fn() -> PathBuf, rewalk_interval: Duration) -> CgroupPaths {
        CgroupPaths {
            root,
            rewalk_interval,
            state: Mutex::new(State {
                paths: BTreeMap::new(),
                walks: 0,
                walked: None,
            }),
        }
    }

    /// Where the tree is: the v2 hierarchy's root directory.
    pub fn root(&self) -> PathBuf {
        (self.root)()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The path of cgroup `id`, if its directory exists (or existed until
    /// the walk before last).
    pub fn path(&self, id: u64) -> Option<PathBuf> {
        let mut state = self.lock();
        if let Some(known) = state.paths.get(&id) {
            return Some(known.path.clone());
        }
        if state
            .walked
            .is_some_and(|walked| walked.elapsed() < self.rewalk_interval)
        {
            return None;
        }
        state.rewalk(&(self.root)());
        state.paths.get(&id).map(|known| known.path.clone())
    }

    /// Drops from `cached` the ids this map has forgotten, if it has walked
    /// since `*walk` (then set to its last walk): what others keep by cgroup
    /// id goes when the cgroup does.
    pub fn forget_gone<V>(&self, cached: &mut HashMap<u64, V>, walk: &mut u64) {
        let state = self.lock();
        if state.walks == *walk {
            return;
        }
        cached.retain(|id, _| state.paths.contains_key(id));
        *walk = state.walks;
    }
}

impl State {
    /// Walks the tree under `root` again, forgetting cgroups that neither
    /// this walk nor the one before found.
    fn rewalk(&mut self, root: &Path) {
        self.walks += 1;
        let walk = self.walks;
        walk_tree(root, |id, path| {
            self.paths.insert(id, Known { path, seen: walk });
        });
        self.paths.retain(|_, known| walk - known.seen < 2);
        self.walked = Some(Instant::now());
    }
}

/// The system's tree, shared by every `cgroup` decoder (and the container
/// decoders when the host's `/` is ours).
pub(super) static SYSTEM: CgroupPaths = CgroupPaths::new(system_root, SYSTEM_REWALK_INTERVAL);

/// The cgroup v2 tree: /sys/fs/cgroup itself, or its `unified` subtree on a
/// hybrid host; on a v1-only host all of /sys/fs/cgroup (like ebpf_exporter).
fn system_root() -> PathBuf {
    static ROOT: LazyLock<PathBuf> = LazyLock::new(|| v2_root(Path::new("/sys/fs/cgroup")));
    ROOT.clone()
}

/// The cgroup v2 tree of a cgroup file system mounted at `base`: `base`
/// itself, or its `unified` subtree on a hybrid host, else `base`.
pub(super) fn v2_root(base: &Path) -> PathBuf {
    [base.to_path_buf(), base.join("unified")]
        .into_iter()
        .find(|dir| dir.join("cgroup.controllers").exists())
        .unwrap_or_else(|| base.to_path_buf())
}

/// Calls `found` with the inode number and path of every directory under
/// `root` (and `root` itself). Unreadable or vanishing directories are
/// skipped: the tree changes under us.
fn walk_tree(root: &Path, mut found: impl FnMut(u64, PathBuf)) {
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        // symlink_metadata: never follow links out of the tree.
        let Ok(meta) = fs::symlink_metadata(&dir) else {
            continue;
        };
        if !meta.is_dir() {
            continue;
        }
        found(meta.ino(), dir.clone());
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|kind| kind.is_dir()) {
                pending.push(entry.path());
            }
        }
    }
}

pub struct Cgroup {
    paths: &'static CgroupPaths,
}

impl Decoder for Cgroup {
    fn decode(&self, input: &[u8], out: &mut Vec<u8>) -> Result<(), DecodeError> {
        let id = std::str::from_utf8(input)
            .ok()
            .and_then(|text| text.parse::<u64>().ok())
            .ok_or_else(|| {
                DecodeError::new(
                    "cgroup",
                    "input is not a decimal number: put `uint` before `cgroup`",
                )
            })?;
        match self.paths.path(id) {
            Some(path) => out.extend_from_slice(path.as_os_str().as_bytes()),
            None => out.extend_from_slice(format!("unknown_cgroup_id:{id}").as_bytes()),
        }
        Ok(())
    }
}

/// Builds `cgroup` for a label of `size` bytes. Does not walk the tree: that
/// happens on the first decode.
pub fn build(spec: &DecoderSpec, _size: usize) -> Result<Box<dyn Decoder>> {
    super::no_options(spec)?;
    Ok(Box::new(Cgroup { paths: &SYSTEM }))
}

#[cfg(test)]
mod tests {
    use std::sync::OnceLock;

    use super::*;
    use crate::decode::{check_table, lasting_temp_dir};

    /// A fake tree in a temporary directory of its own (tests run in
    /// parallel, and a walk must not see another test's directories).
    fn temp_root(dir: &'static OnceLock<PathBuf>) -> PathBuf {
        dir.get_or_init(lasting_temp_dir).clone()
    }

    fn id_of(path: &Path) -> u64 {
        fs::metadata(path).unwrap().ino()
    }

    fn text(path: &Path) -> String {
        path.to_str().unwrap().to_string()
    }

    #[test]
    fn resolves_ids_to_full_paths() {
        fn fake_root() -> PathBuf {
            static DIR: OnceLock<PathBuf> = OnceLock::new();
            temp_root(&DIR)
        }
        static PATHS: CgroupPaths = CgroupPaths::new(fake_root, Duration::ZERO);
        let root = fake_root();
        let service = root.join("system.slice/ssh.service");
        fs::create_dir_all(&service).unwrap();
        fs::write(root.join("cgroup.procs"), "").unwrap();
        let decoder = Cgroup { paths: &PATHS };
        let (root_id, service_id) = (id_of(&root).to_string(), id_of(&service).to_string());
        let (root_path, service_path) = (text(&root), text(&service));
        let file_id = id_of(&root.join("cgroup.procs")).to_string();
        let unknown_file = format!("unknown_cgroup_id:{file_id}");
        check_table(
            &decoder,
            &[
                (service_id.as_bytes(), Ok(service_path.as_str())),
                (root_id.as_bytes(), Ok(root_path.as_str())),
                (file_id.as_bytes(), Ok(unknown_file.as_str())), // files are not cgroups
                (b"0", Ok("unknown_cgroup_id:0")),
                (
                    b"18446744073709551615",
                    Ok("unknown_cgroup_id:18446744073709551615"),
                ),
                (b"", Err("not a decimal number")),
                (b"-1", Err("not a decimal number")),
                (&[7, 0, 0, 0, 0, 0, 0, 0], Err("put `uint` before `cgroup`")),
            ],
        );

        // A cgroup created after the first walk is found by the next one;
        // one removed since stays resolvable for a walk (see below).
        let late = root.join("late.scope");
        fs::create_dir(&late).unwrap();
        let (late_id, late_path) = (id_of(&late).to_string(), text(&late));
        fs::remove_dir(&service).unwrap();
        check_table(
            &decoder,
            &[
                (late_id.as_bytes(), Ok(late_path.as_str())),
                (service_id.as_bytes(), Ok(service_path.as_str())),
            ],
        );
    }

    #[test]
    fn rewalks_at_most_once_per_interval() {
        fn root() -> PathBuf {
            static DIR: OnceLock<PathBuf> = OnceLock::new();
            temp_root(&DIR)
        }
        static PATHS: CgroupPaths = CgroupPaths::new(root, Duration::from_secs(3600));
        fs::create_dir_all(root()).unwrap();
        let decoder = Cgroup { paths: &PATHS };
        check_table(&decoder, &[(b"1", Ok("unknown_cgroup_id:1"))]);
        let late = root().join("late");
        fs::create_dir(&late).unwrap();
        let late_id = id_of(&late).to_string();
        let unknown = format!("unknown_cgroup_id:{late_id}");
        check_table(&decoder, &[(late_id.as_bytes(), Ok(unknown.as_str()))]);
    }

    /// A removed cgroup resolves until two walks in a row have not found it,
    /// then is forgotten, and so is what others cached by its id. Each row:
    /// what happens, then the walks so far and whether the removed cgroup
    /// (and the others' cache entry for it) is still known.
    #[test]
    fn forgets_a_cgroup_missing_from_two_walks_in_a_row() {
        fn root() -> PathBuf {
            static DIR: OnceLock<PathBuf> = OnceLock::new();
            temp_root(&DIR)
        }
        static PATHS: CgroupPaths = CgroupPaths::new(root, Duration::ZERO);
        let (gone, stays) = (root().join("gone.scope"), root().join("stays.scope"));
        fs::create_dir_all(&gone).unwrap();
        fs::create_dir_all(&stays).unwrap();
        let (gone_id, stays_id) = (id_of(&gone), id_of(&stays));
        let mut cached: HashMap<u64, &str> = HashMap::from([(gone_id, "g"), (stays_id, "s")]);
        let mut pruned_at = 0;
        enum Step {
            Resolve(u64),
            Remove,
        }
        let steps = [
            (Step::Resolve(gone_id), 1, true), // the first walk finds both
            (Step::Remove, 1, true),
            (Step::Resolve(gone_id), 1, true), // known: no walk
            (Step::Resolve(1), 2, true),       // a miss walks: gone once
            (Step::Resolve(gone_id), 2, true), // a map read one last time
            (Step::Resolve(1), 3, false),      // gone twice: forgotten
        ];
        for (row, (step, walks, known)) in steps.into_iter().enumerate() {
            match step {
                Step::Resolve(id) => {
                    PATHS.path(id);
                }
                Step::Remove => fs::remove_dir(&gone).unwrap(),
            }
            assert_eq!(PATHS.lock().walks, walks, "row {row}");
            assert_eq!(
                PATHS.lock().paths.contains_key(&gone_id),
                known,
                "row {row}"
            );
            PATHS.forget_gone(&mut cached, &mut pruned_at);
            assert_eq!(pruned_at, walks, "row {row}");
            assert_eq!(cached.contains_key(&gone_id), known, "row {row}");
            assert_eq!(PATHS.path(stays_id), Some(stays.clone()), "row {row}");
        }
        let unknown = format!("unknown_cgroup_id:{gone_id}");
        let gone_text = gone_id.to_string();
        check_table(
            &Cgroup { paths: &PATHS },
            &[(gone_text.as_bytes(), Ok(unknown.as_str()))],
        );
    }

    #[test]
    fn missing_tree_resolves_nothing() {
        static PATHS: CgroupPaths =
            CgroupPaths::new(|| PathBuf::from("/nonexistent/cgroup"), Duration::ZERO);
        check_table(
            &Cgroup { paths: &PATHS },
            &[(b"1", Ok("unknown_cgroup_id:1"))],
        );
    }

    /// The running system: the v2 root's own id names the root.
    #[test]
    fn resolves_the_system_root() {
        let root = system_root();
        let Ok(meta) = fs::metadata(&root) else {
            return;
        };
        let decoder = build(&DecoderSpec::named("cgroup"), 8).unwrap();
        let path = text(&root);
        check_table(
            decoder.as_ref(),
            &[(meta.ino().to_string().as_bytes(), Ok(path.as_str()))],
        );
    }
}
