//! The container image (Dockerfile) and the Kubernetes manifests
//! (examples/deploy/kubernetes):
//! - the manifests pass kubernetes-validate (the API's own schemas, strict),
//!   and a misspelt field does not;
//! - the image's runtime stage, built by podman, holds the binary and the
//!   libraries ldd says it links, and nothing else;
//! - it runs as the DaemonSet says (its args, user, capabilities, no new
//!   privileges, read-only root, volumes, the runtime's default seccomp
//!   profile) on this kernel: stopped by SIGTERM once attached, as the
//!   kubelet stops it, it writes into the hostPath directory a file in which
//!   every default built-in that runs on this machine ran;
//! - on x86_64, the linux/arm64 image (bpfsnap cross-built for aarch64, the
//!   arm64 libraries) and the manifest list of both, as `make image` makes
//!   them: run by platform through qemu-user, each is bpfsnap of its
//!   architecture.
//!
//! What this machine does not allow, and what the test does instead:
//! - No image registry is reachable, so no Rust image for the build stage:
//!   podman builds the runtime stage only (tools/image.sh, as `make image`),
//!   its build stage replaced (--build-context build=DIR) by what the build
//!   stage would leave, tools/image-root.sh run on this build's binary, as
//!   the Dockerfile's build stage runs it on the release binary. (The whole Dockerfile was
//!   built once by hand, with a stand-in for the Rust image made of a
//!   debootstrapped Debian 12 and this machine's toolchain: 4 min 41 s, a
//!   17.9 MB image that ran as below. A release build in a container does
//!   not fit in `make test`.)
//! - crun refuses to start a container here: "cgroups in hybrid mode not
//!   supported, drop all controllers from cgroupv2" (this machine mounts
//!   cgroup v1 controllers beside a cgroup2 hierarchy that has one). In the
//!   test's own mount namespace /sys/fs/cgroup is a plain cgroup2 mount,
//!   and the container gets no cgroup (--cgroups=disabled, which crun
//!   allows and runc does not: the test names crun): the cgroup is not what
//!   the DaemonSet's spec is about.
//! - podman raises RLIMIT_NOFILE and RLIMIT_NPROC for a container; without
//!   CAP_SYS_RESOURCE (which this sandbox withholds) crun fails with EPERM:
//!   the test sets both below the current hard limits.
//! - Kubernetes' RuntimeDefault is the runtime's profile. containerd's
//!   allows bpf(2) to CAP_BPF and perf_event_open(2) to CAP_PERFMON; the
//!   profile of Debian 12's podman (containers-common 0.50) only to
//!   CAP_SYS_ADMIN (bpfsnap then fails with EPERM: tried). The test uses
//!   podman's profile with containerd's two rules in place of its own.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_yaml_ng::Value;

const SOURCE: &str = env!("CARGO_MANIFEST_DIR");
const KUBERNETES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/deploy/kubernetes");

fn manifests() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(KUBERNETES)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    files.sort();
    files
}

fn kubernetes_validate(files: &[PathBuf]) -> (bool, String) {
    let output = Command::new(Path::new(SOURCE).join("tools/kubernetes-validate.sh"))
        .args(files)
        .output()
        .expect("tools/kubernetes-validate.sh");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), said)
}

#[test]
fn the_kubernetes_manifests_pass_kubernetes_validate() {
    let files = manifests();
    assert!(files.len() >= 2, "{files:?}");
    let (valid, said) = kubernetes_validate(&files);
    assert!(valid, "{said}");
    // A field in the wrong place is an error: the check can fail.
    let dir = tempfile::tempdir().unwrap();
    let misspelt = dir.path().join("daemonset.yaml");
    let text = fs::read_to_string(Path::new(KUBERNETES).join("daemonset.yaml")).unwrap();
    fs::write(
        &misspelt,
        text.replace("readOnlyRootFilesystem:", "readOnlyRootFileSystem:"),
    )
    .unwrap();
    let (valid, said) = kubernetes_validate(&[misspelt]);
    assert!(!valid && said.contains("readOnlyRootFileSystem"), "{said}");
}

/// The DaemonSet's pod spec.
fn pod_spec() -> Value {
    let text = fs::read_to_string(Path::new(KUBERNETES).join("daemonset.yaml")).unwrap();
    let daemonset: Value = serde_yaml_ng::from_str(&text).unwrap();
    assert_eq!(daemonset["kind"].as_str(), Some("DaemonSet"));
    daemonset["spec"]["template"]["spec"].clone()
}

/// The keys of a mapping.
fn keys(value: &Value) -> Vec<&str> {
    value
        .as_mapping()
        .map(|mapping| mapping.keys().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_sequence()
        .map(|items| {
            items
                .iter()
                .map(|item| item.as_str().expect("a string").to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// podman's default seccomp profile with containerd's rules for bpf(2) and
/// perf_event_open(2) (allowed to CAP_BPF and CAP_PERFMON) in place of its
/// own (CAP_SYS_ADMIN only, EPERM otherwise).
fn runtime_default_seccomp(path: &Path) {
    let text = fs::read_to_string("/usr/share/containers/seccomp.json")
        .expect("podman's default seccomp profile (make test-deps installs podman)");
    let mut profile: serde_json::Value = serde_json::from_str(&text).unwrap();
    let rules = profile["syscalls"].as_array_mut().unwrap();
    for rule in rules.iter_mut() {
        let denies = rule["action"] == "SCMP_ACT_ERRNO";
        if let Some(names) = rule["names"].as_array_mut().filter(|_| denies) {
            names.retain(|name| name != "bpf" && name != "perf_event_open");
        }
    }
    for (syscall, cap) in [("bpf", "CAP_BPF"), ("perf_event_open", "CAP_PERFMON")] {
        rules.push(serde_json::json!({
            "names": [syscall],
            "action": "SCMP_ACT_ALLOW",
            "includes": {"caps": [cap]},
            "excludes": {},
        }));
    }
    fs::write(path, serde_json::to_string(&profile).unwrap()).unwrap();
}

/// The default built-ins that can run on this machine (`bpfsnap list`:
/// DEFAULT and HERE both yes).
fn default_builtins_here() -> BTreeSet<String> {
    let output = common::bpfsnap().arg("list").output().unwrap();
    assert!(output.status.success());
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .filter_map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            (words.len() >= 3 && words[1] == "yes" && words[2] == "yes")
                .then(|| words[0].to_string())
        })
        .collect()
}

#[test]
fn the_image_holds_the_binary_and_its_libraries_and_runs_as_the_daemonset_says() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    let start = Instant::now();
    let pod = pod_spec();
    assert_eq!(pod["hostPID"].as_bool(), Some(false));
    assert_eq!(pod["hostNetwork"].as_bool(), Some(false));
    let containers = pod["containers"].as_sequence().unwrap();
    assert_eq!(containers.len(), 1);
    let container = &containers[0];
    // Every field of the container and its security context is one this
    // test turns into podman's flags: a new one must be added here.
    for key in keys(container) {
        assert!(
            [
                "name",
                "image",
                "imagePullPolicy",
                "args",
                "securityContext",
                "resources",
                "volumeMounts"
            ]
            .contains(&key),
            "the container sets {key}, which this test does not translate"
        );
    }
    let security = &container["securityContext"];
    for key in keys(security) {
        assert!(
            [
                "runAsUser",
                "runAsNonRoot",
                "privileged",
                "allowPrivilegeEscalation",
                "readOnlyRootFilesystem",
                "capabilities",
                "seccompProfile"
            ]
            .contains(&key),
            "the securityContext sets {key}, which this test does not translate"
        );
    }
    assert_eq!(security["privileged"].as_bool(), Some(false));
    assert_eq!(security["allowPrivilegeEscalation"].as_bool(), Some(false));
    assert_eq!(security["readOnlyRootFilesystem"].as_bool(), Some(true));
    assert_eq!(
        security["seccompProfile"]["type"].as_str(),
        Some("RuntimeDefault")
    );
    assert_eq!(strings(&security["capabilities"]["drop"]), ["ALL"]);

    let work = tempfile::tempdir_in(Path::new(SOURCE).join("target")).unwrap();
    let seccomp = work.path().join("seccomp.json");
    runtime_default_seccomp(&seccomp);

    // podman run's flags, from the DaemonSet.
    let mut flags: Vec<String> = vec![
        "--user".into(),
        security["runAsUser"]
            .as_u64()
            .expect("runAsUser")
            .to_string(),
        "--cap-drop=all".into(),
        "--security-opt=no-new-privileges".into(),
        format!("--security-opt=seccomp={}", seccomp.display()),
        // Kubernetes mounts no tmpfs on a read-only root; podman would.
        "--read-only".into(),
        "--read-only-tmpfs=false".into(),
        // The pod's network namespace: bpfsnap run uses none.
        "--network=none".into(),
    ];
    for cap in strings(&security["capabilities"]["add"]) {
        flags.push(format!("--cap-add=CAP_{cap}"));
    }
    // The textfile directory on the host is a directory of the test's.
    let textfile = work.path().join("textfile");
    fs::create_dir(&textfile).unwrap();
    let mut textfile_mount = None;
    let volumes = pod["volumes"].as_sequence().unwrap();
    for mount in container["volumeMounts"].as_sequence().unwrap() {
        let name = mount["name"].as_str().unwrap();
        let at = mount["mountPath"].as_str().unwrap();
        let volume = volumes
            .iter()
            .find(|v| v["name"].as_str() == Some(name))
            .unwrap_or_else(|| panic!("no volume {name}"));
        let read_only = mount["readOnly"].as_bool().unwrap_or(false);
        if let Some(path) = volume["hostPath"]["path"].as_str() {
            let host = if path == "/var/lib/prometheus/node-exporter" {
                textfile_mount = Some(at.to_string());
                textfile.clone()
            } else if Path::new(path).exists() {
                PathBuf::from(path)
            } else {
                // DirectoryOrCreate on a node without that runtime: empty.
                assert_eq!(
                    volume["hostPath"]["type"].as_str(),
                    Some("DirectoryOrCreate"),
                    "{name}"
                );
                let empty = work.path().join(name);
                fs::create_dir(&empty).unwrap();
                empty
            };
            let mode = if read_only { ":ro" } else { "" };
            flags.push(format!("--volume={}:{at}{mode}", host.display()));
        } else if volume.get("emptyDir").is_some() {
            flags.push(format!("--mount=type=tmpfs,destination={at}"));
        } else {
            panic!("volume {name}: neither hostPath nor emptyDir");
        }
    }
    let textfile_mount = textfile_mount.expect("the textfile directory is mounted");
    let args = strings(&container["args"]);
    let output = args
        .iter()
        .skip_while(|arg| *arg != "--output")
        .nth(1)
        .expect("the args name an --output");
    let file_name = output
        .strip_prefix(&format!("{textfile_mount}/"))
        .expect("the output is in the textfile directory");

    // The runtime stage, from what the build stage would leave
    // (tools/image.sh: tools/image-root.sh's root of this build's binary).
    let files = work.path().join("files.txt");
    let pidfile = work.path().join("pid");
    let image = format!("localhost/bpfsnap:test-{}", std::process::id());
    let script = r#"
binary=$1 files=$2 pidfile=$3 image=$4; shift 4
tools/image.sh "$image" "$binary"
files_of "$image-$ARCH" > "$files"
status=0
podman run --rm --pidfile "$pidfile" $RUN "$@" || status=$?
remove "$image"
exit $status
"#;
    let mut command = podman_script(work.path(), script);
    command
        .arg(env!("CARGO_BIN_EXE_bpfsnap"))
        .arg(&files)
        .arg(&pidfile)
        .arg(&image)
        .args(&flags)
        .arg(format!("{image}-{}", debian_arch(std::env::consts::ARCH)))
        .args(&args);
    let mut running = common::Running::spawn_command(command);
    // Killing podman (what Running does to a test that fails) would leave
    // the container running, its programs attached: kill bpfsnap too.
    let _container = KillOnPanic(pidfile.clone());

    // Attached when bpfsnap, the container's process, has dropped its
    // capabilities (CAP_PERFMON leaves its permitted set).
    let deadline = Instant::now() + common::PATIENCE;
    let pid = loop {
        if let Some(status) = running.child.try_wait().unwrap() {
            let (_, stdout, stderr) = running.finish();
            panic!("podman ended before bpfsnap attached ({status}): {stdout}{stderr}");
        }
        let pid = fs::read_to_string(&pidfile)
            .ok()
            .and_then(|text| text.trim().parse::<u32>().ok());
        let permitted = pid.and_then(|pid| {
            fs::read_to_string(format!("/proc/{pid}/status"))
                .ok()?
                .lines()
                .find_map(|line| line.strip_prefix("CapPrm:"))
                .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        });
        if let (Some(pid), Some(caps)) = (pid, permitted) {
            if caps & (1 << 38) == 0 {
                break pid;
            }
        }
        assert!(
            Instant::now() < deadline,
            "bpfsnap never attached in the container"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(
        status.contains("NoNewPrivs:\t1") && status.contains("Seccomp:\t2"),
        "no new privileges, a seccomp filter: {status}"
    );
    // SIGTERM, as the kubelet stops a pod.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGTERM) }, 0);
    let (status, stdout, stderr) = running.finish();
    assert!(status.success(), "podman run: {status}: {stdout}{stderr}");
    assert!(stderr.trim().is_empty(), "--quiet, yet: {stderr}");

    // The image: the binary and its ldd closure (and the two empty
    // directories bpfsnap writes in), nothing else.
    let ldd = Command::new("ldd")
        .arg(env!("CARGO_BIN_EXE_bpfsnap"))
        .output()
        .unwrap();
    check_image_files(
        &fs::read_to_string(&files).unwrap(),
        &String::from_utf8(ldd.stdout).unwrap(),
    );

    // What it wrote into the hostPath.
    let text =
        fs::read_to_string(textfile.join(file_name)).expect("the container wrote its output");
    assert_eq!(common::sample(&text, "bpfsnap_up"), Some(1.0), "{text}");
    let enabled: BTreeSet<String> = common::samples(&text, "bpfsnap_enabled_configs")
        .into_iter()
        .filter_map(|(labels, _)| {
            let name = labels.strip_prefix("name=\"")?;
            Some(name[..name.find('"')?].to_string())
        })
        .collect();
    // --by container: the default set's built-ins that have a twin by
    // container are replaced by it.
    assert!(args.windows(2).any(|pair| pair == ["--by", "container"]));
    let expected: BTreeSet<String> = default_builtins_here()
        .into_iter()
        .map(|name| {
            let twin = format!("{name}_by_container");
            if bpfsnap::builtin::find(&twin).is_some() {
                twin
            } else {
                name
            }
        })
        .collect();
    assert_eq!(
        enabled, expected,
        "the default built-ins that run here, by container, in the container"
    );
    assert!(
        !common::samples(&text, "bpfsnap_syscalls_total").is_empty(),
        "{text}"
    );
    // The host's cgroup tree, mounted below --container-root, names the
    // cgroups of the processes whose system calls failed.
    let named = common::samples(&text, "bpfsnap_container_syscall_errors_total")
        .into_iter()
        .filter(|(labels, _)| labels.contains(r#"container="/"#))
        .count();
    assert!(
        named > 0,
        "no failed call's cgroup named by its path\n{text}"
    );
    common::promtool_check(&text);

    let _ = writeln!(
        std::io::stderr(),
        "container test: image built and run in {:.1} s",
        start.elapsed().as_secs_f64()
    );
}

/// The image's files (`files_of`'s list): the binary and the libraries
/// `ldd` (its text) says it links, nothing else, and the two empty
/// directories bpfsnap writes in.
fn check_image_files(listed: &str, ldd: &str) {
    let image_files: BTreeSet<String> = listed
        .lines()
        .filter(|path| !path.ends_with('/'))
        .map(|path| format!("/{}", path.trim_start_matches("./")))
        .collect();
    let mut expected: BTreeSet<String> = ldd
        .lines()
        .filter_map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                [_, "=>", path, ..] if path.starts_with('/') => Some(path.to_string()),
                [path, ..] if path.starts_with('/') => Some(path.to_string()),
                _ => None,
            }
        })
        .collect();
    assert!(expected.iter().any(|l| l.contains("libelf")), "{ldd}");
    expected.insert("/usr/bin/bpfsnap".into());
    assert_eq!(
        image_files, expected,
        "the image's files against ldd: {ldd}"
    );
    let directories: BTreeSet<&str> = listed.lines().filter(|p| p.ends_with('/')).collect();
    for directory in ["run/lock/", "tmp/"] {
        assert!(directories.contains(directory), "{listed}");
    }
}

/// Debian's (and the OCI image's) name of a Rust target architecture.
fn debian_arch(rust_arch: &str) -> &str {
    match rust_arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// `script` (sh; its arguments follow) with the tests' podman: its storage
/// under target/containers (the machine's own is left alone), the cgroupfs
/// manager, in a mount namespace of its own where /sys/fs/cgroup is a plain
/// cgroup2 mount (crun refuses this machine's hybrid cgroups; see the top of
/// this file). `$ARCH` is this machine's architecture (amd64), `$RUN` the
/// flags every `podman run` needs here, `files_of IMAGE` lists an image's
/// files, `remove NAME` removes tools/image.sh's manifest list and images.
fn podman_script(work: &Path, script: &str) -> Command {
    let store = Path::new(SOURCE).join("target/containers");
    let storage = work.join("storage.conf");
    fs::write(
        &storage,
        format!(
            "[storage]\ndriver = \"overlay\"\ngraphroot = \"{}\"\nrunroot = \"{}\"\n",
            store.join("storage").display(),
            store.join("run").display()
        ),
    )
    .unwrap();
    let engine = work.join("containers.conf");
    // crun by name: with runc installed too (tests/containers.rs needs it),
    // podman's default on a host without a unified cgroup tree is runc,
    // which refuses --cgroups=disabled ("not compatible with NoCgroups").
    fs::write(
        &engine,
        "[engine]\ncgroup_manager = \"cgroupfs\"\nruntime = \"crun\"\n",
    )
    .unwrap();
    let prelude = r#"
mount -t cgroup2 none /sys/fs/cgroup
# No cgroup (see above); podman raises RLIMIT_NOFILE and RLIMIT_NPROC, which
# crun cannot do here without CAP_SYS_RESOURCE: below the hard limits.
RUN="--cgroups=disabled --ulimit nofile=1024:1024 --ulimit nproc=1024:1024"
files_of() {
  container=$(podman create "$1")
  podman export "$container" | tar -t
  podman rm "$container" >/dev/null
}
remove() {
  podman manifest rm "$1" >/dev/null
  podman rmi $(podman images --quiet --filter "reference=$1-*") >/dev/null
}
"#;
    let mut command = Command::new("unshare");
    command
        .current_dir(SOURCE)
        .env("CONTAINERS_STORAGE_CONF", storage)
        .env("CONTAINERS_CONF", engine)
        .env("ARCH", debian_arch(std::env::consts::ARCH))
        .args(["--mount", "--propagation", "private", "sh", "-euc"])
        .arg(format!("{prelude}{script}"))
        .arg("sh");
    command
}

/// On a failing test, SIGKILL to the process whose pid is in the file.
struct KillOnPanic(PathBuf);

impl Drop for KillOnPanic {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        if let Some(pid) = fs::read_to_string(&self.0)
            .ok()
            .and_then(|text| text.trim().parse::<i32>().ok())
        {
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

/// bpfsnap cross-built for arm64 (aarch64-unknown-linux-gnu) in this test
/// build's profile and target directory, as `make build ARCH=arm64` builds
/// it (.cargo/config.toml's linker; `make test-deps` installs the cross
/// toolchain and the arm64 libelf and zlib on x86_64).
fn arm64_binary() -> PathBuf {
    const TRIPLE: &str = "aarch64-unknown-linux-gnu";
    let profile_dir = Path::new(env!("CARGO_BIN_EXE_bpfsnap")).parent().unwrap();
    let target_dir = profile_dir.parent().unwrap();
    let profile = profile_dir.file_name().unwrap();
    let mut cargo = Command::new(env!("CARGO"));
    cargo
        .current_dir(SOURCE)
        .args([
            "build", "--quiet", "--locked", "--bin", "bpfsnap", "--target", TRIPLE,
        ])
        .env("CARGO_TARGET_DIR", target_dir);
    if profile == "release" {
        cargo.arg("--release");
    }
    let output = cargo.output().expect("cargo");
    assert!(
        output.status.success(),
        "cargo build --target {TRIPLE}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    target_dir.join(TRIPLE).join(profile).join("bpfsnap")
}

/// The image for linux/arm64 and the manifest list that holds it beside
/// the amd64 one, as `make image` makes them (tools/image.sh), on this
/// x86_64 machine: the arm64 image's config says arm64, it holds the arm64
/// binary and the arm64 libraries it links, and run through qemu-user
/// (binfmt_misc, which `make test-deps` registers) it is bpfsnap on
/// aarch64. Run by the manifest list's name, podman picks each platform's
/// image, as a kubelet pulling the DaemonSet's image does on each node; the
/// DaemonSet pins no architecture.
#[cfg(target_arch = "x86_64")]
#[test]
#[ignore = "the arm64 leg: `make vm-test-arm64` runs it (it does not fit in `make test`'s 30 min)"]
fn the_arm64_image_runs_bpfsnap_on_aarch64_and_the_manifest_list_holds_both() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    let start = Instant::now();
    let pod = pod_spec();
    for pinning in ["nodeSelector", "affinity", "nodeName"] {
        assert!(pod.get(pinning).is_none(), "the DaemonSet sets {pinning}");
    }
    let arm64 = arm64_binary();
    let work = tempfile::tempdir_in(Path::new(SOURCE).join("target")).unwrap();
    let out = work.path();
    build_and_run_both_images(&arm64, out);
    let read = |name: &str| fs::read_to_string(out.join(name)).unwrap_or_default();
    assert_eq!(read("arch").trim(), "linux/arm64");
    check_manifest_list(&read("manifest.json"));
    // The arm64 loader lists what the arm64 binary links (run through
    // qemu-user, as ldd runs the host's loader).
    let ldd = Command::new("/lib/ld-linux-aarch64.so.1")
        .arg("--list")
        .arg(&arm64)
        .output()
        .expect("the arm64 dynamic loader (libc6:arm64, make test-deps)");
    let ldd = String::from_utf8_lossy(&ldd.stdout);
    assert!(ldd.contains("/lib/aarch64-linux-gnu/libelf.so.1"), "{ldd}");
    check_image_files(&read("files"), &ldd);

    let version = format!("bpfsnap {}", env!("CARGO_PKG_VERSION"));
    for platform in ["amd64", "arm64"] {
        assert_eq!(read(&format!("version-{platform}")).trim(), version);
    }
    // pagefaults' tracepoint is x86's: the arm64 binary says so, by name
    // of the architecture it runs on; the amd64 one does not.
    let aarch64 = "x86_64 only, and this is aarch64";
    let listed = read("list-arm64");
    assert!(
        listed.contains(aarch64) && listed.contains("syscalls"),
        "{listed}"
    );
    let listed = read("list-amd64");
    assert!(
        !listed.contains(aarch64) && listed.contains("syscalls"),
        "{listed}"
    );
    let _ = writeln!(
        std::io::stderr(),
        "container test (arm64): built, cross-built and run in {:.1} s",
        start.elapsed().as_secs_f64()
    );
}

/// tools/image.sh on this build's binary and `arm64`; into `out`: the arm64
/// image's platform, the manifest list, the arm64 image's files, and what
/// `--version` and `list --long` print, run from the list for each
/// platform.
fn build_and_run_both_images(arm64: &Path, out: &Path) {
    let list = format!("localhost/bpfsnap:test-arm64-{}", std::process::id());
    let script = r#"
list=$1 amd64=$2 arm64=$3 out=$4
tools/image.sh "$list" "$amd64" "$arm64"
trap 'remove "$list"' EXIT
podman image inspect --format '{{.Os}}/{{.Architecture}}' "$list-arm64" > "$out/arch"
podman manifest inspect "$list" > "$out/manifest.json"
files_of "$list-arm64" > "$out/files"
for platform in amd64 arm64; do
  podman run --rm --platform "linux/$platform" $RUN --network=none "$list" --version > "$out/version-$platform"
  podman run --rm --platform "linux/$platform" $RUN --network=none "$list" list --long > "$out/list-$platform"
done
"#;
    let output = podman_script(out, script)
        .arg(&list)
        .arg(env!("CARGO_BIN_EXE_bpfsnap"))
        .arg(arm64)
        .arg(out)
        .output()
        .expect("unshare (util-linux)");
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `podman manifest inspect`'s JSON: one linux image per architecture,
/// amd64 and arm64.
fn check_manifest_list(json: &str) {
    let list: serde_json::Value = serde_json::from_str(json).expect(json);
    let platforms: Vec<String> = list["manifests"]
        .as_array()
        .map(|manifests| {
            manifests
                .iter()
                .map(|m| format!("{}/{}", m["platform"]["os"], m["platform"]["architecture"]))
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        platforms,
        ["\"linux\"/\"amd64\"", "\"linux\"/\"arm64\""],
        "{json}"
    );
}
