//! Container identity from cgroup ids, against real runtimes: containers
//! running a load the test makes are labelled by who they are, with exact
//! counts. podman's by their names, including a container started after
//! bpfsnap; containerd's, made as Kubernetes' CRI plugin makes a pod's
//! containers (its annotations, a kubelet-shaped cgroup), by namespace, pod
//! and container, and kept to one namespace by `--container-include`.
//!
//! How the containers are run:
//! - runc, not crun: this host's cgroups are hybrid (v1 controllers, cgroup2
//!   at /sys/fs/cgroup/unified), where crun refuses to create a container's
//!   cgroups; runc creates them in both hierarchies, and the cgroup2 one
//!   (`/libpod_parent/libpod-ID`, podman's cgroupfs manager;
//!   `/kubepods/besteffort/podUID/ID`, the kubelet's cgroupfs driver) is
//!   the cgroup whose id `bpf_get_current_cgroup_id()` returns.
//! - each runtime's files are the test's own, at the places a host keeps
//!   them below a directory given to bpfsnap as `--container-root` (as the
//!   DaemonSet mounts the host's directories elsewhere): podman's storage,
//!   with the `vfs` driver (the kernel matrix's VMs' /var is an overlay,
//!   under which podman's `overlay` driver cannot work), and the state of a
//!   containerd the test starts, never the system's.
//! - the containers' root holds one static program, ctr-getpid, and its
//!   calls only are counted (the runtime's own processes call getpid in the
//!   container's cgroup before it execs).

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use common::{path_str, Running};

/// The fake host root given to bpfsnap as `--container-root`: the host's
/// cgroup tree where a DaemonSet mounts it below the root, a runtime's
/// files where a host keeps them, and the containers' root file system.
struct HostRoot {
    dir: tempfile::TempDir,
    /// The containers' root file system: /ctr-getpid.
    rootfs: PathBuf,
}

impl HostRoot {
    fn new() -> HostRoot {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::create_dir_all(dir.path().join("sys/fs")).expect("mkdir sys/fs");
        std::os::unix::fs::symlink("/sys/fs/cgroup", dir.path().join("sys/fs/cgroup"))
            .expect("symlink sys/fs/cgroup");
        let rootfs = dir.path().join("rootfs");
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
        HostRoot { dir, rootfs }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// `output` of `what`, which must have succeeded.
fn succeeded(output: std::io::Result<Output>, what: &str) -> Output {
    let output = output.unwrap_or_else(|err| panic!("{what}: {err}"));
    assert!(
        output.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// podman with its storage below a [`HostRoot`].
struct Podman {
    host: HostRoot,
    names: Vec<String>,
}

impl Podman {
    fn new() -> Podman {
        Podman {
            host: HostRoot::new(),
            names: Vec::new(),
        }
    }

    fn command(&self) -> Command {
        let mut command = Command::new("podman");
        command
            .arg("--root")
            .arg(self.host.path().join("var/lib/containers/storage"))
            .arg("--runroot")
            .arg(self.host.path().join("run/containers/storage"))
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
            .arg(&self.host.rootfs)
            .args(["/ctr-getpid", &calls.to_string()])
            .output();
        self.names.push(name.to_string());
        succeeded(
            output,
            &format!("podman run {name} (make test-deps installs podman and runc)"),
        );
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
            .output();
        succeeded(output, &format!("podman kill {name}"));
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

/// A containerd of the test's own (never the system's: its socket, state
/// and data are in a [`HostRoot`], its config is the test's), its state
/// where a host keeps it, `ROOT/run/containerd`, so that the bundles'
/// `config.json` are where the decoders read them. Its containers are made
/// with `ctr` as Kubernetes' CRI plugin makes a pod's: in containerd
/// namespace `k8s.io`, annotated with the pod's namespace and name and the
/// container's name, in the kubelet's cgroupfs tree
/// (`/kubepods/besteffort/podUID/ID`). Dropped, it deletes its containers,
/// stops, and removes the cgroups and directories runc and its shims made
/// outside the root.
struct Containerd {
    host: HostRoot,
    daemon: Child,
    /// Containers made (ids), and pods (their cgroups' names).
    containers: Vec<String>,
    pods: Vec<String>,
    /// Directories outside the root that did not exist before it started,
    /// children first: its shims' sockets go to `/run/containerd/s`
    /// whatever its state (containerd `runtime/v2/shim/util_unix.go`,
    /// `socketRoot`), runc makes the cgroups' parents in every hierarchy.
    made: Vec<PathBuf>,
}

/// A pod: the CRI's sandbox namespace and name, and the kubelet's uid.
struct Pod {
    namespace: String,
    name: String,
    uid: String,
}

/// The cgroup trees mounted here (cgroup v1 hierarchies and cgroup2).
fn cgroup_hierarchies() -> Vec<PathBuf> {
    let mounts = fs::read_to_string("/proc/self/mounts").expect("/proc/self/mounts");
    mounts
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            matches!(fields.get(2), Some(&"cgroup" | &"cgroup2")).then(|| PathBuf::from(fields[1]))
        })
        .collect()
}

/// Removes directory `dir` if it is there, polling while it is busy (a
/// cgroup whose last process is still exiting); says on stderr if it stays.
fn remove_dir_once_free(dir: &Path) {
    let deadline = std::time::Instant::now() + common::PATIENCE;
    loop {
        match fs::remove_dir(dir) {
            Ok(()) => return,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return,
            Err(err)
                if err.raw_os_error() == Some(libc::EBUSY)
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(err) => {
                eprintln!("containerd test: {} stays: {err}", dir.display());
                return;
            }
        }
    }
}

impl Containerd {
    fn start() -> Containerd {
        let host = HostRoot::new();
        let made = ["/run/containerd/s".into(), "/run/containerd".into()]
            .into_iter()
            .chain(
                cgroup_hierarchies()
                    .into_iter()
                    .flat_map(|tree| [tree.join("kubepods/besteffort"), tree.join("kubepods")]),
            )
            .filter(|dir: &PathBuf| !dir.exists())
            .collect();
        let config = host.path().join("containerd.toml");
        fs::write(&config, Containerd::config(host.path())).expect("write containerd.toml");
        let log = fs::File::create(host.path().join("containerd.log")).expect("containerd.log");
        let daemon = Command::new("containerd")
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup containerd.log"))
            .stderr(log)
            .spawn()
            .expect("containerd (make test-deps installs it)");
        let mut containerd = Containerd {
            host,
            daemon,
            containers: Vec::new(),
            pods: Vec::new(),
            made,
        };
        containerd.wait_until_serving();
        containerd
    }

    /// Its config: data, state and socket below the root; no CRI plugin
    /// (the test is the kubelet); the `opt` plugin's directory, /opt/containerd
    /// by default, below the root too.
    fn config(root: &Path) -> String {
        let at = |path: &str| root.join(path).display().to_string();
        format!(
            "version = 2\n\
             root = {:?}\n\
             state = {:?}\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [grpc]\n  address = {:?}\n\
             [plugins.\"io.containerd.internal.v1.opt\"]\n  path = {:?}\n",
            at("var/lib/containerd"),
            at("run/containerd"),
            at("run/containerd/containerd.sock"),
            at("opt/containerd"),
        )
    }

    /// Polls `ctr version` until containerd answers.
    fn wait_until_serving(&mut self) {
        common::poll("the test's containerd serving", || {
            if let Ok(Some(status)) = self.daemon.try_wait() {
                let log = fs::read_to_string(self.host.path().join("containerd.log"));
                panic!("containerd exited ({status}): {}", log.unwrap_or_default());
            }
            let output = self.ctr().arg("version").output().expect("ctr");
            output.status.success().then_some(())
        });
    }

    /// `ctr` talking to this containerd, in the CRI plugin's namespace.
    fn ctr(&self) -> Command {
        let mut command = Command::new("ctr");
        command
            .arg("--address")
            .arg(self.host.path().join("run/containerd/containerd.sock"))
            .args(["--namespace", "k8s.io", "--timeout", "60s"]);
        command
    }

    /// A pod in Kubernetes namespace `namespace`, with a uid of its own.
    fn pod(&mut self, namespace: &str, name: &str) -> Pod {
        let uid = format!(
            "{:08x}-0000-4000-8000-{:012x}",
            std::process::id(),
            self.pods.len()
        );
        self.pods.push(format!("pod{uid}"));
        Pod {
            namespace: namespace.into(),
            name: name.into(),
            uid,
        }
    }

    /// Starts container `name` of `pod`, which makes `calls` getpid calls
    /// once [`Containerd::go`] tells it to; returns its id.
    fn run(&mut self, pod: &Pod, name: &str, calls: u64) -> String {
        // 64 hex digits, as containerd's ids are and the decoders expect.
        let id = format!("{:032x}{:032x}", std::process::id(), self.containers.len());
        self.containers.push(id.clone());
        let annotation = |key: &str, value: &str| format!("io.kubernetes.cri.{key}={value}");
        let output = self
            .ctr()
            .args(["run", "--detach", "--runtime", "io.containerd.runc.v2"])
            .arg("--runc-root")
            .arg(self.host.path().join("run/containerd/runc"))
            .arg("--log-uri")
            .arg(format!("file://{}", self.log(&id).display()))
            .args([
                "--cgroup",
                &format!("/kubepods/besteffort/pod{}/{id}", pod.uid),
            ])
            .args(["--annotation", &annotation("container-type", "container")])
            .args([
                "--annotation",
                &annotation("sandbox-namespace", &pod.namespace),
            ])
            .args(["--annotation", &annotation("sandbox-name", &pod.name)])
            .args(["--annotation", &annotation("container-name", name)])
            .arg("--rootfs")
            .arg(&self.host.rootfs)
            .args([&id, "/ctr-getpid", &calls.to_string()])
            .output();
        succeeded(output, &format!("ctr run {name} of {}", pod.name));
        self.wait_for_output(&id, "ready");
        id
    }

    /// Where container `id`'s output goes.
    fn log(&self, id: &str) -> PathBuf {
        self.host.path().join(format!("{id}.log"))
    }

    /// Polls container `id`'s output for ctr-getpid saying `word`.
    fn wait_for_output(&self, id: &str, word: &str) {
        common::poll(&format!("ctr-getpid of {id} saying {word}"), || {
            let output = fs::read_to_string(self.log(id)).unwrap_or_default();
            output.lines().any(|line| line == word).then_some(())
        });
    }

    /// Has container `id` make its calls, and waits until they have returned.
    fn go(&self, id: &str) {
        let output = self
            .ctr()
            .args(["task", "kill", "--signal", "SIGUSR1", id])
            .output();
        succeeded(output, &format!("ctr task kill {id}"));
        self.wait_for_output(id, "done");
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        for id in &self.containers {
            let _ = self.ctr().args(["task", "delete", "--force", id]).output();
            let _ = self.ctr().args(["container", "delete", id]).output();
        }
        let _ = unsafe { libc::kill(self.daemon.id() as i32, libc::SIGTERM) };
        if common::wait_bounded(&mut self.daemon, common::PATIENCE).is_none() {
            eprintln!("containerd test: containerd did not stop on SIGTERM: killed");
            let _ = self.daemon.wait();
        }
        for tree in cgroup_hierarchies() {
            for pod in &self.pods {
                let dir = tree.join("kubepods/besteffort").join(pod);
                // A container's cgroup runc could not remove, then its pod's.
                for child in fs::read_dir(&dir).into_iter().flatten().flatten() {
                    if child.path().is_dir() {
                        remove_dir_once_free(&child.path());
                    }
                }
                remove_dir_once_free(&dir);
            }
        }
        for dir in &self.made {
            remove_dir_once_free(dir);
        }
    }
}

/// bpfsnap serving tests/fixtures/`config`.yaml (container_calls.bpf.c's
/// map) with `--container-root root` and `args`.
fn serve(root: &Path, config: &str, args: &[&str]) -> (Running, String, tempfile::TempDir) {
    let mut argv = vec!["--container-root", path_str(root)];
    argv.extend_from_slice(args);
    common::serve_fixture(config, "container_calls", &argv)
}

fn scrape(listen: &str) -> String {
    common::scrape_metrics(listen)
}

const METRIC: &str = "bpfsnap_container_getpid_calls_total";

/// Scrapes until `series`'s count is `calls` or more (its load runs on its
/// own), then says what it is.
fn count_once_done(listen: &str, series: &str, calls: u64) -> f64 {
    common::poll(&format!("{series} reaching {calls}"), || {
        common::sample(&scrape(listen), series).filter(|&count| count >= calls as f64)
    })
}

/// The series of podman container `name` (container_calls.yaml).
fn by_name(name: &str) -> String {
    format!(r#"{METRIC}{{container="{name}"}}"#)
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
    let (serving, listen, _dir) = serve(podman.host.path(), "container_calls", &[]);
    podman.go(&first);
    assert_eq!(
        count_once_done(&listen, &by_name(&first), 1000),
        1000.0,
        "{first}"
    );
    // Started after bpfsnap: its cgroup id is new to the decoders.
    podman.start(&later, 2345);
    podman.go(&later);
    assert_eq!(
        count_once_done(&listen, &by_name(&later), 2345),
        2345.0,
        "{later}"
    );
    let text = scrape(&listen);
    assert_eq!(
        common::sample(&text, &by_name(&first)),
        Some(1000.0),
        "{text}"
    );
    serving.terminate();
}

/// The series of a Kubernetes container (container_kube.yaml).
fn by_kube_names(pod: &Pod, container: &str) -> String {
    format!(
        r#"{METRIC}{{namespace="{}",pod="{}",container="{container}"}}"#,
        pod.namespace, pod.name
    )
}

#[test]
fn containerd_cri_containers_are_labelled_by_namespace_pod_and_container_and_filtered() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    let mut containerd = Containerd::start();
    let web = containerd.pod("shop", "web-7d9f");
    let ledger = containerd.pod("bank", "ledger-0");
    let shop = [(&web, "web", 1000), (&web, "sidecar", 250)];
    let bank = [(&ledger, "ledger", 777)];
    let mut ids = Vec::new();
    for (pod, name, calls) in shop.iter().chain(&bank) {
        ids.push(containerd.run(pod, name, *calls));
    }
    let root = containerd.host.path();
    let (all, all_at, _all_dir) = serve(root, "container_kube", &[]);
    let only_shop = ["--container-include", "namespace=^shop$"];
    let (filtered, filtered_at, _filtered_dir) = serve(root, "container_kube", &only_shop);
    // bank's calls, then shop's, each returned before the next starts: a
    // scrape that counts all of shop's has bank's in its maps too.
    containerd.go(&ids[2]);
    containerd.go(&ids[0]);
    containerd.go(&ids[1]);
    for (pod, name, calls) in shop.iter().chain(&bank) {
        let series = by_kube_names(pod, name);
        assert_eq!(
            count_once_done(&all_at, &series, *calls),
            *calls as f64,
            "{series}"
        );
    }
    let text = scrape(&all_at);
    assert_eq!(common::samples(&text, METRIC).len(), 3, "{text}");
    for (pod, name, calls) in &shop {
        let series = by_kube_names(pod, name);
        assert_eq!(
            count_once_done(&filtered_at, &series, *calls),
            *calls as f64,
            "{series}"
        );
    }
    let text = scrape(&filtered_at);
    let kept = common::samples(&text, METRIC);
    assert_eq!(kept.len(), 2, "only shop's two containers: {text}");
    assert!(
        kept.iter()
            .all(|(labels, _)| labels.contains(r#"namespace="shop""#)),
        "{text}"
    );
    all.terminate();
    filtered.terminate();
}
