//! The Debian package, built and installed for real. tools/deb.sh builds it
//! from debian/ with `dpkg-buildpackage -us -uc -b` in a cached Debian 12
//! build root (tools/debroot.sh DIR build), as `make deb` does, and lintian
//! passes it; apt installs it, as an admin would (`apt install
//! ./bpfsnap_*.deb`), into throw-away copies of a Debian 12 root
//! (tools/debroot.sh: debootstrap minbase plus systemd, cached under
//! target/debroot). Then, in one copy, offline (chroot):
//! - Depends is what the binary links (dpkg-shlibdeps' work, checked against
//!   the packages that own the libraries in the root);
//! - the units pass the root's own `systemd-analyze verify`; the timer is
//!   enabled, serve is not, and the maintainer scripts (debhelper's), on a
//!   root that looks booted with systemd, ask systemd to start the timer and
//!   nothing else, and mount nothing;
//! - an upgrade keeps an admin's `systemctl disable` and edited conffile,
//!   and the pinned programs;
//! - purge detaches the pinned programs and leaves nothing but dpkg's and
//!   apt's own records.
//!
//! And in another, booted with `systemd-nspawn -b` (the units run by the
//! root's own systemd, hardening and all, on this machine's kernel): the
//! timer runs bpfsnap.service, which writes a valid .prom with bpfsnap_up 1
//! and pins its programs, so that calls made before the next run are counted
//! in it, exactly; `systemd-analyze security` rates both services 3.0 or
//! better; serve answers a scrape; an upgrade restarts the timer and purge
//! detaches the programs. The container is then stopped completely (powered
//! off; its PID namespace killed if it does not end) and the test checks
//! that no process of it and no program it loaded is left.
//!
//! Everything mounted is mounted in a mount namespace of its own that dies
//! with the command (unshare), so a failing test leaves no mount behind;
//! but for the bpffs the root sees as /sys/fs/bpf, the test's own, which
//! holds the pins from one command to the next and is unmounted (releasing
//! whatever is pinned there) when the test ends.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const SOURCE: &str = env!("CARGO_MANIFEST_DIR");

/// The cached Debian 12 root (tools/debroot.sh) and, beside it, the copies.
fn debroot_dir() -> PathBuf {
    Path::new(SOURCE).join("target/debroot")
}

/// Mounts made in the namespace of every command in the root: the kernel's
/// file systems, and /run a tmpfs of its own holding /run/systemd/system,
/// so the maintainer scripts see a machine booted with systemd.
const PRELUDE: &str = r#"
R=$1; shift
mount -t proc proc "$R/proc"
mount --rbind /sys "$R/sys"
mount --bind "$BPFFS" "$R/sys/fs/bpf"
mount --rbind /dev "$R/dev"
mount -t tmpfs -o mode=0755 tmpfs "$R/run"
mkdir -p "$R/run/systemd/system" "$R/run/lock"
chmod 1777 "$R/run/lock"
"#;

/// The environment of commands in the root (root's usual PATH).
const PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// `script` (sh) in a mount namespace of its own, after [`PRELUDE`]; `$R` is
/// the root.
fn in_namespace(root: &Path, script: &str, args: &[&str]) -> Output {
    Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-euc"])
        .arg(format!("{PRELUDE}\n{script}"))
        .arg("sh")
        .arg(root)
        .args(args)
        .env("BPFFS", bpffs_of(root))
        .output()
        .expect("unshare (util-linux)")
}

/// The test's own bpffs, which the root sees as /sys/fs/bpf (beside it).
fn bpffs_of(root: &Path) -> PathBuf {
    root.with_extension("bpffs")
}

/// A command (sh) in the root, as root, in its own namespace; must succeed.
fn in_root(root: &Path, command: &str) -> String {
    let output = in_namespace(
        root,
        &format!(
            "exec chroot \"$R\" env -i {PATH} DEBIAN_FRONTEND=noninteractive HOME=/root sh -c \"$1\""
        ),
        &[command],
    );
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "in the root: {command}: {said}");
    said
}

/// What systemctl was asked since the last call, one call a line, from the
/// stand-in the test put in the root (it records every call but the offline
/// is-enabled and is-active queries, which it answers).
fn systemctl_calls(root: &Path) -> Vec<String> {
    let log = root.join("tmp/systemctl.log");
    let calls = fs::read_to_string(&log).unwrap();
    fs::write(&log, "").unwrap();
    calls.lines().map(str::to_string).collect()
}

/// Every path in the root (relative), but the kernel's file systems' mount
/// points' contents.
fn tree(root: &Path) -> BTreeSet<String> {
    let output = Command::new("find")
        .arg(root)
        .args(["-xdev", "-printf", "%P\\n"])
        .output()
        .unwrap();
    assert!(output.status.success());
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

/// The Debian 12 root tools/debroot.sh made (once; cached), never changed.
fn cached_root() -> PathBuf {
    let cache = debroot_dir().join("bookworm");
    let status = Command::new(Path::new(SOURCE).join("tools/debroot.sh"))
        .arg(&cache)
        .status()
        .expect("tools/debroot.sh");
    assert!(
        status.success(),
        "tools/debroot.sh could not make {cache:?}"
    );
    cache
}

fn took(since: Instant) -> String {
    format!("{:.1} s", since.elapsed().as_secs_f64())
}

/// The package, built once per test process by tools/deb.sh as `make deb`
/// builds it (dpkg-buildpackage in the cached build root; lintian clean).
fn package() -> &'static Path {
    static DEB: OnceLock<PathBuf> = OnceLock::new();
    DEB.get_or_init(|| {
        let deb = build_package(&[]);
        check_contents(&deb);
        deb
    })
}

/// tools/deb.sh with `args` after the output directory (an architecture to
/// cross-build for); the .deb it made.
fn build_package(args: &[&str]) -> PathBuf {
    let start = Instant::now();
    let output = Command::new(Path::new(SOURCE).join("tools/deb.sh"))
        .arg(debroot_dir().join("deb"))
        .args(args)
        .output()
        .expect("tools/deb.sh");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "tools/deb.sh {args:?}: {stderr}");
    let deb = PathBuf::from(String::from_utf8(output.stdout).unwrap().trim());
    let name = deb.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        name.starts_with(&format!("bpfsnap_{}-", env!("CARGO_PKG_VERSION"))),
        "debian/changelog's upstream version is Cargo.toml's: {name}"
    );
    let _ = writeln!(
        std::io::stderr(),
        "package test: dpkg-buildpackage {args:?} and lintian {}\n{stderr}",
        took(start)
    );
    deb
}

/// What the package ships: what tools/deb.sh's dpkg-deb build shipped, plus
/// README and the examples.
fn check_contents(deb: &Path) {
    let listed = Command::new("dpkg-deb")
        .arg("-c")
        .arg(deb)
        .output()
        .unwrap();
    assert!(listed.status.success());
    let listed = String::from_utf8(listed.stdout).unwrap();
    let files: BTreeSet<&str> = listed
        .lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .map(|path| path.trim_start_matches('.'))
        .collect();
    let mut expected = vec![
        "/usr/bin/bpfsnap",
        "/lib/systemd/system/bpfsnap.service",
        "/lib/systemd/system/bpfsnap.timer",
        "/lib/systemd/system/bpfsnap-serve.service",
        "/etc/default/bpfsnap",
        "/etc/default/bpfsnap-serve",
        "/usr/share/bash-completion/completions/bpfsnap",
        "/usr/share/zsh/vendor-completions/_bpfsnap",
        "/usr/share/fish/vendor_completions.d/bpfsnap.fish",
        "/var/lib/prometheus/node-exporter/",
        "/usr/share/doc/bpfsnap/copyright",
        "/usr/share/doc/bpfsnap/changelog.Debian.gz",
        "/usr/share/doc/bpfsnap/README.md.gz",
        "/usr/share/doc/bpfsnap/examples/monitoring/rules/bpfsnap.yml",
        "/usr/share/doc/bpfsnap/examples/monitoring/dashboards/bpfsnap.json",
        "/usr/share/doc/bpfsnap/examples/deploy/web-config.yml",
        "/usr/share/doc/bpfsnap/examples/biolatency.toml",
        "/usr/share/lintian/overrides/bpfsnap",
    ];
    let pages: Vec<String> = fs::read_dir(Path::new(SOURCE).join("man"))
        .unwrap()
        .map(|page| {
            let name = page.unwrap().file_name().to_string_lossy().into_owned();
            format!("/usr/share/man/man1/{name}.gz")
        })
        .collect();
    expected.extend(pages.iter().map(String::as_str));
    let missing: Vec<&&str> = expected.iter().filter(|f| !files.contains(**f)).collect();
    assert!(
        missing.is_empty(),
        "the package lacks {missing:?}:\n{listed}"
    );
}

/// A throw-away copy of the cached root, with its own bpffs (dropped,
/// releasing its pins, before the copy is removed) and the package in
/// /var/tmp (nspawn mounts a tmpfs on /tmp).
struct Throwaway {
    root: PathBuf,
    _bpffs: common::Mount,
    _work: tempfile::TempDir,
}

impl Throwaway {
    fn new(deb: &Path) -> Throwaway {
        let cache = cached_root();
        let work = tempfile::Builder::new()
            .prefix("test-")
            .tempdir_in(debroot_dir())
            .unwrap();
        let root = work.path().join("root");
        let status = Command::new("cp")
            .args(["-a", "--reflink=auto"])
            .arg(&cache)
            .arg(&root)
            .status()
            .unwrap();
        assert!(status.success());
        fs::copy(deb, root.join("var/tmp/bpfsnap.deb")).unwrap();
        let bpffs = common::Mount::bpffs(&bpffs_of(&root));
        Throwaway {
            root,
            _bpffs: bpffs,
            _work: work,
        }
    }
}

#[test]
fn the_package_installs_upgrades_and_purges() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    let start = Instant::now();
    let deb = package();
    let throwaway = Throwaway::new(deb);
    let root = &throwaway.root;
    install_systemctl_stand_in(root);
    let before = tree(root);

    install_with_apt(root);
    // Started where systemd runs: the timer only; and nothing stopped.
    assert_eq!(
        systemctl_calls(root),
        [
            "--system daemon-reload",
            "--quiet --system start bpfsnap.timer",
            "--system daemon-reload",
        ],
        "what the maintainer scripts asked of systemd"
    );
    check_depends(root);
    check_units_offline(root);
    let pinned = pin_as_the_timer_would(root);
    upgrade_keeps_what_the_admin_did(root);
    purge_leaves_nothing(root, &before, &pinned);
    let _ = writeln!(std::io::stderr(), "package test (offline): {}", took(start));
}

/// systemd's stand-in, first in the PATH apt gives dpkg (DPkg::Path:
/// /usr/sbin before /usr/bin): records what the maintainer scripts ask of
/// the running systemd; what works on unit files offline it hands to
/// systemd's systemctl (deb-systemd-helper's `--root=/ preset`, which
/// enables; deb-systemd-invoke's is-enabled); is-active: nothing runs.
fn install_systemctl_stand_in(root: &Path) {
    let shim = root.join("usr/sbin/systemctl");
    assert!(!shim.exists(), "Debian's systemctl is /usr/bin/systemctl");
    fs::write(
        &shim,
        "#!/bin/sh\n\
         case \" $* \" in\n\
         *' is-enabled '* | *' --root='*) SYSTEMD_OFFLINE=1 exec /usr/bin/systemctl \"$@\" ;;\n\
         *' is-active '*) exit 3 ;;\n\
         esac\n\
         echo \"$*\" >> /tmp/systemctl.log\n",
    )
    .unwrap();
    fs::set_permissions(&shim, fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(root.join("tmp/systemctl.log"), "").unwrap();
}

/// Installed as an admin would, with apt resolving Depends; the mounts of
/// the namespace counted before and after: the scripts mount nothing.
fn install_with_apt(root: &Path) {
    let output = in_namespace(
        root,
        &format!(
            "before=$(wc -l < /proc/self/mountinfo)\n\
             chroot \"$R\" env -i {PATH} DEBIAN_FRONTEND=noninteractive HOME=/root \
               apt-get install -y -q --no-install-recommends /var/tmp/bpfsnap.deb\n\
             after=$(wc -l < /proc/self/mountinfo)\n\
             [ \"$before\" = \"$after\" ] || {{ echo \"the installation mounted something: $before mounts, then $after\"; exit 1; }}"
        ),
        &[],
    );
    assert!(
        output.status.success(),
        "apt-get install ./bpfsnap.deb: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Depends: exactly the packages owning the libraries the binary links.
fn check_depends(root: &Path) {
    let depends = in_root(root, "dpkg-query -W -f='${Depends}' bpfsnap");
    let depends: BTreeSet<&str> = depends
        .split(',')
        .map(|dep| dep.split_whitespace().next().unwrap())
        .collect();
    let ldd = in_root(root, "ldd /usr/bin/bpfsnap");
    let libraries: Vec<&str> = ldd
        .lines()
        .filter_map(|line| {
            let path = match line.split_once("=>") {
                Some((_, to)) => to.split_whitespace().next()?,
                None => line.split_whitespace().next()?,
            };
            path.starts_with('/').then_some(path)
        })
        .collect();
    assert!(
        libraries.iter().any(|l| l.contains("libelf"))
            && libraries.iter().any(|l| l.contains("libz")),
        "{ldd}"
    );
    // /lib is /usr/lib (merged /usr), but dpkg knows each file by the path
    // its package ships it at.
    let owners = in_root(
        root,
        &format!(
            "sh -c 'for lib in {}; do dpkg -S \"$lib\" 2>/dev/null || dpkg -S \"/usr$lib\"; done'",
            libraries.join(" ")
        ),
    );
    let owners: BTreeSet<&str> = owners
        .lines()
        .map(|line| line.split(':').next().unwrap())
        .collect();
    assert_eq!(depends, owners, "Depends against the owners of: {ldd}");
}

/// The units, with the root's systemd; enabled as Debian enables them.
fn check_units_offline(root: &Path) {
    in_root(
        root,
        "systemd-analyze verify --man=no /lib/systemd/system/bpfsnap.service \
         /lib/systemd/system/bpfsnap.timer /lib/systemd/system/bpfsnap-serve.service",
    );
    let enabled = in_root(
        root,
        "SYSTEMD_OFFLINE=1 /usr/bin/systemctl is-enabled bpfsnap.timer bpfsnap.service bpfsnap-serve.service || true",
    );
    assert_eq!(
        enabled.split_whitespace().collect::<Vec<_>>(),
        ["enabled", "static", "disabled"]
    );
}

/// The timer's command with the package's ARGS (--pin), run in the root
/// (the booted test runs it as the unit); returns the ids of the programs
/// it left pinned.
fn pin_as_the_timer_would(root: &Path) -> BTreeSet<u64> {
    in_root(root, ". /etc/default/bpfsnap && /usr/bin/bpfsnap run $ARGS");
    let pinned = pinned_program_ids(root);
    assert!(!pinned.is_empty(), "the run left no program attached");
    assert!(bpffs_of(root).join("bpfsnap/syscalls/links").is_dir());
    let text =
        fs::read_to_string(root.join("var/lib/prometheus/node-exporter/bpfsnap.prom")).unwrap();
    assert_eq!(common::sample(&text, "bpfsnap_up"), Some(1.0), "{text}");
    pinned
}

/// The ids of the programs whose links are pinned in the root's bpffs
/// (`bpftool link show pinned`): exactly bpfsnap's, whatever else runs.
fn pinned_program_ids(root: &Path) -> BTreeSet<u64> {
    let output = Command::new("find")
        .arg(bpffs_of(root))
        .args(["-path", "*/links/*", "-type", "f"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|link| {
            let shown = Command::new("bpftool")
                .args(["link", "show", "pinned", link, "--json"])
                .output()
                .expect("bpftool (make test-deps installs it)");
            let link: serde_json::Value = serde_json::from_slice(&shown.stdout).ok()?;
            link["prog_id"].as_u64()
        })
        .collect()
}

/// An upgrade (the same version again) keeps what the admin did: the timer
/// disabled, /etc/default/bpfsnap edited. Only serve's try-restart (which
/// starts nothing) and the disabled timer's restart (which deb-systemd-invoke
/// does not pass on) are asked.
fn upgrade_keeps_what_the_admin_did(root: &Path) {
    in_root(
        root,
        "SYSTEMD_OFFLINE=1 /usr/bin/systemctl disable bpfsnap.timer",
    );
    let default = root.join("etc/default/bpfsnap");
    let edited = fs::read_to_string(&default)
        .unwrap()
        .replace("--quiet", "--quiet --lock-timeout 30s");
    assert!(edited.contains("--lock-timeout"), "{edited}");
    fs::write(&default, &edited).unwrap();
    in_root(
        root,
        "apt-get install -y -q --reinstall /var/tmp/bpfsnap.deb",
    );
    assert_eq!(
        in_root(
            root,
            "SYSTEMD_OFFLINE=1 /usr/bin/systemctl is-enabled bpfsnap.timer || true"
        )
        .trim(),
        "disabled"
    );
    assert_eq!(fs::read_to_string(&default).unwrap(), edited);
    assert_eq!(
        systemctl_calls(root),
        [
            "--system daemon-reload",
            "--system daemon-reload",
            "try-restart bpfsnap-serve.service",
        ],
        "what the upgrade asked of systemd"
    );
}

/// Purge, with what apt installed for it: what policy keeps is dpkg's and
/// apt's records; the rest of the root is as it was; and the pinned
/// programs are detached (an upgrade kept them).
fn purge_leaves_nothing(root: &Path, before: &BTreeSet<String>, pinned: &BTreeSet<u64>) {
    assert!(
        bpffs_of(root).join("bpfsnap/syscalls/links").is_dir(),
        "the upgrade kept the pinned programs"
    );
    in_root(root, "apt-get purge -y -q --autoremove bpfsnap");
    assert!(
        !bpffs_of(root).join("bpfsnap").exists(),
        "the removal left programs pinned"
    );
    assert!(
        common::still_loaded_after_exit(pinned).is_empty(),
        "the removal detached the pinned programs"
    );
    assert_eq!(
        systemctl_calls(root),
        [
            "stop bpfsnap.timer",
            "stop bpfsnap.service bpfsnap-serve.service",
            "--system daemon-reload",
            "--system daemon-reload",
        ],
        "what the removal asked of systemd"
    );
    let after = tree(root);
    let records = [
        "var/lib/dpkg/",
        "var/lib/apt/",
        "var/cache/apt/",
        "var/cache/debconf/",
        "var/log/",
    ];
    let left: Vec<&String> = after
        .symmetric_difference(before)
        .filter(|path| !records.iter().any(|record| path.starts_with(record)))
        .collect();
    assert!(left.is_empty(), "purge left these different: {left:#?}");
    let status = in_root(
        root,
        "dpkg-query -W -f='${db:Status-Abbrev}' bpfsnap 2>&1 || true",
    );
    assert!(
        !status.starts_with("ii") && !status.starts_with("rc"),
        "{status}"
    );
}

/// A throw-away root booted with `systemd-nspawn -b`: its own PID
/// namespace, network (loopback only) and /run; the machine's kernel,
/// tracefs (read-only) and the test's bpffs as /sys/fs/bpf; the capabilities
/// and system calls loading BPF programs needs, which nspawn withholds by
/// default. Stopped completely by [`Container::stop`] (or, on a failure, by
/// Drop): powered off, its PID namespace killed if it does not end, and
/// polled until no process of it is left.
struct Container {
    nspawn: Child,
    /// The container's PID 1 (its systemd), as this machine numbers it.
    init: u32,
    /// Its PID namespace (/proc/PID/ns/pid's link), which every process of
    /// the container is in.
    namespace: String,
    stopped: bool,
}

impl Container {
    fn boot(root: &Path) -> Container {
        let log = fs::File::create(root.with_extension("nspawn.log")).unwrap();
        let nspawn = Command::new("systemd-nspawn")
            // No machined or systemd on the host to register with or ask for a
            // scope: nspawn makes its cgroups beside the test's.
            .args(["--quiet", "--boot", "--register=no", "--keep-unit"])
            .arg("--private-network")
            .arg(format!("--directory={}", root.display()))
            .args(["--link-journal=no", "--resolv-conf=off", "--timezone=off"])
            .args(["--console=pipe", "--machine=bpfsnap-package-test"])
            .arg("--capability=CAP_BPF,CAP_PERFMON,CAP_SYSLOG")
            .arg("--system-call-filter=bpf perf_event_open")
            .arg(format!("--bind={}:/sys/fs/bpf", bpffs_of(root).display()))
            .arg("--bind-ro=/sys/kernel/tracing")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("systemd-nspawn (make test-deps installs systemd-container)");
        let mut container = Container {
            nspawn,
            init: 0,
            namespace: String::new(),
            stopped: false,
        };
        let deadline = Instant::now() + common::PATIENCE;
        while container.init == 0 {
            assert!(
                container.nspawn.try_wait().unwrap().is_none(),
                "systemd-nspawn exited: {}",
                fs::read_to_string(root.with_extension("nspawn.log")).unwrap_or_default()
            );
            assert!(Instant::now() < deadline, "no PID 1 in the container");
            container.init = init_of(container.nspawn.id()).unwrap_or(0);
            std::thread::sleep(Duration::from_millis(20));
        }
        container.namespace = fs::read_link(format!("/proc/{}/ns/pid", container.init))
            .unwrap()
            .to_string_lossy()
            .into_owned();
        container
    }

    /// `command` (sh) in the container, as root, with systemd's PATH.
    fn run(&self, command: &str) -> Output {
        Command::new("nsenter")
            .arg(format!("--target={}", self.init))
            .args(["--mount", "--uts", "--ipc", "--net", "--pid", "--cgroup"])
            .args(["--root", "--wd", "--", "/usr/bin/env", "-i", PATH])
            .args([
                "LANG=C.UTF-8",
                "DEBIAN_FRONTEND=noninteractive",
                "HOME=/root",
            ])
            .args(["sh", "-c", command])
            .output()
            .expect("nsenter (util-linux)")
    }

    /// [`Container::run`], which must succeed; what it printed.
    fn sh(&self, command: &str) -> String {
        let output = self.run(command);
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            output.status.success(),
            "in the container: {command}: {said}"
        );
        said
    }

    /// Polls `command` until it prints something `done` accepts.
    fn poll(&self, command: &str, limit: Duration, done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let output = self.run(command);
            let said = String::from_utf8_lossy(&output.stdout).into_owned();
            if done(&said) {
                return said;
            }
            assert!(
                Instant::now() < deadline,
                "in the container: {command}: still {said:?} after {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Every process of the container, by this machine's PIDs.
    fn processes(&self) -> Vec<u32> {
        fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                fs::read_link(format!("/proc/{pid}/ns/pid"))
                    .is_ok_and(|ns| ns.to_string_lossy() == self.namespace)
            })
            .collect()
    }

    /// Powers the container off (SIGRTMIN+4 is systemd's poweroff) and waits
    /// for nspawn; if it does not end, kills its PID 1, which makes the
    /// kernel kill every process of its PID namespace, then nspawn. Polls
    /// until no process of the container is left; returns whether the
    /// poweroff alone did it.
    fn power_off(&mut self) -> bool {
        self.stopped = true;
        let poweroff = libc::SIGRTMIN() + 4;
        // SAFETY: plain kill(2) on the container's PID 1.
        unsafe { libc::kill(self.init as i32, poweroff) };
        let clean = common::wait_bounded(&mut self.nspawn, Duration::from_secs(90)).is_some();
        if !clean {
            // SAFETY: as above.
            unsafe { libc::kill(self.init as i32, libc::SIGKILL) };
            let _ = self.nspawn.kill();
            let _ = self.nspawn.wait();
        }
        let deadline = Instant::now() + common::PATIENCE;
        while !self.processes().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        remove_cgroups_of_nspawn();
        clean
    }

    /// Stops the container and checks that nothing of it is left.
    fn stop(mut self) {
        let clean = self.power_off();
        let left = self.processes();
        assert!(left.is_empty(), "processes of the container left: {left:?}");
        assert!(clean, "the container did not power off (killed)");
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if !self.stopped {
            self.power_off();
        }
    }
}

/// Removes the cgroups nspawn made beside the test's (payload/ for the
/// container, supervisor/ for itself: `--keep-unit` without systemd on the
/// host), in every hierarchy, once the container is gone (rmdir fails on a
/// cgroup with a process in it).
fn remove_cgroups_of_nspawn() {
    let own = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let mut made = Vec::new();
    for line in own.lines() {
        let mut fields = line.splitn(3, ':');
        let (_, controllers, path) = (fields.next(), fields.next(), fields.next());
        let hierarchy = match controllers {
            Some("") if Path::new("/sys/fs/cgroup/unified").is_dir() => "unified",
            Some("") => "",
            Some(named) => named.trim_start_matches("name="),
            None => continue,
        };
        let base = Path::new("/sys/fs/cgroup")
            .join(hierarchy)
            .join(path.unwrap_or("/").trim_start_matches('/'));
        for made_by_nspawn in ["payload", "supervisor"] {
            let output = Command::new("find")
                .arg(base.join(made_by_nspawn))
                .args(["-depth", "-type", "d"])
                .output()
                .unwrap();
            made.extend(
                String::from_utf8_lossy(&output.stdout)
                    .lines()
                    .map(PathBuf::from),
            );
        }
    }
    for cgroup in made {
        let _ = fs::remove_dir(&cgroup);
    }
}

/// The PID 1 of the container nspawn `nspawn` started: its child that is
/// PID 1 of a PID namespace of its own.
fn init_of(nspawn: u32) -> Option<u32> {
    let children = fs::read_to_string(format!("/proc/{nspawn}/task/{nspawn}/children")).ok()?;
    children
        .split_whitespace()
        .filter_map(|pid| pid.parse::<u32>().ok())
        .find(|pid| {
            fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|status| {
                status
                    .lines()
                    .find_map(|line| line.strip_prefix("NSpid:"))
                    .and_then(|pids| pids.split_whitespace().last())
                    == Some("1")
            })
        })
}

#[test]
fn the_package_boots_with_its_hardened_timer_and_purges() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    let start = Instant::now();
    let deb = package();
    let throwaway = Throwaway::new(deb);
    let root = &throwaway.root;
    // Installed offline (no systemd runs yet: what the scripts ask of it
    // fails, and they go on); enabled as on a real system.
    in_root(
        root,
        "apt-get install -y -q --no-install-recommends /var/tmp/bpfsnap.deb",
    );
    let before = common::loaded_program_ids();
    let step = Instant::now();
    let container = Container::boot(root);
    container.poll(
        "systemctl is-system-running --wait",
        Duration::from_secs(120),
        |state| matches!(state.trim(), "running" | "degraded"),
    );
    let booted = took(step);
    let pinned = the_timer_writes_metrics(&container, root);
    let figures = security_figures(&container);
    serve_answers_a_scrape(&container);
    upgrade_and_purge_booted(&container, root, &pinned);
    container.stop();
    let loaded: BTreeSet<u64> = common::loaded_program_ids()
        .difference(&before)
        .copied()
        .collect();
    let left = common::still_loaded_after_exit(&loaded);
    assert!(
        left.is_empty(),
        "programs the container loaded are left: {left:?}"
    );
    let _ = writeln!(
        std::io::stderr(),
        "package test (booted): boot {booted}, security {figures:?}, total {}",
        took(start)
    );
}

/// The timer, enabled and started at boot, runs bpfsnap.service (30 s after
/// boot), which writes a valid .prom with bpfsnap_up 1 and pins its
/// programs; calls made before the service's next run are counted in it,
/// exactly. Returns the ids of the programs pinned.
fn the_timer_writes_metrics(container: &Container, root: &Path) -> BTreeSet<u64> {
    let state = container.sh(
        "systemctl is-enabled bpfsnap.timer bpfsnap-serve.service || true; \
         systemctl is-active bpfsnap.timer || true",
    );
    assert_eq!(
        state.split_whitespace().collect::<Vec<_>>(),
        ["enabled", "disabled", "active"]
    );
    let prom = root.join("var/lib/prometheus/node-exporter/bpfsnap.prom");
    container.poll(
        "systemctl show -p ExecMainExitTimestampMonotonic --value bpfsnap.service",
        Duration::from_secs(120),
        |exited| !matches!(exited.trim(), "" | "0"),
    );
    let result = container.sh("systemctl show -p Result --value bpfsnap.service");
    assert_eq!(result.trim(), "success", "{}", journal(container));
    let first = fs::read_to_string(&prom).unwrap();
    assert_eq!(common::sample(&first, "bpfsnap_up"), Some(1.0), "{first}");
    common::promtool_check(&first);
    let pinned = pinned_program_ids(root);
    assert!(!pinned.is_empty(), "the service left no program attached");
    assert!(bpffs_of(root).join("bpfsnap/syscalls/links").is_dir());

    common::rare_syscalls(500);
    container.sh("systemctl start bpfsnap.service");
    let second = fs::read_to_string(&prom).unwrap();
    common::promtool_check(&second);
    let rare = format!(
        "bpfsnap_syscalls_total{{syscall=\"{}\"}}",
        common::RARE_SYSCALL
    );
    let calls = |text: &str| common::sample(text, &rare).unwrap_or(0.0);
    assert_eq!(
        calls(&second) - calls(&first),
        500.0,
        "calls made between the service's runs\n{second}"
    );
    pinned
}

/// What bpfsnap's units said in the container's journal.
fn journal(container: &Container) -> String {
    String::from_utf8_lossy(
        &container
            .run("journalctl --no-pager -o cat -u bpfsnap.service -u bpfsnap-serve.service")
            .stdout,
    )
    .into_owned()
}

/// `systemd-analyze security` of both services, by the container's running
/// systemd: 3.0 or better ("OK") each.
fn security_figures(container: &Container) -> Vec<(String, f64)> {
    ["bpfsnap.service", "bpfsnap-serve.service"]
        .iter()
        .map(|unit| {
            let said = container.sh(&format!("systemd-analyze security --no-pager {unit}"));
            let figure: f64 = said
                .lines()
                .find_map(|line| line.split_once("Overall exposure level for "))
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|figure| figure.parse().ok())
                .unwrap_or_else(|| panic!("no overall exposure level: {said}"));
            assert!(figure <= 3.0, "{unit}: exposure {figure} > 3.0\n{said}");
            (unit.to_string(), figure)
        })
        .collect()
}

/// bpfsnap-serve.service, started by hand as an admin would, answers a
/// scrape of /metrics (on the container's loopback, its default address),
/// and stops.
fn serve_answers_a_scrape(container: &Container) {
    container.sh("systemctl start bpfsnap-serve.service");
    let scrape = "exec bash -c 'exec 3<>/dev/tcp/127.0.0.1/9435 && \
                  printf \"GET /metrics HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n\" >&3 && cat <&3'";
    let answer = container.poll(scrape, Duration::from_secs(60), |said| {
        said.contains("\nbpfsnap_up ")
    });
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    assert_eq!(
        common::sample(body, "bpfsnap_up"),
        Some(1.0),
        "{answer}\n{}",
        journal(container)
    );
    container.sh("systemctl stop bpfsnap-serve.service");
}

/// An upgrade (the same version again) restarts the timer; purge stops it,
/// detaches the pinned programs and removes the units.
fn upgrade_and_purge_booted(container: &Container, root: &Path, pinned: &BTreeSet<u64>) {
    container.sh("apt-get install -y -q --reinstall /var/tmp/bpfsnap.deb");
    let active = container.sh("systemctl is-active bpfsnap.timer || true");
    assert_eq!(active.trim(), "active");
    assert!(bpffs_of(root).join("bpfsnap/syscalls/links").is_dir());
    container.sh("apt-get purge -y -q bpfsnap");
    assert!(
        !bpffs_of(root).join("bpfsnap").exists(),
        "the removal left programs pinned"
    );
    assert!(
        common::still_loaded_after_exit(pinned).is_empty(),
        "the removal detached the pinned programs"
    );
    let state = container.sh("systemctl is-active bpfsnap.timer bpfsnap.service || true");
    assert_eq!(
        state.split_whitespace().collect::<Vec<_>>(),
        ["inactive", "inactive"]
    );
}

/// The packages `tools/deps.sh SET` would install on a fresh Debian 12 (the
/// cached minbase root, whose package lists apt reads without writing: no
/// caches saved), by apt's own resolution (`apt-get install --simulate`).
fn packages_installed_by(set: &str, root: &Path) -> Vec<String> {
    let listed = Command::new(Path::new(SOURCE).join("tools/deps.sh"))
        .args(["--list", set])
        .output()
        .unwrap();
    assert!(listed.status.success());
    let wanted = String::from_utf8(listed.stdout).unwrap();
    // Not the arm64 multiarch libraries of the test set on x86_64
    // (libelf-dev:arm64 ...), which need arm64 among dpkg's architectures,
    // as tools/deps.sh adds it but the root has not: libraries, no units.
    let wanted = wanted.split_whitespace().filter(|p| !p.ends_with(":arm64"));
    let simulated = Command::new("chroot")
        .arg(root)
        .args(["env", "-i", PATH, "apt-get", "install", "--simulate"])
        .args(["--no-install-recommends", "-o", "Dir::Cache::pkgcache="])
        .args(["-o", "Dir::Cache::srcpkgcache="])
        .args(wanted)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&simulated.stdout);
    assert!(
        simulated.status.success(),
        "apt-get --simulate in the root: {said}{}",
        String::from_utf8_lossy(&simulated.stderr)
    );
    said.lines()
        .filter_map(|line| line.strip_prefix("Inst "))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// The systemd units (service, socket, timer) `package` ships: Debian's
/// debhelper enables and starts such units when it is installed. From this
/// machine's installed copy, else from the downloaded package.
fn units_shipped_by(package: &str) -> Vec<String> {
    let installed = Command::new("dpkg-query")
        .args(["-L", package])
        .output()
        .unwrap();
    let files = if installed.status.success() {
        String::from_utf8_lossy(&installed.stdout).into_owned()
    } else {
        let dir = tempfile::tempdir().unwrap();
        let fetched = Command::new("apt-get")
            .args(["download", "-qq", package])
            .current_dir(dir.path())
            .status()
            .unwrap();
        assert!(fetched.success(), "apt-get download {package}");
        let deb = fs::read_dir(dir.path())
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let listed = Command::new("dpkg-deb")
            .arg("-c")
            .arg(&deb)
            .output()
            .unwrap();
        String::from_utf8_lossy(&listed.stdout).into_owned()
    };
    files
        .lines()
        .filter_map(|line| line.split_whitespace().last())
        .filter(|path| path.contains("/systemd/system/"))
        .filter(|path| {
            [".service", ".socket", ".timer"]
                .iter()
                .any(|end| path.ends_with(end))
        })
        .map(str::to_string)
        .collect()
}

/// `make run` installs what building and running need and nothing that
/// starts a service; `make test`'s set does (Prometheus, node_exporter):
/// the check sees the units where they are.
#[test]
fn make_run_installs_nothing_that_starts_a_service() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    let cache = cached_root();
    let build = packages_installed_by("build", &cache);
    assert!(
        build.iter().any(|p| p == "clang-14") && build.iter().any(|p| p == "libelf-dev"),
        "{build:?}"
    );
    let with_units: Vec<(String, Vec<String>)> = build
        .iter()
        .map(|package| (package.clone(), units_shipped_by(package)))
        .filter(|(_, units)| !units.is_empty())
        .collect();
    assert!(
        with_units.is_empty(),
        "make run would install packages with services: {with_units:?} (all: {build:?})"
    );
    let test = packages_installed_by("test", &cache);
    let exporter = units_shipped_by("prometheus-node-exporter");
    assert!(
        test.iter().any(|p| p == "prometheus-node-exporter")
            && exporter
                .iter()
                .any(|u| u.ends_with("prometheus-node-exporter.service")),
        "the test set's node_exporter ships its service: {exporter:?}"
    );
}

/// The arm64 package, cross-built on this x86_64 machine as `make deb
/// ARCH=arm64` builds it (tools/deb.sh: `dpkg-buildpackage -a arm64` in a
/// root with crossbuild-essential-arm64 and the arm64 libelf and zlib;
/// lintian clean): named and marked arm64, shipping what the amd64 package
/// ships, its binary aarch64's, and its Depends, which dpkg-shlibdeps
/// computed from the arm64 libraries, exactly the packages of the libraries
/// that binary needs (DT_NEEDED; its loader is libc6's).
#[cfg(target_arch = "x86_64")]
#[test]
#[ignore = "the arm64 leg: `make vm-test-arm64` runs it (it does not fit in `make test`'s 30 min)"]
fn the_arm64_package_is_cross_built_for_arm64() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    let deb = build_package(&["arm64"]);
    assert!(deb.to_string_lossy().ends_with("_arm64.deb"), "{deb:?}");
    check_contents(&deb);
    let field = |name: &str| {
        let output = Command::new("dpkg-deb")
            .arg("--field")
            .arg(&deb)
            .arg(name)
            .output()
            .unwrap();
        String::from_utf8(output.stdout).unwrap().trim().to_string()
    };
    assert_eq!(field("Architecture"), "arm64");
    let depends: BTreeSet<String> = field("Depends")
        .split(',')
        .filter_map(|dep| dep.split_whitespace().next().map(str::to_string))
        .collect();

    let unpacked = tempfile::tempdir_in(debroot_dir()).unwrap();
    let status = Command::new("dpkg-deb")
        .arg("--extract")
        .arg(&deb)
        .arg(unpacked.path())
        .status()
        .unwrap();
    assert!(status.success());
    let binary = unpacked.path().join("usr/bin/bpfsnap");
    let header = readelf(&binary, "-h");
    assert!(
        header.contains("Machine:                           AArch64"),
        "{header}"
    );
    assert_eq!(depends, arm64_owners(&readelf(&binary, "-d")), "Depends");
    installs_and_runs_on_arm64(&deb);
}

/// The arm64 Debian 12 root of the kernel matrix's arm64 legs
/// (tools/vm/root-arm64.sh: built once, under the lock they take for it).
fn arm64_root() -> PathBuf {
    let vm_dir = std::env::var_os("BPFSNAP_VM_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(SOURCE).join("target/vm"));
    fs::create_dir_all(&vm_dir).unwrap();
    let tree = Command::new("flock")
        .arg(vm_dir.join("boot.lock"))
        .arg(Path::new(SOURCE).join("tools/vm/root-arm64.sh"))
        .stderr(Stdio::inherit())
        .output()
        .expect("tools/vm/root-arm64.sh");
    assert!(tree.status.success(), "tools/vm/root-arm64.sh");
    PathBuf::from(String::from_utf8(tree.stdout).unwrap().trim())
}

/// The arm64 package installed with dpkg into an arm64 Debian 12 root (the
/// kernel matrix's, tools/vm/root-arm64.sh: built once, under an overlay
/// that dies with the command), dpkg, the maintainer scripts and bpfsnap
/// itself run by qemu-user: bpfsnap runs there, and on aarch64.
fn installs_and_runs_on_arm64(deb: &Path) {
    let start = Instant::now();
    let tree = arm64_root();
    let work = tempfile::tempdir_in(debroot_dir()).unwrap();
    let script = r#"
tree=$1 work=$2 deb=$3 R=$2/root
mkdir "$work/upper" "$work/overlay" "$R"
mount -t overlay overlay -o "lowerdir=$tree,upperdir=$work/upper,workdir=$work/overlay" "$R"
mount -t proc proc "$R/proc"
mount --rbind /sys "$R/sys"
mount --rbind /dev "$R/dev"
cp "$deb" "$R/tmp/bpfsnap.deb"
in_root() { chroot "$R" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin "$@"; }
in_root dpkg -i /tmp/bpfsnap.deb >&2
in_root dpkg-query -W -f '${Status} ${Architecture}
' bpfsnap
in_root bpfsnap --version
in_root bpfsnap list --long
"#;
    let output = Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-euc",
            script,
            "sh",
        ])
        .arg(tree)
        .arg(work.path())
        .arg(deb)
        .output()
        .expect("unshare (util-linux)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let said = format!("{stdout}{}", String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "{said}");
    let mut lines = stdout.lines();
    assert_eq!(lines.next(), Some("install ok installed arm64"), "{said}");
    let version = format!("bpfsnap {}", env!("CARGO_PKG_VERSION"));
    assert_eq!(lines.next(), Some(version.as_str()), "{said}");
    assert!(
        stdout.contains("x86_64 only, and this is aarch64") && stdout.contains("syscalls"),
        "bpfsnap list on aarch64: {said}"
    );
    let _ = writeln!(
        std::io::stderr(),
        "package test (arm64): installed and run under qemu-user in {}",
        took(start)
    );
}

fn readelf(file: &Path, option: &str) -> String {
    let output = Command::new("readelf")
        .arg(option)
        .arg(file)
        .output()
        .expect("readelf (binutils)");
    assert!(output.status.success(), "readelf {option} {file:?}");
    String::from_utf8(output.stdout).unwrap()
}

/// The packages (this machine's arm64 multiarch ones, which `make
/// test-deps` installs) of the libraries an arm64 binary needs, from
/// `readelf -d`'s text.
fn arm64_owners(dynamic: &str) -> BTreeSet<String> {
    let needed: Vec<&str> = dynamic
        .lines()
        .filter(|line| line.contains("(NEEDED)"))
        .filter_map(|line| line.split('[').nth(1)?.strip_suffix(']'))
        .collect();
    assert!(
        needed.contains(&"libelf.so.1") && needed.contains(&"libz.so.1"),
        "{dynamic}"
    );
    needed
        .iter()
        .map(|library| {
            let owner = [
                "/lib/",
                "/lib/aarch64-linux-gnu/",
                "/usr/lib/aarch64-linux-gnu/",
            ]
            .iter()
            .find_map(|dir| {
                let output = Command::new("dpkg")
                    .arg("-S")
                    .arg(format!("{dir}{library}"))
                    .output()
                    .ok()?;
                let text = String::from_utf8(output.stdout).ok()?;
                output
                    .status
                    .success()
                    .then(|| text.split(':').next().unwrap_or("").to_string())
            });
            owner.unwrap_or_else(|| panic!("no arm64 package has {library}"))
        })
        .collect()
}
