//! `uint`: a host-endian unsigned integer of the label's size, as decimal.

use anyhow::{bail, Result};

use super::{DecodeError, Decoder};
use crate::spec::DecoderSpec;

pub struct Uint {
    size: usize,
}

impl Uint {
    pub fn new(size: usize) -> Result<Uint> {
        if !matches!(size, 1 | 2 | 4 | 8) {
            bail!("decoder uint needs a label size of 1, 2, 4 or 8 bytes, not {size}");
        }
        Ok(Uint { size })
    }
}

impl Decoder for Uint {
    fn decode(&self, input: &[u8], out: &mut Vec<u8>) -> Result<(), DecodeError> {
        let value = host_uint(input)
            .filter(|_| input.len() == self.size)
            .ok_or_else(|| {
                DecodeError::new(
                    "uint",
                    format!("expected {} bytes, got {}", self.size, input.len()),
                )
            })?;
        push_decimal(out, value);
        Ok(())
    }

    fn injective(&self) -> bool {
        true
    }

    fn reads_integer(&self) -> bool {
        true
    }
}

/// The host-endian unsigned integer of 1, 2, 4 or 8 bytes.
pub fn host_uint(bytes: &[u8]) -> Option<u64> {
    Some(match *bytes {
        [b] => u64::from(b),
        [a, b] => u64::from(u16::from_ne_bytes([a, b])),
        [a, b, c, d] => u64::from(u32::from_ne_bytes([a, b, c, d])),
        [a, b, c, d, e, f, g, h] => u64::from_ne_bytes([a, b, c, d, e, f, g, h]),
        _ => return None,
    })
}

/// Appends `value` in decimal (what `to_string` gives, without its string).
pub(super) fn push_decimal(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
}

/// Builds `uint` for a label of `size` bytes.
pub fn build(spec: &DecoderSpec, size: usize) -> Result<Box<dyn Decoder>> {
    super::no_options(spec)?;
    Ok(Box::new(Uint::new(size)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::check_table;

    #[test]
    fn decodes_each_size() {
        check_table(
            &Uint::new(1).unwrap(),
            &[
                (&[7], Ok("7")),
                (&[255], Ok("255")),
                (&[1, 2], Err("expected 1 bytes")),
            ],
        );
        check_table(
            &Uint::new(2).unwrap(),
            &[(&513u16.to_ne_bytes(), Ok("513"))],
        );
        check_table(
            &Uint::new(4).unwrap(),
            &[
                (&39u32.to_ne_bytes(), Ok("39")),
                (&u32::MAX.to_ne_bytes(), Ok("4294967295")),
                (&[0; 3], Err("got 3")),
            ],
        );
        check_table(
            &Uint::new(8).unwrap(),
            &[
                (&u64::MAX.to_ne_bytes(), Ok("18446744073709551615")),
                (&[0; 8], Ok("0")),
            ],
        );
    }

    #[test]
    fn rejects_odd_sizes() {
        assert!(Uint::new(3).is_err());
        assert!(Uint::new(16).is_err());
    }
}
