//! Compiles BPF C into CO-RE objects:
//! - built-ins `bpf/NAME.bpf.c`, embedded with their metric spec `bpf/NAME.toml`
//!   (this script writes `$OUT_DIR/builtins.rs`, a table the library includes,
//!   so adding a built-in means adding two files under `bpf/`);
//! - `examples/*.bpf.c`, `tests/fixtures/*.bpf.c` and
//!   `tests/fixtures/ebpf_exporter/*.bpf.c` into `$OUT_DIR/examples`,
//!   `$OUT_DIR/fixtures` and `$OUT_DIR/ebpf_exporter`, for the tests and
//!   `make examples`.
//!
//! The BPF headers (bpf_helpers.h, ...) are those of the libbpf source pinned
//! by libbpf-sys, and kernel types come from the committed
//! `bpf/vmlinux/ARCH/vmlinux.h`, so the build does not depend on this
//! machine's kernel or libbpf headers.

use std::env;
use std::ffi::{CStr, CString};
use std::fmt::Write as _;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

fn main() -> Result<()> {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let arch = env::var("CARGO_CFG_TARGET_ARCH")?;
    let compiler = Compiler::new(&root, &out_dir, &arch)?;

    revision(&root);

    // User programs may put a uprobe on this function of ours
    // (`uprobe//proc/self/exe:post_attach_mark`); keep its symbol findable
    // in the dynamic symbol table even in a stripped release binary.
    println!("cargo:rustc-link-arg-bins=-Wl,--export-dynamic-symbol=post_attach_mark");

    let bpf_dir = root.join("bpf");
    let mut table = String::from("&[\n");
    let mut objects = Vec::new();
    for source in bpf_sources(&bpf_dir)? {
        let name = stem(&source)?;
        let spec = bpf_dir.join(format!("{name}.toml"));
        if !spec.exists() {
            bail!(
                "{} has no metric spec: add {}",
                source.display(),
                spec.display()
            );
        }
        println!("cargo:rerun-if-changed={}", spec.display());
        let object = compiler.compile(&source, &out_dir)?;
        let (programs, maps, types) = object_symbols(&object)?;
        writeln!(
            table,
            "    BuiltinSource {{ name: {name:?}, object: include_bytes!({:?}), spec: include_str!({:?}), programs: &{programs:?}, maps: &{maps:?}, types: &{types:?} }},",
            object.display().to_string(),
            spec.display().to_string(),
        )?;
        objects.push(object);
    }
    table.push_str("]\n");
    fs::write(out_dir.join("builtins.rs"), table)?;
    link(&objects, &out_dir.join("builtins.bpf.o"))?;

    for (dir, env_name) in [
        ("examples", "BPFSNAP_EXAMPLE_OBJECTS"),
        ("tests/fixtures", "BPFSNAP_FIXTURE_OBJECTS"),
        // Programs written against ebpf_exporter-style headers beside them.
        (
            "tests/fixtures/ebpf_exporter",
            "BPFSNAP_EBPF_EXPORTER_OBJECTS",
        ),
    ] {
        let objects = out_dir.join(Path::new(dir).file_name().unwrap_or_default());
        fs::create_dir_all(&objects)?;
        for source in bpf_sources(&root.join(dir))? {
            compiler.compile(&source, &objects)?;
        }
        println!("cargo:rustc-env={env_name}={}", objects.display());
    }
    Ok(())
}

/// The commit being built (`git rev-parse --short=12 HEAD`), for
/// bpfsnap_build_info, as BPFSNAP_REVISION; "unknown" outside a checkout.
/// Rerun when HEAD moves, so a build never names another commit.
fn revision(root: &Path) {
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(root)
            .args(args)
            .output()
            .ok()
            .filter(|output| output.status.success())
            .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_string())
    };
    let revision = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=BPFSNAP_REVISION={revision}");
    if let Some(dir) = git(&["rev-parse", "--absolute-git-dir"]) {
        let dir = PathBuf::from(dir);
        println!("cargo:rerun-if-changed={}", dir.join("HEAD").display());
        if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
            println!("cargo:rerun-if-changed={}", dir.join(branch).display());
        }
    }
}

/// clang with the flags every bpfsnap BPF object is built with.
struct Compiler {
    include: Vec<PathBuf>,
    /// `include[system_from..]` are clang's own search directories for the
    /// host, searched last (`-idirafter`).
    system_from: usize,
    target_arch: &'static str,
}

impl Compiler {
    fn new(root: &Path, out_dir: &Path, arch: &str) -> Result<Compiler> {
        let vmlinux = root.join("bpf/vmlinux").join(arch);
        if !vmlinux.join("vmlinux.h").exists() {
            bail!(
                "no {}/vmlinux.h for target architecture {arch}: generate it on such a machine with `make vmlinux`",
                vmlinux.display()
            );
        }
        // libbpf's BPF-side headers, as <bpf/bpf_helpers.h>.
        let headers = out_dir.join("include");
        fs::create_dir_all(headers.join("bpf"))?;
        for (name, contents) in libbpf_sys::API_HEADERS {
            fs::write(headers.join("bpf").join(name), contents)?;
        }
        let target_arch = match arch {
            "x86_64" => "x86",
            "aarch64" => "arm64",
            other => bail!("no BPF target arch for {other}"),
        };
        println!(
            "cargo:rerun-if-changed={}",
            vmlinux.join("vmlinux.h").display()
        );
        println!("cargo:rerun-if-changed={}", root.join("bpf").display());
        let mut include = vec![root.join("bpf"), vmlinux, headers];
        let system_from = include.len();
        include.extend(system_include_dirs()?);
        Ok(Compiler {
            include,
            system_from,
            target_arch,
        })
    }

    /// Compiles `source` (NAME.bpf.c) into `dir/NAME.bpf.o`.
    fn compile(&self, source: &Path, dir: &Path) -> Result<PathBuf> {
        println!("cargo:rerun-if-changed={}", source.display());
        let object = dir.join(format!("{}.bpf.o", stem(source)?));
        let mut clang = Command::new(env::var_os("CLANG").unwrap_or_else(|| "clang".into()));
        clang.args([
            "-g",
            "-O2",
            "-target",
            "bpf",
            "-Wall",
            "-fno-stack-protector",
        ]);
        clang.arg(format!("-D__TARGET_ARCH_{}", self.target_arch));
        for (index, dir) in self.include.iter().enumerate() {
            clang
                .arg(if index < self.system_from {
                    "-I"
                } else {
                    "-idirafter"
                })
                .arg(dir);
        }
        clang.arg("-c").arg(source).arg("-o").arg(&object);
        let output = clang
            .output()
            .context("running clang (is it installed? `make deps`)")?;
        if !output.status.success() {
            bail!(
                "compiling {}:\n{}",
                source.display(),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(object)
    }
}

/// The directories clang searches for <...> headers when compiling for the
/// host, to be searched last by BPF compiles (as libbpf-tools does): `-target
/// bpf` leaves out the multiarch directory, where Debian keeps <asm/...>,
/// which libbpf's <bpf/usdt.bpf.h> reaches through <linux/errno.h>.
fn system_include_dirs() -> Result<Vec<PathBuf>> {
    let output = Command::new(env::var_os("CLANG").unwrap_or_else(|| "clang".into()))
        .args(["-v", "-E", "-x", "c", "/dev/null", "-o", "/dev/null"])
        .output()
        .context("running clang (is it installed? `make deps`)")?;
    let said = String::from_utf8_lossy(&output.stderr);
    let dirs = said
        .lines()
        .skip_while(|line| !line.starts_with("#include <...> search starts here:"))
        .skip(1)
        .take_while(|line| !line.starts_with("End of search list."))
        .map(|line| PathBuf::from(line.trim()))
        .collect();
    Ok(dirs)
}

/// Links the built-ins into one object, which bpfsnap loads in one go when
/// it runs several of them: libbpf then parses the kernel's BTF and resolves
/// CO-RE relocations once, not once per built-in (most of the start-up time).
/// Program, map and global names must therefore be unique across bpf/.
fn link(objects: &[PathBuf], output: &Path) -> Result<()> {
    let output_c = c_path(output)?;
    // SAFETY: the paths are NUL-terminated and outlive the calls; the linker
    // is freed on every path.
    unsafe {
        let linker = libbpf_sys::bpf_linker__new(output_c.as_ptr(), std::ptr::null_mut());
        if linker.is_null() {
            bail!("cannot create the BPF linker for {}", output.display());
        }
        for object in objects {
            let object_c = c_path(object)?;
            if libbpf_sys::bpf_linker__add_file(linker, object_c.as_ptr(), std::ptr::null()) != 0 {
                libbpf_sys::bpf_linker__free(linker);
                bail!(
                    "linking {} with the other built-ins failed (libbpf says why above): \
                     program, map and global variable names must be unique across bpf/",
                    object.display()
                );
            }
        }
        let finalized = libbpf_sys::bpf_linker__finalize(linker);
        libbpf_sys::bpf_linker__free(linker);
        if finalized != 0 {
            bail!("linking the built-ins into {} failed", output.display());
        }
    }
    Ok(())
}

/// The names of the programs and of the declared maps (not .rodata/.bss)
/// in `object` (which parts of the linked object belong to a built-in), and
/// of the types its CO-RE relocations look up in the kernel's BTF.
fn object_symbols(object: &Path) -> Result<(Vec<String>, Vec<String>, Vec<String>)> {
    let path = c_path(object)?;
    let (mut programs, mut maps) = (Vec::new(), Vec::new());
    // SAFETY: the object is closed before returning; the iterators are
    // libbpf's own, on that object.
    unsafe {
        let opened = libbpf_sys::bpf_object__open_file(path.as_ptr(), std::ptr::null());
        if opened.is_null() || libbpf_sys::libbpf_get_error(opened as *const _) != 0 {
            bail!("libbpf cannot open {}", object.display());
        }
        let mut prog = libbpf_sys::bpf_object__next_program(opened, std::ptr::null_mut());
        while !prog.is_null() {
            programs.push(c_name(libbpf_sys::bpf_program__name(prog)));
            prog = libbpf_sys::bpf_object__next_program(opened, prog);
        }
        let mut map = libbpf_sys::bpf_object__next_map(opened, std::ptr::null());
        while !map.is_null() {
            let map_name = c_name(libbpf_sys::bpf_map__name(map));
            if !map_name.contains('.') {
                maps.push(map_name);
            }
            map = libbpf_sys::bpf_object__next_map(opened, map);
        }
        libbpf_sys::bpf_object__close(opened);
    }
    Ok((programs, maps, core_relocated_types(object)?))
}

/// A name libbpf returns (NUL-terminated, owned by the object).
///
/// # Safety
/// `ptr` must point to a NUL-terminated string.
unsafe fn c_name(ptr: *const std::os::raw::c_char) -> String {
    CStr::from_ptr(ptr).to_string_lossy().into_owned()
}

/// The names of the types the CO-RE relocations of `object` are against,
/// read from the relocation records of its .BTF.ext. libbpf looks each up
/// in the kernel's BTF by scanning all of it (≈ 1 ms) once per load: what a
/// load group costs beyond its programs, and what its members can share.
fn core_relocated_types(object: &Path) -> Result<Vec<String>> {
    let path = c_path(object)?;
    let mut types = Vec::new();
    // SAFETY: btf and ext are freed before returning; the raw data is
    // borrowed from ext and read within its bounds.
    unsafe {
        let mut ext: *mut libbpf_sys::btf_ext = std::ptr::null_mut();
        let btf = libbpf_sys::btf__parse_elf(path.as_ptr(), &mut ext);
        if btf.is_null() || libbpf_sys::libbpf_get_error(btf as *const _) != 0 {
            bail!("libbpf cannot read the BTF of {}", object.display());
        }
        if !ext.is_null() && libbpf_sys::libbpf_get_error(ext as *const _) == 0 {
            let mut size = 0u32;
            let data = libbpf_sys::btf_ext__raw_data(ext, &mut size) as *const u8;
            let raw = std::slice::from_raw_parts(data, size as usize);
            for (type_id, kind) in core_relocations(raw) {
                if kind == libbpf_sys::BPF_CORE_TYPE_ID_LOCAL {
                    continue; // resolved in the object's own BTF
                }
                let ty = libbpf_sys::btf__type_by_id(btf, type_id);
                if !ty.is_null() {
                    types.push(c_name(libbpf_sys::btf__name_by_offset(btf, (*ty).name_off)));
                }
            }
            libbpf_sys::btf_ext__free(ext);
        }
        libbpf_sys::btf__free(btf);
    }
    types.sort();
    types.dedup();
    Ok(types)
}

/// (type id, kind) of every CO-RE relocation record in raw .BTF.ext data
/// (the layout of struct btf_ext_header and bpf_core_relo in the kernel's
/// uapi/linux/btf.h and libbpf's libbpf_internal.h), in the byte order of
/// the machine that built it; nothing if it has no CO-RE section.
fn core_relocations(raw: &[u8]) -> Vec<(u32, u32)> {
    let word = |at: usize| -> Option<u32> {
        Some(u32::from_ne_bytes(raw.get(at..at + 4)?.try_into().ok()?))
    };
    let mut found = Vec::new();
    // Header: magic (u16), version, flags (u8 each), hdr_len, then
    // func_info off/len, line_info off/len and, in headers long enough,
    // core_relo off/len; offsets count from the header's end.
    let Some(header_len) = word(4).map(|len| len as usize) else {
        return found;
    };
    if header_len < 32 {
        return found;
    }
    let (Some(offset), Some(len)) = (word(24), word(28)) else {
        return found;
    };
    let start = header_len + offset as usize;
    let end = start + len as usize;
    let Some(record_size) = word(start).map(|size| size as usize) else {
        return found;
    };
    if record_size < 16 {
        return found;
    }
    // Per section: its name's offset, its record count, then the records
    // {insn_off, type_id, access_str_off, kind}.
    let mut at = start + 4;
    while at + 8 <= end {
        let Some(count) = word(at + 4) else { break };
        at += 8;
        for _ in 0..count {
            if let (Some(type_id), Some(kind)) = (word(at + 4), word(at + 12)) {
                found.push((type_id, kind));
            }
            at += record_size;
        }
    }
    found
}

/// `path` for libbpf's C API.
fn c_path(path: &Path) -> Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .with_context(|| format!("a NUL in the path {}", path.display()))
}

fn stem(source: &Path) -> Result<&str> {
    source
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_suffix(".bpf.c"))
        .with_context(|| format!("bad BPF source name {}", source.display()))
}

/// `DIR/*.bpf.c`, sorted so the generated table is stable; none if DIR is absent.
fn bpf_sources(dir: &Path) -> Result<Vec<PathBuf>> {
    println!("cargo:rerun-if-changed={}", dir.display());
    let Ok(entries) = fs::read_dir(dir) else {
        return Ok(Vec::new());
    };
    let mut sources = Vec::new();
    for entry in entries {
        let path = entry?.path();
        if path.to_str().is_some_and(|p| p.ends_with(".bpf.c")) {
            sources.push(path);
        } else if path.extension().is_some_and(|e| e == "h") {
            // Headers beside the sources, included as "NAME.h".
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
    sources.sort();
    Ok(sources)
}
