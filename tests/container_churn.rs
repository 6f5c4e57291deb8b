//! Cardinality under container churn (issue 31): 500 short-lived containers
//! do not grow bpfsnap's memory without bound, and the series cap is
//! counted.
//!
//! Real containers (tests/containers.rs) take seconds each; these are what
//! the container decoders see of one, made directly: a cgroup in the host's
//! cgroup v2 tree named as podman's cgroupfs manager names it
//! (`libpod-<id>`, src/decode/container/cgroup_path.rs), podman's records of
//! it in containers/storage below the `--container-root` given to bpfsnap
//! (src/decode/container/runtime.rs), and a process in the cgroup making a
//! known number of getpid calls (tests/fixtures/churn_getpid.c, counted by
//! churn_calls.bpf.c by cgroup id, labelled by container name and capped at
//! [`CAP`] series). Containers run in batches of [`BATCH`]: a batch's
//! containers run their load and exit, are scraped while their cgroups and
//! records are there, then go.
//!
//! Container i makes `calls(i)` calls, more than every container before it,
//! so the cap keeps the latest [`CAP`] containers' series and every scrape's
//! values are known exactly, however the series of containers that are gone
//! are labelled at the time (their name until the decoders forget them,
//! then `unknown_cgroup_id:<id>`).

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{path_str, Running};

/// Containers run in all, and at a time.
const CONTAINERS: u64 = 500;
const BATCH: u64 = 50;
/// churn_calls.yaml's `max_series`.
const CAP: u64 = 100;
const METRIC: &str = "bpfsnap_churn_getpid_calls_total";
const DROPPED: &str =
    r#"bpfsnap_series_dropped_total{config="churn_calls",metric="churn_getpid_calls_total"}"#;
/// How much more resident memory bpfsnap may hold after 500 containers than
/// after the first 100. What it holds legitimately more is the map's 400
/// further keys as each snapshot reads and decodes them (16 bytes and a
/// label of some 30 each: under 100 KiB); the rest is room for what the
/// allocator keeps of freed memory. Memory that grew with every container,
/// rather than with those alive, by 10 KiB or more each would exceed it.
const RSS_MARGIN: u64 = 4 * common::MIB;

/// Container `index`'s getpid calls: distinct, and growing with the index.
fn calls(index: u64) -> u64 {
    100 + index
}

fn series(label: &str) -> String {
    format!(r#"{METRIC}{{container="{label}"}}"#)
}

/// The cgroup v2 tree as src/decode/cgroup.rs finds it: /sys/fs/cgroup
/// itself, or its `unified` subtree on a hybrid host.
fn v2_root() -> PathBuf {
    ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
        .iter()
        .map(PathBuf::from)
        .find(|dir| dir.join("cgroup.controllers").exists())
        .expect("a cgroup v2 tree (the container decoders read cgroup v2 ids)")
}

/// One short-lived container.
struct Container {
    index: u64,
    /// Its 64-hex-digit id; the first 12 differ between containers.
    id: String,
    name: String,
    cgroup: PathBuf,
    /// The cgroup's id, as `bpf_get_current_cgroup_id` gives it (its
    /// directory's inode number).
    cgroup_id: u64,
}

/// The fake host: a `--container-root` with podman's storage and the host's
/// cgroup tree below it, a cgroup of the test's own in the real tree, the
/// load program, and the containers alive.
struct Host {
    root: tempfile::TempDir,
    /// The parent of the containers' cgroups: the test's own, so that it
    /// removes nothing podman's `libpod_parent` holds.
    parent: PathBuf,
    program: PathBuf,
    live: Vec<Container>,
}

impl Host {
    fn new() -> Host {
        let root = tempfile::tempdir().expect("tempdir");
        // The host's cgroup tree where a DaemonSet mounts it below the root.
        fs::create_dir_all(root.path().join("sys/fs")).expect("mkdir sys/fs");
        std::os::unix::fs::symlink("/sys/fs/cgroup", root.path().join("sys/fs/cgroup"))
            .expect("symlink sys/fs/cgroup");
        fs::create_dir_all(storage(root.path())).expect("mkdir containers/storage");
        let program = root.path().join("churn-getpid");
        let output = Command::new("cc")
            .args(["-O2", "-o"])
            .arg(&program)
            .arg(common::source_file("tests/fixtures/churn_getpid.c"))
            .output()
            .expect("cc (make test-deps installs build-essential)");
        assert!(
            output.status.success(),
            "cc churn_getpid.c: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let parent = v2_root().join(format!("bpfsnap-churn-{}", std::process::id()));
        fs::create_dir(&parent).expect("mkdir the test's cgroup");
        Host {
            root,
            parent,
            program,
            live: Vec::new(),
        }
    }

    /// Container `index`: its records, its cgroup, and its load run to its
    /// end in the cgroup. It stays until [`Host::remove_all`].
    fn run(&mut self, index: u64) {
        let id = format!("{:012x}{:052x}", index + 1, std::process::id());
        let cgroup = self.parent.join(format!("libpod-{id}"));
        let container_dir = storage(self.root.path()).join(&id);
        fs::create_dir_all(container_dir.join("userdata")).expect("mkdir userdata");
        fs::write(
            container_dir.join("userdata/config.json"),
            r#"{"ociVersion":"1.0.0","annotations":{"io.container.manager":"libpod"}}"#,
        )
        .expect("write config.json");
        fs::create_dir(&cgroup).expect("mkdir the container's cgroup");
        let cgroup_id = fs::metadata(&cgroup).expect("stat cgroup").ino();
        self.live.push(Container {
            index,
            id,
            name: format!("churn-{index}"),
            cgroup: cgroup.clone(),
            cgroup_id,
        });
        self.write_containers_json();
        let status = Command::new(&self.program)
            .arg(cgroup.join("cgroup.procs"))
            .arg(calls(index).to_string())
            .status()
            .expect("run churn-getpid");
        assert!(
            status.success(),
            "churn-getpid in {}: {status}",
            cgroup.display()
        );
    }

    /// containers/storage's list of the live containers, with podman's
    /// metadata (name, image); replaced whole, as containers/storage does,
    /// so that bpfsnap never reads half of it.
    fn write_containers_json(&self) {
        let entries: Vec<serde_json::Value> = self
            .live
            .iter()
            .map(|c| {
                let metadata = serde_json::json!({
                    "image-name": "localhost/churn:latest",
                    "name": c.name,
                    "created-at": 1,
                });
                serde_json::json!({
                    "id": c.id,
                    "names": [c.name],
                    "metadata": metadata.to_string(),
                })
            })
            .collect();
        let list = storage(self.root.path()).join("containers.json");
        let next = list.with_extension("json.tmp");
        fs::write(&next, serde_json::to_vec(&entries).expect("json")).expect("write list");
        fs::rename(&next, &list).expect("replace containers.json");
    }

    /// Removes the live containers' cgroups, then their records; returns
    /// them.
    fn remove_all(&mut self) -> Vec<Container> {
        let gone = std::mem::take(&mut self.live);
        for container in &gone {
            remove_cgroup(&container.cgroup).expect("rmdir a container's cgroup");
            fs::remove_dir_all(storage(self.root.path()).join(&container.id))
                .expect("remove a container's records");
        }
        self.write_containers_json();
        gone
    }
}

/// A failed test leaves no cgroup behind, whichever it had made (its
/// records go with the tempdir).
impl Drop for Host {
    fn drop(&mut self) {
        if let Ok(entries) = fs::read_dir(&self.parent) {
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|kind| kind.is_dir()) {
                    let _ = remove_cgroup(&entry.path());
                }
            }
        }
        let _ = remove_cgroup(&self.parent);
    }
}

/// podman's containers/storage directory of containers (the `vfs` driver's,
/// as tests/containers.rs has podman use) below `root`.
fn storage(root: &Path) -> PathBuf {
    root.join("var/lib/containers/storage/vfs-containers")
}

/// Removes cgroup `dir`, killing what still runs in it (a load a failed
/// test left) and polling until it is empty; a missing one is removed.
fn remove_cgroup(dir: &Path) -> std::io::Result<()> {
    let deadline = Instant::now() + common::PATIENCE;
    loop {
        match fs::remove_dir(dir) {
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(err) if Instant::now() >= deadline => return Err(err),
            Err(_) => {
                let procs = fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
                for pid in procs.lines().filter_map(|pid| pid.parse::<i32>().ok()) {
                    // SAFETY: kill sends a signal; no memory is shared.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Ok(()) => return Ok(()),
        }
    }
}

/// bpfsnap serving churn_calls.yaml with `--container-root`.
fn serve(root: &Path) -> (Running, String, tempfile::TempDir) {
    common::serve_fixture(
        "churn_calls",
        "churn_calls",
        &["--container-root", path_str(root)],
    )
}

/// Scrapes bpfsnap and checks what every scrape must show, given the
/// containers that have made their calls so far: at most [`CAP`] series,
/// exactly the largest, and every series over the cap in every scrape
/// counted as dropped.
struct Scraper {
    listen: String,
    /// The dropped series bpfsnap must have counted so far.
    dropped: u64,
}

impl Scraper {
    fn scrape(&mut self, counted: u64) -> String {
        let text = common::scrape_metrics(&self.listen);
        self.dropped += counted.saturating_sub(CAP);
        let kept = counted.min(CAP);
        let mut values: Vec<f64> = common::samples(&text, METRIC)
            .iter()
            .map(|(_, value)| *value)
            .collect();
        values.sort_by(f64::total_cmp);
        let largest: Vec<f64> = (counted - kept..counted)
            .map(|index| calls(index) as f64)
            .collect();
        assert_eq!(values, largest, "the {kept} largest of {counted}: {text}");
        let dropped = (self.dropped > 0).then_some(self.dropped as f64);
        assert_eq!(common::sample(&text, DROPPED), dropped, "{text}");
        let errors = common::samples(&text, "bpfsnap_decoder_errors_total");
        assert!(errors.is_empty(), "{errors:?}");
        text
    }
}

#[test]
fn short_lived_containers_do_not_grow_memory_and_the_cap_is_counted() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    let mut host = Host::new();
    let (serving, listen, _dir) = serve(host.root.path());
    let pid = serving.child.id();
    let mut scraper = Scraper { listen, dropped: 0 };
    let mut rss_after_100 = None;
    let mut gone = Vec::new();
    for batch in 0..CONTAINERS / BATCH {
        for index in batch * BATCH..(batch + 1) * BATCH {
            host.run(index);
        }
        let counted = (batch + 1) * BATCH;
        // Alive, each is labelled by its name (once a walk of the tree
        // has found its cgroup: at most one a second).
        common::poll(&format!("containers {counted} named"), || {
            let text = scraper.scrape(counted);
            host.live
                .iter()
                .all(|c| common::sample(&text, &series(&c.name)) == Some(calls(c.index) as f64))
                .then_some(())
        });
        if counted == 100 {
            rss_after_100 = Some(common::rss_bytes(pid));
        }
        gone.extend(host.remove_all());
    }
    // Gone, the kept series' containers are forgotten: two walks of the
    // tree without their cgroups, and their ids name nothing.
    let kept = &gone[(CONTAINERS - CAP) as usize..];
    common::poll("the gone containers forgotten", || {
        let text = scraper.scrape(CONTAINERS);
        kept.iter()
            .all(|c| {
                let unknown = format!("unknown_cgroup_id:{}", c.cgroup_id);
                common::sample(&text, &series(&unknown)) == Some(calls(c.index) as f64)
            })
            .then_some(())
    });
    let (before, after) = (rss_after_100.expect("an RSS"), common::rss_bytes(pid));
    assert!(
        after <= before + RSS_MARGIN,
        "RSS {after} bytes after {CONTAINERS} containers, {before} after 100"
    );
    serving.terminate();
}
