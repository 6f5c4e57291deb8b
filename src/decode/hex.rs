//! `hex`: the bytes as lowercase hexadecimal, in key order.

use anyhow::Result;

use super::{DecodeError, Decoder};
use crate::spec::DecoderSpec;

pub struct Hex;

impl Decoder for Hex {
    fn decode(&self, input: &[u8], out: &mut Vec<u8>) -> Result<(), DecodeError> {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        for byte in input {
            out.push(DIGITS[usize::from(byte >> 4)]);
            out.push(DIGITS[usize::from(byte & 0xf)]);
        }
        Ok(())
    }

    fn injective(&self) -> bool {
        true
    }
}

/// Builds `hex` for a label of `size` bytes.
pub fn build(spec: &DecoderSpec, _size: usize) -> Result<Box<dyn Decoder>> {
    super::no_options(spec)?;
    Ok(Box::new(Hex))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::check_table;

    #[test]
    fn encodes_bytes() {
        check_table(
            &Hex,
            &[
                (&[], Ok("")),
                (&[0x00, 0xff, 0x1a], Ok("00ff1a")),
                (b"AB", Ok("4142")),
                // Edge: all zero, all ones; every byte shown, none dropped.
                (&[0; 4], Ok("00000000")),
                (&[0xff; 3], Ok("ffffff")),
                // Not UTF-8 (a lone continuation byte, a bad sequence): hex
                // never fails, the output is plain ASCII.
                (&[0x80, 0xc3, 0x28], Ok("80c328")),
            ],
        );
    }

    #[test]
    fn takes_no_options() {
        let spec = DecoderSpec {
            regexps: Some(vec!["x".into()]),
            ..DecoderSpec::named("hex")
        };
        let err = build(&spec, 4).err().expect("options refused");
        assert!(err.to_string().contains("takes no options"), "{err}");
    }
}
