//! clang with the flags every bpfsnap BPF object is built with, and the
//! BPF C sources of a directory (for build.rs).

use std::env;
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

include!("bpf_flags.rs");

/// clang with the flags every bpfsnap BPF object is built with.
pub struct Compiler {
    flags: Vec<OsString>,
}

impl Compiler {
    /// The headers the built-ins compile with, also bundled for `bpfsnap
    /// build` into `out_dir/headers.bundle.gz` (see [`bundle_headers`]).
    pub fn new(root: &Path, out_dir: &Path, arch: &str) -> Result<Compiler> {
        let vmlinux = root.join("bpf/vmlinux").join(arch);
        if !vmlinux.join("vmlinux.h").exists() {
            bail!(
                "no {}/vmlinux.h for target architecture {arch}: generate it on such a machine with `make vmlinux`",
                vmlinux.display()
            );
        }
        println!(
            "cargo:rerun-if-changed={}",
            vmlinux.join("vmlinux.h").display()
        );
        println!("cargo:rerun-if-changed={}", root.join("bpf").display());
        // libbpf's BPF-side headers, as <bpf/bpf_helpers.h>.
        let headers = out_dir.join("include");
        fs::create_dir_all(headers.join("bpf"))?;
        for (name, contents) in libbpf_sys::API_HEADERS {
            fs::write(headers.join("bpf").join(name), contents)?;
        }
        bundle_headers(root, &vmlinux, out_dir)?;
        let target_arch = match arch {
            "x86_64" => "x86",
            "aarch64" => "arm64",
            other => bail!("no BPF target arch for {other}"),
        };
        let mut flags: Vec<OsString> = BPF_CFLAGS.map(OsString::from).into();
        flags.push(format!("-D__TARGET_ARCH_{target_arch}").into());
        for dir in [root.join("bpf"), vmlinux, headers] {
            flags.extend(["-I".into(), dir.into_os_string()]);
        }
        // clang's own directories for the target (then the host's), searched last.
        for dir in system_include_dirs()? {
            flags.extend(["-idirafter".into(), dir.into_os_string()]);
        }
        Ok(Compiler { flags })
    }

    /// Compiles `source` (NAME.bpf.c) into `dir/NAME.bpf.o`.
    pub fn compile(&self, source: &Path, dir: &Path) -> Result<PathBuf> {
        println!("cargo:rerun-if-changed={}", source.display());
        let object = dir.join(format!("{}.bpf.o", stem(source)?));
        let output = clang()
            .args(&self.flags)
            .arg("-c")
            .arg(source)
            .arg("-o")
            .arg(&object)
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

/// `$CLANG`, or clang from PATH.
fn clang() -> Command {
    Command::new(env::var_os("CLANG").unwrap_or_else(|| "clang".into()))
}

/// The directories clang searches for <...> headers when compiling for the
/// cargo target (`$TARGET`, e.g. /usr/include/aarch64-linux-gnu in a cross
/// build with Debian's arm64 multiarch headers), then those it searches for
/// the host, to be searched last by BPF compiles (as libbpf-tools does):
/// `-target bpf` leaves out the multiarch directory, where Debian keeps
/// <asm/...>, which libbpf's <bpf/usdt.bpf.h> reaches through
/// <linux/errno.h>.
fn system_include_dirs() -> Result<Vec<PathBuf>> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    let target = env::var("TARGET").ok();
    for target in [target.as_deref(), None] {
        let mut command = clang();
        if let Some(target) = target {
            command.arg(format!("--target={target}"));
        }
        let output = command
            .args(["-v", "-E", "-x", "c", "/dev/null", "-o", "/dev/null"])
            .output()
            .context("running clang (is it installed? `make deps`)")?;
        let said = String::from_utf8_lossy(&output.stderr);
        for dir in said
            .lines()
            .skip_while(|line| !line.starts_with("#include <...> search starts here:"))
            .skip(1)
            .take_while(|line| !line.starts_with("End of search list."))
            .map(|line| PathBuf::from(line.trim()))
        {
            if !dirs.contains(&dir) {
                dirs.push(dir);
            }
        }
    }
    Ok(dirs)
}

pub fn stem(source: &Path) -> Result<&str> {
    source
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_suffix(".bpf.c"))
        .with_context(|| format!("bad BPF source name {}", source.display()))
}

/// `DIR/*.bpf.c`, sorted so the generated table is stable; none if DIR is absent.
pub fn bpf_sources(dir: &Path) -> Result<Vec<PathBuf>> {
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

/// Writes `out_dir/headers.bundle.gz`: every header a user's program may
/// include — `vmlinux.h` of the target architecture, libbpf's `bpf/*.h`, and
/// bpfsnap's own `bpfsnap.h` and `block.h` — for `bpfsnap build` to unpack.
/// Each entry: its path's length and bytes, then its contents' length and
/// bytes (lengths as u32 little-endian), gzipped (vmlinux.h is 2.7 MB).
fn bundle_headers(root: &Path, vmlinux: &Path, out_dir: &Path) -> Result<()> {
    use std::io::Write;

    let mut entries: Vec<(String, Vec<u8>)> =
        vec![("vmlinux.h".into(), fs::read(vmlinux.join("vmlinux.h"))?)];
    for name in ["bpfsnap.h", "block.h"] {
        entries.push((name.into(), fs::read(root.join("bpf").join(name))?));
    }
    for (name, contents) in libbpf_sys::API_HEADERS {
        entries.push((format!("bpf/{name}"), contents.as_bytes().to_vec()));
    }
    let file = fs::File::create(out_dir.join("headers.bundle.gz"))?;
    let mut gz = flate2::write::GzEncoder::new(file, flate2::Compression::best());
    for (path, contents) in &entries {
        for bytes in [path.as_bytes(), contents.as_slice()] {
            gz.write_all(&u32::try_from(bytes.len())?.to_le_bytes())?;
            gz.write_all(bytes)?;
        }
    }
    gz.finish()?;
    Ok(())
}
