//! Block I/O the test alone makes: a loop device over an image of its own,
//! and O_DIRECT reads and writes of a known size on it.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A loop device over an image file of its own on a tmpfs of its own: block
/// requests the test alone makes, on a disk it names (`loopN`), on any
/// machine with the loop driver. Detached on drop, before its tmpfs is
/// unmounted and its directory goes.
///
/// The image is in memory, not on a disk: why is where the BPF programs
/// run. A loop request completes in the block softirq. Over an image on the
/// host's disk (`--direct-io=on`, as before) that softirq ran on the exit of
/// the disk's interrupt, on top of whatever task the CPU was running, and
/// CI's host kernel (6.18, a sandbox's own build) runs no BPF program at all
/// on a tracepoint hit in the context of the sandbox's agent (PID 1): tp_btf,
/// raw_tp and classic tracepoint programs missed the same completions, ftrace
/// saw each one, no recursion miss was counted (in CI 4 of 64 reads in one
/// run; here 1 run in ~150 under two busy loops). Over a tmpfs image the
/// driver's own thread raises the softirq and ksoftirqd runs it (3,899 of
/// 3,900 completions in 30 runs under two busy loops; the other in a kernel
/// thread): 0 failures in 1,500 runs.
pub struct LoopDevice {
    /// /dev/loopN.
    pub path: PathBuf,
    /// loopN: the disk label the majorminor decoder gives it.
    pub name: String,
    _image_fs: super::Mount,
    _image_dir: tempfile::TempDir,
}

impl LoopDevice {
    /// Attaches a fresh image of `size` bytes, or says why it cannot.
    pub fn attach(size: usize) -> Result<LoopDevice, String> {
        let image_dir = tempfile::tempdir().map_err(|err| format!("temporary directory: {err}"))?;
        let image_fs = super::Mount::tmpfs(image_dir.path(), &(size + (1 << 20)).to_string());
        let image = image_dir.path().join("disk.img");
        fs::File::create(&image)
            .and_then(|file| file.set_len(size as u64))
            .map_err(|err| format!("create {}: {err}", image.display()))?;
        let output = Command::new("losetup")
            .args(["--find", "--show"])
            .arg(&image)
            .output()
            .map_err(|err| format!("run losetup (`make deps` installs it): {err}"))?;
        if !output.status.success() {
            return Err(format!(
                "losetup --find --show {}: {}",
                image.display(),
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        let path = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        // Guarded from here on: a failed check below still detaches it.
        let device = LoopDevice {
            path,
            name,
            _image_fs: image_fs,
            _image_dir: image_dir,
        };
        if !device.name.starts_with("loop") {
            return Err(format!(
                "losetup printed {:?}, not a loop device",
                device.path
            ));
        }
        Ok(device)
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let detached = Command::new("losetup")
            .arg("--detach")
            .arg(&self.path)
            .status();
        if !detached.as_ref().is_ok_and(|status| status.success()) {
            let _ = writeln!(
                std::io::stderr(),
                "block I/O tests: could not detach {} ({detached:?})",
                self.path.display()
            );
        }
    }
}

/// A zeroed, page-aligned buffer for O_DIRECT, freed on drop.
struct AlignedBuf {
    ptr: *mut u8,
    layout: std::alloc::Layout,
}

impl AlignedBuf {
    fn new(size: usize) -> AlignedBuf {
        let layout = std::alloc::Layout::from_size_align(size, 4096).expect("layout");
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        assert!(!ptr.is_null(), "allocate {size} bytes");
        AlignedBuf { ptr, layout }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        unsafe { std::alloc::dealloc(self.ptr, self.layout) };
    }
}

/// `count` O_DIRECT writes of `size` bytes to `device`, an fsync, then
/// `count` O_DIRECT reads of it back: each pwrite/pread waits for its own
/// request, so none merge.
pub fn direct_io(device: &Path, size: usize, count: usize) {
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(device)
        .unwrap_or_else(|err| panic!("open {} O_DIRECT: {err}", device.display()));
    let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
    let buf = AlignedBuf::new(size);
    for i in 0..count {
        unsafe { std::ptr::write_bytes(buf.ptr, i as u8 + 1, size) };
        let n = unsafe { libc::pwrite(fd, buf.ptr.cast(), size, (i * size) as libc::off_t) };
        assert_eq!(
            n,
            size as isize,
            "O_DIRECT pwrite: {}",
            std::io::Error::last_os_error()
        );
    }
    file.sync_all().expect("fsync");
    for i in 0..count {
        let n = unsafe { libc::pread(fd, buf.ptr.cast(), size, (i * size) as libc::off_t) };
        assert_eq!(
            n,
            size as isize,
            "O_DIRECT pread: {}",
            std::io::Error::last_os_error()
        );
        assert_eq!(
            unsafe { *buf.ptr.add(size - 1) },
            i as u8 + 1,
            "read back block {i}"
        );
    }
}
