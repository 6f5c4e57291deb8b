//! `uint64`: a number written as text by an earlier decoder (`0x1f`, `017`,
//! `42`; its first word), as decimal. ebpf_exporter's configs use it after
//! decoders that print numbers in another base.

use anyhow::Result;

use super::{uint::push_decimal, DecodeError, Decoder};
use crate::spec::DecoderSpec;

pub struct Uint64;

/// `word` as an unsigned number, its base from its prefix as in C and Go:
/// `0x` hexadecimal, `0o` or a leading `0` octal, `0b` binary, else decimal.
fn parse(word: &str) -> Option<u64> {
    let lower = word.to_ascii_lowercase();
    let (digits, radix) = if let Some(rest) = lower.strip_prefix("0x") {
        (rest, 16)
    } else if let Some(rest) = lower.strip_prefix("0o") {
        (rest, 8)
    } else if let Some(rest) = lower.strip_prefix("0b") {
        (rest, 2)
    } else if lower.len() > 1 && lower.starts_with('0') {
        (&lower[1..], 8)
    } else {
        (lower.as_str(), 10)
    };
    // from_str_radix takes a sign; a number here has none.
    if digits.is_empty() || digits.starts_with(['+', '-']) {
        return None;
    }
    u64::from_str_radix(digits, radix).ok()
}

impl Decoder for Uint64 {
    fn decode(&self, input: &[u8], out: &mut Vec<u8>) -> Result<(), DecodeError> {
        let text = std::str::from_utf8(input)
            .map_err(|_| DecodeError::new("uint64", "input is not text"))?;
        let word = text.split_whitespace().next().unwrap_or_default();
        let value = parse(word)
            .ok_or_else(|| DecodeError::new("uint64", format!("not a number: {word:?}")))?;
        push_decimal(out, value);
        Ok(())
    }
}

/// Builds `uint64` (any label size: it reads the text before it).
pub fn build(spec: &DecoderSpec, _size: usize) -> Result<Box<dyn Decoder>> {
    super::no_options(spec)?;
    Ok(Box::new(Uint64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::check_table;

    #[test]
    fn reads_numbers_in_any_base() {
        check_table(
            &Uint64,
            &[
                (b"42", Ok("42")),
                (b"0x2 testing", Ok("2")),
                (b"0XfF", Ok("255")),
                (b"017", Ok("15")),
                (b"0o17", Ok("15")),
                (b"0b101", Ok("5")),
                (b"0", Ok("0")),
                (b"  7\n", Ok("7")),
                // Edge: the largest u64.
                (b"0xffffffffffffffff", Ok("18446744073709551615")),
                // Invalid: empty, words, signs, overflow, bad digits, bytes.
                (b"", Err("not a number")),
                (b"hello", Err("not a number")),
                (b"-1", Err("not a number")),
                (b"+1", Err("not a number")),
                (b"0x", Err("not a number")),
                (b"18446744073709551616", Err("not a number")),
                (b"09", Err("not a number")),
                (&[0xff, 0x01], Err("not text")),
            ],
        );
    }

    #[test]
    fn takes_no_options() {
        let mut spec = DecoderSpec::named("uint64");
        spec.allow_unknown = true;
        assert!(build(&spec, 8).is_err());
    }
}
