//! `dname`: a DNS name in wire format (length-prefixed labels, as in a query's
//! question section) → dotted text: `\x07example\x03com\x00` → `example.com`.
//!
//! The zero-length root label ends the name (bytes after it, e.g. padding, are
//! ignored); the root name itself (empty input or a lone `\0`) is `.`, no
//! trailing dot otherwise. This matches ebpf_exporter for its documented
//! `string` → `dname` use; unlike it, a label running past the end of the
//! input or longer than 63 bytes (e.g. a compression pointer) is a decode
//! error rather than the raw bytes passed through.

use anyhow::Result;

use super::{DecodeError, Decoder};
use crate::spec::DecoderSpec;

/// RFC 1035: labels are 63 bytes at most; the two top bits of the length byte
/// are reserved (11 = compression pointer, which needs the whole message).
const MAX_LABEL: usize = 63;

pub struct Dname;

impl Decoder for Dname {
    fn decode(&self, input: &[u8], out: &mut Vec<u8>) -> Result<(), DecodeError> {
        let mut rest = input;
        let mut offset = 0;
        while let Some((&length, after)) = rest.split_first() {
            let length = usize::from(length);
            if length == 0 {
                break; // the root label: the name is complete
            }
            if length > MAX_LABEL {
                return Err(DecodeError::new(
                    "dname",
                    format!(
                        "length byte {length:#04x} at offset {offset} is not a label length \
                         (at most {MAX_LABEL}; compression pointers are not supported)"
                    ),
                ));
            }
            let Some(label) = after.get(..length) else {
                return Err(DecodeError::new(
                    "dname",
                    format!(
                        "label of {length} bytes at offset {offset} runs past the end of the \
                         {}-byte input (truncated name?)",
                        input.len()
                    ),
                ));
            };
            if !out.is_empty() {
                out.push(b'.');
            }
            out.extend_from_slice(label);
            rest = &after[length..];
            offset += 1 + length;
        }
        if out.is_empty() {
            out.push(b'.');
        }
        Ok(())
    }
}

/// Builds `dname` for a label of `size` bytes.
pub fn build(spec: &DecoderSpec, _size: usize) -> Result<Box<dyn Decoder>> {
    super::no_options(spec)?;
    Ok(Box::new(Dname))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::check_table;

    #[test]
    fn decodes_wire_format_names() {
        let longest = [&[63u8][..], &[b'a'; 63]].concat();
        let too_long = [&[64u8][..], &[b'a'; 64]].concat();
        check_table(
            &Dname,
            &[
                // As after `string` (no terminator), ebpf_exporter's own cases.
                (b"", Ok(".")),
                (b"\x03com", Ok("com")),
                (b"\x07example\x03com", Ok("example.com")),
                // Raw buffers: the terminator ends the name, padding is ignored.
                (b"\x07example\x03com\x00", Ok("example.com")),
                (
                    b"\x03www\x07example\x03com\x00\x00\x00\x00",
                    Ok("www.example.com"),
                ),
                (b"\x03com\x00\x05stale", Ok("com")),
                (b"\x00", Ok(".")),
                (b"\x00\x00\x00\x00", Ok(".")),
                // Label bytes are copied as they are.
                (b"\x03a.b\x01-", Ok("a.b.-")),
                (b"\x02\xc3\xa9", Ok("\u{e9}")),
                (&longest, Ok(&"a".repeat(63))),
                // Malformed.
                (b"\x05com", Err("label of 5 bytes at offset 0 runs past")),
                (
                    b"\x03com\x04ne",
                    Err("at offset 4 runs past the end of the 7-byte"),
                ),
                (b"\x03com\x01", Err("label of 1 bytes at offset 4")),
                (b"\xc0\x0c", Err("0xc0 at offset 0")),
                (&too_long, Err("0x40 at offset 0 is not a label length")),
            ],
        );
    }

    #[test]
    fn takes_no_options() {
        assert!(build(&DecoderSpec::named("dname"), 255).is_ok());
        let spec = DecoderSpec {
            regexps: Some(vec!["x".into()]),
            ..DecoderSpec::named("dname")
        };
        assert!(build(&spec, 255).is_err());
    }
}
