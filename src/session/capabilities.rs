//! The capabilities a run keeps once its probes are attached.

use crate::log::Log;
use caps::Capability;

use crate::privilege::{self, KeepCaps};
use crate::program::Program;

/// `--keep-caps`, plus what reading the maps after the drop needs: the
/// capability this kernel checks on every bpf() call, if it does, and
/// CAP_SYSLOG when a ksym/kstack decoder will read /proc/kallsyms.
pub fn keep_caps(keep: &KeepCaps, programs: &[Program], log: Log) -> KeepCaps {
    if *keep == KeepCaps::All {
        return KeepCaps::All;
    }
    let mut keep = keep_for_map_reads(keep.clone(), log);
    let uses_kallsyms = programs.iter().any(|p| {
        p.config.metrics().any(|m| {
            m.labels.iter().any(|l| {
                l.decoders
                    .iter()
                    .any(|d| d.name == "ksym" || d.name == "kstack")
            })
        })
    });
    if uses_kallsyms && !keep.keeps(Capability::CAP_SYSLOG) {
        log.info("keeping CAP_SYSLOG: the ksym/kstack decoders read kernel addresses from /proc/kallsyms");
        keep = keep.with(Capability::CAP_SYSLOG);
    }
    keep
}

/// `keep` plus the capability reading maps needs on this kernel, if any.
fn keep_for_map_reads(keep: KeepCaps, log: Log) -> KeepCaps {
    match privilege::capability_for_map_reads() {
        Ok(Some(cap)) if !keep.keeps(cap) => {
            let name = cap.to_string();
            let sysctl = std::fs::read_to_string("/proc/sys/kernel/unprivileged_bpf_disabled")
                .map(|value| format!(" (kernel.unprivileged_bpf_disabled={})", value.trim()))
                .unwrap_or_default();
            log.info(&format!(
                "keeping {name}: this kernel checks it on every bpf() call{sysctl}, reading the maps included"
            ));
            keep.with(cap)
        }
        Ok(_) => keep,
        Err(err) => {
            log.warn(&format!(
                "cannot tell which capability reading maps needs here ({err:#}): keeping CAP_BPF and CAP_SYS_ADMIN"
            ));
            keep.with(Capability::CAP_BPF)
                .with(Capability::CAP_SYS_ADMIN)
        }
    }
}
