//! The kernel types a BPF object's CO-RE relocations look up, for the
//! `types` of a built-in (build.rs; included by the library's tests too).
//!
//! libbpf looks each of them up by scanning every type of the BTF it
//! relocates against, once per load: the built-ins relocate against a BTF of
//! just these types and what they contain (src/probe/core_btf.rs), made at
//! run time from the kernel's. The records are in the object's .BTF.ext,
//! which libbpf-rs does not expose (its `Btf` reads .BTF only), so this reads
//! that section from the ELF file itself and names the types with libbpf-rs.
//! The object is one clang just compiled for this machine (`-target bpf`
//! takes the host's byte order), so everything is read in native byte order.

use std::fs;
use std::path::Path;

use anyhow::{Context, Result};
use libbpf_rs::btf::{BtfType, TypeId};
use libbpf_rs::Btf;

/// BPF_CORE_TYPE_ID_LOCAL (enum bpf_core_relo_kind): resolved in the
/// object's own BTF, never looked up in the kernel's.
const TYPE_ID_LOCAL: u32 = 6;

/// The names of the types the CO-RE relocations of `object` are against,
/// sorted, each once.
pub fn relocated_types(object: &Path) -> Result<Vec<String>> {
    let elf = fs::read(object).with_context(|| format!("reading {}", object.display()))?;
    let btf = Btf::from_path(object)
        .with_context(|| format!("libbpf cannot read the BTF of {}", object.display()))?;
    let mut types: Vec<String> = section(&elf, ".BTF.ext")
        .map(core_relocations)
        .unwrap_or_default()
        .into_iter()
        .filter(|&(_, kind)| kind != TYPE_ID_LOCAL)
        .filter_map(|(type_id, _)| btf.type_by_id::<BtfType<'_>>(TypeId::from(type_id)))
        // libbpf-rs says None for an anonymous type, libbpf "".
        .map(|ty| ty.name().unwrap_or_default().to_string_lossy().into_owned())
        .map(|name| essential_name(&name).to_string())
        .collect();
    types.sort();
    types.dedup();
    Ok(types)
}

/// The unsigned integer of `width` bytes at `at` in `data`, if it is there.
fn uint(data: &[u8], at: usize, width: usize) -> Option<usize> {
    let bytes = data.get(at..at.checked_add(width)?)?;
    match width {
        2 => Some(u16::from_ne_bytes(bytes.try_into().ok()?).into()),
        4 => usize::try_from(u32::from_ne_bytes(bytes.try_into().ok()?)).ok(),
        8 => usize::try_from(u64::from_ne_bytes(bytes.try_into().ok()?)).ok(),
        _ => None,
    }
}

/// The contents of the section called `name` of a 64-bit ELF object of
/// this machine's byte order (the Elf64_Ehdr and Elf64_Shdr layouts of
/// elf.h), if it has one.
fn section<'a>(elf: &'a [u8], name: &str) -> Option<&'a [u8]> {
    let native_order = if cfg!(target_endian = "little") { 1 } else { 2 };
    if !elf.starts_with(b"\x7fELF") || elf.get(4..6)? != [2, native_order] {
        return None;
    }
    let (table, entry_size) = (uint(elf, 0x28, 8)?, uint(elf, 0x3a, 2)?);
    let (count, names_index) = (uint(elf, 0x3c, 2)?, uint(elf, 0x3e, 2)?);
    // Field `at` of section header `index`.
    let field = |index: usize, at: usize, width: usize| {
        uint(
            elf,
            table
                .checked_add(index.checked_mul(entry_size)?)?
                .checked_add(at)?,
            width,
        )
    };
    let contents = |index: usize| {
        let (offset, size) = (field(index, 24, 8)?, field(index, 32, 8)?);
        elf.get(offset..offset.checked_add(size)?)
    };
    let names = contents(names_index)?;
    (0..count).find_map(|index| {
        let found = names
            .get(field(index, 0, 4)?..)?
            .split(|&b| b == 0)
            .next()?;
        (found == name.as_bytes()).then(|| contents(index))?
    })
}

/// (type id, kind) of every CO-RE relocation record in .BTF.ext data (the
/// layout of struct btf_ext_header and bpf_core_relo in the kernel's
/// uapi/linux/btf.h and libbpf's libbpf_internal.h); nothing if it has no
/// CO-RE part.
fn core_relocations(raw: &[u8]) -> Vec<(u32, u32)> {
    let mut found = Vec::new();
    let word = |at: usize| uint(raw, at, 4);
    // Header: magic (u16), version, flags (u8 each), hdr_len, then
    // func_info off/len, line_info off/len and, in headers long enough,
    // core_relo off/len; offsets count from the header's end.
    let (Some(0xeb9f), Some(header_len @ 32..)) = (uint(raw, 0, 2), word(4)) else {
        return found;
    };
    let (Some(offset), Some(len)) = (word(24), word(28)) else {
        return found;
    };
    let start = header_len + offset;
    let end = (start + len).min(raw.len());
    let Some(record_size @ 16..) = word(start) else {
        return found;
    };
    // Per ELF section: its name's offset, its record count, then the records
    // {insn_off, type_id, access_str_off, kind}.
    let mut at = start + 4;
    while at + 8 <= end {
        let count = word(at + 4).unwrap_or(0);
        at += 8;
        for _ in 0..count {
            let (Some(type_id), Some(kind)) = (word(at + 4), word(at + 12)) else {
                return found;
            };
            found.push((type_id as u32, kind as u32));
            at += record_size;
        }
    }
    found
}

/// The name libbpf looks a type up by: a local flavor of a kernel type
/// (`task_struct___old`) by the name before its last "___".
fn essential_name(name: &str) -> &str {
    match name.rfind("___") {
        Some(at) if at > 0 => &name[..at],
        _ => name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn core_btf_object() -> std::path::PathBuf {
        Path::new(env!("BPFSNAP_FIXTURE_OBJECTS")).join("core_btf.bpf.o")
    }

    /// A .BTF.ext of two ELF sections with CO-RE records (after a func_info
    /// part, which is skipped), read record by record.
    #[test]
    fn reads_every_core_relocation_record() {
        let words =
            |values: &[u32]| -> Vec<u8> { values.iter().flat_map(|v| v.to_ne_bytes()).collect() };
        let mut raw = 0xeb9f_u16.to_ne_bytes().to_vec();
        raw.extend([1, 0]); // version, flags
                            // hdr_len, func_info off/len, line_info off/len, core_relo off/len
        raw.extend(words(&[32, 0, 4, 4, 0, 4, 68]));
        raw.extend(words(&[8])); // func_info: its record size, no sections
                                 // Record size; a section of two records, then one of one.
        raw.extend(words(&[16, 1, 2, 0, 7, 3, 0, 8, 9, 0, 8, 2, 1, 0, 5, 0, 6]));
        assert_eq!(core_relocations(&raw), [(7, 0), (9, 8), (5, 6)]);
        assert!(core_relocations(&raw[..16]).is_empty());
        assert!(core_relocations(b"not BTF.ext data at all, not at all").is_empty());
    }

    #[test]
    fn finds_sections_by_name() {
        let elf = fs::read(core_btf_object()).unwrap();
        let ext = section(&elf, ".BTF.ext").expect(".BTF.ext");
        assert_eq!(uint(ext, 0, 2), Some(0xeb9f));
        assert_eq!(section(&elf, "license"), Some(&b"Dual BSD/GPL\0"[..]));
        assert_eq!(section(&elf, ".BTF.ex"), None);
        assert_eq!(section(&elf[..64], ".BTF.ext"), None);
    }

    #[test]
    fn flavors_are_named_as_the_kernel_type() {
        assert_eq!(
            essential_name("task_struct___state_before_5_14"),
            "task_struct"
        );
        assert_eq!(essential_name("a___b___c"), "a___b");
        assert_eq!(essential_name("task_struct"), "task_struct");
        assert_eq!(essential_name("___x"), "___x");
    }

    /// core_btf reads the task's comm with BPF_CORE_READ_STR_INTO.
    #[test]
    fn names_the_kernel_types_an_object_relocates_against() {
        assert_eq!(
            relocated_types(&core_btf_object()).unwrap(),
            ["task_struct"]
        );
    }
}
