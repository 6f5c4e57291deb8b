//! `string`: a NUL-terminated C string (the bytes up to the first NUL).

use anyhow::Result;

use super::{DecodeError, Decoder};
use crate::spec::DecoderSpec;

pub struct CString;

impl Decoder for CString {
    fn decode(&self, input: &[u8], out: &mut Vec<u8>) -> Result<(), DecodeError> {
        out.extend_from_slice(until_nul(input));
        Ok(())
    }

    fn canonical(&self, input: &[u8]) -> bool {
        let text = until_nul(input);
        input[text.len()..].iter().all(|&byte| byte == 0) && std::str::from_utf8(text).is_ok()
    }
}

/// The bytes of a C string up to its first NUL (all of them without one).
pub fn until_nul(bytes: &[u8]) -> &[u8] {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    &bytes[..end]
}

/// Builds `string` for a label of `size` bytes.
pub fn build(spec: &DecoderSpec, _size: usize) -> Result<Box<dyn Decoder>> {
    super::no_options(spec)?;
    Ok(Box::new(CString))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::check_table;

    #[test]
    fn stops_at_nul() {
        check_table(
            &CString,
            &[
                (b"bash\0\0\0\0", Ok("bash")),
                (b"full", Ok("full")),
                (b"\0junk", Ok("")),
                (b"a\"b\\c\0", Ok("a\"b\\c")),
                // Edge: empty, all zero.
                (b"", Ok("")),
                (&[0; 16], Ok("")),
                // Not UTF-8: the bytes pass through (shown lossily here).
                (b"\xff\xfeab\0cd", Ok("\u{fffd}\u{fffd}ab")),
            ],
        );
    }

    /// Canonical: no other bytes of the size give the value, unless they are
    /// not canonical themselves (what lets a reader skip comparing values).
    #[test]
    fn canonical_when_nothing_follows_the_nul_and_the_text_is_utf8() {
        for (input, canonical) in [
            (&b"bash\0\0\0\0"[..], true),
            (b"fullfull", true),
            (b"\0\0\0\0", true),
            (b"", true),
            (b"bash\0x\0\0", false),
            (b"\0junk", false),
            (b"\xff\0\0\0", false),
            (b"a\xc3\x28b", false),
        ] {
            assert_eq!(CString.canonical(input), canonical, "{input:?}");
        }
    }

    /// Bytes that are not UTF-8 (kernel strings can hold anything) become
    /// U+FFFD in the label value, never an error or invalid text.
    #[test]
    fn invalid_utf8_becomes_replacement_characters() {
        let chain = crate::decode::Chain::build(&[DecoderSpec::named("string")], 8).unwrap();
        assert_eq!(chain.decode(b"a\xc3\x28b\0\0\0\0").unwrap(), "a\u{fffd}(b");
        let spec = DecoderSpec {
            allow_unknown: true,
            ..DecoderSpec::named("string")
        };
        let err = build(&spec, 8).err().expect("options refused");
        assert!(err.to_string().contains("takes no options"), "{err}");
    }
}
