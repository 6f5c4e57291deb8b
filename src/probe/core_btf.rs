//! The kernel types the built-ins' CO-RE relocations can resolve to, copied
//! out of the kernel's BTF into a BTF of a few hundred types that libbpf
//! relocates the built-ins against (`btf_custom_path`).
//!
//! libbpf finds a relocated type's candidates by scanning every type of the
//! BTF it relocates against: ≈ 126k in a current kernel, ≈ 1 ms per
//! relocated type per load group, most of what loading the default set
//! costs beyond its programs (BENCHMARKS.md). Against this BTF the scans
//! cost nothing; making it costs one pass over the kernel's type headers.
//!
//! It holds every type named one of the built-ins' relocated types (their
//! essential names, `struct request___old` being `request`), of a kind a
//! relocation can be against, and all they contain without going behind a
//! pointer: a relocation's access path runs through members and array
//! elements only (each dereference is a relocation of its own, on the
//! pointee's type, itself one of the names). Types, members, offsets,
//! bitfields, sizes and enumerators are the kernel's; only type ids and
//! string offsets are renumbered. A pointer to a type not kept points to
//! void: libbpf takes any pointer for a pointer when it compares fields
//! (bpf_core_fields_are_compat), and the built-ins never ask
//! bpf_core_type_matches, which would look behind it. The unit test below
//! proves it for every built-in on the running kernel: each relocates to
//! the same instructions against this BTF as against the kernel's.
//!
//! Not for user objects (their relocations are not known before libbpf
//! opens them) nor with --btf (the user's file is used as given). libbpf
//! relocating against the kernel's own BTF would also search the modules'
//! BTF for a type vmlinux lacks; the built-ins' types are the core kernel's
//! (tasks, the block layer, sockets), never a module's.

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use super::raw_btf::{kind, kind_and_vlen, u32_at, RawBtf, MAGIC, TYPE_HEADER};

/// The built-ins' BTF, made once per process from the kernel's: the path
/// libbpf opens it by (a memfd under /proc/self/fd, ≈ 50 KB, kept: loads
/// open it by path until they are done, and a process may load again).
/// None when it cannot be made (the kernel's BTF unreadable, no /proc):
/// libbpf then relocates against the kernel's BTF, as for any other object
/// (the unit test below requires it made).
pub(super) fn for_builtins() -> Option<&'static Path> {
    static MADE: OnceLock<Option<InMemoryFile>> = OnceLock::new();
    let made = MADE.get_or_init(|| {
        let kernel = RawBtf::kernel();
        let btf = kernel.as_ref().as_ref().ok()?;
        let mut roots: Vec<&str> = crate::builtin::BUILTINS
            .iter()
            .flat_map(|builtin| builtin.types.iter().copied())
            .collect();
        roots.sort_unstable();
        roots.dedup();
        InMemoryFile::new(&minimal(btf, &roots)).ok()
    });
    made.as_ref().map(|file| file.path.as_path())
}

/// A file in memory, and the path that opens it.
struct InMemoryFile {
    _file: File,
    path: PathBuf,
}

impl InMemoryFile {
    fn new(bytes: &[u8]) -> std::io::Result<InMemoryFile> {
        use std::os::fd::{AsRawFd, FromRawFd};
        // SAFETY: a NUL-terminated name.
        let fd = unsafe { libc::memfd_create(c"bpfsnap-core-btf".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: a descriptor just made and owned by nothing else.
        let mut file = unsafe { File::from_raw_fd(fd) };
        file.write_all(bytes)?;
        let path = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
        // libbpf opens it by this path: without /proc there is no using it.
        File::open(&path)?;
        Ok(InMemoryFile { _file: file, path })
    }
}

/// Whether a type of this kind can be what a relocation is against.
fn is_root_kind(kind: u8) -> bool {
    matches!(
        kind,
        kind::INT
            | kind::STRUCT
            | kind::UNION
            | kind::ENUM
            | kind::ENUM64
            | kind::TYPEDEF
            | kind::FLOAT
    )
}

/// A raw BTF file holding the types of `btf` named one of `roots` and all
/// they contain short of pointers' targets.
fn minimal(btf: &RawBtf, roots: &[&str]) -> Vec<u8> {
    let mut kept = BTreeSet::new();
    let mut pending: Vec<u32> = btf.ids_named(roots, is_root_kind).collect();
    while let Some(id) = pending.pop() {
        if id == 0 || !kept.insert(id) {
            continue;
        }
        if let Some(bytes) = btf.type_bytes(id) {
            pending.extend(contained(bytes));
        }
    }
    write(btf, &kept)
}

/// The word at `at` of a type's bytes (0 past their end).
fn word(bytes: &[u8], at: usize) -> u32 {
    u32_at(bytes, at).unwrap_or(0)
}

/// Where a type's words that name other types and strings are (byte
/// offsets in its bytes).
struct Words {
    /// Types it contains: a typedef's or qualifier's type, an array's
    /// element and index types, members' types.
    contains: Vec<usize>,
    /// A pointer's target.
    points_to: Option<usize>,
    names: Vec<usize>,
}

fn words(bytes: &[u8]) -> Words {
    let (kind, vlen) = kind_and_vlen(word(bytes, 4));
    let (contains, points_to, mut names) = match kind {
        kind::PTR => (Vec::new(), Some(8), Vec::new()),
        kind::TYPEDEF | kind::VOLATILE | kind::CONST | kind::RESTRICT | kind::TYPE_TAG => {
            (vec![8], None, Vec::new())
        }
        kind::ARRAY => (vec![TYPE_HEADER, TYPE_HEADER + 4], None, Vec::new()),
        kind::STRUCT | kind::UNION => {
            let members: Vec<usize> = (0..vlen).map(|i| TYPE_HEADER + 12 * i).collect();
            (members.iter().map(|at| at + 4).collect(), None, members)
        }
        kind::ENUM | kind::ENUM64 => {
            let stride = if kind == kind::ENUM { 8 } else { 12 };
            let values = (0..vlen).map(|i| TYPE_HEADER + stride * i).collect();
            (Vec::new(), None, values)
        }
        _ => (Vec::new(), None, Vec::new()),
    };
    names.push(0);
    Words {
        contains,
        points_to,
        names,
    }
}

/// The types a type contains (not what it points to).
fn contained(bytes: &[u8]) -> impl Iterator<Item = u32> + '_ {
    words(bytes).contains.into_iter().map(|at| word(bytes, at))
}

/// `kept` types of `btf` as a raw BTF file: ids renumbered in the kernel's
/// order (void stays 0), a pointer to a type not kept pointing to void,
/// each string once.
fn write(btf: &RawBtf, kept: &BTreeSet<u32>) -> Vec<u8> {
    let new_ids: HashMap<u32, u32> = kept.iter().zip(1..).map(|(&old, new)| (old, new)).collect();
    let mut strings = Strings::new();
    let mut types = Vec::new();
    for bytes in kept.iter().filter_map(|&id| btf.type_bytes(id)) {
        let start = types.len();
        types.extend_from_slice(bytes);
        let copy = &mut types[start..];
        let mut set =
            |at: usize, value: u32| copy[at..at + 4].copy_from_slice(&value.to_ne_bytes());
        let words = words(bytes);
        for at in words.contains.into_iter().chain(words.points_to) {
            set(at, new_ids.get(&word(bytes, at)).copied().unwrap_or(0));
        }
        for at in words.names {
            set(at, strings.add(btf.string(word(bytes, at)).unwrap_or("")));
        }
    }
    let mut file = Vec::with_capacity(24 + types.len() + strings.bytes.len());
    file.extend(MAGIC.to_ne_bytes());
    file.extend([1u8, 0]); // version 1, no flags
    let (types_len, strings_len) = (types.len() as u32, strings.bytes.len() as u32);
    // struct btf_header: its length, then the type and string sections'
    // offsets (after the header) and lengths.
    for field in [24, 0, types_len, types_len, strings_len] {
        file.extend(u32::to_ne_bytes(field));
    }
    file.extend(types);
    file.extend(strings.bytes);
    file
}

/// A BTF string section being written.
struct Strings<'a> {
    bytes: Vec<u8>,
    offsets: HashMap<&'a str, u32>,
}

impl<'a> Strings<'a> {
    fn new() -> Strings<'a> {
        // Offset 0 is the empty string (no name).
        Strings {
            bytes: vec![0],
            offsets: HashMap::new(),
        }
    }

    /// The offset of `text`, added if new.
    fn add(&mut self, text: &'a str) -> u32 {
        if text.is_empty() {
            return 0;
        }
        let next = self.bytes.len() as u32;
        let offset = *self.offsets.entry(text).or_insert(next);
        if offset == next {
            self.bytes.extend(text.as_bytes());
            self.bytes.push(0);
        }
        offset
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    use crate::probe::raw_btf::tests::info;

    /// A BTF of `types` (id 1 onwards) and `strings`.
    fn btf(types: &[&[u32]], strings: &[u8]) -> RawBtf {
        RawBtf::from_bytes(crate::probe::raw_btf::tests::btf(types, strings)).unwrap()
    }

    /// Each type of `btf` as text, members and targets by name, to compare.
    fn described(btf: &RawBtf) -> Vec<String> {
        let name = |id: u32| match btf.type_by_id(id) {
            Some(ty) => btf.name(&ty).unwrap_or("(anon)").to_string(),
            None => "void".to_string(),
        };
        (1..)
            .map_while(|id| btf.type_bytes(id))
            .map(|bytes| {
                let Words {
                    contains,
                    points_to,
                    names,
                } = words(bytes);
                let targets: Vec<String> = contains
                    .iter()
                    .chain(&points_to)
                    .map(|&at| name(word(bytes, at)))
                    .collect();
                let names: Vec<&str> = names
                    .iter()
                    .map(|&at| btf.string(word(bytes, at)).unwrap_or("?"))
                    .collect();
                let (info, size_or_type) = (word(bytes, 4), word(bytes, 8));
                format!("{info:x} {size_or_type} {names:?} -> {targets:?}")
            })
            .collect()
    }

    #[test]
    fn keeps_the_named_types_and_what_they_contain_short_of_pointers() {
        // 1 int "int"; 2 struct "task" {int pid; struct inner in; struct
        // far *next; int arr[2]}; 3 struct "inner" {int x}; 4 ptr -> 5;
        // 5 struct "far" {int y}; 6 array of 1 by 1; 7 typedef "task" -> 2
        // (a root of another kind); 8 func "task" (not a kind relocations
        // are against); 9 enum "e" {A}; 10 struct "unrelated" {int z}.
        let strings = b"\0int\0task\0pid\0in\0next\0arr\0inner\0x\0far\0y\0e\0A\0unrelated\0z\0";
        let at = |text: &str| {
            let needle = [b"\0", text.as_bytes(), b"\0"].concat();
            memchr::memmem::find(strings, &needle).unwrap() as u32 + 1
        };
        let kernel = btf(
            &[
                &[at("int"), info(kind::INT, 0), 4, 32],
                &[
                    at("task"),
                    info(kind::STRUCT, 4),
                    32,
                    at("pid"),
                    1,
                    0,
                    at("in"),
                    3,
                    32,
                    at("next"),
                    4,
                    64,
                    at("arr"),
                    6,
                    128,
                ],
                &[at("inner"), info(kind::STRUCT, 1), 4, at("x"), 1, 0],
                &[0, info(kind::PTR, 0), 5],
                &[at("far"), info(kind::STRUCT, 1), 4, at("y"), 1, 0],
                &[0, info(kind::ARRAY, 0), 0, 1, 1, 2],
                &[at("task"), info(kind::TYPEDEF, 0), 2],
                &[at("task"), info(kind::FUNC, 0), 0],
                &[at("e"), info(kind::ENUM, 1), 4, at("A"), 7],
                &[at("unrelated"), info(kind::STRUCT, 1), 4, at("z"), 1, 0],
            ],
            strings,
        );
        let minimal = RawBtf::from_bytes(minimal(&kernel, &["task", "e", "absent"])).unwrap();
        let struct_ = info(kind::STRUCT, 0);
        assert_eq!(
            described(&minimal),
            [
                format!("{:x} 4 [\"int\"] -> []", info(kind::INT, 0)),
                format!("{:x} 32 [\"pid\", \"in\", \"next\", \"arr\", \"task\"] -> [\"int\", \"inner\", \"(anon)\", \"(anon)\"]", struct_ | 4),
                format!("{:x} 4 [\"x\", \"inner\"] -> [\"int\"]", struct_ | 1),
                // The pointer to `far` points to void: `far` is not kept.
                format!("{:x} 0 [\"\"] -> [\"void\"]", info(kind::PTR, 0)),
                format!("{:x} 0 [\"\"] -> [\"int\", \"int\"]", info(kind::ARRAY, 0)),
                format!("{:x} 2 [\"task\"] -> [\"task\"]", info(kind::TYPEDEF, 0)),
                format!("{:x} 4 [\"A\", \"e\"] -> []", info(kind::ENUM, 1)),
            ]
        );
        // Kept records are the kernel's, word for word, but for ids and
        // string offsets: the array's element count, the member offsets.
        assert_eq!(word(minimal.type_bytes(5).unwrap(), 20), 2);
        assert_eq!(word(minimal.type_bytes(2).unwrap(), 12 + 12 * 3 + 8), 128);
    }

    /// `object`'s programs, their instructions after libbpf relocated them
    /// against `btf` (the kernel's if None), map descriptors left out
    /// (each object has its own).
    fn relocated(object: &[u8], btf: Option<&Path>) -> BTreeMap<String, Vec<[u8; 8]>> {
        use libbpf_rs::AsRawLibbpf;
        let mut builder = libbpf_rs::ObjectBuilder::default();
        if let Some(path) = btf {
            builder.btf_custom_path(path).unwrap();
        }
        let mut open = builder.open_memory(object).unwrap();
        // Maps are not what is compared, and some cannot be made on older
        // kernels (task storage before 5.11).
        for mut map in open.maps_mut() {
            map.set_autocreate(false).unwrap();
        }
        let object = open.as_libbpf_object().as_ptr();
        // SAFETY: `object` is the open object `open` owns until the end of
        // this function; prepare relocates without loading programs; the
        // instructions read are owned by the object.
        unsafe {
            let err = libbpf_sys::bpf_object__prepare(object);
            assert_eq!(err, 0, "{}", super::super::libbpf_log::take());
            let mut programs = BTreeMap::new();
            let mut program = libbpf_sys::bpf_object__next_program(object, std::ptr::null_mut());
            while !program.is_null() {
                let name = std::ffi::CStr::from_ptr(libbpf_sys::bpf_program__name(program));
                let insns = libbpf_sys::bpf_program__insns(program).cast::<[u8; 8]>();
                let count = libbpf_sys::bpf_program__insn_cnt(program) as usize;
                let mut insns = std::slice::from_raw_parts(insns, count).to_vec();
                for insn in &mut insns {
                    // BPF_LD | BPF_IMM | BPF_DW of a map's descriptor.
                    let src_reg = if cfg!(target_endian = "little") {
                        insn[1] >> 4
                    } else {
                        insn[1] & 0xf
                    };
                    if insn[0] == 0x18 && matches!(src_reg, 1 | 2) {
                        insn[4..].fill(0);
                    }
                }
                programs.insert(name.to_string_lossy().into_owned(), insns);
                program = libbpf_sys::bpf_object__next_program(object, program);
            }
            programs
        }
    }

    #[test]
    fn every_builtin_relocates_the_same_against_its_core_btf_as_the_kernels() {
        if !crate::kernel_unit_test("every_builtin_relocates_the_same_against_its_core_btf") {
            return;
        }
        let core_btf =
            for_builtins().expect("the built-ins' CO-RE types are made from this kernel's");
        super::super::capture_libbpf_log(false);
        let mut relocating = 0;
        for builtin in crate::builtin::BUILTINS {
            let against_kernel = relocated(builtin.object, None);
            let against_core_btf = relocated(builtin.object, Some(core_btf));
            assert!(!against_kernel.is_empty(), "{}", builtin.name);
            assert!(
                against_kernel == against_core_btf,
                "{}: relocated differently",
                builtin.name
            );
            relocating += usize::from(!builtin.types.is_empty());
        }
        assert!(relocating >= 10, "only {relocating} built-ins relocate");
        // The comparison sees a difference: against a BTF without the
        // types, a built-in relocates otherwise.
        let kernel = RawBtf::kernel();
        let kernel = kernel.as_ref().as_ref().unwrap();
        let without = InMemoryFile::new(&minimal(kernel, &["int"])).unwrap();
        let exits = crate::builtin::find("exits").unwrap().object;
        assert!(relocated(exits, None) != relocated(exits, Some(&without.path)));
    }
}
