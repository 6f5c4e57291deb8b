//! Network built-ins under the load they measure, on the real kernel: each
//! test starts bpfsnap on one built-in, makes the events happen, ends the
//! window with SIGINT, and checks the series moved at least as much as the
//! load it made. promtool must accept every output.
//!
//! Traffic goes only to 127.0.0.1 / ::1, or to the loopback device of a
//! network namespace the test creates itself (and deletes on every exit).

mod common;

use common::run_builtin;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, TcpListener, TcpStream, UdpSocket};

use common::PATIENCE;

/// The value of `series`, or 0 when bpfsnap left it out (it prints no series
/// that never moved); the output is in the message when asserting on it.
fn value(text: &str, series: &str) -> f64 {
    common::sample(text, series).unwrap_or(0.0)
}

#[test]
fn tcp_retransmits_counts_retransmissions_of_lost_packets() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    // Loss is made inside a namespace of the test's own (see
    // common::LossyConnection).
    let mut connection = common::LossyConnection::new("rtx");
    assert_eq!(common::tcp_info(&connection.client).tcpi_total_retrans, 0);
    let mut retransmitted = 0;
    let text = run_builtin("tcp_retransmits", || {
        retransmitted = connection.retransmit();
    });
    drop(connection);

    let series = r#"bpfsnap_tcp_retransmits_total{state="established",family="ipv4"}"#;
    let counted = value(&text, series);
    // At least one: the socket's own count (tcpi_total_retrans) can run one
    // ahead of the tracepoint (a retransmission attempt that failed to be
    // sent is skipped by the program, and one may race the window's end).
    assert!(retransmitted >= 1);
    assert!(
        counted >= 1.0 && counted <= f64::from(retransmitted),
        "{series} = {counted}, but the client retransmitted {retransmitted} times\n{text}"
    );
}

/// One connection's whole life, ordered so that every transition asserted
/// below has happened when this returns (see the test).
fn tcp_connection(listener: &TcpListener) {
    let mut client = TcpStream::connect(listener.local_addr().unwrap()).expect("connect");
    client.write_all(b"x").expect("send");
    let (mut server, _) = listener.accept().expect("accept");
    server.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut byte = [0u8; 1];
    server.read_exact(&mut byte).expect("read the byte");
    drop(client);
    assert_eq!(server.read(&mut byte).expect("read EOF"), 0, "EOF");
    drop(server);
}

#[test]
fn tcp_states_counts_the_transitions_of_connections() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    const CONNECTIONS: u32 = 50;
    const CONNECTIONS_V6: u32 = 10;
    let mut ipv6 = false;
    let text = run_builtin("tcp_states", || {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("listen");
        for _ in 0..CONNECTIONS {
            tcp_connection(&listener);
        }
        drop(listener);
        match TcpListener::bind((Ipv6Addr::LOCALHOST, 0)) {
            Ok(listener) => {
                ipv6 = true;
                for _ in 0..CONNECTIONS_V6 {
                    tcp_connection(&listener);
                }
            }
            Err(err) => {
                let _ = writeln!(
                    std::io::stderr(),
                    "tcp_states: no IPv6 loopback here ({err}): family=\"ipv6\" not exercised"
                );
            }
        }
    });
    let n = f64::from(CONNECTIONS);
    let transition = |family: &str, old: &str, new: &str| {
        format!(
            r#"bpfsnap_tcp_state_transitions_total{{family="{family}",old_state="{old}",new_state="{new}"}}"#
        )
    };
    // Each is complete when the system call that caused it returns:
    let expected = [
        // listen(), and close() of the listener
        ("close", "listen", 1.0),
        ("listen", "close", 1.0),
        // connect() starts in SYN_SENT and returns once ESTABLISHED
        ("close", "syn_sent", n),
        ("syn_sent", "established", n),
        // the server socket read data: its handshake had completed
        ("syn_recv", "established", n),
        // close() by the client sends its FIN
        ("established", "fin_wait1", n),
        // the server read EOF: the FIN was processed
        ("established", "close_wait", n),
        // close() by the server sends its FIN
        ("close_wait", "last_ack", n),
    ];
    // Transitions in softirq (incoming segments) that interrupt the program
    // running for one in task context are skipped and reported as misses.
    let missed = common::recursion_misses(&text);
    for (old, new, at_least) in expected {
        let series = transition("ipv4", old, new);
        let counted = value(&text, &series);
        assert!(
            counted + missed >= at_least,
            "{series} = {counted} ({missed} recursion misses), expected ≥ {at_least}\n{text}"
        );
    }
    if ipv6 {
        let series = transition("ipv6", "syn_sent", "established");
        let counted = value(&text, &series);
        let at_least = f64::from(CONNECTIONS_V6);
        assert!(
            counted + missed >= at_least,
            "{series} = {counted} ({missed} recursion misses), expected ≥ {at_least}\n{text}"
        );
    }
}

/// Pins the calling thread to the CPU it is on; returns the previous mask.
fn pin_to_current_cpu() -> libc::cpu_set_t {
    unsafe {
        let mut old: libc::cpu_set_t = std::mem::zeroed();
        let size = std::mem::size_of::<libc::cpu_set_t>();
        assert_eq!(libc::sched_getaffinity(0, size, &mut old), 0);
        let cpu = libc::sched_getcpu();
        assert!(cpu >= 0, "sched_getcpu");
        let mut one: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu as usize, &mut one);
        assert_eq!(
            libc::sched_setaffinity(0, size, &one),
            0,
            "sched_setaffinity"
        );
        old
    }
}

#[test]
fn skb_drops_counts_datagrams_to_a_closed_port_as_no_socket() {
    let test = common::test_name!();
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    if !common::builtin_runs_here("skb_drops", test) {
        return;
    }
    const DATAGRAMS: u32 = 200;
    let text = run_builtin("skb_drops", || {
        // A port nothing listens on: bound, then closed.
        let closed = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|s| s.local_addr())
            .expect("pick a port");
        let marker = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("marker socket");
        marker.set_read_timeout(Some(PATIENCE)).unwrap();
        let sender = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("sender");
        // Loopback queues every datagram sent from a CPU on that CPU's
        // backlog, processed in order: with the thread pinned, the marker's
        // arrival proves every datagram before it reached UDP and was dropped.
        let old_mask = pin_to_current_cpu();
        for _ in 0..DATAGRAMS {
            sender.send_to(b"nobody listens", closed).expect("send");
        }
        sender
            .send_to(b"marker", marker.local_addr().unwrap())
            .expect("send marker");
        let mut buf = [0u8; 16];
        let (len, from) = marker.recv_from(&mut buf).expect("marker arrives");
        assert_eq!(
            (&buf[..len], from),
            (&b"marker"[..], sender.local_addr().unwrap())
        );
        let size = std::mem::size_of::<libc::cpu_set_t>();
        assert_eq!(unsafe { libc::sched_setaffinity(0, size, &old_mask) }, 0);
    });
    let series = r#"bpfsnap_skb_drops_total{reason="no_socket",protocol="ipv4"}"#;
    let counted = value(&text, series);
    // A drop in softirq that interrupts the program running for another in
    // task context is skipped by the kernel and reported as a miss.
    let missed = common::recursion_misses(&text);
    assert!(
        counted + missed >= f64::from(DATAGRAMS),
        "{series} = {counted} ({missed} recursion misses) for {DATAGRAMS} datagrams to a closed port\n{text}"
    );
}
