//! `bpfsnap build PROG.bpf.c`: compiles a user's BPF program into
//! `PROG.bpf.o` beside it, as the built-ins are compiled: clang with
//! `-target bpf -g -O2` (BTF for CO-RE) and the headers bpfsnap embeds —
//! `vmlinux.h` of the architecture this bpfsnap was built for, the BPF-side
//! headers of the libbpf it links (`<bpf/bpf_helpers.h>`, …), and its own
//! `bpfsnap.h` and `block.h` — unpacked into a temporary directory. So the
//! one command that bpfsnap's hint for a missing object names works on a
//! machine with clang and nothing else (no kernel headers, no libbpf-dev).

use std::ffi::OsString;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

include!("../build/bpf_flags.rs");

/// The headers, gzipped by build.rs (build/compile.rs `bundle_headers`).
static HEADERS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/headers.bundle.gz"));

/// The `-D__TARGET_ARCH_…` the embedded `vmlinux.h` goes with.
const TARGET_ARCH: &str = if cfg!(target_arch = "aarch64") {
    "arm64"
} else {
    "x86"
};

#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// The program, NAME.bpf.c.
    pub source: PathBuf,
    /// Where the object goes (default: NAME.bpf.o beside the source).
    pub output: Option<PathBuf>,
    /// More directories for `#include` (an ebpf_exporter checkout's
    /// `include/`, say), searched after the source's own directory.
    pub include: Vec<PathBuf>,
}

/// Compiles the program; returns the object's path.
pub fn build(options: &BuildOptions) -> Result<PathBuf> {
    let source = &options.source;
    std::fs::metadata(source).map_err(|err| {
        crate::BadInput::wrap(anyhow::anyhow!("cannot read {}: {err}", source.display()))
    })?;
    let output = match &options.output {
        Some(output) => output.clone(),
        None => default_output(source).map_err(crate::BadInput::wrap)?,
    };
    let clang = clang();
    let headers = tempfile::Builder::new()
        .prefix("bpfsnap-build-")
        .tempdir()
        .context("making a directory for the headers")?;
    unpack(HEADERS, headers.path())?;
    let mut command = Command::new(&clang);
    command.args(BPF_CFLAGS);
    command.arg(format!("-D__TARGET_ARCH_{TARGET_ARCH}"));
    let source_dir = source.parent().filter(|dir| !dir.as_os_str().is_empty());
    let dirs = source_dir
        .into_iter()
        .chain(options.include.iter().map(PathBuf::as_path));
    for dir in dirs.chain([headers.path()]) {
        command.arg("-I").arg(dir);
    }
    command.arg("-c").arg(source).arg("-o").arg(&output);
    let result = command.output().map_err(|err| {
        anyhow::anyhow!(
            "cannot run {} ({err}): install clang (apt install clang) or set BPFSNAP_CLANG",
            clang.to_string_lossy()
        )
    })?;
    if !result.status.success() {
        bail!(
            "clang could not compile {} ({}); what it said:\n{}",
            source.display(),
            result.status,
            String::from_utf8_lossy(&result.stderr).trim_end()
        );
    }
    Ok(output)
}

/// NAME.bpf.o beside NAME.bpf.c.
fn default_output(source: &Path) -> Result<PathBuf> {
    let name = source.file_name().and_then(|name| name.to_str());
    match name.and_then(|name| name.strip_suffix(".bpf.c")) {
        Some(stem) => Ok(source.with_file_name(format!("{stem}.bpf.o"))),
        None => bail!(
            "{} is not named NAME.bpf.c: rename it, or say where the object goes with --output",
            source.display()
        ),
    }
}

/// `BPFSNAP_CLANG`, else `clang` from PATH.
fn clang() -> OsString {
    std::env::var_os("BPFSNAP_CLANG").unwrap_or_else(|| "clang".into())
}

/// Writes the bundle's headers under `dir` (entries: path, contents; each
/// a u32 little-endian length and its bytes).
fn unpack(bundle: &[u8], dir: &Path) -> Result<()> {
    let mut bytes = Vec::new();
    flate2::read::GzDecoder::new(bundle)
        .read_to_end(&mut bytes)
        .context("unpacking the embedded headers")?;
    let mut rest = bytes.as_slice();
    while !rest.is_empty() {
        let path = take(&mut rest)?;
        let contents = take(&mut rest)?;
        let path = dir.join(std::str::from_utf8(path).context("a header's name")?);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// The next length-prefixed entry of the bundle.
fn take<'a>(rest: &mut &'a [u8]) -> Result<&'a [u8]> {
    let (len, tail) = rest
        .split_first_chunk::<4>()
        .context("the embedded headers are cut short")?;
    let len = u32::from_le_bytes(*len) as usize;
    let entry = tail
        .get(..len)
        .context("the embedded headers are cut short")?;
    *rest = &tail[len..];
    Ok(entry)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embeds_every_header_a_program_includes() {
        let dir = tempfile::tempdir().unwrap();
        unpack(HEADERS, dir.path()).unwrap();
        for header in [
            "vmlinux.h",
            "bpfsnap.h",
            "block.h",
            "bpf/bpf_helpers.h",
            "bpf/bpf_tracing.h",
            "bpf/bpf_core_read.h",
            "bpf/bpf_endian.h",
        ] {
            assert!(dir.path().join(header).is_file(), "{header}");
        }
    }

    #[test]
    fn names_the_object_beside_the_source() {
        assert_eq!(
            default_output(Path::new("dir/prog.bpf.c")).unwrap(),
            PathBuf::from("dir/prog.bpf.o")
        );
        let err = default_output(Path::new("prog.c")).unwrap_err().to_string();
        assert!(err.contains("--output"), "{err}");
    }

    #[test]
    fn a_cut_bundle_is_an_error() {
        let mut rest: &[u8] = &[5, 0, 0, 0, b'a'];
        assert!(take(&mut rest).is_err());
    }
}
