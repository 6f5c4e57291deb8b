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
