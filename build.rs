//! Compiles every built-in BPF program `bpf/NAME.bpf.c` into a CO-RE object and
//! embeds it, with its metric spec `bpf/NAME.toml`, into the binary.
//!
//! Built-ins are data: this script writes `$OUT_DIR/builtins.rs`, a table the
//! library includes, so adding a program means adding two files under `bpf/`.
//! The BPF headers come from the libbpf sources pinned by libbpf-sys (extracted
//! by libbpf-cargo), and kernel types from the committed `bpf/vmlinux/ARCH/`,
//! so the build does not depend on this machine's kernel headers.
//! (Only libbpf-cargo's compile step is used: no per-program skeletons, the
//! objects are opened generically from memory.)

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use libbpf_cargo::SkeletonBuilder;

fn main() -> Result<()> {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let bpf_dir = root.join("bpf");
    let arch = env::var("CARGO_CFG_TARGET_ARCH")?;
    let vmlinux_dir = bpf_dir.join("vmlinux").join(&arch);
    if !vmlinux_dir.join("vmlinux.h").exists() {
        bail!(
            "no {}/vmlinux.h for target architecture {arch}: generate it on such a machine \
             with `make vmlinux`",
            vmlinux_dir.display()
        );
    }
    println!("cargo:rerun-if-changed={}", bpf_dir.display());
    // User programs may put a uprobe on this function of ours
    // (`uprobe//proc/self/exe:post_attach_mark`); keep its symbol findable
    // in the dynamic symbol table even in a stripped release binary.
    println!("cargo:rustc-link-arg-bins=-Wl,--export-dynamic-symbol=post_attach_mark");

    let mut table = String::from("&[\n");
    for source in bpf_sources(&bpf_dir)? {
        println!("cargo:rerun-if-changed={}", source.display());
        let name = source
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".bpf.c"))
            .with_context(|| format!("bad BPF source name {}", source.display()))?;
        let spec = bpf_dir.join(format!("{name}.toml"));
        if !spec.exists() {
            bail!(
                "{} has no metric spec: add {}",
                source.display(),
                spec.display()
            );
        }
        println!("cargo:rerun-if-changed={}", spec.display());

        let object = out_dir.join(format!("{name}.bpf.o"));
        SkeletonBuilder::new()
            .source(&source)
            .obj(&object)
            .clang_args([
                "-Wall".as_ref(),
                "-I".as_ref(),
                bpf_dir.as_os_str(),
                "-I".as_ref(),
                vmlinux_dir.as_os_str(),
            ])
            .build()
            .with_context(|| {
                format!(
                    "compiling {} (is clang installed? `make deps`)",
                    source.display()
                )
            })?;
        writeln!(
            table,
            "    BuiltinSource {{ name: {name:?}, object: include_bytes!({:?}), spec: include_str!({:?}) }},",
            object.display().to_string(),
            spec.display().to_string(),
        )?;
    }
    table.push_str("]\n");
    fs::write(out_dir.join("builtins.rs"), table)?;
    Ok(())
}

/// `bpf/*.bpf.c`, sorted so the generated table is stable.
fn bpf_sources(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut sources = Vec::new();
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.to_str().is_some_and(|p| p.ends_with(".bpf.c")) {
            sources.push(path);
        }
    }
    sources.sort();
    Ok(sources)
}
