//! Network namespaces of a test's own, and TCP retransmissions made in
//! one: packets lost on purpose, with what the kernel has (no sch_netem).

use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::time::{Duration, Instant};

use super::PATIENCE;

/// Runs a command that must succeed (iproute2 is a requirement of these tests).
pub fn must_run(program: &str, args: &[&str]) {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|err| panic!("run {program} (iproute2 must be installed): {err}"));
    assert!(
        output.status.success(),
        "{program} {}: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A network namespace of this test's own (`ip netns add`), deleted on drop,
/// so also when an assertion fails.
pub struct NetNs {
    name: String,
}

impl NetNs {
    pub fn create(tag: &str) -> NetNs {
        let name = format!("bpfsnap-test-{}-{tag}", std::process::id());
        // A namespace left behind by a killed earlier run with this pid.
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        must_run("ip", &["netns", "add", &name]);
        NetNs { name }
    }

    /// `ip -n NS ARGS...`
    pub fn ip(&self, args: &[&str]) {
        must_run("ip", &[&["-n", self.name.as_str()], args].concat());
    }

    /// `tc -n NS ARGS...`
    pub fn tc(&self, args: &[&str]) {
        must_run("tc", &[&["-n", self.name.as_str()], args].concat());
    }

    /// Runs `f` on a thread that has entered the namespace: sockets it
    /// creates live there (setns(CLONE_NEWNET) affects the calling thread only).
    pub fn run_inside<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/run/netns/{}", self.name);
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let ns = File::open(&path).unwrap_or_else(|err| panic!("open {path}: {err}"));
                    let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
                    assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
                    f()
                })
                .join()
                .expect("thread inside the namespace")
        })
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let deleted = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
        if !matches!(deleted, Ok(status) if status.success()) {
            let _ = writeln!(
                std::io::stderr(),
                "could not delete network namespace {} ({deleted:?}): remove it with `ip netns del {}`",
                self.name,
                self.name
            );
        }
    }
}

/// The kernel's TCP_INFO for a socket.
pub fn tcp_info(stream: &TcpStream) -> libc::tcp_info {
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    assert_eq!(rc, 0, "TCP_INFO: {}", std::io::Error::last_os_error());
    info
}

/// A TCP connection on the loopback of a namespace of its own, whose
/// packets to the server can be lost on purpose. This kernel has no
/// sch_netem (and no nft/iptables tools are installed), so packets are
/// dropped with what it has: an ingress u32 filter on the namespace's lo
/// whose mirred action redirects the server's inbound packets out of a
/// veth; they arrive on its peer addressed to MAC 00:00:00:00:00:00 and the
/// IP stack drops them (otherhost). Every packet to the server is lost
/// while the filter is there, so the client must retransmit.
pub struct LossyConnection {
    pub client: TcpStream,
    pub server: TcpStream,
    port: String,
    // Last: deleted after the sockets in it are closed.
    ns: NetNs,
}

impl LossyConnection {
    pub fn new(tag: &str) -> LossyConnection {
        let ns = NetNs::create(tag);
        ns.ip(&["link", "set", "lo", "up"]);
        ns.ip(&[
            "link", "add", "bsdrop0", "type", "veth", "peer", "name", "bsdrop1",
        ]);
        for veth in ["bsdrop0", "bsdrop1"] {
            // No IPv6 link-local address: no DAD or router solicitations.
            ns.ip(&["link", "set", veth, "addrgenmode", "none", "up"]);
        }
        ns.tc(&["qdisc", "add", "dev", "lo", "ingress"]);
        let (client, server) = ns.run_inside(|| {
            let listener =
                TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("listen in namespace");
            let client = TcpStream::connect(listener.local_addr().unwrap()).expect("connect");
            let (server, _) = listener.accept().expect("accept");
            (client, server)
        });
        let port = client.peer_addr().unwrap().port().to_string();
        LossyConnection {
            client,
            server,
            port,
            ns,
        }
    }

    /// Sends a message that is lost until the client has retransmitted it
    /// at least once, then lets it through; returns the client's
    /// retransmissions so far (tcpi_total_retrans).
    pub fn retransmit(&mut self) -> u32 {
        let before = tcp_info(&self.client).tcpi_total_retrans;
        self.ns.tc(&[
            "filter", "add", "dev", "lo", "ingress", "protocol", "ip", "prio", "1", "u32", "match",
            "ip", "dport", &self.port, "0xffff", "action", "mirred", "egress", "redirect", "dev",
            "bsdrop0",
        ]);
        (&self.client)
            .write_all(b"lost, then retransmitted")
            .expect("send");
        // Hang guard only: the retransmission timer fires after ≈ 200 ms.
        let deadline = Instant::now() + PATIENCE;
        while tcp_info(&self.client).tcpi_total_retrans == before {
            assert!(
                Instant::now() < deadline,
                "no retransmission in {PATIENCE:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        self.ns.tc(&["filter", "del", "dev", "lo", "ingress"]);
        // The next retransmission gets through.
        let mut received = [0u8; 24];
        self.server.set_read_timeout(Some(PATIENCE)).unwrap();
        self.server
            .read_exact(&mut received)
            .expect("retransmitted data");
        assert_eq!(&received, b"lost, then retransmitted");
        tcp_info(&self.client).tcpi_total_retrans
    }
}
