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
                "{text:?}: bpfsnap serve listens on TCP only: give HOST:PORT {hint}"
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
    listener.map_err(|err| match given.to_string() == address.to_string() {
        true => anyhow!("cannot listen on {given}: {err}"),
        false => anyhow!("cannot listen on {given} ({address}): {err}"),
    })
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
