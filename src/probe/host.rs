//! Checks of the host that turn the kernel's bare errno into advice: privileges,
//! kernel BTF, tracefs.

use std::fs;
use std::path::Path;

use anyhow::{bail, Context, Result};

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

pub const BTF_PATH: &str = "/sys/kernel/btf/vmlinux";
const TRACEFS: &str = "/sys/kernel/tracing";

/// The effective capability set of this process (`CapEff` in /proc/self/status).
pub fn effective_capabilities() -> Result<u64> {
    let status = fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    parse_cap_eff(&status).context("no CapEff line in /proc/self/status")
}

fn parse_cap_eff(status: &str) -> Option<u64> {
    let hex = status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

fn has(caps: u64, cap: u32) -> bool {
    caps & (1 << cap) != 0
}

/// Whether `caps` can load and attach tracing programs (CAP_BPF + CAP_PERFMON,
/// or CAP_SYS_ADMIN which implies both on older kernels).
pub fn can_trace(caps: u64) -> bool {
    has(caps, CAP_SYS_ADMIN) || (has(caps, CAP_BPF) && has(caps, CAP_PERFMON))
}

pub const PRIVILEGE_ADVICE: &str =
    "bpfsnap needs root, or the capabilities CAP_BPF and CAP_PERFMON \
     (e.g. systemd AmbientCapabilities=CAP_BPF CAP_PERFMON): run it with sudo";

/// Fails early, with advice, when this process cannot load BPF programs; the
/// kernel would answer EPERM and libbpf would blame RLIMIT_MEMLOCK.
pub fn check_privileges() -> Result<()> {
    let caps = effective_capabilities()?;
    if !can_trace(caps) {
        bail!("missing privileges: {PRIVILEGE_ADVICE}");
    }
    Ok(())
}

/// CO-RE programs need the kernel's own type information.
pub fn check_btf() -> Result<()> {
    if let Some(path) = external_btf() {
        std::fs::File::open(path)
            .with_context(|| format!("--btf {}: cannot read it", path.display()))?;
        return Ok(());
    }
    if !Path::new(BTF_PATH).exists() {
        bail!(
            "kernel BTF not found at {BTF_PATH}: bpfsnap's programs need a kernel built with \
             CONFIG_DEBUG_INFO_BTF=y (most distribution kernels since 2021 are), or its types in \
             a file given with --btf PATH (BTFHub's archives have them for older distribution \
             kernels; tp_btf programs, and so the built-ins, still need the kernel's own)"
        );
    }
    Ok(())
}

/// A file holding the kernel's types in BTF, used instead of the kernel's
/// own (`--btf`), set once at start.
static EXTERNAL_BTF: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();

/// Makes `path` the kernel's BTF for CO-RE relocations and for what
/// bpfsnap reads of the kernel's types (ebpf_exporter's --btf.path). The
/// file is read once here: one that is not BTF would otherwise fail every
/// CO-RE config's load with libbpf's bare error code, and read as a kernel
/// without the tracepoints the built-ins' variants look up.
pub fn use_external_btf(path: &Path) -> Result<()> {
    std::fs::File::open(path)
        .with_context(|| format!("--btf {}: cannot read it", path.display()))
        .map_err(crate::BadInput::wrap)?;
    if let Err(err) = super::raw_btf::RawBtf::open(path) {
        return Err(crate::BadInput::wrap(anyhow::anyhow!(
            "--btf {err}: give a file of the kernel's types in BTF (raw, as \
             /sys/kernel/btf/vmlinux or BTFHub's .btf files, or an ELF image with a .BTF section)"
        )));
    }
    let _ = EXTERNAL_BTF.set(path.to_path_buf());
    Ok(())
}

/// The file `--btf` gave, if any.
pub fn external_btf() -> Option<&'static Path> {
    EXTERNAL_BTF.get().map(|path| path.as_path())
}

/// The kernel's lockdown mode (`integrity`, `confidentiality`), if any.
pub fn lockdown() -> Option<String> {
    let text = fs::read_to_string("/sys/kernel/security/lockdown").ok()?;
    let mode = text
        .split_whitespace()
        .find(|w| w.starts_with('['))?
        .trim_matches(['[', ']']);
    (mode != "none").then(|| mode.to_string())
}

/// Whether a program in `section` needs tracefs to attach (classic tracepoints
/// look up their event id there; tp_btf and raw_tp do not).
pub fn section_needs_tracefs(section: &str) -> bool {
    section.starts_with("tracepoint/") || section.starts_with("tp/")
}

/// Makes sure tracefs is mounted, mounting it at /sys/kernel/tracing if this
/// process may; otherwise says how.
pub fn ensure_tracefs() -> Result<()> {
    let mounted = |dir: &str| Path::new(dir).join("events").is_dir();
    if mounted(TRACEFS) || mounted("/sys/kernel/debug/tracing") {
        return Ok(());
    }
    let (source, target, fstype) = (c"nodev", c"/sys/kernel/tracing", c"tracefs");
    // SAFETY: all arguments are valid NUL-terminated strings; data may be null.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 || !mounted(TRACEFS) {
        let err = std::io::Error::last_os_error();
        bail!(
            "tracefs is not mounted and mounting it failed ({err}): classic tracepoints need it; \
             run `mount -t tracefs nodev {TRACEFS}` as root"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_capabilities_from_status() {
        let cases: &[(&str, Option<u64>, bool)] = &[
            (
                "Name:\tx\nCapEff:\t000001ffffffffff\n",
                Some(0x1ff_ffff_ffff),
                true,
            ),
            ("CapEff:\t0000000000000000\n", Some(0), false),
            ("CapEff:\t000000c000000000\n", Some(0xc0_0000_0000), true), // CAP_BPF + CAP_PERFMON
            ("CapEff:\t0000008000000000\n", Some(0x80_0000_0000), false), // CAP_BPF alone
            ("CapEff:\t0000000000200000\n", Some(0x20_0000), true),      // CAP_SYS_ADMIN
            ("Name:\tx\n", None, false),
        ];
        for (status, caps, allowed) in cases {
            assert_eq!(parse_cap_eff(status), *caps, "{status:?}");
            assert_eq!(caps.is_some_and(can_trace), *allowed, "{status:?}");
        }
    }

    #[test]
    fn knows_which_sections_need_tracefs() {
        for (section, needs) in [
            ("tracepoint/syscalls/sys_enter_getpid", true),
            ("tp/sched/sched_switch", true),
            ("tp_btf/sys_enter", false),
            ("raw_tp/sys_enter", false),
            ("perf_event", false),
        ] {
            assert_eq!(section_needs_tracefs(section), needs, "{section}");
        }
    }
}
