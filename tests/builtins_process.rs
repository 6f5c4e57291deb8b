//! Process built-ins under the load they measure, on the real kernel:
//! syscall_errors, syscall_latency, execs and signals. Each test starts
//! bpfsnap on one built-in, makes the events happen, ends the window with
//! SIGINT and checks that the exact series moved at least as much as the load
//! it made. promtool must accept every output.

mod common;

use common::run_builtin;

use std::ffi::CString;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

/// The value of `series`, which must be in `text`.
fn value(text: &str, series: &str) -> f64 {
    common::sample(text, series).unwrap_or_else(|| panic!("no series {series}\n{text}"))
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Times the SIGUSR1 handler ran.
static SIGUSR1_HANDLED: AtomicU64 = AtomicU64::new(0);

extern "C" fn on_sigusr1(_: libc::c_int) {
    SIGUSR1_HANDLED.fetch_add(1, Ordering::SeqCst);
}

/// Sets the disposition of `signal` (a handler or SIG_IGN/SIG_DFL); returns
/// the previous one.
fn set_disposition(signal: i32, handler: libc::sighandler_t) -> libc::sigaction {
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = handler;
        libc::sigemptyset(&mut action.sa_mask);
        let mut old: libc::sigaction = std::mem::zeroed();
        assert_eq!(libc::sigaction(signal, &action, &mut old), 0, "sigaction");
        old
    }
}

fn restore_disposition(signal: i32, old: &libc::sigaction) {
    assert_eq!(
        unsafe { libc::sigaction(signal, old, std::ptr::null_mut()) },
        0,
        "sigaction"
    );
}

/// Blocks `signal` in this thread; returns the previous mask.
fn block(signal: i32) -> libc::sigset_t {
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, signal);
        let mut old: libc::sigset_t = std::mem::zeroed();
        assert_eq!(
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old),
            0,
            "pthread_sigmask"
        );
        old
    }
}

fn set_mask(mask: &libc::sigset_t) {
    assert_eq!(
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, mask, std::ptr::null_mut()) },
        0,
        "pthread_sigmask"
    );
}

/// Sends `signal` to this thread (tgkill): with a handler installed and the
/// signal not blocked, the handler has run when this returns.
fn raise(signal: i32) {
    assert_eq!(unsafe { libc::raise(signal) }, 0, "raise");
}

/// Makes `n` ia32 compat `close(-1)` calls (int 0x80, number 6: lstat in the
/// x86_64 table) in a forked child. Returns false, having said why on stderr,
/// when this kernel has no ia32 emulation (the child then dies of SIGSEGV).
#[cfg(target_arch = "x86_64")]
fn ia32_close_bad_fd(n: u64) -> bool {
    // Only the raw instruction and _exit in the child: safe after fork in a
    // threaded process.
    let child = unsafe { libc::fork() };
    assert!(child >= 0, "fork");
    if child == 0 {
        for _ in 0..n {
            let mut ax: i64 = 6;
            unsafe {
                std::arch::asm!(
                    "xchg {fd}, rbx",
                    "int 0x80",
                    "xchg {fd}, rbx",
                    fd = inout(reg) -1i64 => _,
                    inout("rax") ax,
                    out("r8") _, out("r9") _, out("r10") _, out("r11") _,
                );
            }
            if ax != -i64::from(libc::EBADF) {
                unsafe { libc::_exit(1) };
            }
        }
        unsafe { libc::_exit(0) };
    }
    let mut status = 0;
    assert_eq!(
        unsafe { libc::waitpid(child, &mut status, 0) },
        child,
        "waitpid"
    );
    if libc::WIFSIGNALED(status) {
        let _ = writeln!(
            std::io::stderr(),
            "ia32 compat calls not exercised: int 0x80 killed the child with signal {} \
             (kernel without ia32 emulation)",
            libc::WTERMSIG(status)
        );
        return false;
    }
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "ia32 close(-1) did not fail with EBADF: status {status:#x}"
    );
    true
}

#[cfg(not(target_arch = "x86_64"))]
fn ia32_close_bad_fd(_: u64) -> bool {
    let _ = writeln!(
        std::io::stderr(),
        "ia32 compat calls not exercised: not an x86_64 machine"
    );
    false
}

#[test]
fn syscall_errors_counts_each_failure_by_syscall_and_errno() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    const N: u64 = 500;
    let missing = CString::new("/nonexistent-bpfsnap-test/missing").unwrap();
    let mut compat = false;
    let text = run_builtin("syscall_errors", || {
        // Raw system calls: what the kernel sees is exactly what is counted.
        for _ in 0..N {
            let rc = unsafe { libc::syscall(libc::SYS_close, -1) };
            assert!(rc == -1 && errno() == libc::EBADF, "close(-1): {rc}");
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_openat,
                    libc::AT_FDCWD,
                    missing.as_ptr(),
                    libc::O_RDONLY,
                )
            };
            assert!(rc == -1 && errno() == libc::ENOENT, "openat(missing): {rc}");
        }
        // A kernel-internal code: rt_sigsuspend always returns
        // -ERESTARTNOHAND at syscall exit (the signal's delivery turns it
        // into EINTR for the caller). SIGUSR1 is made pending while blocked,
        // so each sigsuspend returns at once, deterministically.
        let old_action =
            set_disposition(libc::SIGUSR1, on_sigusr1 as *const () as libc::sighandler_t);
        let old_mask = block(libc::SIGUSR1);
        let before = SIGUSR1_HANDLED.load(Ordering::SeqCst);
        for _ in 0..N {
            raise(libc::SIGUSR1);
            let rc = unsafe {
                let mut empty: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut empty);
                libc::sigsuspend(&empty)
            };
            assert!(rc == -1 && errno() == libc::EINTR, "sigsuspend: {rc}");
        }
        assert_eq!(SIGUSR1_HANDLED.load(Ordering::SeqCst) - before, N);
        set_mask(&old_mask);
        restore_disposition(libc::SIGUSR1, &old_action);
        compat = ia32_close_bad_fd(N);
    });
    let n = N as f64;
    for series in [
        r#"bpfsnap_syscall_errors_total{syscall="close",errno="EBADF"}"#,
        r#"bpfsnap_syscall_errors_total{syscall="openat",errno="ENOENT"}"#,
        r#"bpfsnap_syscall_errors_total{syscall="rt_sigsuspend",errno="ERESTARTNOHAND"}"#,
    ] {
        let got = value(&text, series);
        assert!(got >= n, "{series} = {got}, made {N}\n{text}");
    }
    // Successful calls are not counted: the getpid calls bpfsnap's own
    // loop makes never fail, and no errno is left undecoded.
    assert!(!text.contains(r#"syscall="getpid""#), "{text}");
    assert!(!text.contains("errno=\"unknown:"), "{text}");
    // ia32 calls number differently: they are left out, not misnamed (lstat
    // has no fd, so an lstat EBADF can only be a misnamed ia32 close).
    if compat {
        assert!(!text.contains(r#"syscall="lstat",errno="EBADF""#), "{text}");
    }
}

#[test]
fn syscalls_counts_native_calls_by_name_and_leaves_ia32_calls_out() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    const N: u64 = 2000;
    let mut compat = false;
    let text = run_builtin("syscalls", || {
        common::getpid_calls(N);
        compat = ia32_close_bad_fd(N);
    });
    let getpid = value(&text, r#"bpfsnap_syscalls_total{syscall="getpid"}"#);
    assert!(
        getpid >= N as f64,
        "{getpid} getpid calls counted, made {N}\n{text}"
    );
    // An ia32 close is number 6, lstat's number on x86_64: counted, it
    // would add N lstat calls (the machine's own make a few at most).
    if compat {
        let lstat = common::sample(&text, r#"bpfsnap_syscalls_total{syscall="lstat"}"#);
        assert!(lstat.unwrap_or(0.0) < N as f64 / 2.0, "{text}");
    }
}

#[test]
fn syscall_latency_puts_1ms_sleeps_at_or_above_1ms() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    const N: u64 = 200;
    const GETPIDS: u64 = 10_000;
    const IA32_CALLS: u64 = 5_000;
    let mut compat = false;
    let text = run_builtin("syscall_latency", || {
        // glibc's nanosleep() (and so std::thread::sleep) makes this very
        // system call (strace: clock_nanosleep(CLOCK_REALTIME, 0, ...));
        // calling it directly keeps the test independent of the libc.
        let one_ms = libc::timespec {
            tv_sec: 0,
            tv_nsec: 1_000_000,
        };
        for _ in 0..N {
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_clock_nanosleep,
                    libc::CLOCK_MONOTONIC,
                    0,
                    &one_ms as *const libc::timespec,
                    std::ptr::null_mut::<libc::timespec>(),
                )
            };
            assert_eq!(rc, 0, "clock_nanosleep");
        }
        common::getpid_calls(GETPIDS);
        compat = ia32_close_bad_fd(IA32_CALLS);
    });
    let n = N as f64;
    let metric = "bpfsnap_syscall_latency_seconds";
    let sleep = r#"syscall="clock_nanosleep""#;
    let count = value(&text, &format!("{metric}_count{{{sleep}}}"));
    assert!(
        count >= n,
        "{count} clock_nanosleep calls, made {N}\n{text}"
    );
    // le is a true upper bound: no 1 ms sleep can be in a bucket up to
    // 2^19 ns = 0.524 ms, so at least N calls are above it, and they all
    // fit the first bucket past 1 ms onwards (noise only adds).
    let below = value(
        &text,
        &format!(r#"{metric}_bucket{{{sleep},le="0.000524288"}}"#),
    );
    assert!(
        count - below >= n,
        "only {} of {count} sleeps above 0.52 ms, made {N}\n{text}",
        count - below
    );
    let inf = value(&text, &format!(r#"{metric}_bucket{{{sleep},le="+Inf"}}"#));
    assert_eq!(inf, count, "+Inf bucket is the count\n{text}");
    let sum = value(&text, &format!("{metric}_sum{{{sleep}}}"));
    assert!(
        sum >= n * 0.001,
        "clock_nanosleep sum {sum} s for {N} sleeps of 1 ms\n{text}"
    );
    // The getpid calls are all counted, and the first bucket exists (shorter
    // calls count in the 128 ns one).
    let getpid = r#"syscall="getpid""#;
    let count = value(&text, &format!("{metric}_count{{{getpid}}}"));
    assert!(
        count >= GETPIDS as f64,
        "{count} getpid calls, made {GETPIDS}\n{text}"
    );
    value(
        &text,
        &format!(r#"{metric}_bucket{{{getpid},le="0.000000128"}}"#),
    );
    // The ia32 close calls are not counted as lstat (6 in the x86_64 table),
    // a call glibc no longer makes (its lstat() is newfstatat).
    if compat {
        let lstat = common::sample(&text, &format!(r#"{metric}_count{{syscall="lstat"}}"#));
        assert!(
            lstat.unwrap_or(0.0) < IA32_CALLS as f64,
            "{IA32_CALLS} ia32 close calls counted as lstat: {lstat:?}\n{text}"
        );
    }
}

#[test]
fn execs_counts_programs_by_comm_and_bounds_the_names() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    const N: usize = 100;
    // More distinct names than the map keeps (1024), so some must land in
    // "[other programs]". The comm of an exec is the last component of the
    // path it was given, so symlinks to one program give distinct comms:
    // busybox's static `true` where it is installed (make deps does; a
    // dynamically linked program spends most of an exec in the loader, which
    // takes minutes for 1100 of them in the kernel matrix's emulated VMs).
    const NAMES: usize = 1100;
    const KEPT: usize = 1024;
    let dir = tempfile::tempdir().expect("tempdir");
    let program = ["/bin/busybox", "/bin/true"]
        .into_iter()
        .find(|program| std::path::Path::new(program).exists())
        .expect("/bin/true");
    let links: Vec<_> = (0..NAMES)
        .map(|i| {
            let link = dir.path().join(format!("bpfsnapx{i:04}"));
            std::os::unix::fs::symlink(program, &link).expect("symlink");
            link
        })
        .collect();
    let text = run_builtin("execs", || {
        for _ in 0..N {
            let status = Command::new("/bin/true").status().expect("run /bin/true");
            assert!(status.success());
        }
        for link in &links {
            // busybox runs the applet its argv[0] names.
            let status = Command::new(link)
                .arg0("true")
                .status()
                .expect("run a link to true");
            assert!(status.success());
        }
    });
    let got = value(&text, r#"bpfsnap_execs_total{comm="true"}"#);
    assert!(
        got >= N as f64,
        "comm=true: {got}, ran /bin/true {N} times\n{text}"
    );
    let names = common::samples(&text, "bpfsnap_execs_total");
    let ours: Vec<f64> = names
        .iter()
        .filter(|(labels, _)| labels.starts_with(r#"comm="bpfsnapx"#))
        .map(|(_, v)| *v)
        .collect();
    let other = value(&text, r#"bpfsnap_execs_total{comm="[other programs]"}"#);
    // Every exec counted once, under its own name or as other.
    let counted: f64 = ours.iter().sum::<f64>() + other;
    assert!(
        counted >= NAMES as f64,
        "{counted} of {NAMES} execs of distinct names counted\n{text}"
    );
    assert!(
        other >= (NAMES - KEPT) as f64,
        "other = {other}: at least {} names cannot fit\n{text}",
        NAMES - KEPT
    );
    let series = names.len() - 1; // all but other
    assert!(
        series <= KEPT,
        "{series} comm series, the bound is {KEPT}\n{text}"
    );
    assert!(ours.iter().all(|v| *v == 1.0), "each link ran once\n{text}");
}

#[test]
fn signals_counts_delivered_ignored_and_already_pending() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    const N: u64 = 300;
    let text = run_builtin("signals", || {
        let old_usr1 =
            set_disposition(libc::SIGUSR1, on_sigusr1 as *const () as libc::sighandler_t);
        let before = SIGUSR1_HANDLED.load(Ordering::SeqCst);
        // Handled: each one queued (result delivered) and its handler run.
        for _ in 0..N {
            raise(libc::SIGUSR1);
        }
        assert_eq!(SIGUSR1_HANDLED.load(Ordering::SeqCst) - before, N);
        // Blocked: the first is queued (delivered), the N after it find a
        // standard signal already pending and merge into it.
        let old_mask = block(libc::SIGUSR1);
        for _ in 0..=N {
            raise(libc::SIGUSR1);
        }
        set_mask(&old_mask); // the pending one is handled here
        assert_eq!(SIGUSR1_HANDLED.load(Ordering::SeqCst) - before, N + 1);
        restore_disposition(libc::SIGUSR1, &old_usr1);
        // Ignored: dropped at generation.
        let old_usr2 = set_disposition(libc::SIGUSR2, libc::SIG_IGN);
        for _ in 0..N {
            raise(libc::SIGUSR2);
        }
        restore_disposition(libc::SIGUSR2, &old_usr2);
    });
    let n = N as f64;
    for (series, want) in [
        (
            r#"bpfsnap_signals_total{signal="SIGUSR1",result="delivered"}"#,
            n + 1.0,
        ),
        (
            r#"bpfsnap_signals_total{signal="SIGUSR1",result="already_pending"}"#,
            n,
        ),
        (
            r#"bpfsnap_signals_total{signal="SIGUSR2",result="ignored"}"#,
            n,
        ),
    ] {
        let got = value(&text, series);
        assert!(
            got >= want,
            "{series} = {got}, want at least {want}\n{text}"
        );
    }
    // bpfsnap's own SIGINT ended the window: it is counted too.
    assert!(
        value(
            &text,
            r#"bpfsnap_signals_total{signal="SIGINT",result="delivered"}"#
        ) >= 1.0
    );
    assert!(
        !text.contains("unknown:"),
        "every signal and result has a name\n{text}"
    );
}
