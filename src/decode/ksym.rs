//! `ksym`: a kernel address (8 host-endian bytes, e.g. a kprobe's IP) → the
//! name of the kernel function it falls in, from /proc/kallsyms; an address with no symbol becomes `unknown_addr:0x<hex>`.
//!
//! ebpf_exporter compatible: same input, nearest-symbol-below lookup and
//! unknown form; unlike there, unreadable kallsyms is a decode error.

use std::io::Write;

use anyhow::{bail, Result};

use super::{DecodeError, Decoder};
use crate::spec::DecoderSpec;

#[path = "kallsyms.rs"]
pub(super) mod kallsyms;

use kallsyms::Kallsyms;

pub struct Ksym {
    kallsyms: &'static Kallsyms,
}

impl Decoder for Ksym {
    fn decode(&self, input: &[u8], out: &mut Vec<u8>) -> Result<(), DecodeError> {
        let addr = <[u8; 8]>::try_from(input)
            .map(u64::from_ne_bytes)
            .map_err(|_| {
                DecodeError::new(
                    "ksym",
                    format!("expected an 8-byte address, got {} bytes", input.len()),
                )
            })?;
        self.kallsyms
            .resolve(&[addr], out, |out, _, addr, name| {
                match name {
                    Some(name) => out.extend_from_slice(name.as_bytes()),
                    None => {
                        // As ebpf_exporter writes it.
                        let _ = write!(out, "unknown_addr:0x{addr:x}");
                    }
                }
            })
            .map_err(|reason| DecodeError::new("ksym", reason))
    }

    fn reads_integer(&self) -> bool {
        true
    }

    fn prepare(&self) {
        self.kallsyms.preload();
    }
}

/// Builds `ksym` for a label of `size` bytes (must be 8). Does not read
/// kallsyms: that happens on the first decode.
pub fn build(spec: &DecoderSpec, size: usize) -> Result<Box<dyn Decoder>> {
    super::no_options(spec)?;
    if size != 8 {
        bail!("decoder ksym needs a label size of 8 bytes (a u64 address), not {size}");
    }
    Ok(Box::new(Ksym {
        kallsyms: kallsyms::system(),
    }))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::decode::check_table;

    #[test]
    fn names_addresses() {
        let (kallsyms, _file) = kallsyms::tests::fake(
            "ffffffff81000000 T _stext\n\
             ffffffff81001000 T do_one\n\
             ffffffff81002000 t do_two\n\
             ffffffffc0a00000 t mod_fn\t[nf_tables]\n",
            Duration::ZERO,
        );
        check_table(
            &Ksym { kallsyms },
            &[
                (&0xffffffff81001000u64.to_ne_bytes(), Ok("do_one")),
                (&0xffffffff81001fffu64.to_ne_bytes(), Ok("do_one")),
                (&0xffffffff81002001u64.to_ne_bytes(), Ok("do_two")),
                (&0xffffffffc0a00010u64.to_ne_bytes(), Ok("mod_fn")),
                (&0x1234u64.to_ne_bytes(), Ok("unknown_addr:0x1234")),
                (&0u64.to_ne_bytes(), Ok("unknown_addr:0x0")),
                (&[0; 4], Err("expected an 8-byte address, got 4")),
                (&[], Err("got 0 bytes")),
            ],
        );
    }

    #[test]
    fn restricted_kallsyms_fails_decoding_not_building() {
        let (kallsyms, _file) =
            kallsyms::tests::fake("0000000000000000 T _stext\n", Duration::ZERO);
        check_table(
            &Ksym { kallsyms },
            &[(
                &0xffffffff81000000u64.to_ne_bytes(),
                Err("needs root or CAP_SYSLOG"),
            )],
        );
        assert!(build(&DecoderSpec::named("ksym"), 8).is_ok());
    }

    #[test]
    fn checks_size_and_options() {
        assert!(build(&DecoderSpec::named("ksym"), 4).is_err());
        assert!(build(&DecoderSpec::named("ksym"), 16).is_err());
        let spec = DecoderSpec {
            allow_unknown: true,
            ..DecoderSpec::named("ksym")
        };
        assert!(build(&spec, 8).is_err());
    }

    /// The running kernel: a function's own address and one inside it name
    /// that function (or an alias at the same address).
    #[test]
    fn names_a_running_kernel_function() {
        let Ok(text) = std::fs::read_to_string("/proc/kallsyms") else {
            return;
        };
        let symbols: Vec<(u64, &str)> = text
            .lines()
            .filter_map(|line| {
                let mut fields = line.split_ascii_whitespace();
                let addr = u64::from_str_radix(fields.next()?, 16).ok()?;
                let _kind = fields.next()?;
                Some((addr, fields.next()?))
            })
            .collect();
        let Some(&(addr, _)) = symbols.iter().find(|(_, name)| *name == "schedule") else {
            return;
        };
        if addr == 0 {
            // Not root: kallsyms hides addresses.
            let err = Ksym {
                kallsyms: kallsyms::system(),
            }
            .decode(&0xffffffff81000000u64.to_ne_bytes(), &mut Vec::new())
            .unwrap_err();
            assert!(err.reason.contains("CAP_SYSLOG"), "{err}");
            return;
        }
        let aliases: Vec<&str> = symbols
            .iter()
            .filter(|(other, _)| *other == addr)
            .map(|(_, name)| *name)
            .collect();
        let decoder = build(&DecoderSpec::named("ksym"), 8).unwrap();
        for probe in [addr, addr + 1] {
            let mut out = Vec::new();
            decoder.decode(&probe.to_ne_bytes(), &mut out).unwrap();
            let name = String::from_utf8(out).unwrap();
            assert!(
                aliases.contains(&name.as_str()),
                "{probe:#x}: {name} not in {aliases:?}"
            );
        }
    }
}
