//! `ifname`: a network interface index (4 host-endian bytes, the kernel's
//! `ifindex`) → the interface's name in bpfsnap's network namespace (e.g.
//! `eth0`); an index with no interface becomes `unknown:<index>`.
//!
//! ebpf_exporter compatible: same input, output and unknown form; names found
//! are cached (indexes are not reused while the namespace lives).

use std::collections::HashMap;
use std::ffi::CStr;
use std::sync::{Mutex, PoisonError};

use anyhow::{bail, Result};

use super::{DecodeError, Decoder};
use crate::spec::DecoderSpec;

pub struct IfName {
    lookup: fn(u32) -> Option<String>,
    names: Mutex<HashMap<u32, String>>,
}

impl IfName {
    fn new(lookup: fn(u32) -> Option<String>) -> IfName {
        IfName {
            lookup,
            names: Mutex::new(HashMap::new()),
        }
    }
}

impl Decoder for IfName {
    fn decode(&self, input: &[u8], out: &mut Vec<u8>) -> Result<(), DecodeError> {
        let index = <[u8; 4]>::try_from(input)
            .map(u32::from_ne_bytes)
            .map_err(|_| {
                DecodeError::new(
                    "ifname",
                    format!(
                        "expected a 4-byte interface index, got {} bytes",
                        input.len()
                    ),
                )
            })?;
        let mut names = self.names.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(name) = names.get(&index) {
            out.extend_from_slice(name.as_bytes());
            return Ok(());
        }
        match (self.lookup)(index) {
            Some(name) => {
                out.extend_from_slice(name.as_bytes());
                names.insert(index, name);
            }
            // Maybe deleted since the key was written: not cached, not an error.
            None => out.extend_from_slice(format!("unknown:{index}").as_bytes()),
        }
        Ok(())
    }
}

/// The name of interface `index` in this network namespace, if it exists.
fn system_name(index: u32) -> Option<String> {
    if index == 0 {
        return None;
    }
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: `buf` has the IF_NAMESIZE bytes if_indextoname may write.
    let found = unsafe { libc::if_indextoname(index, buf.as_mut_ptr()) };
    if found.is_null() {
        return None;
    }
    // SAFETY: on success `buf` holds a NUL-terminated name.
    let name = unsafe { CStr::from_ptr(buf.as_ptr()) };
    Some(name.to_string_lossy().into_owned())
}

/// Builds `ifname` for a label of `size` bytes (must be 4: a u32 ifindex).
pub fn build(spec: &DecoderSpec, size: usize) -> Result<Box<dyn Decoder>> {
    super::no_options(spec)?;
    if size != 4 {
        bail!("decoder ifname needs a label size of 4 bytes (a u32 ifindex), not {size}");
    }
    Ok(Box::new(IfName::new(system_name)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::check_table;

    fn fake(index: u32) -> Option<String> {
        match index {
            1 => Some("lo".into()),
            2734686214 => Some("eth42".into()),
            _ => None,
        }
    }

    #[test]
    fn names_interfaces() {
        check_table(
            &IfName::new(fake),
            &[
                (&[0x1, 0x0, 0x0, 0x0], Ok("lo")),
                (&2734686214u32.to_ne_bytes(), Ok("eth42")),
                (&0u32.to_ne_bytes(), Ok("unknown:0")),
                (&u32::MAX.to_ne_bytes(), Ok("unknown:4294967295")),
                (&[1, 0], Err("expected a 4-byte interface index, got 2")),
                (b"1", Err("got 1 bytes")),
            ],
        );
    }

    #[test]
    fn caches_found_names_only() {
        let decoder = IfName::new(fake);
        let mut out = Vec::new();
        decoder.decode(&1u32.to_ne_bytes(), &mut out).unwrap();
        decoder.decode(&7u32.to_ne_bytes(), &mut out).unwrap();
        let names = decoder.names.lock().unwrap();
        assert_eq!(names.get(&1).map(String::as_str), Some("lo"));
        assert!(!names.contains_key(&7));
    }

    #[test]
    fn names_the_system_loopback() {
        let decoder = build(&DecoderSpec::named("ifname"), 4).unwrap();
        check_table(
            decoder.as_ref(),
            &[
                (&1u32.to_ne_bytes(), Ok("lo")),
                (&0u32.to_ne_bytes(), Ok("unknown:0")),
                (&(u32::MAX - 1).to_ne_bytes(), Ok("unknown:4294967294")),
            ],
        );
        assert!(build(&DecoderSpec::named("ifname"), 8).is_err());
    }
}
