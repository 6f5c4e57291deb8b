//! CPU built-ins under the load they measure, on the real kernel: softirqs,
//! hrtimers and profile. Each test starts bpfsnap on one built-in, makes the
//! events happen, ends the window with SIGINT and checks that the exact series
//! moved at least as much as the load it made. promtool must accept every
//! output.

mod common;

use common::{path_str, run_builtin};

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// The value of `series`, which must be in `text`.
fn value(text: &str, series: &str) -> f64 {
    common::sample(text, series).unwrap_or_else(|| panic!("no series {series}\n{text}"))
}

/// Sends `n` UDP datagrams over 127.0.0.1, each one received before the next
/// is sent. Loopback delivery goes through the NET_RX softirq (the sender's
/// netif_rx raises it, its local_bh_enable runs it), and since a datagram
/// is sent only after the previous one was delivered, no softirq run can
/// deliver two of them.
fn udp_ping(n: u32) {
    let receiver = UdpSocket::bind("127.0.0.1:0").expect("bind receiver");
    receiver
        .set_read_timeout(Some(common::PATIENCE))
        .expect("hang guard");
    let sender = UdpSocket::bind("127.0.0.1:0").expect("bind sender");
    sender
        .connect(receiver.local_addr().unwrap())
        .expect("connect");
    let mut buf = [0u8; 16];
    for i in 0..n {
        sender.send(&i.to_ne_bytes()).expect("send");
        let got = receiver.recv(&mut buf).expect("datagram lost on loopback");
        assert_eq!(&buf[..got], &i.to_ne_bytes());
    }
}

/// Makes `n` reads time out through SO_RCVTIMEO, a timer-wheel timer
/// (schedule_timeout) whose expiry runs in the TIMER softirq: each timeout is
/// armed after the previous one fired, so each needs a TIMER softirq run of
/// its own.
fn receive_timeouts(n: u32) {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    socket
        .set_read_timeout(Some(Duration::from_millis(2)))
        .expect("SO_RCVTIMEO");
    let mut buf = [0u8; 16];
    for _ in 0..n {
        let err = socket.recv(&mut buf).expect_err("nobody sends to it");
        assert!(
            matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
            "{err}"
        );
    }
}

/// SO_MAX_PACING_RATE (asm-generic/socket.h; the same on x86_64 and aarch64).
const SO_MAX_PACING_RATE: libc::c_int = 47;

fn set_int_option(fd: libc::c_int, level: libc::c_int, option: libc::c_int, value: libc::c_int) {
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            option,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(
        rc,
        0,
        "setsockopt({level}, {option}): {}",
        std::io::Error::last_os_error()
    );
}

/// Sends `bytes` over a TCP connection on 127.0.0.1 with the kernel's own
/// pacing (SO_MAX_PACING_RATE, 1 MB/s, MSS 1000: small packets 2 ms apart).
/// Between packets TCP waits on its pacing timer, a soft hrtimer
/// (tcp_pace_kick) that fires in the HRTIMER softirq.
fn paced_tcp_send(bytes: usize) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
    let SocketAddr::V4(addr) = listener.local_addr().unwrap() else {
        unreachable!("bound to an IPv4 address")
    };
    let reader = std::thread::spawn(move || {
        let (mut peer, _) = listener.accept().expect("accept");
        peer.set_read_timeout(Some(common::PATIENCE))
            .expect("hang guard");
        let mut received = Vec::new();
        peer.read_to_end(&mut received).expect("read");
        received.len()
    });
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    set_int_option(fd, libc::IPPROTO_TCP, libc::TCP_MAXSEG, 1000);
    set_int_option(fd, libc::SOL_SOCKET, SO_MAX_PACING_RATE, 1_000_000);
    let sockaddr = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: addr.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(addr.ip().octets()),
        },
        sin_zero: [0; 8],
    };
    let rc = unsafe {
        libc::connect(
            fd,
            (&sockaddr as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "connect: {}", std::io::Error::last_os_error());
    let mut stream = TcpStream::from(owned);
    stream.write_all(&vec![b'x'; bytes]).expect("send");
    drop(stream);
    assert_eq!(reader.join().expect("reader"), bytes);
}

#[test]
fn softirqs_times_net_rx_timer_and_hrtimer_runs() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    const DATAGRAMS: u32 = 200;
    const TIMEOUTS: u32 = 20;
    let text = run_builtin("softirqs", || {
        udp_ping(DATAGRAMS);
        receive_timeouts(TIMEOUTS);
        paced_tcp_send(40_000);
    });
    let series = |part: &str, vector: &str| {
        value(
            &text,
            &format!("bpfsnap_softirq_duration_seconds_{part}{{vector=\"{vector}\"}}"),
        )
    };
    for (vector, at_least) in [("NET_RX", DATAGRAMS), ("TIMER", TIMEOUTS), ("HRTIMER", 1)] {
        let count = series("count", vector);
        assert!(
            count >= f64::from(at_least),
            "{count} {vector} softirq runs, expected at least {at_least}\n{text}"
        );
        assert!(series("sum", vector) > 0.0, "{vector} took no time\n{text}");
        let inf = value(
            &text,
            &format!("bpfsnap_softirq_duration_seconds_bucket{{vector=\"{vector}\",le=\"+Inf\"}}"),
        );
        assert_eq!(inf, count, "{vector}: +Inf bucket is the count");
    }
    // Vectors are named, never numbered.
    assert!(!text.contains("vector=\"unknown"), "{text}");
}

#[test]
fn hrtimers_counts_every_nanosleep_wakeup() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    const SLEEPS: u32 = 500;
    let text = run_builtin("hrtimers", || {
        // Each nanosleep returns only once its hrtimer fired and called
        // hrtimer_wakeup (no signal can cut it short here).
        let request = libc::timespec {
            tv_sec: 0,
            tv_nsec: 100_000,
        };
        for _ in 0..SLEEPS {
            let rc = unsafe { libc::nanosleep(&request, std::ptr::null_mut()) };
            assert_eq!(rc, 0, "nanosleep: {}", std::io::Error::last_os_error());
        }
    });
    let wakeups = value(
        &text,
        r#"bpfsnap_hrtimer_expirations_total{function="hrtimer_wakeup"}"#,
    );
    // A sleep's (hardirq) expiry that interrupts the program while it counts a
    // softirq timer on the same CPU is not run: the kernel counts it as the
    // program's recursion miss, which bpfsnap exposes. Every other one counts.
    let missed = common::recursion_misses(&text);
    assert!(
        wakeups + missed >= f64::from(SLEEPS),
        "{wakeups} hrtimer_wakeup expirations and {missed} recursion misses for {SLEEPS} nanosleeps\n{text}"
    );
    // Function pointers resolve to names through kallsyms.
    assert!(!text.contains("unknown_addr"), "{text}");
}

/// CPU time the calling thread has used.
fn thread_cpu_time() -> Duration {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    assert_eq!(rc, 0, "clock_gettime");
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

#[test]
fn profile_samples_a_spinning_thread_by_name() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    let text = run_builtin("profile", || spin_named(c"bpfsnap-spin", SPIN));
    assert_spinner_sampled(&text);
    // The idle task is not counted.
    assert!(!text.contains("comm=\"swapper"), "{text}");
}

/// `profile` pinned as the package's timer runs it (`--pin`, no window):
/// its perf events go on sampling between runs, when no bpfsnap runs.
#[test]
fn pinned_profile_samples_between_runs() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    let pin = common::PinDir::new(common::test_name!());
    let dir = common::output_dir();
    let output = dir.path().join("bpfsnap.prom");
    let args = ["run", "-b", "profile", "--pin", path_str(&pin.0)];
    let run = || {
        let ran = common::bpfsnap()
            .args(args)
            .args(["--output", path_str(&output)])
            .output()
            .unwrap();
        assert!(
            ran.status.success(),
            "{}",
            String::from_utf8_lossy(&ran.stderr)
        );
        std::fs::read_to_string(&output).unwrap()
    };
    let first = run();
    let links = common::sample(&first, r#"bpfsnap_pinned_links{config="profile"}"#);
    if !kernel_has_perf_links() {
        // No BPF perf links (before 5.15): the program is attached to the
        // perf events themselves, which bpffs cannot hold.
        assert_eq!(links, Some(0.0), "{first}");
        return;
    }
    assert!(links >= Some(1.0), "{first}");
    spin_named(c"bpfsnap-spin", SPIN);
    let text = run();
    assert_spinner_sampled(&text);
    pin.stop();
}

/// Whether this kernel has BPF perf links, read from its BTF.
fn kernel_has_perf_links() -> bool {
    let btf = std::fs::read("/sys/kernel/btf/vmlinux").expect("the kernel's BTF");
    btf.windows(b"bpf_perf_link\0".len())
        .any(|name| name == b"bpf_perf_link\0")
}

/// CPU time the spinner uses.
const SPIN: Duration = Duration::from_secs(1);

/// 1 s of CPU at 99 Hz is about 99 samples; half of that leaves room for
/// timer jitter and virtualised clocks.
fn assert_spinner_sampled(text: &str) {
    let samples = value(text, r#"bpfsnap_cpu_samples_total{comm="bpfsnap-spin"}"#);
    assert!(
        samples >= 50.0,
        "{samples} samples of a thread that spun for {SPIN:?} of CPU time\n{text}"
    );
}

/// A thread named `name` spins until it has used `cpu` of CPU time, however
/// long that takes in wall time on a busy machine (bounded by PATIENCE).
fn spin_named(name: &'static std::ffi::CStr, cpu: Duration) {
    std::thread::spawn(move || {
        let rc = unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr()) };
        assert_eq!(rc, 0, "prctl(PR_SET_NAME)");
        let start = thread_cpu_time();
        let deadline = Instant::now() + common::PATIENCE;
        let mut spins = 0u64;
        while thread_cpu_time() - start < cpu {
            spins = std::hint::black_box(spins.wrapping_add(1));
            assert!(
                Instant::now() < deadline,
                "no CPU time for the spinner in {:?}",
                common::PATIENCE
            );
        }
    })
    .join()
    .expect("spinner");
}
