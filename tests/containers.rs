//! Container identity from cgroup ids, against a real runtime: podman
//! containers running a load the test makes are labelled by their names,
//! with exact counts, including a container started after bpfsnap.
//!
//! How the containers are run, on this host and in the kernel matrix's VMs:
//! - runc, not crun: this host's cgroups are hybrid (v1 controllers, cgroup2
//!   at /sys/fs/cgroup/unified), where crun refuses to create a container's
//!   cgroups; runc creates them in both hierarchies, and the cgroup2 one
//!   (`/libpod_parent/libpod-ID`, podman's cgroupfs manager) is the cgroup
//!   whose id `bpf_get_current_cgroup_id()` returns. The VMs' tree is pure
//!   cgroup v2.
//! - podman's storage is the test's own, at the places a host keeps it
//!   below a directory given to bpfsnap as `--container-root` (as the
//!   DaemonSet mounts the host's directories elsewhere), with the `vfs`
//!   driver: the VMs' /var is an overlay, under which podman's `overlay`
//!   driver cannot work.
//! - the container's root holds one static program, ctr-getpid, and its
//!   calls only are counted (the runtime's own processes call getpid in the
//!   container's cgroup before it execs).

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{path_str, Running};

/// The fake host root: podman's storage below it where a host keeps it.
struct Podman {
    root: tempfile::TempDir,
    /// The containers' root file system: /ctr-getpid.
    rootfs: PathBuf,
    names: Vec<String>,
}

impl Podman {
    fn new() -> Podman {
        let root = tempfile::tempdir().expect("tempdir");
        // The host's cgroup tree where a DaemonSet mounts it below the root.
        fs::create_dir_all(root.path().join("sys/fs")).expect("mkdir sys/fs");
        std::os::unix::fs::symlink("/sys/fs/cgroup", root.path().join("sys/fs/cgroup"))
            .expect("symlink sys/fs/cgroup");
        let rootfs = root.path().join("rootfs");
        fs::create_dir_all(&rootfs).expect("mkdir rootfs");
        let output = Command::new("cc")
            .args(["-static", "-O2", "-o"])
            .arg(rootfs.join("ctr-getpid"))
            .arg(common::source_file("tests/fixtures/ctr_getpid.c"))
            .output()
            .expect("cc (make test-deps installs build-essential)");
        assert!(
            output.status.success(),
            "cc -static ctr_getpid.c: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Podman {
            root,
            rootfs,
            names: Vec::new(),
        }
    }

    fn command(&self) -> Command {
        let mut command = Command::new("podman");
        command
            .arg("--root")
            .arg(self.root.path().join("var/lib/containers/storage"))
            .arg("--runroot")
            .arg(self.root.path().join("run/containers/storage"))
            .args([
                "--cgroup-manager=cgroupfs",
                "--runtime=runc",
                "--storage-driver=vfs",
                "--events-backend=none",
            ]);
        command
    }

    /// Starts container `name`, which makes `calls` getpid calls once
    /// [`Podman::go`] tells it to, and stays (its cgroup and files with it)
    /// until [`Podman`] is dropped.
    fn start(&mut self, name: &str, calls: u64) {
        let output = self
            .command()
            .args(["run", "--detach", "--name", name, "--network=none"])
            // Below this sandbox's hard limits (podman raises both).
            .args([
                "--ulimit",
                "nofile=1024:1024",
                "--ulimit",
                "nproc=1024:1024",
            ])
            .arg("--rootfs")
            .arg(&self.rootfs)
            .args(["/ctr-getpid", &calls.to_string()])
            .output()
            .expect("podman (make test-deps installs podman and runc)");
        assert!(
            output.status.success(),
            "podman run {name}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        self.names.push(name.to_string());
        self.wait_until_ready(name);
    }

    /// Polls the container's output for ctr-getpid's "ready".
    fn wait_until_ready(&self, name: &str) {
        common::poll(&format!("container {name} starting ctr-getpid"), || {
            let output = self
                .command()
                .args(["logs", name])
                .output()
                .expect("podman logs");
            String::from_utf8_lossy(&output.stdout)
                .contains("ready")
                .then_some(())
        });
    }

    /// Has container `name` make its calls (SIGUSR1 to its ctr-getpid).
    fn go(&self, name: &str) {
        let output = self
            .command()
            .args(["kill", "--signal=USR1", name])
            .output()
            .expect("podman kill");
        assert!(
            output.status.success(),
            "podman kill {name}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        for name in &self.names {
            let _ = self
                .command()
                .args(["rm", "--force", "--time=0", name])
                .output();
        }
    }
}

/// bpfsnap serving container_calls.yaml with `--container-root`.
fn serve(root: &Path) -> (Running, String, tempfile::TempDir) {
    let dir = common::config_dir();
    fs::copy(
        common::source_file("tests/fixtures/container_calls.yaml"),
        dir.path().join("container_calls.yaml"),
    )
    .expect("copy config");
    fs::copy(
        common::fixture_object("container_calls"),
        dir.path().join("container_calls.bpf.o"),
    )
    .expect("copy object");
    let listen = format!("127.0.0.1:{}", common::free_port());
    let config = dir.path().join("container_calls.yaml");
    let mut serving = Running::spawn(&[
        "serve",
        "-v",
        "--listen",
        &listen,
        "--container-root",
        path_str(root),
        path_str(&config),
    ]);
    serving.wait_for("serving http://");
    (serving, listen, dir)
}

fn scrape(listen: &str) -> String {
    let (status, _, body) =
        common::curl_url(&format!("http://{listen}/metrics"), &[]).expect("a scrape");
    assert_eq!(status, 200, "scrape of {listen}");
    String::from_utf8_lossy(&body).into_owned()
}

/// Scrapes until container `name`'s count is `calls` or more (its load
/// runs on its own), then says what it is.
fn count_once_done(listen: &str, name: &str, calls: u64) -> f64 {
    let series = format!(r#"bpfsnap_container_getpid_calls_total{{container="{name}"}}"#);
    common::poll(&format!("{series} reaching {calls}"), || {
        common::sample(&scrape(listen), &series).filter(|&count| count >= calls as f64)
    })
}

#[test]
fn podman_containers_are_labelled_by_name_with_exact_counts() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    let mut podman = Podman::new();
    let tag = std::process::id();
    let (first, later) = (format!("bpfsnap-a{tag}"), format!("bpfsnap-b{tag}"));
    // Running before bpfsnap starts, its calls made after.
    podman.start(&first, 1000);
    let (serving, listen, _dir) = serve(podman.root.path());
    podman.go(&first);
    assert_eq!(count_once_done(&listen, &first, 1000), 1000.0, "{first}");
    // Started after bpfsnap: its cgroup id is new to the decoders.
    podman.start(&later, 2345);
    podman.go(&later);
    assert_eq!(count_once_done(&listen, &later, 2345), 2345.0, "{later}");
    let text = scrape(&listen);
    assert_eq!(
        common::sample(
            &text,
            &format!(r#"bpfsnap_container_getpid_calls_total{{container="{first}"}}"#)
        ),
        Some(1000.0),
        "{text}"
    );
    serving.terminate();
}
