//! Whether a program's attach points exist on this kernel, found without
//! loading anything (so `bpfsnap list` needs no privileges): tp_btf and raw_tp
//! targets in the kernel's BTF, classic tracepoints in tracefs, kprobe and
//! perf event support in sysfs.

use std::cell::OnceCell;
use std::collections::HashSet;
use std::path::Path;

use libbpf_rs::btf::types::Typedef;
use libbpf_rs::btf::Btf;

use super::host;
use super::section::Attach;

/// tracefs's events directory, where it is mounted (the usual place first).
fn tracefs_events() -> Option<&'static str> {
    [
        "/sys/kernel/tracing/events",
        "/sys/kernel/debug/tracing/events",
    ]
    .into_iter()
    .find(|dir| Path::new(dir).is_dir())
}

/// Looks up attach points in tracefs and the kernel's type information,
/// each read only if needed.
#[derive(Default)]
pub struct KernelTypes {
    btf: OnceCell<Option<Btf<'static>>>,
    events: OnceCell<Option<HashSet<String>>>,
}

impl KernelTypes {
    pub fn load() -> KernelTypes {
        KernelTypes::default()
    }

    /// The kernel's BTF (≈ 8 ms to read and parse).
    fn btf(&self) -> Option<&Btf<'static>> {
        self.btf
            .get_or_init(|| Btf::from_path(host::BTF_PATH).ok())
            .as_ref()
    }

    /// Names of the tracepoints tracefs lists (≈ 1 ms: one directory read
    /// per subsystem); None without tracefs.
    fn events(&self) -> Option<&HashSet<String>> {
        self.events
            .get_or_init(|| {
                let root = tracefs_events()?;
                let mut names = HashSet::new();
                for system in std::fs::read_dir(root).ok()?.flatten() {
                    let Ok(events) = std::fs::read_dir(system.path()) else {
                        continue; // a file (enable, header_page, ...)
                    };
                    names.extend(
                        events
                            .flatten()
                            .map(|e| e.file_name().to_string_lossy().into_owned()),
                    );
                }
                Some(names)
            })
            .as_ref()
    }

    /// Why `section` (parsed as `attach`) cannot attach here, if it cannot.
    pub fn missing(&self, section: &str, attach: &Attach) -> Option<String> {
        let target = section.split_once('/').map_or("", |(_, rest)| rest);
        match attach.kind() {
            "tp_btf" | "raw_tp" | "raw_tracepoint" | "tp_btf.s" => {
                // A tracepoint with an event in tracefs has its raw
                // tracepoint and btf_trace_ type: no need to parse the BTF.
                // Only tracepoints without an event need the BTF.
                if self.events().is_some_and(|events| events.contains(target)) {
                    return None;
                }
                let btf = self.btf()?;
                let name = format!("btf_trace_{target}");
                btf.type_by_name::<Typedef<'_>>(&name)
                    .is_none()
                    .then(|| format!("no tracepoint {target} in this kernel"))
            }
            "tracepoint" | "tp" => {
                let events = tracefs_events()?;
                (!Path::new(events).join(target).is_dir())
                    .then(|| format!("no tracepoint {target} in this kernel"))
            }
            _ if attach.is_kprobe() => (!Path::new("/sys/bus/event_source/devices/kprobe")
                .exists())
            .then(|| "this kernel has no kprobe support".to_string()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::section;

    #[test]
    fn finds_tp_btf_targets_in_kernel_btf() {
        if !Path::new(host::BTF_PATH).exists() {
            return; // no BTF on this machine: nothing to look up
        }
        let kernel = KernelTypes::load();
        let check = |s: &str| kernel.missing(s, &section::parse(s).unwrap());
        assert_eq!(check("tp_btf/sys_enter"), None);
        assert_eq!(check("tp_btf/sched_switch"), None);
        // A bare tracepoint (no tracefs event): found in the BTF.
        assert_eq!(check("tp_btf/sched_update_nr_running_tp"), None);
        assert_eq!(
            check("tp_btf/no_such_tracepoint").as_deref(),
            Some("no tracepoint no_such_tracepoint in this kernel")
        );
        assert_eq!(check("perf_event/type=1,config=0,frequency=99"), None);
    }
}
