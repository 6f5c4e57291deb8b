//! Mounts made by a test (a small tmpfs, a bpffs, a read-only bind), each detached
//! when dropped, also when the test fails.

use std::ffi::CString;
use std::fs;
use std::path::{Path, PathBuf};

/// A mount made by the test, detached when dropped (also when the test fails).
pub struct Mount(pub PathBuf);

impl Mount {
    fn c_path(path: &Path) -> CString {
        CString::new(path.as_os_str().as_encoded_bytes()).unwrap()
    }

    /// A tmpfs of `size` bytes at `path`.
    pub fn tmpfs(path: &Path, size: &str) -> Mount {
        fs::create_dir_all(path).unwrap();
        let target = Mount::c_path(path);
        let options = CString::new(format!("size={size},mode=0777")).unwrap();
        // SAFETY: valid NUL-terminated strings.
        let rc = unsafe {
            libc::mount(
                c"tmpfs".as_ptr(),
                target.as_ptr(),
                c"tmpfs".as_ptr(),
                0,
                options.as_ptr().cast(),
            )
        };
        assert_eq!(rc, 0, "mount tmpfs: {}", std::io::Error::last_os_error());
        Mount(path.to_path_buf())
    }

    /// A bpffs of its own at `path`: what is pinned there is released (and
    /// detached) when it is unmounted.
    pub fn bpffs(path: &Path) -> Mount {
        fs::create_dir_all(path).unwrap();
        let target = Mount::c_path(path);
        // SAFETY: valid NUL-terminated strings.
        let rc = unsafe {
            libc::mount(
                c"bpf".as_ptr(),
                target.as_ptr(),
                c"bpf".as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        assert_eq!(rc, 0, "mount bpffs: {}", std::io::Error::last_os_error());
        Mount(path.to_path_buf())
    }

    /// `path` bound onto itself, read-only.
    pub fn read_only(path: &Path) -> Mount {
        let target = Mount::c_path(path);
        let bind = |flags| unsafe {
            // SAFETY: valid NUL-terminated strings.
            libc::mount(
                target.as_ptr(),
                target.as_ptr(),
                std::ptr::null(),
                flags,
                std::ptr::null(),
            )
        };
        assert_eq!(bind(libc::MS_BIND), 0, "bind mount");
        let mount = Mount(path.to_path_buf());
        assert_eq!(
            bind(libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY),
            0,
            "remount read-only: {}",
            std::io::Error::last_os_error()
        );
        mount
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let target = Mount::c_path(&self.0);
        // SAFETY: a valid path.
        unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
    }
}
