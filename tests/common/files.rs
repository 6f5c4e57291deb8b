//! Files the tests read or make: directories for configs (as strict as
//! bpfsnap is about code it loads) and outputs, the examples and fixtures
//! with their compiled objects, and paths as arguments.

use std::path::{Path, PathBuf};

/// A fresh directory for configs and objects: writable by its owner only, as
/// bpfsnap requires of directories holding code it loads into the kernel.
pub fn config_dir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    dir
}

/// A fresh directory for outputs; world-writable so unprivileged runs can use it.
pub fn output_dir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).expect("chmod");
    dir
}

/// examples/`config` and its object (`NAME.bpf.o` for `NAME.toml` or
/// `NAME.yaml`) copied into a fresh [`config_dir`]; returns it and the
/// config's path there.
pub fn example_config(config: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = config_dir();
    let name = config.rsplit_once('.').map_or(config, |(name, _)| name);
    let object = format!("{name}.bpf.o");
    std::fs::copy(
        source_file(&format!("examples/{config}")),
        dir.path().join(config),
    )
    .unwrap_or_else(|err| panic!("copy examples/{config}: {err}"));
    std::fs::copy(
        Path::new(env!("BPFSNAP_EXAMPLE_OBJECTS")).join(&object),
        dir.path().join(&object),
    )
    .unwrap_or_else(|err| panic!("copy {object}: {err}"));
    let path = dir.path().join(config);
    (dir, path)
}

/// The compiled example `examples/NAME.bpf.c` (build.rs builds it).
pub fn example_object(name: &str) -> PathBuf {
    Path::new(env!("BPFSNAP_EXAMPLE_OBJECTS")).join(format!("{name}.bpf.o"))
}

/// The compiled fixture `tests/fixtures/NAME.bpf.c` (build.rs builds it).
pub fn fixture_object(name: &str) -> PathBuf {
    Path::new(env!("BPFSNAP_FIXTURE_OBJECTS")).join(format!("{name}.bpf.o"))
}

/// A file of the source tree, e.g. `examples/comm_getpid.toml`.
pub fn source_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

pub fn path_str(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

pub fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    files
}
