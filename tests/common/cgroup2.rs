//! A cgroup v2 cgroup of the test's own, and children forked into it: load
//! whose cgroup id the test knows, for what labels by cgroup or container.

use super::{cgroup_mount, poll};
use std::ffi::CString;
use std::fs;
use std::path::PathBuf;

/// Where the cgroup v2 hierarchy is mounted (`/sys/fs/cgroup`, or
/// `/sys/fs/cgroup/unified` on a hybrid host).
pub fn cgroup2_root() -> PathBuf {
    cgroup_mount("cgroup2", "").expect("a cgroup v2 hierarchy in /proc/self/mounts")
}

/// This process's cgroup v2 path, as /proc/self/cgroup's `0::` line has it.
pub fn own_cgroup2_path() -> String {
    let own = fs::read_to_string("/proc/self/cgroup").expect("/proc/self/cgroup");
    own.lines()
        .find_map(|line| line.strip_prefix("0::"))
        .expect("a cgroup v2 line (0::) in /proc/self/cgroup")
        .to_string()
}

/// A directory of the v2 tree as /proc/PID/cgroup shows it, e.g.
/// `/bpfsnap-test-exits-42`; None if it is not in the v2 tree.
pub fn cgroup2_path_of(dir: &std::path::Path) -> Option<String> {
    let rest = dir.strip_prefix(cgroup2_root()).ok()?;
    Some(format!("/{}", rest.display()))
}

/// A cgroup below the v2 root (which may have children whatever it holds),
/// removed on drop once the children forked into it are gone.
pub struct TestCgroup {
    pub dir: PathBuf,
    /// As /proc/PID/cgroup shows it.
    pub path: String,
}

impl TestCgroup {
    pub fn create(tag: &str) -> TestCgroup {
        let dir = cgroup2_root().join(format!("bpfsnap-test-{tag}-{}", std::process::id()));
        fs::create_dir(&dir).unwrap_or_else(|err| panic!("mkdir {}: {err}", dir.display()));
        let path = cgroup2_path_of(&dir).expect("below the v2 root");
        TestCgroup { dir, path }
    }

    /// Forks a child that moves itself into this cgroup and then runs
    /// `work`, exiting with what it returns; waits for it and returns its
    /// wait status. The child of a threaded process: `work` must make raw
    /// system calls only (no allocation, no locks).
    pub fn run_child(&self, work: impl FnOnce() -> i32) -> i32 {
        let procs = CString::new(
            self.dir
                .join("cgroup.procs")
                .into_os_string()
                .into_encoded_bytes(),
        )
        .expect("no NUL in the path");
        let fd = unsafe { libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
        assert!(
            fd >= 0,
            "open {procs:?}: {}",
            std::io::Error::last_os_error()
        );
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
        if pid == 0 {
            // "0" moves the writer itself.
            let moved = unsafe { libc::write(fd, b"0".as_ptr().cast(), 1) } == 1;
            let code = if moved { work() } else { 125 };
            unsafe { libc::_exit(code) };
        }
        unsafe { libc::close(fd) };
        let mut status = 0;
        let reaped = unsafe { libc::waitpid(pid, &mut status, 0) };
        assert_eq!(reaped, pid, "waitpid: {}", std::io::Error::last_os_error());
        assert!(
            !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 125),
            "the child could not join {}",
            self.dir.display()
        );
        status
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        // A reaped child may leave the cgroup populated for a moment.
        let removed = |dir: &PathBuf| match fs::remove_dir(dir) {
            Err(err) if err.raw_os_error() == Some(libc::EBUSY) => None,
            other => Some(other),
        };
        if let Err(err) = poll(&format!("rmdir {}", self.dir.display()), || {
            removed(&self.dir)
        }) {
            eprintln!("rmdir {}: {err}", self.dir.display());
        }
    }
}
