//! Perf events for `perf_event/...` programs: one event per online CPU.

use std::os::fd::{FromRawFd, OwnedFd};

use anyhow::{bail, Context, Result};

use super::section::{PerfEvent, Sampling};

/// From linux/perf_event.h (not in the libc crate).
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 1 << 3;

/// Online CPUs, from /sys/devices/system/cpu/online (`0-3,5`).
pub fn online_cpus() -> Result<Vec<u32>> {
    let text =
        std::fs::read_to_string("/sys/devices/system/cpu/online").context("reading online CPUs")?;
    parse_cpu_list(&text)
}

fn parse_cpu_list(text: &str) -> Result<Vec<u32>> {
    let mut cpus = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        let (first, last) = part.split_once('-').unwrap_or((part, part));
        let (first, last): (u32, u32) = (first.parse()?, last.parse()?);
        cpus.extend(first..=last);
    }
    if cpus.is_empty() {
        bail!("no online CPUs listed in {text:?}");
    }
    Ok(cpus)
}

/// Opens the event on `cpu` for every process (pid -1).
pub fn open(event: &PerfEvent, cpu: u32) -> Result<OwnedFd> {
    // SAFETY: perf_event_attr is plain data; all-zero is its documented default.
    let mut attr: libbpf_sys::perf_event_attr = unsafe { std::mem::zeroed() };
    attr.type_ = event.event_type;
    attr.size = std::mem::size_of::<libbpf_sys::perf_event_attr>() as u32;
    attr.config = event.config;
    match event.sampling {
        Sampling::Frequency(hz) => {
            attr.__bindgen_anon_1.sample_freq = hz;
            attr.set_freq(1);
        }
        Sampling::Period(period) => attr.__bindgen_anon_1.sample_period = period,
    }
    // SAFETY: a valid attr pointer; the other arguments are plain integers.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            &attr as *const libbpf_sys::perf_event_attr,
            -1,
            cpu as libc::c_int,
            -1,
            PERF_FLAG_FD_CLOEXEC,
        )
    };
    if fd < 0 {
        let err = std::io::Error::last_os_error();
        bail!(
            "perf_event_open(type={}, config={}) on CPU {cpu}: {err}{}",
            event.event_type,
            event.config,
            if err.raw_os_error() == Some(libc::ENOENT) {
                " (this event does not exist here: hardware events are usually missing in VMs)"
            } else {
                ""
            }
        );
    }
    // SAFETY: the kernel just returned this descriptor to us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cpu_lists() {
        assert_eq!(parse_cpu_list("0-1\n").unwrap(), [0, 1]);
        assert_eq!(parse_cpu_list("0,2-3,7").unwrap(), [0, 2, 3, 7]);
        assert!(parse_cpu_list("").is_err());
        assert!(parse_cpu_list("a-b").is_err());
    }
}
