//! Histograms end to end on the real kernel: examples/histograms.bpf.c
//! records the values this test passes to lseek(-7777, value, whence); the
//! exp2 and linear histograms must then hold exactly those values, and the
//! per-CPU one each value under the CPU the test ran it on. Because the
//! program's bucket keys are true upper bounds, every cumulative bucket must
//! equal the number of values ≤ its `le`: an oracle independent of bpfsnap.

mod common;

use common::{path_str, Running};

const SET: &[u64] = &[1, 2, 3, 4, 5, 8, 100, 1000, 2_000_000];
const CUR: &[u64] = &[0, 7, 10, 11];

fn lseek_values(values: &[u64], whence: i32) {
    for &value in values {
        let rc = unsafe { libc::lseek(-7777, value as libc::off_t, whence) };
        assert_eq!(rc, -1, "lseek on a bad fd fails");
    }
}

/// The CPUs this thread may run on.
fn allowed_cpus() -> Vec<usize> {
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set) };
    assert_eq!(
        rc,
        0,
        "sched_getaffinity: {}",
        std::io::Error::last_os_error()
    );
    (0..libc::CPU_SETSIZE as usize)
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect()
}

/// Runs `f` on this thread pinned to `cpus`.
fn pinned_to<T>(cpus: &[usize], f: impl FnOnce() -> T) -> T {
    let set_affinity = |cpus: &[usize]| {
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        for &cpu in cpus {
            unsafe { libc::CPU_SET(cpu, &mut set) };
        }
        let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) };
        assert_eq!(
            rc,
            0,
            "sched_setaffinity: {}",
            std::io::Error::last_os_error()
        );
    };
    let before = allowed_cpus();
    set_affinity(cpus);
    let result = f();
    set_affinity(&before);
    result
}

/// Checks one series of `metric`, named by its labels (`whence="set"`):
/// every bucket, +Inf, _count and _sum.
fn assert_histogram(text: &str, metric: &str, labels: &str, values: &[u64], bounds: &[f64]) {
    for le in bounds {
        let expected = values.iter().filter(|v| (**v as f64) <= *le).count() as f64;
        let series = format!("{metric}_bucket{{{labels},le=\"{le}\"}}");
        assert_eq!(
            common::sample(text, &series),
            Some(expected),
            "{series}\n{text}"
        );
    }
    let n = values.len() as f64;
    let inf = format!("{metric}_bucket{{{labels},le=\"+Inf\"}}");
    assert_eq!(common::sample(text, &inf), Some(n), "{inf}");
    // One window on standard output: a gauge histogram, whose count and
    // sum are `_gcount` and `_gsum` (OpenMetrics' names).
    assert_eq!(
        common::sample(text, &format!("{metric}_gcount{{{labels}}}")),
        Some(n)
    );
    let sum: u64 = values.iter().sum();
    assert_eq!(
        common::sample(text, &format!("{metric}_gsum{{{labels}}}")),
        Some(sum as f64)
    );
}

#[test]
fn exp2_and_linear_histograms_hold_exactly_the_recorded_values() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    let (_dir, config) = common::example_config("histograms.toml");

    let mut running = Running::spawn(&[
        "run",
        "-v",
        path_str(&config),
        "--for",
        "60s",
        "--output",
        "-",
    ]);
    running.wait_for("sampling");
    // SET's values from the first CPU this test may use, CUR's from the last.
    let cpus = allowed_cpus();
    let (first, last) = (cpus[0], cpus[cpus.len() - 1]);
    pinned_to(&[first], || lseek_values(SET, libc::SEEK_SET));
    pinned_to(&[last], || lseek_values(CUR, libc::SEEK_CUR));
    running.signal(libc::SIGINT);
    let (status, text, stderr) = running.finish();
    assert!(status.success(), "{stderr}");

    let exp2_bounds: Vec<f64> = (0..=20).map(|k| 2f64.powi(k)).collect();
    let set = "whence=\"set\"";
    let cur = "whence=\"cur\"";
    assert_histogram(&text, "bpfsnap_test_values_exp2", set, SET, &exp2_bounds);
    assert_histogram(&text, "bpfsnap_test_values_exp2", cur, CUR, &exp2_bounds);
    let linear_bounds: Vec<f64> = (0..=10).map(f64::from).collect();
    assert_histogram(
        &text,
        "bpfsnap_test_values_linear",
        set,
        SET,
        &linear_bounds,
    );
    assert_histogram(
        &text,
        "bpfsnap_test_values_linear",
        cur,
        CUR,
        &linear_bounds,
    );
    // Per CPU: each whence's values only under the CPU they ran on.
    let per_cpu = "bpfsnap_test_values_per_cpu";
    let set_cpu = format!("{set},cpu=\"{first}\"");
    let cur_cpu = format!("{cur},cpu=\"{last}\"");
    assert_histogram(&text, per_cpu, &set_cpu, SET, &exp2_bounds);
    assert_histogram(&text, per_cpu, &cur_cpu, CUR, &exp2_bounds);
    let series_of = |whence: &str| {
        text.lines()
            .filter(|line| line.starts_with(&format!("{per_cpu}_gcount{{{whence},")))
            .count()
    };
    assert_eq!(
        (series_of(set), series_of(cur)),
        (1, 1),
        "one CPU each\n{text}"
    );
    // Spot checks by hand: 2,000,000 > 2^20 is only in +Inf.
    assert!(
        text.contains("bpfsnap_test_values_exp2_bucket{whence=\"set\",le=\"1048576\"} 8\n"),
        "{text}"
    );
    assert!(
        !text.contains("whence=\"end\""),
        "no series for a whence never used"
    );
    common::promtool_check(&text);
}
