//! `hex`: the bytes as lowercase hexadecimal, in key order.

use anyhow::Result;

use super::{DecodeError, Decoder};
use crate::config::DecoderSpec;

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
}

/// Builds `hex` for a label of `size` bytes.
pub fn build(spec: &DecoderSpec, _size: usize) -> Result<Box<dyn Decoder>> {
    super::no_options(spec)?;
    Ok(Box::new(Hex))
}

#[cfg(test)]
mod tests {
    use super::super::check_table;
    use super::*;

    #[test]
    fn encodes_bytes() {
        check_table(
            &Hex,
            &[
                (&[], Ok("")),
                (&[0x00, 0xff, 0x1a], Ok("00ff1a")),
                (b"AB", Ok("4142")),
            ],
        );
    }
}
