//! The `process_*` metrics every Prometheus client library exports, as
//! client_golang's process collector defines them (names, help, types and
//! units), read from /proc/self at each scrape: CPU time, memory, open
//! descriptors and their limit, the start time.
//!
//! Like client_golang, CPU time and the start time count in the kernel's
//! clock ticks (USER_HZ), the limits are the soft ones, and an unlimited
//! address space is 2^64.

use std::fs;

use anyhow::{anyhow, Context, Result};

use crate::exposition::{Family, Kind};

/// The process's families, unnamespaced (as every exporter has them).
pub fn families() -> Result<Vec<Family>> {
    let stat = fs::read_to_string("/proc/self/stat").context("reading /proc/self/stat")?;
    let stat = Stat::parse(&stat).ok_or_else(|| anyhow!("/proc/self/stat: unexpected {stat:?}"))?;
    let boot = boot_time()?;
    // SAFETY: sysconf reads a value, writes nothing.
    let (ticks, page) = unsafe {
        (
            libc::sysconf(libc::_SC_CLK_TCK).max(1) as f64,
            libc::sysconf(libc::_SC_PAGESIZE).max(1) as f64,
        )
    };
    let open_fds = open_fds()?;
    let one = |name: &str, help: &str, kind: Kind, value: f64| {
        Family::samples(name, help, kind, &[], vec![(Vec::new(), value)])
    };
    Ok(vec![
        one(
            "process_cpu_seconds_total",
            "Total user and system CPU time spent in seconds.",
            Kind::Counter,
            (stat.utime + stat.stime) as f64 / ticks,
        ),
        one(
            "process_open_fds",
            "Number of open file descriptors.",
            Kind::Gauge,
            open_fds as f64,
        ),
        one(
            "process_max_fds",
            "Maximum number of open file descriptors.",
            Kind::Gauge,
            soft_limit(libc::RLIMIT_NOFILE)?,
        ),
        one(
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes.",
            Kind::Gauge,
            stat.vsize as f64,
        ),
        one(
            "process_virtual_memory_max_bytes",
            "Maximum amount of virtual memory available in bytes.",
            Kind::Gauge,
            soft_limit(libc::RLIMIT_AS)?,
        ),
        one(
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            Kind::Gauge,
            stat.rss as f64 * page,
        ),
        one(
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
            Kind::Gauge,
            boot + stat.starttime as f64 / ticks,
        ),
    ])
}

/// The descriptors this process has open.
fn open_fds() -> Result<usize> {
    let open = fs::read_dir("/proc/self/fd")
        .context("reading /proc/self/fd")?
        .count();
    // Less the descriptor read_dir held open while counting.
    Ok(open.saturating_sub(1))
}

/// The fields of /proc/self/stat read here (proc_pid_stat(5)).
#[derive(Debug, PartialEq)]
struct Stat {
    utime: u64,
    stime: u64,
    starttime: u64,
    vsize: u64,
    /// In pages.
    rss: u64,
}

impl Stat {
    /// The fields after the command's name, which is in parentheses and
    /// may hold spaces and parentheses itself: hence from the last `)`.
    fn parse(text: &str) -> Option<Stat> {
        let (_, after) = text.rsplit_once(')')?;
        let fields: Vec<&str> = after.split_whitespace().collect();
        // fields[0] is field 3 (state) of proc_pid_stat(5).
        let field = |number: usize| fields.get(number - 3)?.parse::<u64>().ok();
        Some(Stat {
            utime: field(14)?,
            stime: field(15)?,
            starttime: field(22)?,
            vsize: field(23)?,
            rss: field(24)?,
        })
    }
}

/// When the machine booted, in seconds since the epoch (/proc/stat's btime).
fn boot_time() -> Result<f64> {
    let stat = fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    stat.lines()
        .find_map(|line| line.strip_prefix("btime "))
        .and_then(|seconds| seconds.trim().parse::<u64>().ok())
        .map(|seconds| seconds as f64)
        .ok_or_else(|| anyhow!("/proc/stat has no btime line"))
}

/// The soft limit of `resource`; unlimited is 2^64, as Go has it.
fn soft_limit(resource: libc::__rlimit_resource_t) -> Result<f64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the one struct given.
    if unsafe { libc::getrlimit(resource, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error()).context("getrlimit");
    }
    Ok(limit.rlim_cur as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_read_after_the_command_name() {
        let line = "1234 (a (b) c) S 1 1234 1234 0 -1 4194560 500 0 0 0 \
                    70 30 0 0 20 0 3 0 4242 123456789 2048 18446744073709551615";
        assert_eq!(
            Stat::parse(line),
            Some(Stat {
                utime: 70,
                stime: 30,
                starttime: 4242,
                vsize: 123456789,
                rss: 2048,
            })
        );
        assert_eq!(Stat::parse("1234 (x) S 1 2"), None);
        assert_eq!(Stat::parse("no parenthesis"), None);
    }

    #[test]
    fn this_process_has_its_metrics() {
        let families = families().unwrap();
        let names: Vec<&str> = families.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names.len(), 7, "{names:?}");
        assert!(names.contains(&"process_start_time_seconds"), "{names:?}");
    }
}
