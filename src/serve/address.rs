//! Where `serve` listens: `--listen` (exporter-toolkit's
//! `--web.listen-address`) in the forms Go's `net.Listen("tcp", ...)` takes
//! them, as node_exporter and ebpf_exporter do: `:PORT` (every address),
//! `HOST:PORT` with an IPv4 address or a host name, `[IPV6]:PORT`.
//!
//! A host name is resolved once, at start, and bpfsnap listens on one of its
//! addresses, the first IPv4 one if any, as Go does (`localhost:9435` is
//! 127.0.0.1). `:PORT` listens on one IPv6 socket, which with the kernel's
//! default (net.ipv6.bindv6only = 0) takes IPv4 as well, as Go's does; on a
//! machine without IPv6, on 0.0.0.0.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, ToSocketAddrs};

use anyhow::{anyhow, Result};

use crate::BadInput;

/// Where to listen, as given: an address to bind, or a listening socket
/// already open (`fd://N`, ebpf_exporter's form).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    Address(ListenAddress),
    Fd(i32),
}

impl Listen {
    pub fn parse(text: &str) -> Result<Listen, String> {
        let Some(fd) = text.strip_prefix("fd://") else {
            return ListenAddress::parse(text).map(Listen::Address);
        };
        match fd.parse::<i32>() {
            Ok(number) if number >= 0 && number.to_string() == fd => Ok(Listen::Fd(number)),
            _ => Err(format!(
                "{text:?}: fd:// takes a descriptor number, as in fd://3"
            )),
        }
    }
}

impl std::fmt::Display for Listen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Listen::Address(address) => address.fmt(f),
            Listen::Fd(fd) => write!(f, "fd://{fd}"),
        }
    }
}

/// A listen address as given: a host (empty for every address) and a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenAddress {
    pub host: String,
    pub port: u16,
}

impl ListenAddress {
    /// Splits `HOST:PORT` as Go's net.SplitHostPort does: the port after the
    /// last colon, an IPv6 host in brackets.
    pub fn parse(text: &str) -> Result<ListenAddress, String> {
        let hint = "(try :9435, 127.0.0.1:9435, [::1]:9435 or localhost:9435)";
        if text.contains("://") {
            // exporter-toolkit's vsock://:PORT, or a URL given by mistake.
            return Err(format!(
                "{text:?}: bpfsnap serve listens on TCP only: give HOST:PORT {hint} or fd://N"
            ));
        }
        let Some((host, port)) = text.rsplit_once(':') else {
            return Err(format!("{text:?} has no port {hint}"));
        };
        let host = match host.strip_prefix('[') {
            Some(bracketed) => match bracketed.strip_suffix(']') {
                Some(inner) if !inner.contains(['[', ']']) => inner,
                _ => return Err(format!("{text:?}: unbalanced brackets {hint}")),
            },
            None if host.contains(':') => {
                return Err(format!(
                    "{text:?}: an IPv6 address goes in brackets, as in [::1]:9435"
                ));
            }
            None if host.contains(['[', ']']) => {
                return Err(format!("{text:?}: unbalanced brackets {hint}"));
            }
            None => host,
        };
        let digits = !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit());
        let Some(port) = digits.then(|| port.parse::<u16>().ok()).flatten() else {
            return Err(format!(
                "{text:?}: the port must be a number up to 65535 {hint}"
            ));
        };
        Ok(ListenAddress {
            host: host.to_string(),
            port,
        })
    }

    /// The socket address to bind: a literal address as it is, a host name
    /// resolved (its first IPv4 address, else its first), none for every
    /// address (the IPv6 wildcard, see the module's doc).
    pub fn resolve(&self) -> Result<SocketAddr> {
        if self.host.is_empty() {
            return Ok(SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), self.port));
        }
        if let Ok(ip) = self.host.parse::<IpAddr>() {
            return Ok(SocketAddr::new(ip, self.port));
        }
        let addresses: Vec<SocketAddr> = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|err| {
                BadInput::wrap(anyhow!(
                    "cannot resolve listen address {self}: {err} (give an IP address, or a host \
                     name this machine resolves)"
                ))
            })?
            .collect();
        addresses
            .iter()
            .find(|address| address.is_ipv4())
            .or(addresses.first())
            .copied()
            .ok_or_else(|| {
                BadInput::wrap(anyhow!(
                    "listen address {self}: {} has no address",
                    self.host
                ))
            })
    }
}

impl std::fmt::Display for ListenAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.host.contains(':') {
            true => write!(f, "[{}]:{}", self.host, self.port),
            false => write!(f, "{}:{}", self.host, self.port),
        }
    }
}

/// Binds `address`; the wildcard falls back to 0.0.0.0 where the machine has
/// no IPv6.
pub fn bind(given: &ListenAddress, address: SocketAddr) -> Result<TcpListener> {
    let listener = TcpListener::bind(address).or_else(|err| {
        let no_ipv6 = err.raw_os_error() == Some(libc::EAFNOSUPPORT)
            || err.raw_os_error() == Some(libc::EADDRNOTAVAIL);
        if given.host.is_empty() && no_ipv6 {
            TcpListener::bind(SocketAddr::new(
                Ipv4Addr::UNSPECIFIED.into(),
                address.port(),
            ))
        } else {
            Err(err)
        }
    });
    let listener = listener.map_err(|err| match given.to_string() == address.to_string() {
        true => anyhow!("cannot listen on {given}: {err}"),
        false => anyhow!("cannot listen on {given} ({address}): {err}"),
    })?;
    widen_backlog(&listener);
    Ok(listener)
}

/// Lets the kernel queue as many connections as net.core.somaxconn allows,
/// as Go's listeners do, instead of std's 128: a burst of clients beyond
/// the queue has its SYNs dropped and retried a second later, even when
/// the server accepts at once.
fn widen_backlog(listener: &TcpListener) {
    use std::os::fd::AsRawFd;
    // SAFETY: listen(2) again on a listening socket `listener` owns only
    // changes its backlog (the kernel caps it at somaxconn); on failure
    // std's backlog stays, which still works.
    unsafe { libc::listen(listener.as_raw_fd(), libc::c_int::MAX) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses_are_split_as_go_does() {
        let ok = |host: &str, port| {
            Ok(ListenAddress {
                host: host.into(),
                port,
            })
        };
        for (text, expected) in [
            (":9435", ok("", 9435)),
            ("127.0.0.1:9435", ok("127.0.0.1", 9435)),
            ("localhost:9435", ok("localhost", 9435)),
            ("[::1]:9435", ok("::1", 9435)),
            ("[::]:9435", ok("::", 9435)),
            ("[fe80::1%eth0]:80", ok("fe80::1%eth0", 80)),
            ("0.0.0.0:0", ok("0.0.0.0", 0)),
            ("host:080", ok("host", 80)),
        ] {
            assert_eq!(ListenAddress::parse(text), expected, "{text}");
        }
        for (text, says) in [
            ("9435", "has no port"),
            ("localhost", "has no port"),
            ("::1:9435", "in brackets"),
            ("[::1:9435", "unbalanced"),
            ("::1]:9435", "in brackets"),
            ("[[::1]]:9435", "unbalanced"),
            ("host]:9435", "unbalanced"),
            ("host:", "a number up to 65535"),
            ("host:http", "a number up to 65535"),
            ("host:65536", "a number up to 65535"),
            ("host:+80", "a number up to 65535"),
            ("host:-1", "a number up to 65535"),
            ("vsock://:9435", "TCP only"),
            ("http://localhost:9435", "TCP only"),
        ] {
            let err = ListenAddress::parse(text).expect_err(text);
            assert!(err.contains(says), "{text}: {err}");
        }
    }

    #[test]
    fn fd_addresses_name_a_descriptor() {
        assert_eq!(Listen::parse("fd://3"), Ok(Listen::Fd(3)));
        assert_eq!(Listen::parse("fd://3").unwrap().to_string(), "fd://3");
        assert!(matches!(Listen::parse(":9435"), Ok(Listen::Address(_))));
        for text in [
            "fd://", "fd://-1", "fd://+3", "fd://03", "fd://x", "fd://3 ",
        ] {
            let err = Listen::parse(text).expect_err(text);
            assert!(err.contains("as in fd://3"), "{text}: {err}");
        }
    }

    #[test]
    fn addresses_resolve_to_one_socket_address() {
        let resolve = |text: &str| ListenAddress::parse(text).unwrap().resolve().unwrap();
        assert_eq!(resolve(":9435"), "[::]:9435".parse().unwrap());
        assert_eq!(resolve("127.0.0.1:9435"), "127.0.0.1:9435".parse().unwrap());
        assert_eq!(resolve("[::1]:9435"), "[::1]:9435".parse().unwrap());
        // /etc/hosts names localhost for IPv4 and IPv6: IPv4 first, as Go.
        assert_eq!(resolve("localhost:9435"), "127.0.0.1:9435".parse().unwrap());
        let err = ListenAddress::parse("no-such-host.invalid:9435")
            .unwrap()
            .resolve()
            .unwrap_err();
        assert!(BadInput::is(&err), "{err:#}");
        assert!(
            format!("{err:#}").contains("cannot resolve listen address no-such-host.invalid:9435")
        );
    }
}
