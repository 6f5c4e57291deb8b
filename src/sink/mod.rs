//! Sinks: where the encoded text goes.
//!
//! A textfile is replaced atomically, the way node_exporter's textfile collector
//! needs it: a temporary file in the target's own directory whose name does not
//! end in `.prom` (the collector would read it), written, fsynced, made 0644,
//! renamed over the target, and the directory fsynced so the rename survives a
//! crash. Readers see the old file or the new one, never a part. On any error
//! the temporary file is removed and the old file stays as it was.
//!
//! A large family's text goes into the temporary file while it is encoded
//! ([`Partial`]).

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::exposition::Held;

pub mod collide;
pub mod lock;
mod partial;

pub use partial::Partial;

/// Mode of the written file: node_exporter often runs as another user.
pub const FILE_MODE: u32 = 0o644;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sink {
    Stdout,
    Textfile(PathBuf),
    /// An existing character device or FIFO (`/dev/null`, `/dev/stderr`, a
    /// named pipe): written in place like standard output. Replacing it by
    /// rename, as a textfile is, would put a regular file where the device
    /// was (as root, /dev/null itself).
    Stream(PathBuf),
}

impl Sink {
    /// `-` is standard output, an existing character device or FIFO is
    /// written in place, anything else is a textfile.
    pub fn from_arg(arg: &Path) -> Sink {
        use std::os::unix::fs::FileTypeExt;
        if arg == Path::new("-") {
            return Sink::Stdout;
        }
        match fs::metadata(arg).map(|meta| meta.file_type()) {
            Ok(kind) if kind.is_char_device() || kind.is_fifo() => Sink::Stream(arg.to_path_buf()),
            _ => Sink::Textfile(arg.to_path_buf()),
        }
    }

    /// Checks, before any probe is loaded, that writing will be possible, so a
    /// 30 s window is not wasted on a typo.
    pub fn check(&self) -> Result<()> {
        match self {
            Sink::Stdout => Ok(()),
            Sink::Stream(path) => check_writable(path),
            Sink::Textfile(path) => {
                use std::os::unix::fs::FileTypeExt;
                let (dir, _) = split(path)?;
                if fs::metadata(path).is_ok_and(|meta| {
                    meta.file_type().is_block_device() || meta.file_type().is_socket()
                }) {
                    bail!(
                        "--output {} is a block device or a socket: give a file name (or - for standard output)",
                        path.display()
                    );
                }
                if path.is_dir() {
                    bail!(
                        "--output {} is a directory: give a file name such as {}/bpfsnap.prom",
                        path.display(),
                        path.display()
                    );
                }
                if !dir.is_dir() {
                    bail!(
                        "output directory {} does not exist: create it (mkdir -p {}) or choose another --output",
                        dir.display(),
                        dir.display()
                    );
                }
                // Creating (and dropping) a temporary file is the only honest test:
                // permissions, read-only mounts, ACLs and quotas all show here.
                // An unnamed one (O_TMPFILE where the file system has it): a
                // SIGKILL during the test then leaves nothing in the directory.
                tempfile::tempfile_in(dir)
                    .map(drop)
                    .with_context(|| format!("cannot create a file in {}", dir.display()))
            }
        }
    }

    /// Fails early if another `*.prom` file beside a textfile output defines
    /// one of `families`, which are not this output's own series (a config's
    /// metrics; see [`collide`]).
    pub fn check_families(&self, families: &[&str]) -> Result<()> {
        match self {
            Sink::Stdout | Sink::Stream(_) => Ok(()),
            Sink::Textfile(path) => collide::check(
                path,
                &families
                    .iter()
                    .map(|name| (*name, collide::Family::default()))
                    .collect(),
            ),
        }
    }

    /// The `output` label value the self metrics of this output carry, if
    /// it is a textfile (see [`collide`]): where several outputs may meet.
    pub fn output_label(&self) -> Option<String> {
        match self {
            Sink::Textfile(path) => Some(collide::output_name(path)),
            Sink::Stdout | Sink::Stream(_) => None,
        }
    }

    /// The text of the file a textfile output replaces, if there is one:
    /// what its counters carry on from. Only call this holding the output's
    /// lock.
    pub fn previous_text(&self) -> Result<Option<String>> {
        let Sink::Textfile(path) = self else {
            return Ok(None);
        };
        match fs::read(path) {
            Ok(bytes) => Ok(Some(String::from_utf8_lossy(&bytes).into_owned())),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(err).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Removes temporary files a killed earlier run left beside a textfile
    /// output. Only call this holding the output's lock: then no other
    /// writer's temporary file can be among them.
    pub fn remove_leftovers(&self) -> Result<()> {
        let Sink::Textfile(path) = self else {
            return Ok(());
        };
        let (dir, name) = split(path)?;
        // Only regular files of ours: a symlink or someone else's file with
        // a matching name is not a leftover of ours, and is left alone.
        // SAFETY: plain getter.
        let me = unsafe { libc::geteuid() };
        let ours = |path: &PathBuf| {
            use std::os::unix::fs::MetadataExt;
            fs::symlink_metadata(path).is_ok_and(|meta| meta.is_file() && meta.uid() == me)
        };
        for leftover in leftover_temp_files(dir, &name.to_string_lossy())
            .into_iter()
            .filter(ours)
        {
            fs::remove_file(&leftover).with_context(|| {
                format!("removing {}, left by an earlier run", leftover.display())
            })?;
        }
        Ok(())
    }

    /// Writes `text`'s parts one after another, never joined: a million-key
    /// map's family is most of a 60 MB text, which joining would copy.
    pub fn write_parts(&self, text: &Text<'_>) -> Result<()> {
        self.finish(None, text)
    }

    /// For a textfile, its temporary file, opened for the exposition to
    /// spill its large families into as it encodes them ([`Partial`]);
    /// None for the other sinks, which are written in one go.
    pub fn start(&self) -> Result<Option<Partial>> {
        match self {
            Sink::Textfile(path) => open_partial(path).map(Some),
            Sink::Stdout | Sink::Stream(_) => Ok(None),
        }
    }

    /// [`Sink::write_parts`] after what `partial` holds (from
    /// [`Sink::start`]). `text.families` lists the spilled families too,
    /// for the collision check, which comes before the file is replaced.
    pub fn finish(&self, partial: Option<Partial>, text: &Text<'_>) -> Result<()> {
        let parts = text.parts.iter().map(|part| part.as_bytes());
        match self {
            Sink::Stdout => write_stdout(parts),
            Sink::Stream(path) => write_stream(path, parts),
            Sink::Textfile(path) => {
                // Before the file is replaced: a collision means
                // node_exporter would silently drop data.
                collide::check(path, &text.families)?;
                let partial = match partial {
                    Some(partial) => partial,
                    None => open_partial(path)?,
                };
                partial.commit(path, parts)
            }
        }
    }
}

/// Text to write: its parts, in order, and the metric families it defines
/// (for the collision check).
#[derive(Debug, Default)]
pub struct Text<'a> {
    pub parts: Vec<&'a str>,
    pub families: std::collections::BTreeMap<&'a str, collide::Family<'a>>,
}

/// From (family name, family text) pairs, in order.
impl<'a> FromIterator<(&'a str, &'a str)> for Text<'a> {
    fn from_iter<I: IntoIterator<Item = (&'a str, &'a str)>>(families: I) -> Self {
        let mut text = Text::default();
        for (name, part) in families {
            text.families
                .insert(name, collide::Family::at_start_of(part));
            text.parts.push(part);
        }
        text
    }
}

/// What an exposition left to write: the families it held, written
/// family by family, never joined (a big map's family is most of the text,
/// and joining would copy it), and for the collision check every family's
/// head, the spilled ones' too.
impl<'a> From<&'a Held> for Text<'a> {
    fn from(held: &'a Held) -> Self {
        let mut text: Text = (held.families.iter())
            .map(|(name, text)| (name.as_str(), text.as_str()))
            .collect();
        for (name, head) in &held.spilled {
            (text.families).insert(name, collide::Family::at_start_of(head));
        }
        text
    }
}

impl<'a> Text<'a> {
    /// One text in one piece, its families found by reading it.
    pub fn whole(text: &'a str) -> Text<'a> {
        Text {
            parts: vec![text],
            families: collide::families(text),
        }
    }
}

/// Writes every part, in order, to `out`.
fn write_all_parts<'p>(
    out: &mut impl Write,
    parts: impl IntoIterator<Item = &'p [u8]>,
) -> io::Result<()> {
    parts.into_iter().try_for_each(|part| out.write_all(part))
}

fn write_stdout<'p>(parts: impl IntoIterator<Item = &'p [u8]>) -> Result<()> {
    write_in_place(Ok(io::stdout().lock()), parts, || {
        "writing to standard output".to_string()
    })
}

/// A device or FIFO, opened for writing (not created, not truncated) and
/// written like standard output.
fn write_stream<'p>(path: &Path, parts: impl IntoIterator<Item = &'p [u8]>) -> Result<()> {
    let out = fs::OpenOptions::new().write(true).open(path);
    write_in_place(out, parts, || format!("writing to {}", path.display()))
}

/// Writes the parts to `out` as they come (no temporary file, no rename);
/// a reader that went away, as with `bpfsnap run | head`, is not an error.
fn write_in_place<'p>(
    out: io::Result<impl Write>,
    parts: impl IntoIterator<Item = &'p [u8]>,
    what: impl FnOnce() -> String,
) -> Result<()> {
    let written =
        out.and_then(|mut out| write_all_parts(&mut out, parts).and_then(|()| out.flush()));
    match written {
        Err(err) if err.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => other.with_context(what),
    }
}

/// Whether this process may write `path` (without opening it: opening a
/// FIFO for writing waits for a reader).
fn check_writable(path: &Path) -> Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .with_context(|| format!("--output {}: a NUL in the path", path.display()))?;
    // SAFETY: a NUL-terminated path; access() only reads it.
    if unsafe { libc::access(c_path.as_ptr(), libc::W_OK) } != 0 {
        let err = io::Error::last_os_error();
        bail!("cannot write to {}: {err}", path.display());
    }
    Ok(())
}

/// (directory, file name) of an output path; a bare name is in `.`.
fn split(path: &Path) -> Result<(&Path, &std::ffi::OsStr)> {
    let name = path
        .file_name()
        .with_context(|| format!("--output {} has no file name", path.display()))?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    Ok((dir, name))
}

/// A new, exclusively created (O_EXCL: a planted symlink is never followed)
/// file `.NAME.XXXXXX.tmp` beside `target`; deleted when dropped.
fn temp_file(dir: &Path, target: &Path) -> Result<tempfile::NamedTempFile> {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .tempfile_in(dir)
        .with_context(|| format!("cannot create a file in {}", dir.display()))
}

/// Replaces `path` with `text` atomically (see the module docs).
pub fn write_atomic(path: &Path, text: &[u8]) -> Result<()> {
    write_atomic_parts(path, [text])
}

/// [`write_atomic`] of the parts one after another.
pub fn write_atomic_parts<'p>(
    path: &Path,
    parts: impl IntoIterator<Item = &'p [u8]>,
) -> Result<()> {
    open_partial(path)?.commit(path, parts)
}

/// A new [`Partial`] for `path`: refuses a directory or anything but a
/// regular file there, creates the temporary file beside it.
fn open_partial(path: &Path) -> Result<Partial> {
    let (dir, _) = split(path)?;
    if path.is_dir() {
        bail!("cannot write {}: it is a directory", path.display());
    }
    // Renaming over a device or FIFO would put a file in its place.
    if fs::metadata(path).is_ok_and(|meta| !meta.is_file()) {
        bail!(
            "cannot replace {}: it is not a regular file",
            path.display()
        );
    }
    Ok(Partial::new(temp_file(dir, path)?))
}

/// Temporary files of ours left in `dir` (by a killed process).
pub fn leftover_temp_files(dir: &Path, target_name: &str) -> Vec<PathBuf> {
    let prefix = format!(".{target_name}.");
    fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            name.starts_with(&prefix) && name.ends_with(".tmp")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exposition::Spill;
    use std::fs::Permissions;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    /// A directory that is read-only even for root: a read-only bind mount when
    /// we may mount, else mode 0555 (which binds non-root users).
    struct ReadOnlyDir {
        path: PathBuf,
        mounted: bool,
    }

    impl ReadOnlyDir {
        fn new(path: &Path) -> ReadOnlyDir {
            let target = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
            let bind = |flags| unsafe {
                libc::mount(
                    target.as_ptr(),
                    target.as_ptr(),
                    std::ptr::null(),
                    flags,
                    std::ptr::null(),
                )
            };
            let mounted = unsafe { libc::geteuid() } == 0
                && bind(libc::MS_BIND) == 0
                && bind(libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY) == 0;
            if !mounted {
                fs::set_permissions(path, Permissions::from_mode(0o555)).unwrap();
            }
            ReadOnlyDir {
                path: path.to_path_buf(),
                mounted,
            }
        }
    }

    impl Drop for ReadOnlyDir {
        fn drop(&mut self) {
            let target = std::ffi::CString::new(self.path.as_os_str().as_encoded_bytes()).unwrap();
            if self.mounted {
                unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
            }
            let _ = fs::set_permissions(&self.path, Permissions::from_mode(0o755));
        }
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// Parts are written one after another, and the collision check goes by
    /// the families the text says it defines.
    #[test]
    fn parts_are_written_in_order_and_their_families_checked() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("ours.prom");
        let sink = Sink::Textfile(target.clone());
        let parts = ["# TYPE a counter\na 1\n", "# TYPE b gauge\nb 2\n"];
        let text: Text = [("a", parts[0]), ("b", parts[1])].into_iter().collect();
        sink.write_parts(&text).unwrap();
        assert_eq!(fs::read_to_string(&target).unwrap(), parts.concat());

        fs::write(dir.path().join("other.prom"), "# TYPE b gauge\nb 3\n").unwrap();
        let err = sink.write_parts(&text).unwrap_err();
        assert!(format!("{err:#}").contains("other.prom"), "{err:#}");
        assert_eq!(fs::read_to_string(&target).unwrap(), parts.concat());
        assert_eq!(entries(dir.path()), ["other.prom", "ours.prom"]);
    }

    /// What was spilled comes first and the parts after it; the file is
    /// replaced only at finish, and not at all when a spill failed or a
    /// spilled family collides (the temporary file is removed).
    #[test]
    fn spilled_text_comes_first_and_replaces_the_file_only_at_finish() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("ours.prom");
        fs::write(&target, "old 1\n").unwrap();
        let sink = Sink::Textfile(target.clone());
        let (spilled, part) = ("# TYPE a counter\na 1\n", "# TYPE b gauge\nb 2\n");
        let mut text: Text = [("b", part)].into_iter().collect();
        text.families
            .insert("a", collide::Family::at_start_of(spilled));
        let spill = |then: &dyn Fn(&mut Partial)| {
            let mut partial = sink.start().unwrap().unwrap();
            partial.spill(&mut spilled[..9].to_string());
            partial.spill(&mut spilled[9..].to_string());
            then(&mut partial);
            assert_eq!(fs::read_to_string(&target).unwrap(), "old 1\n");
            let temps = entries(dir.path())
                .into_iter()
                .filter(|n| n.starts_with(".ours.prom."));
            assert_eq!(temps.count(), 1, "one temporary file beside");
            partial
        };

        let failed = spill(&|partial| {
            partial.error = Some(io::Error::from_raw_os_error(libc::ENOSPC));
        });
        let err = format!("{:#}", sink.finish(Some(failed), &text).unwrap_err());
        assert!(
            err.contains(".ours.prom.") && err.contains("No space left"),
            "{err}"
        );
        assert_eq!(fs::read_to_string(&target).unwrap(), "old 1\n");
        assert_eq!(entries(dir.path()), ["ours.prom"]);

        fs::write(dir.path().join("other.prom"), "# TYPE a gauge\na 3\n").unwrap();
        let colliding = spill(&|_| ());
        let err = format!("{:#}", sink.finish(Some(colliding), &text).unwrap_err());
        assert!(err.contains("other.prom"), "{err}");
        assert_eq!(fs::read_to_string(&target).unwrap(), "old 1\n");
        assert_eq!(entries(dir.path()), ["other.prom", "ours.prom"]);

        fs::remove_file(dir.path().join("other.prom")).unwrap();
        sink.finish(Some(spill(&|_| ())), &text).unwrap();
        assert_eq!(
            fs::read_to_string(&target).unwrap(),
            [spilled, part].concat()
        );
        assert_eq!(fs::metadata(&target).unwrap().mode() & 0o777, 0o644);
        assert_eq!(entries(dir.path()), ["ours.prom"]);
    }

    /// A device or FIFO given as the output is written in place: renaming
    /// a file over it (as over a textfile) would replace /dev/null itself.
    #[test]
    fn devices_and_fifos_are_written_in_place_never_replaced() {
        use std::os::unix::fs::FileTypeExt;
        let null = Path::new("/dev/null");
        let sink = Sink::from_arg(null);
        assert_eq!(sink, Sink::Stream(null.to_path_buf()));
        sink.check().unwrap();
        sink.write_parts(&Text::whole("a 1\n")).unwrap();
        assert!(fs::metadata(null).unwrap().file_type().is_char_device());
        let err = write_atomic(null, b"a 1\n").unwrap_err();
        assert!(format!("{err:#}").contains("not a regular file"), "{err:#}");
        assert!(fs::metadata(null).unwrap().file_type().is_char_device());

        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("metrics.fifo");
        let c_fifo = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c_fifo.as_ptr(), 0o600) }, 0);
        let reader = {
            let fifo = fifo.clone();
            std::thread::spawn(move || fs::read_to_string(fifo).unwrap())
        };
        let sink = Sink::from_arg(&fifo);
        assert_eq!(sink, Sink::Stream(fifo.clone()));
        sink.write_parts(&Text::whole("b 2\n")).unwrap();
        assert_eq!(reader.join().unwrap(), "b 2\n");
        assert!(fs::metadata(&fifo).unwrap().file_type().is_fifo());
        assert_eq!(entries(dir.path()), ["metrics.fifo"], "no temporary file");

        // A regular file and a path yet to be made stay textfiles.
        let file = dir.path().join("bpfsnap.prom");
        assert_eq!(Sink::from_arg(&file), Sink::Textfile(file.clone()));
        fs::write(&file, "").unwrap();
        assert_eq!(Sink::from_arg(&file), Sink::Textfile(file));
    }

    #[test]
    fn writes_0644_and_replaces_atomically_leaving_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("bpfsnap.prom");
        write_atomic(&target, b"a 1\n").unwrap();
        write_atomic(&target, b"a 2\n").unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"a 2\n");
        assert_eq!(fs::metadata(&target).unwrap().mode() & 0o777, 0o644);
        assert_eq!(entries(dir.path()), ["bpfsnap.prom"]);
    }

    #[test]
    fn temp_names_never_end_in_prom() {
        let dir = tempfile::tempdir().unwrap();
        for _ in 0..100 {
            let temp = temp_file(dir.path(), &dir.path().join("x.prom")).unwrap();
            let name = temp
                .path()
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned();
            assert!(
                !name.ends_with(".prom") && name.starts_with(".x.prom.") && name.ends_with(".tmp"),
                "{name}"
            );
        }
        assert!(entries(dir.path()).is_empty());
    }

    #[test]
    fn read_only_directory_leaves_the_old_file_intact() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("bpfsnap.prom");
        fs::write(&target, b"old 1\n").unwrap();
        let read_only = ReadOnlyDir::new(dir.path());
        let err = write_atomic(&target, b"new 2\n").unwrap_err();
        assert!(
            format!("{err:#}").contains("cannot create a file in"),
            "{err:#}"
        );
        let check = Sink::Textfile(target.clone()).check().unwrap_err();
        assert!(
            format!("{check:#}").contains("cannot create a file in"),
            "{check:#}"
        );
        drop(read_only);
        assert_eq!(fs::read(&target).unwrap(), b"old 1\n");
        assert_eq!(entries(dir.path()), ["bpfsnap.prom"]);
    }

    #[test]
    fn missing_directory_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("nope/bpfsnap.prom");
        let err = format!("{:#}", Sink::Textfile(target.clone()).check().unwrap_err());
        assert!(err.contains("does not exist: create it"), "{err}");
        assert!(write_atomic(&target, b"x").is_err());
        assert!(!target.exists());
    }

    #[test]
    fn target_that_is_a_directory_is_refused_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("d.prom");
        fs::create_dir(&target).unwrap();
        let err = format!("{:#}", Sink::Textfile(target.clone()).check().unwrap_err());
        assert!(err.contains("is a directory"), "{err}");
        assert!(write_atomic(&target, b"x").is_err());
        assert!(target.is_dir());
        assert_eq!(entries(dir.path()), ["d.prom"]);
    }

    #[test]
    fn dash_is_stdout() {
        assert_eq!(Sink::from_arg(Path::new("-")), Sink::Stdout);
        assert_eq!(
            Sink::from_arg(Path::new("a.prom")),
            Sink::Textfile("a.prom".into())
        );
        assert_eq!(split(Path::new("a.prom")).unwrap().0, Path::new("."));
    }
}
