//! `majorminor`: a block device number (4 host-endian bytes in the kernel's
//! `new_encode_dev` form, i.e. userspace's dev_t: major in bits 8..20, minor
//! in bits 0..8 and 20..32) → the device's name in /proc/partitions, e.g.
//! `sda1` or `nvme0n1`; an unknown device becomes `unknown:<major>:<minor>`.
//!
//! ebpf_exporter compatible: same encoding (its examples build keys with
//! `MKDEV(ma, mi) = (mi & 0xff) | (ma << 8) | ((mi & ~0xff) << 12)`, not the
//! kernel-internal `ma << 20 | mi`), source, output and unknown form.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use super::{DecodeError, Decoder};
use crate::spec::DecoderSpec;

const PARTITIONS: &str = "/proc/partitions";
/// Minimum time between two reads of /proc/partitions caused by misses.
const REREAD_INTERVAL: Duration = Duration::from_secs(1);

/// Splits an encoded device number into (major, minor).
pub fn split(dev: u32) -> (u32, u32) {
    ((dev >> 8) & 0xfff, (dev & 0xff) | ((dev >> 12) & 0xf_ff00))
}

/// Names by (major, minor) from /proc/partitions text: a header line, then
/// `major minor #blocks name` rows.
fn parse_partitions(text: &str) -> HashMap<(u32, u32), String> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            match fields[..] {
                [major, minor, _blocks, name] => {
                    Some(((major.parse().ok()?, minor.parse().ok()?), name.to_string()))
                }
                _ => None,
            }
        })
        .collect()
}

pub struct MajorMinor {
    /// Reads the current table; `None` when it cannot be read.
    read: fn() -> Option<String>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    names: HashMap<(u32, u32), String>,
    read_at: Option<Instant>,
}

impl MajorMinor {
    fn new(read: fn() -> Option<String>) -> MajorMinor {
        MajorMinor {
            read,
            state: Mutex::new(State::default()),
        }
    }

    /// The name of device (major, minor), re-reading the table on a miss
    /// unless it was read less than a second ago. Names found stay cached.
    fn name(&self, device: (u32, u32)) -> Option<String> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(name) = state.names.get(&device) {
            return Some(name.clone());
        }
        if state
            .read_at
            .is_some_and(|read_at| read_at.elapsed() < REREAD_INTERVAL)
        {
            return None;
        }
        state.read_at = Some(Instant::now());
        let text = (self.read)()?;
        state.names.extend(parse_partitions(&text));
        state.names.get(&device).cloned()
    }
}

impl Decoder for MajorMinor {
    fn decode(&self, input: &[u8], out: &mut Vec<u8>) -> Result<(), DecodeError> {
        let dev = <[u8; 4]>::try_from(input)
            .map(u32::from_ne_bytes)
            .map_err(|_| {
                DecodeError::new(
                    "majorminor",
                    format!("expected a 4-byte device number, got {} bytes", input.len()),
                )
            })?;
        let (major, minor) = split(dev);
        match self.name((major, minor)) {
            Some(name) => out.extend_from_slice(name.as_bytes()),
            None => out.extend_from_slice(format!("unknown:{major}:{minor}").as_bytes()),
        }
        Ok(())
    }
}

fn read_system() -> Option<String> {
    std::fs::read_to_string(PARTITIONS).ok()
}

/// Builds `majorminor` for a label of `size` bytes (must be 4: a u32).
pub fn build(spec: &DecoderSpec, size: usize) -> Result<Box<dyn Decoder>> {
    super::no_options(spec)?;
    if size != 4 {
        bail!("decoder majorminor needs a label size of 4 bytes (a u32 dev_t), not {size}");
    }
    Ok(Box::new(MajorMinor::new(read_system)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::check_table;

    /// The BPF side's encoding (ebpf_exporter's MKDEV).
    fn encode(major: u32, minor: u32) -> [u8; 4] {
        ((minor & 0xff) | (major << 8) | ((minor & !0xff) << 12)).to_ne_bytes()
    }

    const PARTITIONS_TEXT: &str = "\
major minor  #blocks  name

   8        0  976762584 sda
   8        1     524288 sda1
   8       16  976762584 sdb
 259        0  500107608 nvme0n1
 259        1    1048576 nvme0n1p1
   8      300       1024 sdk12
 bogus line
";

    fn fake() -> Option<String> {
        Some(PARTITIONS_TEXT.to_string())
    }

    #[test]
    fn names_devices() {
        check_table(
            &MajorMinor::new(fake),
            &[
                // ebpf_exporter's cases.
                (&[0x0, 0x8, 0x0, 0x0], Ok("sda")),
                (&[0x10, 0x8, 0x0, 0x0], Ok("sdb")),
                (&[0x10, 0x88, 0x0, 0x0], Ok("unknown:136:16")),
                (&encode(8, 1), Ok("sda1")),
                (&encode(259, 0), Ok("nvme0n1")),
                (&encode(259, 1), Ok("nvme0n1p1")),
                (&encode(8, 300), Ok("sdk12")), // minor above 255
                (&encode(0, 0), Ok("unknown:0:0")),
                (&encode(4095, 0xf_ffff), Ok("unknown:4095:1048575")),
                (&[8, 0], Err("expected a 4-byte device number, got 2")),
                (b"2048\0", Err("got 5 bytes")),
            ],
        );
    }

    #[test]
    fn splits_like_the_kernel_encodes() {
        for (major, minor) in [(8, 0), (259, 7), (4095, 0xf_ffff), (1, 256)] {
            assert_eq!(
                split(u32::from_ne_bytes(encode(major, minor))),
                (major, minor)
            );
        }
        assert!(parse_partitions("").is_empty());
        assert_eq!(parse_partitions(PARTITIONS_TEXT).len(), 6);
    }

    #[test]
    fn unreadable_table_is_unknown_not_an_error() {
        check_table(
            &MajorMinor::new(|| None),
            &[(&encode(8, 0), Ok("unknown:8:0"))],
        );
    }

    /// The running system: every device /proc/partitions lists resolves.
    #[test]
    fn names_system_devices() {
        let decoder = build(&DecoderSpec::named("majorminor"), 4).unwrap();
        let table = read_system()
            .map(|text| parse_partitions(&text))
            .unwrap_or_default();
        for ((major, minor), name) in table {
            check_table(decoder.as_ref(), &[(&encode(major, minor), Ok(&*name))]);
        }
        assert!(build(&DecoderSpec::named("majorminor"), 8).is_err());
    }
}
