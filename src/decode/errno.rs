//! `errno`: a decimal error number (from `uint`) → its name, such as `EPIPE`.
//!
//! As in ebpf_exporter, numbers without a name (0, holes, kernel-internal codes
//! like 512 ERESTARTSYS, or a negative `-EPIPE` read as unsigned) become
//! `unknown:<number>`, and input that is not an unsigned decimal is an error.

use anyhow::Result;

use super::{DecodeError, Decoder};
use crate::spec::DecoderSpec;

#[path = "errno_table.rs"]
#[rustfmt::skip]
mod table;

pub struct Errno;

/// The name of error number `number` (x86_64/aarch64 numbering), if it has one.
pub fn name(number: u64) -> Option<&'static str> {
    let name = *table::NAMES.get(usize::try_from(number).ok()?)?;
    (!name.is_empty()).then_some(name)
}

impl Decoder for Errno {
    fn decode(&self, input: &[u8], out: &mut Vec<u8>) -> Result<(), DecodeError> {
        let number = std::str::from_utf8(input)
            .ok()
            .filter(|text| !text.starts_with('+'))
            .and_then(|text| text.parse::<u64>().ok())
            .ok_or_else(|| {
                DecodeError::new(
                    "errno",
                    format!(
                        "input {:?} is not an unsigned decimal number: put `uint` before `errno`",
                        String::from_utf8_lossy(input)
                    ),
                )
            })?;
        match name(number) {
            Some(name) => out.extend_from_slice(name.as_bytes()),
            None => out.extend_from_slice(format!("unknown:{number}").as_bytes()),
        }
        Ok(())
    }
}

/// Builds `errno` for a label of `size` bytes.
pub fn build(spec: &DecoderSpec, _size: usize) -> Result<Box<dyn Decoder>> {
    super::no_options(spec)?;
    Ok(Box::new(Errno))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::check_table;

    #[test]
    fn names_error_numbers() {
        check_table(
            &Errno,
            &[
                (b"1", Ok("EPERM")),
                (b"11", Ok("EAGAIN")),  // not EWOULDBLOCK
                (b"35", Ok("EDEADLK")), // not EDEADLOCK
                (b"32", Ok("EPIPE")),
                (b"104", Ok("ECONNRESET")),
                (b"133", Ok("EHWPOISON")),
                (b"0", Ok("unknown:0")),
                (b"41", Ok("unknown:41")), // a hole in the table
                (b"134", Ok("unknown:134")),
                (b"512", Ok("unknown:512")),
                (b"4294967264", Ok("unknown:4294967264")), // -32 as a u32
                (b"18446744073709551615", Ok("unknown:18446744073709551615")),
                (b"007", Ok("E2BIG")), // leading zeros parse, as with Go
                (b"0041", Ok("unknown:41")),
                (b"-32", Err("not an unsigned decimal")),
                (b"+32", Err("not an unsigned decimal")),
                (b"18446744073709551616", Err("not an unsigned decimal")),
                (b"", Err("not an unsigned decimal")),
                (b" 32", Err("not an unsigned decimal")),
                (&[32, 0, 0, 0], Err("put `uint` before")),
            ],
        );
    }

    #[test]
    fn table_has_the_generic_numbering() {
        assert_eq!(table::NAMES.len(), 134);
        assert_eq!(name(2), Some("ENOENT"));
        assert_eq!(name(110), Some("ETIMEDOUT"));
        assert_eq!(name(58), None);
        assert!(!table::NAMES.contains(&"EWOULDBLOCK"));
        assert!(!table::NAMES.contains(&"EDEADLOCK"));
    }

    #[test]
    fn follows_uint_in_a_chain() {
        let specs = [DecoderSpec::named("uint"), DecoderSpec::named("errno")];
        let chain = crate::decode::Chain::build(&specs, 4).unwrap();
        assert_eq!(chain.decode(&32u32.to_ne_bytes()).unwrap(), "EPIPE");
        // A kernel return value of -EPIPE read through `uint`.
        assert_eq!(
            chain.decode(&(-32i32).to_ne_bytes()).unwrap(),
            "unknown:4294967264"
        );
    }

    #[test]
    fn takes_no_options() {
        let spec = DecoderSpec {
            allow_unknown: true,
            ..DecoderSpec::named("errno")
        };
        assert!(build(&spec, 4).is_err());
        assert!(build(&DecoderSpec::named("errno"), 4).is_ok());
    }
}
