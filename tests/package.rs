//! The Debian package, installed for real. tools/deb.sh packages this
//! build's binary (as `make deb` packages the release build); apt installs
//! it, as an admin would (`apt install ./bpfsnap_*.deb`), into a throw-away
//! copy of a Debian 12 root (tools/debroot.sh: debootstrap minbase plus
//! systemd, cached under target/debroot). Then:
//! - Depends is what the binary links (dpkg-shlibdeps' work, checked against
//!   the packages that own the libraries in the root);
//! - the units pass the root's own `systemd-analyze verify`; the timer is
//!   enabled, serve is not, and the maintainer scripts, on a root that looks
//!   booted with systemd, ask systemd to start the timer and nothing else, and
//!   mount nothing;
//! - bpfsnap.service's command runs as systemd would run it: ExecStart with
//!   ARGS from the installed /etc/default/bpfsnap, as root bounded to the
//!   unit's capabilities with no new privileges, the root read-only but for
//!   ReadWritePaths= (ProtectSystem=strict), its own /tmp, no /home; the
//!   installed binary, with the root's libraries, on this machine's kernel
//!   through /sys and /proc. Its first run pins the programs and writes
//!   the built-ins' metrics; calls made before the second run are counted
//!   in it, exactly: the programs stayed attached;
//! - an upgrade keeps an admin's `systemctl disable` and edited conffile,
//!   and the pinned programs;
//! - purge detaches the pinned programs and leaves nothing but dpkg's and
//!   apt's own records.
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
use std::process::{Command, Output};
use std::time::Instant;

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

#[test]
fn the_package_installs_runs_as_its_unit_and_purges() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    let mut times = Vec::new();
    let start = Instant::now();

    // The root: made once (about a minute), then copied.
    let cache = cached_root();
    times.push(format!("root {}", took(start)));
    let work = tempfile::Builder::new()
        .prefix("test-")
        .tempdir_in(debroot_dir())
        .unwrap();
    let root = work.path().join("root");
    let step = Instant::now();
    let status = Command::new("cp")
        .args(["-a", "--reflink=auto"])
        .arg(&cache)
        .arg(&root)
        .status()
        .unwrap();
    assert!(status.success());
    times.push(format!("copy {}", took(step)));
    // Dropped (unmounted, releasing its pins) before `work` is removed.
    let _bpffs = common::Mount::bpffs(&bpffs_of(&root));

    // The package of this build's binary.
    let step = Instant::now();
    let output = Command::new(Path::new(SOURCE).join("tools/deb.sh"))
        .arg(env!("CARGO_BIN_EXE_bpfsnap"))
        .arg(work.path())
        .env("DEB_COMPRESS", "gzip")
        .output()
        .expect("tools/deb.sh");
    assert!(
        output.status.success(),
        "tools/deb.sh: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let deb = PathBuf::from(String::from_utf8(output.stdout).unwrap().trim());
    fs::copy(&deb, root.join("tmp/bpfsnap.deb")).unwrap();
    times.push(format!("deb {}", took(step)));

    // systemd's stand-in, first in the PATH apt gives dpkg (DPkg::Path:
    // /usr/sbin before /usr/bin): records what the maintainer scripts ask of
    // the running systemd; what works on unit files offline it hands to
    // systemd's systemctl (deb-systemd-helper's `--root=/ preset`, which
    // enables; deb-systemd-invoke's is-enabled); is-active: nothing runs.
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
    let before = tree(&root);

    // Installed as an admin would, with apt resolving Depends; the mounts
    // of the namespace counted before and after: the scripts mount nothing.
    let step = Instant::now();
    let output = in_namespace(
        &root,
        &format!(
            "before=$(wc -l < /proc/self/mountinfo)\n\
             chroot \"$R\" env -i {PATH} DEBIAN_FRONTEND=noninteractive HOME=/root \
               apt-get install -y -q --no-install-recommends /tmp/bpfsnap.deb\n\
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
    times.push(format!("install {}", took(step)));

    // Started where systemd runs: the timer only; and nothing stopped.
    let calls = systemctl_calls(&root);
    assert_eq!(
        calls,
        [
            "--system daemon-reload",
            "--quiet --system start bpfsnap.timer"
        ],
        "what the maintainer scripts asked of systemd"
    );

    // Depends: exactly the packages owning the libraries the binary links.
    let depends = in_root(&root, "dpkg-query -W -f='${Depends}' bpfsnap");
    let depends: BTreeSet<&str> = depends
        .split(',')
        .map(|dep| dep.split_whitespace().next().unwrap())
        .collect();
    let ldd = in_root(&root, "ldd /usr/bin/bpfsnap");
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
        &root,
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

    // The units, with the root's systemd; enabled as Debian enables them.
    in_root(
        &root,
        "systemd-analyze verify --man=no /lib/systemd/system/bpfsnap.service \
         /lib/systemd/system/bpfsnap.timer /lib/systemd/system/bpfsnap-serve.service",
    );
    let enabled = in_root(
        &root,
        "SYSTEMD_OFFLINE=1 /usr/bin/systemctl is-enabled bpfsnap.timer bpfsnap.service bpfsnap-serve.service || true",
    );
    assert_eq!(
        enabled.split_whitespace().collect::<Vec<_>>(),
        ["enabled", "static", "disabled"]
    );

    // The timer's service, run as systemd would.
    let step = Instant::now();
    let pinned = run_the_oneshot_service(&root);
    times.push(format!("run {}", took(step)));

    // An upgrade (the same version again) keeps what the admin did: the
    // timer disabled, /etc/default/bpfsnap edited. Only serve's
    // try-restart (which starts nothing) is asked.
    let step = Instant::now();
    in_root(
        &root,
        "SYSTEMD_OFFLINE=1 /usr/bin/systemctl disable bpfsnap.timer",
    );
    let default = root.join("etc/default/bpfsnap");
    let edited = fs::read_to_string(&default)
        .unwrap()
        .replace("--quiet", "--quiet --lock-timeout 30s");
    assert!(edited.contains("--lock-timeout"), "{edited}");
    fs::write(&default, &edited).unwrap();
    in_root(&root, "apt-get install -y -q --reinstall /tmp/bpfsnap.deb");
    assert_eq!(
        in_root(
            &root,
            "SYSTEMD_OFFLINE=1 /usr/bin/systemctl is-enabled bpfsnap.timer || true"
        )
        .trim(),
        "disabled"
    );
    assert_eq!(fs::read_to_string(&default).unwrap(), edited);
    let calls = systemctl_calls(&root);
    assert_eq!(
        calls,
        [
            "--system daemon-reload",
            "try-restart bpfsnap-serve.service"
        ],
        "what the upgrade asked of systemd"
    );
    times.push(format!("upgrade {}", took(step)));

    // Purge, with what apt installed for it: what policy keeps is dpkg's and
    // apt's records; the rest of the root is as it was; and the programs the
    // service pinned are detached (an upgrade kept them).
    let step = Instant::now();
    assert!(
        bpffs_of(&root).join("bpfsnap/syscalls/links").is_dir(),
        "the upgrade kept the pinned programs"
    );
    in_root(&root, "apt-get purge -y -q --autoremove bpfsnap");
    assert!(
        !bpffs_of(&root).join("bpfsnap").exists(),
        "the removal left programs pinned"
    );
    assert!(
        common::still_loaded_after_exit(&pinned).is_empty(),
        "the removal detached the pinned programs"
    );
    let calls = systemctl_calls(&root);
    assert_eq!(
        calls,
        [
            "stop bpfsnap.timer bpfsnap.service bpfsnap-serve.service",
            "--system daemon-reload"
        ],
        "what the removal asked of systemd"
    );
    let after = tree(&root);
    let records = [
        "var/lib/dpkg/",
        "var/lib/apt/",
        "var/cache/apt/",
        "var/cache/debconf/",
        "var/log/",
    ];
    let left: Vec<&String> = after
        .symmetric_difference(&before)
        .filter(|path| !records.iter().any(|record| path.starts_with(record)))
        .collect();
    assert!(left.is_empty(), "purge left these different: {left:#?}");
    let status = in_root(
        &root,
        "dpkg-query -W -f='${db:Status-Abbrev}' bpfsnap 2>&1 || true",
    );
    assert!(
        !status.starts_with("ii") && !status.starts_with("rc"),
        "{status}"
    );
    times.push(format!("purge {}", took(step)));

    let _ = writeln!(
        std::io::stderr(),
        "package test: {} (total {})",
        times.join(", "),
        took(start)
    );
}

/// bpfsnap.service as systemd would run it, from the installed unit and
/// /etc/default/bpfsnap, twice: the first run pins the programs, calls made
/// before the second are counted in it. Returns the ids of the programs
/// left pinned.
fn run_the_oneshot_service(root: &Path) -> BTreeSet<u64> {
    let unit = fs::read_to_string(root.join("lib/systemd/system/bpfsnap.service")).unwrap();
    // Every directive of the unit's [Service] is one this emulates: a new one
    // must be added here, or the run would not be the unit's.
    let emulated = [
        "Type",
        "EnvironmentFile",
        "ExecStart",
        "CapabilityBoundingSet",
        "NoNewPrivileges",
        "ProtectSystem",
        "ReadWritePaths",
        "ProtectHome",
        "PrivateTmp",
    ];
    for key in common::section_keys(&unit, "Service") {
        assert!(
            emulated.contains(&key),
            "bpfsnap.service sets {key}=, which this test does not emulate"
        );
    }
    assert_eq!(common::unit_value(&unit, "Type"), "oneshot");
    assert_eq!(common::unit_value(&unit, "NoNewPrivileges"), "yes");
    assert_eq!(common::unit_value(&unit, "ProtectSystem"), "strict");
    assert_eq!(common::unit_value(&unit, "ProtectHome"), "yes");
    assert_eq!(common::unit_value(&unit, "PrivateTmp"), "yes");
    let environment_path = common::unit_value(&unit, "EnvironmentFile");
    let environment = common::environment_file(
        &fs::read_to_string(root.join(environment_path.trim_start_matches('/'))).unwrap(),
    );
    let command = common::exec_start(&unit, &environment);
    assert_eq!(command[0], "/usr/bin/bpfsnap");
    let output = command
        .iter()
        .skip_while(|word| *word != "--output")
        .nth(1)
        .expect("ARGS name an --output")
        .clone();
    let before = common::loaded_program_ids();
    let first = run_service_command(root, &unit, &command, &output);
    let pinned: BTreeSet<u64> = common::loaded_program_ids()
        .difference(&before)
        .copied()
        .collect();
    assert!(!pinned.is_empty(), "the service left no program attached");
    assert!(
        bpffs_of(root).join("bpfsnap/syscalls/links").is_dir(),
        "the service pinned no link of syscalls"
    );
    assert!(
        !common::samples(&first, "bpfsnap_syscalls_total").is_empty(),
        "{first}"
    );
    common::rare_syscalls(500);
    let second = run_service_command(root, &unit, &command, &output);
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

/// One run of bpfsnap.service's `command` (see [`run_the_oneshot_service`]);
/// the `output` it wrote, checked.
fn run_service_command(root: &Path, unit: &str, command: &[String], output: &str) -> String {
    let caps: String = common::unit_value(unit, "CapabilityBoundingSet")
        .split_whitespace()
        .map(|cap| format!(",+{}", cap.trim_start_matches("CAP_").to_lowercase()))
        .collect();
    let writable = common::unit_value(unit, "ReadWritePaths");
    let quoted: Vec<String> = command.iter().map(|word| format!("'{word}'")).collect();

    // Order matters: the root becomes a mount of its own before anything is
    // mounted in it, and the writable paths are mounts of their own before
    // the root and /run are made read-only around them.
    let script = format!(
        r#"
R=$1
mount --bind "$R" "$R"
mount -t proc proc "$R/proc"
mount --rbind /sys "$R/sys"
mount --bind "$BPFFS" "$R/sys/fs/bpf"
mount --rbind /dev "$R/dev"
mount -t tmpfs -o mode=0755 tmpfs "$R/run"
mkdir -p "$R/run/lock" && chmod 1777 "$R/run/lock"
# PrivateTmp=yes
mount -t tmpfs -o mode=1777 tmpfs "$R/tmp"
mount -t tmpfs -o mode=1777 tmpfs "$R/var/tmp"
# ProtectHome=yes
mount -t tmpfs -o ro,mode=000 tmpfs "$R/home"
mount -t tmpfs -o ro,mode=000 tmpfs "$R/root"
# ReadWritePaths=, then ProtectSystem=strict
for path in {writable}; do mount --bind "$R$path" "$R$path"; done
mount -o remount,bind,ro "$R"
mount -o remount,bind,ro "$R/run"
exec chroot "$R" env -i {PATH} /usr/bin/setpriv --no-new-privs --inh-caps=-all \
  --bounding-set=-all{caps} -- {command}
"#,
        command = quoted.join(" ")
    );
    // Not through in_namespace: this one runs without PRELUDE's mounts,
    // which must come after the root's own bind mount.
    let ran = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-euc"])
        .arg(&script)
        .arg("sh")
        .arg(root)
        .env("BPFFS", bpffs_of(root))
        .output()
        .expect("unshare (util-linux)");
    let stderr = String::from_utf8_lossy(&ran.stderr);
    assert!(
        ran.status.success(),
        "{command:?}: {}: {stderr}",
        ran.status
    );
    assert!(stderr.is_empty(), "--quiet, yet: {stderr}");
    let text = fs::read_to_string(root.join(output.trim_start_matches('/')))
        .expect("the service wrote its --output");
    assert_eq!(common::sample(&text, "bpfsnap_up"), Some(1.0), "{text}");
    common::promtool_check(&text);
    text
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
    let simulated = Command::new("chroot")
        .arg(root)
        .args(["env", "-i", PATH, "apt-get", "install", "--simulate"])
        .args(["--no-install-recommends", "-o", "Dir::Cache::pkgcache="])
        .args(["-o", "Dir::Cache::srcpkgcache="])
        .args(wanted.split_whitespace())
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
