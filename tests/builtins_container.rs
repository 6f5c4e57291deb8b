//! The `*_by_container` built-ins under load the test makes in a cgroup of
//! its own: each counts that load under the cgroup's name, exactly where the
//! load is the test's alone. A cgroup that is no container's is named by its
//! path below the v2 root, as /proc/PID/cgroup shows it, and has no
//! Kubernetes namespace or pod (tests/containers.rs names real containers).
//!
//! The tests of this file run one at a time (SERIAL): the TCP one moves the
//! test process into its cgroup while it opens its sockets, which would take
//! the other tests' processes along.

mod common;

use std::sync::{Mutex, PoisonError};

use common::{run_builtin, TestCgroup, OOM_COMM};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The series of metric `name` of the host cgroup `path` (no Kubernetes
/// namespace or pod) with the `other` labels.
fn series(name: &str, path: &str, other: &str) -> String {
    format!(r#"{name}{{namespace="",pod="",container="{path}"{other}}}"#)
}

/// The lines of metric `name` (its series, with their values) whose
/// container is `path`.
fn lines_of<'a>(text: &'a str, name: &str, path: &str) -> Vec<&'a str> {
    let start = series(name, path, "");
    let start = start.trim_end_matches('}');
    text.lines()
        .filter(|line| line.starts_with(start))
        .collect()
}

#[test]
fn exits_by_container_counts_each_exit_of_the_cgroup_by_how_and_code() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    let _serial = serial();
    const EXITED: usize = 7;
    const KILLED: usize = 4;
    let cgroup = TestCgroup::create("exits");
    let text = run_builtin("exits_by_container", || {
        for _ in 0..EXITED {
            let status = cgroup.run_child(|| 3);
            assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 3);
        }
        for _ in 0..KILLED {
            let status = cgroup.run_child(|| unsafe { libc::kill(libc::getpid(), libc::SIGKILL) });
            assert!(libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL);
        }
    });
    let name = "bpfsnap_container_process_exits_total";
    let ours = lines_of(&text, name, &cgroup.path);
    assert_eq!(ours.len(), 2, "exactly the two kinds of exit made\n{text}");
    for (other, made) in [
        (r#",how="exited",code="3""#, EXITED),
        (r#",how="killed",code="9""#, KILLED),
    ] {
        let series = series(name, &cgroup.path, other);
        assert_eq!(
            common::sample(&text, &series),
            Some(made as f64),
            "{series}\n{text}"
        );
    }
}

#[test]
fn syscall_errors_by_container_counts_exactly_the_cgroups_failed_calls() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    let _serial = serial();
    const CALLS: usize = 300;
    let cgroup = TestCgroup::create("errors");
    let text = run_builtin("syscall_errors_by_container", || {
        let status = cgroup.run_child(|| {
            let failed = (0..CALLS)
                .filter(|_| unsafe { libc::syscall(libc::SYS_close, -1) } == -1)
                .count();
            i32::from(failed != CALLS)
        });
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
    });
    let name = "bpfsnap_container_syscall_errors_total";
    let series = series(name, &cgroup.path, r#",syscall="close",errno="EBADF""#);
    assert_eq!(
        common::sample(&text, &series),
        Some(CALLS as f64),
        "{series}\n{text}"
    );
    // Its successful calls (the move into the cgroup, exit) are not errors.
    assert_eq!(lines_of(&text, name, &cgroup.path).len(), 1, "{text}");
}

#[test]
fn runqlat_by_container_times_each_wakeup_of_the_cgroups_task() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    let _serial = serial();
    const SLEEPS: usize = 200;
    let cgroup = TestCgroup::create("runqlat");
    let text = run_builtin("runqlat_by_container", || {
        let status = cgroup.run_child(|| {
            let nap = libc::timespec {
                tv_sec: 0,
                tv_nsec: 1_000_000,
            };
            for _ in 0..SLEEPS {
                unsafe { libc::nanosleep(&nap, std::ptr::null_mut()) };
            }
            0
        });
        assert!(libc::WIFEXITED(status));
    });
    let name = "bpfsnap_container_runqueue_latency_seconds_count";
    let counted = series(name, &cgroup.path, "");
    let count = common::sample(&text, &counted).unwrap_or_else(|| panic!("no {counted}\n{text}"));
    // A wakeup is a wait for a CPU unless the timer fired before the task
    // switched out (then it never left the CPU: 198 of 200 in a TCG VM);
    // a preemption while runnable adds one, which a sleeping task seldom
    // meets. Not exact: the kernel decides.
    assert!(
        count >= 0.75 * SLEEPS as f64 && count < 2.0 * SLEEPS as f64,
        "{counted} = {count} for {SLEEPS} wakeups\n{text}"
    );
    let bucket = "bpfsnap_container_runqueue_latency_seconds_bucket";
    let inf = series(bucket, &cgroup.path, r#",le="+Inf""#);
    assert_eq!(common::sample(&text, &inf), Some(count), "{inf}\n{text}");
}

#[test]
fn tcp_retransmits_by_container_names_the_sockets_cgroup() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    let _serial = serial();
    let cgroup = TestCgroup::create("rtx");
    // A socket belongs to the cgroup it was made in: the test process joins
    // the cgroup while it opens the connection, then goes back.
    let own = common::own_cgroup2_path();
    let join = |path: &str| {
        let procs = common::cgroup2_root()
            .join(path.trim_start_matches('/'))
            .join("cgroup.procs");
        std::fs::write(&procs, std::process::id().to_string())
            .unwrap_or_else(|err| panic!("join {}: {err}", procs.display()));
    };
    join(&cgroup.path);
    let mut connection = common::LossyConnection::new("rtxc");
    join(&own);
    let mut retransmitted = 0;
    let text = run_builtin("tcp_retransmits_by_container", || {
        retransmitted = connection.retransmit();
    });
    drop(connection);
    let name = "bpfsnap_container_tcp_retransmits_total";
    let series = series(name, &cgroup.path, r#",state="established",family="ipv4""#);
    let counted = common::sample(&text, &series).unwrap_or(0.0);
    // As tcp_retransmits' test: at least one, at most the socket's own count.
    assert!(
        counted >= 1.0 && counted <= f64::from(retransmitted),
        "{series} = {counted}, but the client retransmitted {retransmitted} times\n{text}"
    );
}

#[test]
fn oomkill_by_container_names_the_victims_cgroup() {
    let test = common::test_name!();
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    if !common::builtin_runs_here("oomkill_by_container", test) {
        return;
    }
    let _serial = serial();
    let mut cgroup = match common::OomCgroup::create() {
        Ok(cgroup) => cgroup,
        Err(why) => {
            common::not_exercised(test, &format!("no memory cgroup for an OOM kill: {why}"));
            return;
        }
    };
    // The victim's v2 cgroup: the memory cgroup made for it where memory is
    // a v2 controller; the test's own where it is v1 (a hybrid host).
    let victims = common::cgroup2_path_of(&cgroup.dir).unwrap_or_else(common::own_cgroup2_path);
    let mut status = None;
    let text = run_builtin("oomkill_by_container", || status = Some(cgroup.run_hog()));
    let status = status.expect("the hog ran");
    assert!(
        libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL,
        "the hog was not OOM-killed (wait status {status:#x})"
    );
    let name = "bpfsnap_container_oom_kills_total";
    let series = series(name, &victims, &format!(r#",comm="{OOM_COMM}""#));
    assert_eq!(
        common::sample(&text, &series),
        Some(1.0),
        "{series}\n{text}"
    );
}
