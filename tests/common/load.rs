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

/// Sends `n` datagrams on loopback to a socket that never reads them and
/// whose receive buffer is as small as the kernel allows: all but the first
/// few are dropped with reason socket_rcvbuff (the `skb_drops` built-in).
pub fn udp_receive_buffer_drops(n: u64) {
    use std::net::{Ipv4Addr, UdpSocket};
    use std::os::fd::AsRawFd;
    let receiver = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("receiver");
    let size: libc::c_int = 1;
    // SAFETY: setsockopt on a socket of our own with an int option.
    let rc = unsafe {
        libc::setsockopt(
            receiver.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_RCVBUF: {}", std::io::Error::last_os_error());
    let sender = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("sender");
    let to = receiver.local_addr().unwrap();
    for _ in 0..n {
        sender.send_to(&[0u8; 1024], to).expect("send a datagram");
    }
}

/// One TCP connection on 127.0.0.1, from connect to close on both sides,
/// with a message each way (state transitions for `tcp_states`).
pub fn tcp_loopback_exchange() {
    use std::io::{Read, Write};
    use std::net::{Ipv4Addr, TcpListener, TcpStream};
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("listen");
    let mut client = TcpStream::connect(listener.local_addr().unwrap()).expect("connect");
    let (mut server, _) = listener.accept().expect("accept");
    server.set_read_timeout(Some(super::PATIENCE)).unwrap();
    client.set_read_timeout(Some(super::PATIENCE)).unwrap();
    let mut byte = [0u8; 1];
    client.write_all(b"q").expect("send");
    server.read_exact(&mut byte).expect("receive");
    server.write_all(b"a").expect("answer");
    client.read_exact(&mut byte).expect("receive the answer");
    drop(client);
    // The client's FIN: the server reads end of file, then closes.
    assert_eq!(server.read(&mut byte).expect("read the close"), 0);
}

/// Runs `n` short-lived programs (`true`), each a fork, an exec, an exit
/// and a SIGCHLD; waits for each.
pub fn short_processes(n: u64) {
    for _ in 0..n {
        let status = std::process::Command::new("true")
            .status()
            .expect("run true");
        assert!(status.success());
    }
}

/// Has tests/fixtures/many_keys.bpf.c add 1 to keys `keys` of its map.
pub fn many_keys(keys: std::ops::Range<u64>) {
    const MANY_KEYS_MAGIC: libc::c_int = 0x6d61_6e79;
    for start in keys.clone().step_by(1024) {
        let count = (keys.end - start).min(1024);
        // SAFETY: an option no kernel has: prctl fails with EINVAL and
        // touches nothing; the fixture's program sees its arguments.
        unsafe { libc::prctl(MANY_KEYS_MAGIC, start, count, 0u64, 0u64) };
    }
}
