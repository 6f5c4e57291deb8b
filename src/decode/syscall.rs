//! `syscall`: a decimal system call number (from `uint`) → its name on the
//! architecture bpfsnap was built for; numbers without a name stay numbers.

use anyhow::Result;

use super::{syscall_table, DecodeError, Decoder};
use crate::spec::DecoderSpec;

pub struct Syscall;

#[cfg(target_arch = "x86_64")]
static TABLE: &[&str] = &syscall_table::X86_64;
#[cfg(target_arch = "aarch64")]
static TABLE: &[&str] = &syscall_table::AARCH64;
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
static TABLE: &[&str] = &[];

/// The name of system call `number`, if it has one here.
pub fn name(number: u64) -> Option<&'static str> {
    let name = *TABLE.get(usize::try_from(number).ok()?)?;
    (!name.is_empty()).then_some(name)
}

impl Decoder for Syscall {
    fn decode(&self, input: &[u8], out: &mut Vec<u8>) -> Result<(), DecodeError> {
        let number = std::str::from_utf8(input)
            .ok()
            .and_then(|text| text.parse::<u64>().ok())
            .ok_or_else(|| {
                DecodeError::new(
                    "syscall",
                    "input is not a decimal number: put `uint` before `syscall`",
                )
            })?;
        match name(number) {
            Some(name) => out.extend_from_slice(name.as_bytes()),
            None => out.extend_from_slice(input),
        }
        Ok(())
    }
}

/// Builds `syscall` for a label of `size` bytes.
pub fn build(spec: &DecoderSpec, _size: usize) -> Result<Box<dyn Decoder>> {
    super::no_options(spec)?;
    Ok(Box::new(Syscall))
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "x86_64")]
    use crate::decode::check_table;

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn names_x86_64_syscalls() {
        check_table(
            &Syscall,
            &[
                (b"0", Ok("read")),
                (b"39", Ok("getpid")),
                (b"257", Ok("openat")),
                (b"435", Ok("clone3")),
                (b"470", Ok("listns")),
                (b"400", Ok("400")), // a hole in the table
                (b"1023", Ok("1023")),
                (b"-1", Err("not a decimal number")),
                (&[39, 0, 0, 0], Err("put `uint` before")),
            ],
        );
    }

    #[test]
    fn both_tables_know_the_common_calls() {
        assert_eq!(syscall_table::X86_64[39], "getpid");
        assert_eq!(syscall_table::AARCH64[172], "getpid");
        assert_eq!(syscall_table::AARCH64[56], "openat");
        assert_eq!(syscall_table::AARCH64[435], "clone3");
    }
}
