//! Load the tests make for BPF programs to count: system calls, from
//! threads with a chosen name.

/// Makes `n` getpid system calls (the raw syscall: libc may cache the pid).
pub fn getpid_calls(n: u64) {
    for _ in 0..n {
        unsafe { libc::syscall(libc::SYS_getpid) };
    }
}

/// `work`'s result, run on a thread named `name` (the comm BPF programs see;
/// examples/events.bpf.c counts threads named bpfsnap-ev*).
pub fn named_thread<T: Send + 'static>(name: &str, work: impl FnOnce() -> T + Send + 'static) -> T {
    let name = std::ffi::CString::new(name).expect("a thread name without NUL");
    std::thread::spawn(move || {
        let rc = unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr()) };
        assert_eq!(rc, 0, "prctl(PR_SET_NAME)");
        work()
    })
    .join()
    .expect("named thread")
}

/// Makes `n` getppid system calls.
pub fn getppid_calls(n: u64) {
    for _ in 0..n {
        unsafe { libc::syscall(libc::SYS_getppid) };
    }
}

/// A system call nothing else on a test machine makes (bpfsnap itself, the
/// test harness, systemd, …), so that the `syscalls` built-in's count of it
/// is the test's own, exactly: sched_rr_get_interval.
pub const RARE_SYSCALL: &str = "sched_rr_get_interval";

/// Makes `n` [`RARE_SYSCALL`] calls.
pub fn rare_syscalls(n: u64) {
    let mut interval: libc::timespec = unsafe { std::mem::zeroed() };
    for _ in 0..n {
        unsafe { libc::syscall(libc::SYS_sched_rr_get_interval, 0, &mut interval) };
    }
}

/// Makes `n` semtimedop system calls that each wait `wait` for nothing (a
/// System V semaphore of the test's own never reaches zero): calls of a
/// known latency that nothing else on a test machine makes.
pub fn timed_waits(n: u64, wait: std::time::Duration) {
    // SAFETY: plain System V IPC calls on a semaphore set of our own,
    // removed before returning.
    unsafe {
        let set = libc::semget(libc::IPC_PRIVATE, 1, 0o600);
        assert!(set >= 0, "semget: {}", std::io::Error::last_os_error());
        assert_eq!(libc::semctl(set, 0, libc::SETVAL, 1), 0, "semctl SETVAL");
        let timeout = libc::timespec {
            tv_sec: wait.as_secs() as libc::time_t,
            tv_nsec: wait.subsec_nanos() as libc::c_long,
        };
        let mut wait_for_zero = libc::sembuf {
            sem_num: 0,
            sem_op: 0,
            sem_flg: 0,
        };
        for _ in 0..n {
            let rc = libc::syscall(libc::SYS_semtimedop, set, &mut wait_for_zero, 1, &timeout);
            let errno = std::io::Error::last_os_error().raw_os_error();
            assert!(
                rc == -1 && errno == Some(libc::EAGAIN),
                "semtimedop: {rc} {errno:?}"
            );
        }
        libc::semctl(set, 0, libc::IPC_RMID);
    }
}
