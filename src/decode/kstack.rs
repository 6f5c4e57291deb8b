//! `kstack`: a kernel stack (an array of host-endian u64 addresses, as
//! `bpf_get_stack` fills it; the first 0 ends it) → one function name per
//! frame, innermost first, joined with "\n"; a frame without a symbol is `??`.
//!
//! ebpf_exporter compatible (same layout, separator, `??` and empty stack →
//! empty string); unreadable kallsyms is a decode error here.

use anyhow::{bail, Result};

use super::ksym::kallsyms::{self, Kallsyms};
use super::{DecodeError, Decoder};
use crate::spec::DecoderSpec;

pub struct Kstack {
    kallsyms: &'static Kallsyms,
}

impl Decoder for Kstack {
    fn decode(&self, input: &[u8], out: &mut Vec<u8>) -> Result<(), DecodeError> {
        if !input.len().is_multiple_of(8) {
            return Err(DecodeError::new(
                "kstack",
                format!("expected a multiple of 8 bytes, got {}", input.len()),
            ));
        }
        let addrs: Vec<u64> = frames(input).collect();
        if addrs.is_empty() {
            return Ok(());
        }
        self.kallsyms
            .resolve(&addrs, out, |out, index, _, name| {
                if index > 0 {
                    out.push(b'\n');
                }
                out.extend_from_slice(name.unwrap_or("??").as_bytes());
            })
            .map_err(|reason| DecodeError::new("kstack", reason))
    }

    fn prepare(&self) {
        self.kallsyms.preload();
    }
}

/// The frames' addresses of a stack, up to the first 0.
fn frames(input: &[u8]) -> impl Iterator<Item = u64> + '_ {
    input
        .chunks_exact(8)
        .map(|word| {
            let mut bytes = [0; 8];
            bytes.copy_from_slice(word);
            u64::from_ne_bytes(bytes)
        })
        .take_while(|&addr| addr != 0)
}

/// Builds `kstack` for a label of `size` bytes (a positive multiple of 8).
/// Does not read kallsyms: that happens on the first decode.
pub fn build(spec: &DecoderSpec, size: usize) -> Result<Box<dyn Decoder>> {
    super::no_options(spec)?;
    if size == 0 || !size.is_multiple_of(8) {
        bail!(
            "decoder kstack needs a label size that is a multiple of 8 bytes \
             (an array of u64 addresses), not {size}"
        );
    }
    Ok(Box::new(Kstack {
        kallsyms: kallsyms::system(),
    }))
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::time::Duration;

    use super::*;
    use crate::decode::check_table;

    fn stack(addrs: &[u64]) -> Vec<u8> {
        addrs.iter().flat_map(|addr| addr.to_ne_bytes()).collect()
    }

    /// ebpf_exporter's own cases, including a symbol that appears in
    /// kallsyms after the first lookup.
    #[test]
    fn symbolizes_frames() {
        let (kallsyms, mut file) = kallsyms::tests::fake(
            "0000000000000004 T one\n0000000000000006 T two\n00000000000000aa T three\n",
            Duration::ZERO,
        );
        let decoder = Kstack { kallsyms };
        check_table(
            &decoder,
            &[
                (&stack(&[0, 0]), Ok("")),
                (&[], Ok("")),
                (&stack(&[4, 5, 6, 0]), Ok("one\none\ntwo")),
                (&stack(&[0xab, 0x10, 6, 0]), Ok("three\ntwo\ntwo")),
                (&stack(&[1, 0xac, 1, 0]), Ok("??\nthree\n??")),
                (&stack(&[4, 0, 6]), Ok("one")), // the first 0 ends the stack
                (&stack(&[6]), Ok("two")),       // full, no terminator
                (
                    &[4, 0, 0, 0, 0, 0, 0, 0, 1],
                    Err("multiple of 8 bytes, got 9"),
                ),
            ],
        );
        file.write_all(b"0000000000000002 T zero\n").unwrap();
        file.flush().unwrap();
        check_table(&decoder, &[(&stack(&[0xab, 3, 0]), Ok("three\nzero"))]);
    }

    #[test]
    fn restricted_kallsyms_fails_only_non_empty_stacks() {
        let (kallsyms, _file) =
            kallsyms::tests::fake("0000000000000000 T _stext\n", Duration::ZERO);
        check_table(
            &Kstack { kallsyms },
            &[
                (&stack(&[0xffffffff81000000, 0]), Err("CAP_SYSLOG")),
                (&stack(&[0, 0]), Ok("")),
            ],
        );
    }

    #[test]
    fn checks_size_and_options() {
        for size in [8, 16, 160] {
            assert!(build(&DecoderSpec::named("kstack"), size).is_ok(), "{size}");
        }
        for size in [0, 4, 12] {
            assert!(
                build(&DecoderSpec::named("kstack"), size).is_err(),
                "{size}"
            );
        }
        let spec = DecoderSpec {
            regexps: Some(vec![".".into()]),
            ..DecoderSpec::named("kstack")
        };
        assert!(build(&spec, 8).is_err());
    }
}
