//! `pci_vendor`, `pci_device`, `pci_class`, `pci_subclass`: decimal PCI ids
//! (from `uint`) → names from the system's pci.ids database, read once on
//! first use. Inputs, as ebpf_exporter's example builds them from a pci_dev:
//! vendor `0x8086`; device `vendor << 16 | device` (`0x80861533`); class
//! `0x02`; subclass `class << 8 | subclass` (`0x0200`). Unknown ids become
//! `unknown pci vendor: 0x8086`-style text; a missing database is an error.
//!
//! ebpf_exporter compatible (inputs, names, unknown forms), except that ids
//! are zero-padded to pci.ids' width: vendor 0x0e11 resolves (ebpf_exporter
//! looks up "e11" and misses) and reads `0x0e11` when unknown.

use std::collections::HashMap;
use std::sync::LazyLock;

use anyhow::Result;

use super::{DecodeError, Decoder};
use crate::spec::DecoderSpec;

/// Where distributions install pci.ids (Debian/Ubuntu: package `pci.ids`;
/// Fedora/Arch: `hwdata`).
const DB_PATHS: &[&str] = &["/usr/share/misc/pci.ids", "/usr/share/hwdata/pci.ids"];

/// The parts of pci.ids the decoders use.
#[derive(Debug, Default)]
pub struct PciDb {
    vendors: HashMap<u16, String>,
    /// By `vendor << 16 | device`.
    devices: HashMap<u32, String>,
    classes: HashMap<u8, String>,
    /// By `class << 8 | subclass`.
    subclasses: HashMap<u16, String>,
}

impl PciDb {
    /// Parses pci.ids: `vendor  name` lines with `\tdevice  name` below them
    /// and `C class  name` lines with `\tsubclass  name` below them; deeper
    /// levels (subsystems, programming interfaces) and comments are skipped.
    pub fn parse(text: &str) -> PciDb {
        enum Parent {
            None,
            Vendor(u16),
            Class(u8),
        }
        let mut db = PciDb::default();
        let mut parent = Parent::None;
        for line in text.lines() {
            if line.starts_with('#') || line.trim().is_empty() || line.starts_with("\t\t") {
                continue;
            }
            if let Some(entry) = line.strip_prefix('\t') {
                let Some((id, name)) = split_entry(entry) else {
                    continue;
                };
                match parent {
                    Parent::Vendor(vendor) => {
                        if let Some(device) = hex_id::<u16>(id, 4) {
                            let key = (u32::from(vendor) << 16) | u32::from(device);
                            db.devices.insert(key, name);
                        }
                    }
                    Parent::Class(class) => {
                        if let Some(subclass) = hex_id::<u8>(id, 2) {
                            let key = (u16::from(class) << 8) | u16::from(subclass);
                            db.subclasses.insert(key, name);
                        }
                    }
                    Parent::None => {}
                }
                continue;
            }
            parent = Parent::None;
            if let Some(entry) = line.strip_prefix("C ") {
                if let Some((class, name)) =
                    split_entry(entry).and_then(|(id, name)| Some((hex_id::<u8>(id, 2)?, name)))
                {
                    db.classes.insert(class, name);
                    parent = Parent::Class(class);
                }
            } else if let Some((vendor, name)) =
                split_entry(line).and_then(|(id, name)| Some((hex_id::<u16>(id, 4)?, name)))
            {
                db.vendors.insert(vendor, name);
                parent = Parent::Vendor(vendor);
            }
        }
        db
    }

    /// The first database in `paths` that exists.
    fn load(paths: &[&str]) -> Result<PciDb, String> {
        for path in paths {
            match std::fs::read(path) {
                Ok(bytes) => return Ok(PciDb::parse(&String::from_utf8_lossy(&bytes))),
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
                Err(err) => return Err(format!("cannot read the PCI ID database {path}: {err}")),
            }
        }
        Err(format!(
            "no PCI ID database ({}): install package pci.ids (Debian/Ubuntu) or hwdata",
            paths.join(", ")
        ))
    }
}

/// `8086  Intel Corporation` → ("8086", "Intel Corporation").
fn split_entry(entry: &str) -> Option<(&str, String)> {
    let (id, name) = entry.split_once(|c: char| c.is_ascii_whitespace())?;
    let name = name.trim();
    (!name.is_empty()).then(|| (id, name.to_string()))
}

/// A hex id of exactly `digits` digits.
fn hex_id<T: TryFrom<u32>>(text: &str, digits: usize) -> Option<T> {
    if text.len() != digits || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    T::try_from(u32::from_str_radix(text, 16).ok()?).ok()
}

/// The system database, read on first use by any PCI decoder.
static SYSTEM_DB: LazyLock<Result<PciDb, String>> = LazyLock::new(|| PciDb::load(DB_PATHS));

#[derive(Clone, Copy, Debug)]
enum Kind {
    Vendor,
    Device,
    Class,
    Subclass,
}

impl Kind {
    fn decoder(self) -> &'static str {
        match self {
            Kind::Vendor => "pci_vendor",
            Kind::Device => "pci_device",
            Kind::Class => "pci_class",
            Kind::Subclass => "pci_subclass",
        }
    }

    /// The name of id `id`, or ebpf_exporter's text for an unknown one.
    fn name(self, db: &PciDb, id: u64) -> String {
        let found = match self {
            Kind::Vendor => u16::try_from(id).ok().and_then(|id| db.vendors.get(&id)),
            Kind::Device => u32::try_from(id).ok().and_then(|id| db.devices.get(&id)),
            Kind::Class => u8::try_from(id).ok().and_then(|id| db.classes.get(&id)),
            Kind::Subclass => u16::try_from(id).ok().and_then(|id| db.subclasses.get(&id)),
        };
        if let Some(name) = found {
            return name.clone();
        }
        match self {
            Kind::Vendor => format!("unknown pci vendor: 0x{id:04x}"),
            Kind::Device => format!("unknown pci device: 0x{id:08x}"),
            Kind::Class => format!("unknown pci class: 0x{id:02x}"),
            Kind::Subclass => {
                let (class, subclass) = (id >> 8, id & 0xff);
                let known_class = u8::try_from(class).is_ok_and(|c| db.classes.contains_key(&c));
                if known_class {
                    format!("unknown pci subclass: 0x{subclass:02x} (class 0x{class:02x})")
                } else {
                    format!("unknown pci class: 0x{class:02x}")
                }
            }
        }
    }
}

pub struct Pci {
    kind: Kind,
    db: &'static LazyLock<Result<PciDb, String>>,
}

impl Decoder for Pci {
    fn decode(&self, input: &[u8], out: &mut Vec<u8>) -> Result<(), DecodeError> {
        let decoder = self.kind.decoder();
        let id = std::str::from_utf8(input)
            .ok()
            .and_then(|text| text.parse::<u64>().ok())
            .ok_or_else(|| {
                DecodeError::new(
                    decoder,
                    format!("input is not a decimal number: put `uint` before `{decoder}`"),
                )
            })?;
        let db = self
            .db
            .as_ref()
            .map_err(|reason| DecodeError::new(decoder, reason.clone()))?;
        out.extend_from_slice(self.kind.name(db, id).as_bytes());
        Ok(())
    }
}

fn build(kind: Kind, spec: &DecoderSpec) -> Result<Box<dyn Decoder>> {
    super::no_options(spec)?;
    Ok(Box::new(Pci {
        kind,
        db: &SYSTEM_DB,
    }))
}

/// Builds `pci_vendor`: vendor id → vendor name.
pub fn build_vendor(spec: &DecoderSpec, _size: usize) -> Result<Box<dyn Decoder>> {
    build(Kind::Vendor, spec)
}

/// Builds `pci_device`: `vendor << 16 | device` → device name.
pub fn build_device(spec: &DecoderSpec, _size: usize) -> Result<Box<dyn Decoder>> {
    build(Kind::Device, spec)
}

/// Builds `pci_class`: class id → class name.
pub fn build_class(spec: &DecoderSpec, _size: usize) -> Result<Box<dyn Decoder>> {
    build(Kind::Class, spec)
}

/// Builds `pci_subclass`: `class << 8 | subclass` → subclass name.
pub fn build_subclass(spec: &DecoderSpec, _size: usize) -> Result<Box<dyn Decoder>> {
    build(Kind::Subclass, spec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::check_table;

    const SAMPLE: &str = "\
#	List of PCI ID's
# Syntax:
# vendor  vendor_name
#	device  device_name				<-- single tab
0e11  Compaq Computer Corporation
	0046  Smart Array 64xx
		0e11 409a  Smart Array 641
8086  Intel Corporation
	1000  82542 Gigabit Ethernet Controller (Fiber)
	1533  I210 Gigabit Network Connection
		8086 0001  I210 Gigabit Network Connection
bogus vendor line
	ffff  orphan device
10de  NVIDIA Corporation
	2704  AD103 [GeForce RTX 4080]

# C class	class_name
C 00  Unclassified device
	05  Image coprocessor
C 01  Mass storage controller
	08  Non-Volatile memory controller
		02  NVM Express
C 02  Network controller
	00  Ethernet controller
C 0c  Serial bus controller
	03  USB controller
";

    static SAMPLE_DB: LazyLock<Result<PciDb, String>> = LazyLock::new(|| Ok(PciDb::parse(SAMPLE)));
    static MISSING_DB: LazyLock<Result<PciDb, String>> =
        LazyLock::new(|| PciDb::load(&["/nonexistent/pci.ids"]));

    fn sample(kind: Kind) -> Pci {
        Pci {
            kind,
            db: &SAMPLE_DB,
        }
    }

    #[test]
    fn parses_the_four_tables() {
        let db = PciDb::parse(SAMPLE);
        assert_eq!(db.vendors.len(), 3);
        assert_eq!(db.devices.len(), 4); // not the subsystem, not the orphan
        assert_eq!(db.classes.len(), 4);
        assert_eq!(db.subclasses.len(), 4); // not the programming interface
        assert!(!db.devices.contains_key(&0xffff));
        assert!(PciDb::parse("").vendors.is_empty());
    }

    #[test]
    fn names_vendors() {
        check_table(
            &sample(Kind::Vendor),
            &[
                (b"32902", Ok("Intel Corporation")),          // 0x8086
                (b"4318", Ok("NVIDIA Corporation")),          // 0x10de
                (b"3601", Ok("Compaq Computer Corporation")), // 0x0e11
                (b"48879", Ok("unknown pci vendor: 0xbeef")),
                (b"0", Ok("unknown pci vendor: 0x0000")),
                (b"65536", Ok("unknown pci vendor: 0x10000")),
                (b"", Err("not a decimal number")),
                (&[0x86, 0x80, 0, 0], Err("put `uint` before `pci_vendor`")),
            ],
        );
    }

    #[test]
    fn names_devices() {
        check_table(
            &sample(Kind::Device),
            &[
                (
                    b"2156269568",
                    Ok("82542 Gigabit Ethernet Controller (Fiber)"),
                ), // 0x80861000
                (b"2156270899", Ok("I210 Gigabit Network Connection")), // 0x80861533
                (b"282994436", Ok("AD103 [GeForce RTX 4080]")),         // 0x10de2704
                (b"235995206", Ok("Smart Array 64xx")),                 // 0x0e110046
                (b"3735928559", Ok("unknown pci device: 0xdeadbeef")),
                (b"4096", Ok("unknown pci device: 0x00001000")), // device 0x1000, vendor 0
                (b"x", Err("put `uint` before `pci_device`")),
            ],
        );
    }

    #[test]
    fn names_classes() {
        check_table(
            &sample(Kind::Class),
            &[
                (b"1", Ok("Mass storage controller")),
                (b"2", Ok("Network controller")),
                (b"12", Ok("Serial bus controller")),
                (b"253", Ok("unknown pci class: 0xfd")),
                (b"256", Ok("unknown pci class: 0x100")),
                (b"-1", Err("put `uint` before `pci_class`")),
            ],
        );
    }

    #[test]
    fn names_subclasses() {
        check_table(
            &sample(Kind::Subclass),
            &[
                (b"5", Ok("Image coprocessor")),                // 0x0005
                (b"264", Ok("Non-Volatile memory controller")), // 0x0108
                (b"512", Ok("Ethernet controller")),            // 0x0200
                (b"3075", Ok("USB controller")),                // 0x0c03
                (b"64768", Ok("unknown pci class: 0xfd")),      // 0xfd00
                (b"267", Ok("unknown pci subclass: 0x0b (class 0x01)")),
                (b"3", Ok("unknown pci subclass: 0x03 (class 0x00)")),
                (b"1.5", Err("put `uint` before `pci_subclass`")),
            ],
        );
    }

    #[test]
    fn missing_database_is_a_decode_error() {
        for kind in [Kind::Vendor, Kind::Device, Kind::Class, Kind::Subclass] {
            check_table(
                &Pci {
                    kind,
                    db: &MISSING_DB,
                },
                &[(b"1", Err("install package pci.ids"))],
            );
        }
        for builder in [build_vendor, build_device, build_class, build_subclass] {
            assert!(builder(&DecoderSpec::named("pci_vendor"), 4).is_ok());
        }
    }

    /// The system database, when installed: well-known ids (ebpf_exporter's
    /// cases) resolve.
    #[test]
    fn names_from_the_system_database() {
        if SYSTEM_DB.is_err() {
            return;
        }
        let decode = |build: crate::decode::Builder, input: &[u8]| {
            let mut out = Vec::new();
            build(&DecoderSpec::named("pci"), 4)
                .unwrap()
                .decode(input, &mut out)
                .unwrap();
            String::from_utf8(out).unwrap()
        };
        assert_eq!(decode(build_vendor, b"32902"), "Intel Corporation");
        assert_eq!(decode(build_vendor, b"48879"), "unknown pci vendor: 0xbeef");
        assert_eq!(
            decode(build_device, b"2156269568"),
            "82542 Gigabit Ethernet Controller (Fiber)"
        );
        assert_eq!(decode(build_class, b"2"), "Network controller");
        assert_eq!(decode(build_subclass, b"1540"), "PCI bridge");
    }
}
