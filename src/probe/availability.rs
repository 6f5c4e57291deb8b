//! Whether a program's attach points exist on this kernel, found without
//! loading anything (so `bpfsnap list` needs no privileges): tp_btf and raw_tp
//! targets in the kernel's BTF, classic tracepoints in tracefs, kprobe and
//! perf event support in sysfs.

use std::path::Path;

use libbpf_rs::btf::types::Typedef;
use libbpf_rs::btf::Btf;

use super::host;
use super::section::Attach;

/// Looks up attach points in the kernel's type information.
pub struct KernelTypes {
    btf: Option<Btf<'static>>,
}

impl KernelTypes {
    pub fn load() -> KernelTypes {
        KernelTypes {
            btf: Btf::from_path(host::BTF_PATH).ok(),
        }
    }

    /// Why `section` (parsed as `attach`) cannot attach here, if it cannot.
    pub fn missing(&self, section: &str, attach: &Attach) -> Option<String> {
        let target = section.split_once('/').map_or("", |(_, rest)| rest);
        match attach.kind() {
            "tp_btf" | "raw_tp" | "raw_tracepoint" | "tp_btf.s" => {
                let btf = self.btf.as_ref()?;
                let name = format!("btf_trace_{target}");
                btf.type_by_name::<Typedef<'_>>(&name)
                    .is_none()
                    .then(|| format!("no tracepoint {target} in this kernel"))
            }
            "tracepoint" | "tp" => {
                let events = [
                    "/sys/kernel/tracing/events",
                    "/sys/kernel/debug/tracing/events",
                ]
                .into_iter()
                .find(|dir| Path::new(dir).is_dir())?;
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
        assert_eq!(
            check("tp_btf/no_such_tracepoint").as_deref(),
            Some("no tracepoint no_such_tracepoint in this kernel")
        );
        assert_eq!(check("perf_event/type=1,config=0,frequency=99"), None);
    }
}
