//! The kernel's BTF read in place, for the few lookups bpfsnap makes before
//! loading anything (a tracepoint's arguments, whether a type exists).
//!
//! libbpf's `btf__parse` validates and indexes every one of the kernel's
//! ≈ 150k types into fresh memory (≈ 3 ms on the start-up's critical path,
//! before a single program loads); its loads do that again anyway. Here the
//! file is mapped (read on kernels that cannot map it), one pass records
//! where each type starts, and a name is found by searching the string
//! section for it once: what a lookup needs, about a third of the cost
//! (BENCHMARKS.md, 2026-12-06 night). The layout
//! is the kernel's (include/uapi/linux/btf.h), in host byte order as the
//! kernel writes it.

use std::fs::File;
use std::path::Path;
use std::sync::{Arc, Mutex, Weak};

/// BTF kinds (BTF_KIND_*).
pub mod kind {
    pub const INT: u8 = 1;
    pub const PTR: u8 = 2;
    pub const ARRAY: u8 = 3;
    pub const STRUCT: u8 = 4;
    pub const UNION: u8 = 5;
    pub const ENUM: u8 = 6;
    pub const FWD: u8 = 7;
    pub const TYPEDEF: u8 = 8;
    pub const VOLATILE: u8 = 9;
    pub const CONST: u8 = 10;
    pub const RESTRICT: u8 = 11;
    pub const FUNC: u8 = 12;
    pub const FUNC_PROTO: u8 = 13;
    pub const VAR: u8 = 14;
    pub const DATASEC: u8 = 15;
    pub const FLOAT: u8 = 16;
    pub const DECL_TAG: u8 = 17;
    pub const TYPE_TAG: u8 = 18;
    pub const ENUM64: u8 = 19;
}

pub const MAGIC: u16 = 0xeb9f;
/// struct btf_type: name_off, info, size or type.
pub const TYPE_HEADER: usize = 12;

/// A BTF file's bytes, mapped or read.
enum Bytes {
    Mapped { at: *const u8, len: usize },
    Read(Vec<u8>),
}

impl Bytes {
    fn open(path: &Path) -> std::io::Result<Bytes> {
        use std::os::fd::AsRawFd;
        let file = File::open(path)?;
        let len = usize::try_from(file.metadata()?.len()).unwrap_or(0);
        // SAFETY: a read-only private mapping of a file we opened; checked
        // for failure; unmapped in Drop, never written.
        let at = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_POPULATE,
                file.as_raw_fd(),
                0,
            )
        };
        if len == 0 || at == libc::MAP_FAILED {
            // Kernels before 6.16 cannot map /sys/kernel/btf/vmlinux; a
            // file system may not map at all.
            return Ok(Bytes::Read(std::fs::read(path)?));
        }
        Ok(Bytes::Mapped { at: at.cast(), len })
    }

    fn as_slice(&self) -> &[u8] {
        match self {
            // SAFETY: `len` bytes mapped at `at`, alive until Drop.
            Bytes::Mapped { at, len } => unsafe { std::slice::from_raw_parts(*at, *len) },
            Bytes::Read(bytes) => bytes,
        }
    }
}

// SAFETY: a mapping is private, read-only and owned by its Bytes: nothing
// writes it, and only Drop (holding the only reference) unmaps it. Threads
// sharing a RawBtf read immutable memory.
unsafe impl Send for Bytes {}
unsafe impl Sync for Bytes {}

impl Drop for Bytes {
    fn drop(&mut self) {
        if let Bytes::Mapped { at, len } = self {
            // SAFETY: the mapping made in `open`, unmapped once.
            unsafe { libc::munmap(at.cast_mut().cast(), *len) };
        }
    }
}

/// The kernel's BTF while something holds it ([`RawBtf::kernel`]).
static KERNEL: Mutex<Weak<Result<RawBtf, String>>> = Mutex::new(Weak::new());

/// A whole (not split) BTF: the kernel's, or a file in its format.
pub struct RawBtf {
    bytes: Bytes,
    /// Byte ranges of the type and string sections.
    types: std::ops::Range<usize>,
    strings: std::ops::Range<usize>,
    /// Where type id `n + 1` starts in the type section (id 0 is void).
    starts: Vec<u32>,
}

/// One type: its kind, name and the words after its name.
#[derive(Clone, Copy)]
pub struct Type<'a> {
    pub kind: u8,
    pub kind_flag: bool,
    name_off: u32,
    /// The `size` or `type` word.
    pub size_or_type: u32,
    /// The records after the header (members, parameters, enumerators).
    records: &'a [u8],
}

/// A type's kind and member count, from its info word.
pub fn kind_and_vlen(info: u32) -> (u8, usize) {
    (((info >> 24) & 0x1f) as u8, (info & 0xffff) as usize)
}

pub fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    let word = bytes.get(at..at + 4)?;
    Some(u32::from_ne_bytes(word.try_into().ok()?))
}

/// The length of what follows a type's header, by kind and member count.
fn records_len(kind: u8, vlen: usize) -> Option<usize> {
    Some(match kind {
        kind::INT | kind::VAR | kind::DECL_TAG => 4,
        kind::ARRAY => 12,
        kind::STRUCT | kind::UNION | kind::DATASEC | kind::ENUM64 => 12 * vlen,
        kind::ENUM | kind::FUNC_PROTO => 8 * vlen,
        kind::PTR | kind::FWD | kind::TYPEDEF | kind::VOLATILE | kind::CONST | kind::RESTRICT => 0,
        kind::FUNC | kind::FLOAT | kind::TYPE_TAG => 0,
        _ => return None,
    })
}

impl RawBtf {
    /// Maps (or reads) and indexes the BTF file at `path`. A file that is
    /// not raw BTF but something else libbpf reads types from (an ELF file
    /// with a .BTF section, such as a vmlinux image given to --btf) goes
    /// through libbpf's parser.
    pub fn open(path: &Path) -> Result<RawBtf, String> {
        let context = |err: String| format!("{}: {err}", path.display());
        let bytes = Bytes::open(path).map_err(|err| context(err.to_string()))?;
        if !bytes.as_slice().starts_with(&MAGIC.to_ne_bytes()) {
            if !bytes.as_slice().starts_with(b"\x7fELF") {
                return Err(context(
                    "neither raw BTF nor an ELF file (it starts with neither's magic)".into(),
                ));
            }
            return libbpf_raw_data(path)
                .and_then(RawBtf::from_bytes)
                .map_err(context);
        }
        RawBtf::index(bytes).map_err(context)
    }

    /// The running kernel's BTF, opened once while anything holds it: the
    /// lookups before loading ([`super::availability`]) and the built-ins'
    /// CO-RE types ([`super::core_btf`], made on another thread) share it,
    /// and it goes when the last holder does (its 6 MB, read into memory
    /// where the kernel cannot map them, are not kept by a `serve`).
    pub fn kernel() -> Arc<Result<RawBtf, String>> {
        let mut kernel = KERNEL
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(btf) = kernel.upgrade() {
            return btf;
        }
        let btf = Arc::new(RawBtf::open(Path::new(super::host::BTF_PATH)));
        *kernel = Arc::downgrade(&btf);
        btf
    }

    /// Parses `bytes` (a BTF file's contents).
    pub fn from_bytes(bytes: Vec<u8>) -> Result<RawBtf, String> {
        RawBtf::index(Bytes::Read(bytes))
    }

    fn index(bytes: Bytes) -> Result<RawBtf, String> {
        let data = bytes.as_slice();
        let magic = data.get(..2).map(|m| u16::from_ne_bytes([m[0], m[1]]));
        if magic != Some(MAGIC) {
            return Err("not BTF in this machine's byte order (bad magic)".into());
        }
        let word = |at| {
            u32_at(data, at)
                .map(|w| w as usize)
                .ok_or("truncated BTF header")
        };
        let header = word(4)?;
        let (type_off, type_len) = (word(8)?, word(12)?);
        let (str_off, str_len) = (word(16)?, word(20)?);
        let types = header + type_off..header + type_off + type_len;
        let strings = header + str_off..header + str_off + str_len;
        if types.end > data.len() || strings.end > data.len() {
            return Err("a BTF section ends past the end of the file".into());
        }
        let starts = type_starts(&data[types.clone()])?;
        Ok(RawBtf {
            bytes,
            types,
            strings,
            starts,
        })
    }

    /// Type `id` (0, void, is not a type here).
    pub fn type_by_id(&self, id: u32) -> Option<Type<'_>> {
        let start = *self.starts.get((id as usize).checked_sub(1)?)? as usize;
        let section = &self.bytes.as_slice()[self.types.clone()];
        let info = u32_at(section, start + 4)?;
        let (kind, vlen) = kind_and_vlen(info);
        let records = records_len(kind, vlen)?;
        Some(Type {
            kind,
            kind_flag: info >> 31 == 1,
            name_off: u32_at(section, start)?,
            size_or_type: u32_at(section, start + 8)?,
            records: section.get(start + TYPE_HEADER..start + TYPE_HEADER + records)?,
        })
    }

    /// The string at `offset` in the string section.
    pub fn string(&self, offset: u32) -> Option<&str> {
        let strings = &self.bytes.as_slice()[self.strings.clone()];
        let tail = strings.get(offset as usize..)?;
        let end = memchr::memchr(0, tail)?;
        std::str::from_utf8(&tail[..end]).ok()
    }

    pub fn name(&self, ty: &Type<'_>) -> Option<&str> {
        self.string(ty.name_off).filter(|name| !name.is_empty())
    }

    /// The first type of kind `kind` named `name`.
    pub fn find(&self, kind: u8, name: &str) -> Option<(u32, Type<'_>)> {
        let id = self.ids_named(&[name], |of| of == kind).next()?;
        Some((id, self.type_by_id(id)?))
    }

    /// The ids of the types named one of `names` whose kind `of_kind`
    /// accepts, in order. One pass over the type headers: a name is read
    /// only for a type of a wanted kind, and compared only when its first
    /// two bytes are some name's (17 names: 0.5 ms, against 2.2 ms searching
    /// the string section for each name first; BENCHMARKS.md, 2026-12-07).
    pub fn ids_named<'n>(
        &'n self,
        names: &'n [&'n str],
        of_kind: impl Fn(u8) -> bool + 'n,
    ) -> impl Iterator<Item = u32> + 'n {
        let strings = &self.bytes.as_slice()[self.strings.clone()];
        let section = &self.bytes.as_slice()[self.types.clone()];
        // One name (a lookup) absent from the string section is no type's:
        // one search of it (≈ 0.1 ms) instead of the pass (≈ 0.4 ms).
        let absent = |name: &str| {
            let needle = [b"\0", name.as_bytes(), b"\0"].concat();
            memchr::memmem::find(strings, &needle).is_none()
        };
        let names = match names {
            [name] if absent(name) => &[][..],
            _ => names,
        };
        let mut prefixes = TwoBytePrefixes::default();
        names
            .iter()
            .for_each(|name| prefixes.insert(name.as_bytes()));
        let named = move |start: usize| {
            let info = u32_at(section, start + 4)?;
            if !of_kind(kind_and_vlen(info).0) {
                return None;
            }
            let name = strings.get(u32_at(section, start)? as usize..)?;
            let whole = |wanted: &&str| {
                name.starts_with(wanted.as_bytes()) && name.get(wanted.len()) == Some(&0)
            };
            (prefixes.contains(name) && names.iter().any(whole)).then_some(())
        };
        // Nothing to find, nothing to pass over.
        let starts = if names.is_empty() {
            &[][..]
        } else {
            &self.starts[..]
        };
        let ids = starts.iter().zip(1..);
        ids.filter_map(move |(&start, id)| named(start as usize).map(|()| id))
    }

    /// Type `id` as the file has it: its header (name offset, info word,
    /// size or type) and the records after it.
    pub fn type_bytes(&self, id: u32) -> Option<&[u8]> {
        let index = (id as usize).checked_sub(1)?;
        let start = *self.starts.get(index)? as usize;
        let end = match self.starts.get(index + 1) {
            Some(next) => *next as usize,
            None => self.types.len(),
        };
        self.bytes.as_slice()[self.types.clone()].get(start..end)
    }

    /// The parameter type ids of a FUNC_PROTO.
    pub fn params<'a>(&self, ty: &Type<'a>) -> impl Iterator<Item = u32> + 'a {
        ty.records
            .chunks_exact(8)
            .filter_map(|param| u32_at(param, 4))
    }

    /// The enumerator names of an ENUM or ENUM64.
    pub fn enumerators<'b>(&'b self, ty: &Type<'b>) -> impl Iterator<Item = &'b str> + 'b {
        let stride = if ty.kind == kind::ENUM64 { 12 } else { 8 };
        ty.records
            .chunks_exact(stride)
            .filter_map(|value| self.string(u32_at(value, 0)?))
    }
}

/// A set of strings' first two bytes (a string of one byte: it and its
/// NUL), one bit each.
struct TwoBytePrefixes([u64; 1024]);

impl Default for TwoBytePrefixes {
    fn default() -> Self {
        TwoBytePrefixes([0; 1024])
    }
}

impl TwoBytePrefixes {
    fn bit(text: &[u8]) -> usize {
        let byte = |at: usize| text.get(at).copied().unwrap_or(0) as usize;
        byte(0) << 8 | byte(1)
    }

    fn insert(&mut self, text: &[u8]) {
        let bit = TwoBytePrefixes::bit(text);
        self.0[bit / 64] |= 1 << (bit % 64);
    }

    fn contains(&self, text: &[u8]) -> bool {
        let bit = TwoBytePrefixes::bit(text);
        self.0[bit / 64] & (1 << (bit % 64)) != 0
    }
}

/// The raw BTF of the ELF file at `path` (its .BTF section), as libbpf
/// reads it.
fn libbpf_raw_data(path: &Path) -> Result<Vec<u8>, String> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| "the path holds a NUL byte".to_string())?;
    // SAFETY: a NUL-terminated path; libbpf returns a btf to free or an
    // error pointer (NULL with errno set, in libbpf 1.x).
    let btf = unsafe { libbpf_sys::btf__parse(c_path.as_ptr(), std::ptr::null_mut()) };
    if btf.is_null() || unsafe { libbpf_sys::libbpf_get_error(btf.cast()) } != 0 {
        let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
        return Err(format!(
            "an ELF file without usable BTF ({}){}",
            libbpf_strerror(errno),
            super::explain::last_message(&super::libbpf_log::take())
        ));
    }
    let mut size = 0u32;
    // SAFETY: `btf` is valid until freed below; the raw data it returns is
    // `size` bytes owned by it, copied before the free.
    let bytes = unsafe {
        let data = libbpf_sys::btf__raw_data(btf, &mut size);
        let bytes = match data.is_null() {
            true => Vec::new(),
            false => std::slice::from_raw_parts(data.cast::<u8>(), size as usize).to_vec(),
        };
        libbpf_sys::btf__free(btf);
        bytes
    };
    Ok(bytes)
}

/// libbpf's text for error `errno`, its own codes (4000 and up) included.
fn libbpf_strerror(errno: i32) -> String {
    let mut text = [0u8; 128];
    // SAFETY: libbpf writes at most `len` bytes, NUL-terminated, into `text`.
    let failed =
        unsafe { libbpf_sys::libbpf_strerror(errno, text.as_mut_ptr().cast(), text.len() as _) };
    match std::ffi::CStr::from_bytes_until_nul(&text) {
        Ok(text) if failed == 0 => format!("{} (errno {errno})", text.to_string_lossy()),
        _ => std::io::Error::from_raw_os_error(errno).to_string(),
    }
}

/// Where each type starts in `section`, in id order; Err on a kind this
/// reader does not know (a BTF newer than it) or a type cut short.
fn type_starts(section: &[u8]) -> Result<Vec<u32>, String> {
    // ≈ 36 bytes per type in the kernel's BTF.
    let mut starts = Vec::with_capacity(section.len() / 32);
    let mut at = 0usize;
    while at < section.len() {
        let info = u32_at(section, at + 4).ok_or("a BTF type is cut short")?;
        let (kind, vlen) = kind_and_vlen(info);
        let records = records_len(kind, vlen)
            .ok_or_else(|| format!("BTF type kind {kind} is not one bpfsnap knows"))?;
        starts.push(u32::try_from(at).map_err(|_| "BTF type section over 4 GiB")?);
        at += TYPE_HEADER + records;
    }
    if at != section.len() {
        return Err("the last BTF type is cut short".into());
    }
    Ok(starts)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A BTF file of `types` (id 1 onwards) and `strings`.
    pub(in crate::probe) fn btf(types: &[&[u32]], strings: &[u8]) -> Vec<u8> {
        let types: Vec<u8> = types
            .iter()
            .flat_map(|words| words.iter().flat_map(|w| w.to_ne_bytes()))
            .collect();
        let mut file = Vec::new();
        file.extend(MAGIC.to_ne_bytes());
        file.extend([1u8, 0]);
        for word in [24u32, 0, types.len() as u32, types.len() as u32] {
            file.extend(word.to_ne_bytes());
        }
        file.extend((strings.len() as u32).to_ne_bytes());
        file.extend(types);
        file.extend(strings);
        file
    }

    pub(in crate::probe) fn info(kind: u8, vlen: u32) -> u32 {
        (kind as u32) << 24 | vlen
    }

    #[test]
    fn finds_types_by_kind_and_name_and_reads_their_records() {
        // 1 int "int"; 2 ptr -> 1; 3 func_proto(void *, int) -> void;
        // 4 typedef "btf_trace_x" -> 5; 5 ptr -> 3; 6 enum "e" {A, B};
        // 7 struct "int" (same name, other kind).
        let strings = b"\0int\0btf_trace_x\0e\0A\0B\0";
        let file = btf(
            &[
                &[1, info(kind::INT, 0), 4, 32],
                &[0, info(kind::PTR, 0), 1],
                &[0, info(kind::FUNC_PROTO, 2), 0, 0, 0, 0, 1],
                &[5, info(kind::TYPEDEF, 0), 5],
                &[0, info(kind::PTR, 0), 3],
                &[17, info(kind::ENUM, 2), 4, 19, 0, 21, 1],
                &[1, info(kind::STRUCT, 0), 0],
            ],
            strings,
        );
        let btf = RawBtf::from_bytes(file).unwrap();
        let (id, typedef) = btf.find(kind::TYPEDEF, "btf_trace_x").unwrap();
        assert_eq!((id, typedef.size_or_type), (4, 5));
        let proto = btf.type_by_id(3).unwrap();
        assert_eq!(btf.params(&proto).collect::<Vec<_>>(), [0, 1]);
        let (_, e) = btf.find(kind::ENUM, "e").unwrap();
        assert_eq!(btf.enumerators(&e).collect::<Vec<_>>(), ["A", "B"]);
        assert_eq!(btf.find(kind::STRUCT, "int").map(|(id, _)| id), Some(7));
        assert_eq!(btf.find(kind::INT, "int").map(|(id, _)| id), Some(1));
        // Not a whole string, or not of that kind: not found.
        assert!(btf.find(kind::TYPEDEF, "btf_trace").is_none());
        assert!(btf.find(kind::UNION, "int").is_none());
        assert!(btf.type_by_id(0).is_none() && btf.type_by_id(8).is_none());
        // Of every kind, in id order; a one-byte name is compared whole;
        // an enumerator's name is no type's.
        let all = |names: &[&str]| btf.ids_named(names, |_| true).collect::<Vec<_>>();
        assert_eq!(all(&["int", "e"]), [1, 6, 7]);
        assert!(all(&["in", "A", "btf_trace_xy"]).is_empty());
        assert_eq!(
            btf.ids_named(&["int"], |kind| kind == kind::STRUCT)
                .collect::<Vec<_>>(),
            [7]
        );
    }

    #[test]
    fn reads_the_btf_of_an_elf_file_through_libbpf() {
        let dir = tempfile::tempdir().unwrap();
        let elf = dir.path().join("builtins.bpf.o");
        std::fs::write(&elf, crate::builtin::LINKED).unwrap();
        let btf = RawBtf::open(&elf).unwrap();
        let (_, func) = btf.find(kind::FUNC, "syscalls_enter").unwrap();
        assert_eq!(btf.name(&func), Some("syscalls_enter"));
        let text = dir.path().join("not-btf");
        std::fs::write(&text, "neither").unwrap();
        let err = RawBtf::open(&text).err().unwrap();
        assert!(
            err.contains("not-btf: neither raw BTF nor an ELF file"),
            "{err}"
        );
    }

    #[test]
    fn rejects_what_is_not_btf_or_is_cut_short() {
        let good = btf(&[&[0, info(kind::PTR, 0), 0]], b"\0");
        assert!(RawBtf::from_bytes(good.clone()).is_ok());
        let err = |bytes: Vec<u8>| RawBtf::from_bytes(bytes).err().unwrap();
        assert!(err(b"ELF".to_vec()).contains("magic"));
        assert!(err(good[..20].to_vec()).contains("header"));
        assert!(err(good[..good.len() - 2].to_vec()).contains("past the end"));
        let unknown = btf(&[&[0, info(31, 0), 0]], b"\0");
        assert!(err(unknown).contains("kind 31"));
        let short = btf(&[&[0, info(kind::STRUCT, 1), 0]], b"\0");
        assert!(err(short).contains("cut short"));
    }
}
