//! `inet_ip`: a 4-byte IPv4 or 16-byte IPv6 address in network byte order →
//! its text form (`1.2.3.4`, `2400:cb00::1`, RFC 5952).
//!
//! As in ebpf_exporter (Go's `net.IP.String`), an IPv4-mapped IPv6 address
//! (`::ffff:1.2.3.4`) is written as plain IPv4 (`1.2.3.4`).

use std::io::Write;
use std::net::{Ipv4Addr, Ipv6Addr};

use anyhow::{bail, Result};

use super::{DecodeError, Decoder};
use crate::spec::DecoderSpec;

pub struct InetIp {
    size: usize,
}

impl InetIp {
    pub fn new(size: usize) -> Result<InetIp> {
        if !matches!(size, 4 | 16) {
            bail!("decoder inet_ip needs a label size of 4 (IPv4) or 16 (IPv6) bytes, not {size}");
        }
        Ok(InetIp { size })
    }
}

impl Decoder for InetIp {
    fn decode(&self, input: &[u8], out: &mut Vec<u8>) -> Result<(), DecodeError> {
        let written = match (self.size, input) {
            (4, &[a, b, c, d]) => write!(out, "{}", Ipv4Addr::new(a, b, c, d)),
            (16, bytes) if bytes.len() == 16 => {
                let mut octets = [0; 16];
                octets.copy_from_slice(bytes);
                let ip = Ipv6Addr::from(octets);
                match ip.to_ipv4_mapped() {
                    Some(v4) => write!(out, "{v4}"),
                    None => write!(out, "{ip}"),
                }
            }
            _ => {
                return Err(DecodeError::new(
                    "inet_ip",
                    format!("expected {} bytes, got {}", self.size, input.len()),
                ))
            }
        };
        // Writing to a Vec cannot fail; map it rather than unwrap anyway.
        written.map_err(|err| DecodeError::new("inet_ip", err.to_string()))
    }

    fn injective(&self) -> bool {
        true
    }
}

/// Builds `inet_ip` for a label of `size` bytes.
pub fn build(spec: &DecoderSpec, size: usize) -> Result<Box<dyn Decoder>> {
    super::no_options(spec)?;
    Ok(Box::new(InetIp::new(size)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::check_table;

    fn v6(text: &str) -> [u8; 16] {
        text.parse::<Ipv6Addr>().unwrap().octets()
    }

    #[test]
    fn formats_ipv4() {
        check_table(
            &InetIp::new(4).unwrap(),
            &[
                (&[1, 2, 3, 4], Ok("1.2.3.4")),
                (&[0, 0, 0, 0], Ok("0.0.0.0")),
                (&[255; 4], Ok("255.255.255.255")),
                (&[127, 0, 0, 1], Ok("127.0.0.1")),
                (&[1, 2, 3], Err("expected 4 bytes, got 3")),
                (b"1.2.3.4", Err("got 7")),
            ],
        );
    }

    #[test]
    fn formats_ipv6() {
        let cloudflare = [
            0x24, 0x00, 0xcb, 0x00, 0x00, 0x04, 0x10, 0x24, 0x00, 0x00, 0x00, 0x00, 0xa2, 0x9e,
            0xfd, 0x8f,
        ];
        check_table(
            &InetIp::new(16).unwrap(),
            &[
                (&cloudflare, Ok("2400:cb00:4:1024::a29e:fd8f")),
                (&[0; 16], Ok("::")),
                (&v6("::1"), Ok("::1")),
                (&v6("fe80::1:0:0:1"), Ok("fe80::1:0:0:1")), // first longest zero run
                (&v6("1:0:2:3:4:5:6:7"), Ok("1:0:2:3:4:5:6:7")), // one zero group stays
                (&v6("2001:db8:0:0:1:0:0:1"), Ok("2001:db8::1:0:0:1")),
                (&v6("::ffff:1.2.3.4"), Ok("1.2.3.4")), // IPv4-mapped, like Go
                (&v6("::ffff:0.0.0.0"), Ok("0.0.0.0")),
                (&v6("::1.2.3.4"), Ok("::102:304")), // IPv4-compatible: plain IPv6
                (&v6("64:ff9b::1.2.3.4"), Ok("64:ff9b::102:304")),
                (&[0; 4], Err("expected 16 bytes, got 4")),
            ],
        );
    }

    #[test]
    fn build_checks_size_and_options() {
        assert!(build(&DecoderSpec::named("inet_ip"), 4).is_ok());
        assert!(build(&DecoderSpec::named("inet_ip"), 16).is_ok());
        for size in [0, 1, 6, 8, 20] {
            let err = build(&DecoderSpec::named("inet_ip"), size)
                .err()
                .unwrap()
                .to_string();
            assert!(err.contains(&format!("not {size}")), "{err}");
        }
        let spec = DecoderSpec {
            regexps: Some(vec![]),
            ..DecoderSpec::named("inet_ip")
        };
        assert!(build(&spec, 4).is_err());
    }
}
