//! `string`: a NUL-terminated C string (the bytes up to the first NUL).

use anyhow::Result;

use super::{DecodeError, Decoder};
use crate::config::DecoderSpec;

pub struct CString;

impl Decoder for CString {
    fn decode(&self, input: &[u8], out: &mut Vec<u8>) -> Result<(), DecodeError> {
        let end = input.iter().position(|&b| b == 0).unwrap_or(input.len());
        out.extend_from_slice(&input[..end]);
        Ok(())
    }
}

/// Builds `string` for a label of `size` bytes.
pub fn build(spec: &DecoderSpec, _size: usize) -> Result<Box<dyn Decoder>> {
    super::no_options(spec)?;
    Ok(Box::new(CString))
}

#[cfg(test)]
mod tests {
    use super::super::check_table;
    use super::*;

    #[test]
    fn stops_at_nul() {
        check_table(
            &CString,
            &[
                (b"bash\0\0\0\0", Ok("bash")),
                (b"full", Ok("full")),
                (b"\0junk", Ok("")),
                (b"a\"b\\c\0", Ok("a\"b\\c")),
            ],
        );
    }
}
