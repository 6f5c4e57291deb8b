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
//! machine's kernel or libbpf headers (clang: build/compile.rs). libbpf-rs
//! links the built-ins and names their programs, maps and CO-RE relocated
//! types (build/core_relocations.rs).

#[path = "build/compile.rs"]
mod compile;
#[path = "build/core_relocations.rs"]
mod core_relocations;

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use libbpf_rs::{Linker, ObjectBuilder};

use compile::{bpf_sources, stem, Compiler};

fn main() -> Result<()> {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let compiler = Compiler::new(&root, &out_dir, &env::var("CARGO_CFG_TARGET_ARCH")?)?;

    revision(&root);

    // User programs may put a uprobe on this function of ours
    // (`uprobe//proc/self/exe:post_attach_mark`); keep its symbol findable
    // in the dynamic symbol table even in a stripped release binary.
    println!("cargo:rustc-link-arg-bins=-Wl,--export-dynamic-symbol=post_attach_mark");

    builtins(&compiler, &root.join("bpf"), &out_dir)?;
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

/// Compiles the built-ins, writes their table `$OUT_DIR/builtins.rs` (see
/// src/builtin.rs) and links them into `$OUT_DIR/builtins.bpf.o`.
fn builtins(compiler: &Compiler, bpf_dir: &Path, out_dir: &Path) -> Result<()> {
    let mut table = String::from("&[\n");
    let mut objects = Vec::new();
    for source in bpf_sources(bpf_dir)? {
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
        let object = compiler.compile(&source, out_dir)?;
        let (programs, maps) = object_names(&object)?;
        let types = core_relocations::relocated_types(&object)?;
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
    link(&objects, &out_dir.join("builtins.bpf.o"))
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
    // A build without .git (debian/rules, from a source package) says it.
    println!("cargo:rerun-if-env-changed=BPFSNAP_REVISION");
    let revision = env::var("BPFSNAP_REVISION")
        .ok()
        .filter(|revision| !revision.is_empty())
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=BPFSNAP_REVISION={revision}");
    if let Some(dir) = git(&["rev-parse", "--absolute-git-dir"]) {
        let dir = PathBuf::from(dir);
        println!("cargo:rerun-if-changed={}", dir.join("HEAD").display());
        if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
            println!("cargo:rerun-if-changed={}", dir.join(branch).display());
        }
    }
}

/// Links the built-ins into one object, which bpfsnap loads in one go when
/// it runs several of them: libbpf then parses the kernel's BTF and resolves
/// CO-RE relocations once, not once per built-in (most of the start-up time).
/// Program, map and global names must therefore be unique across bpf/.
fn link(objects: &[PathBuf], output: &Path) -> Result<()> {
    let mut linker = Linker::new(output)
        .with_context(|| format!("cannot create the BPF linker for {}", output.display()))?;
    for object in objects {
        linker.add_file(object).with_context(|| {
            format!(
                "linking {} with the other built-ins failed (libbpf says why above): \
                 program, map and global variable names must be unique across bpf/",
                object.display()
            )
        })?;
    }
    linker
        .link()
        .with_context(|| format!("linking the built-ins into {} failed", output.display()))
}

/// The names of the programs and of the declared maps (not .rodata/.bss)
/// in `object`: which parts of the linked object belong to a built-in.
fn object_names(object: &Path) -> Result<(Vec<String>, Vec<String>)> {
    let opened = ObjectBuilder::default()
        .open_file(object)
        .with_context(|| format!("libbpf cannot open {}", object.display()))?;
    let name = |name: &std::ffi::OsStr| name.to_string_lossy().into_owned();
    let programs = opened.progs().map(|prog| name(prog.name())).collect();
    let maps = opened
        .maps()
        .map(|map| name(map.name()))
        .filter(|map| !map.contains('.'))
        .collect();
    Ok((programs, maps))
}
