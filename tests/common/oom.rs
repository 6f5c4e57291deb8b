//! An OOM kill the test makes: a child touching more memory than the
//! memory cgroup the test made for it allows (cgroup v1 or v2).

use std::ffi::CString;
use std::fs;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::PATIENCE;

/// The comm of the child the test gets OOM-killed (15 bytes: the whole comm).
pub const OOM_COMM: &str = "bpfsnap-oomtest";
/// The memory limit of its cgroup, and how much it tries to touch.
pub const OOM_LIMIT: usize = 32 << 20;
pub const OOM_TRY: usize = 1 << 30;

/// A memory cgroup made for the test (cgroup v1 or v2, whichever holds the
/// memory controller here); removed on drop, after the child in it (if still
/// there) is killed and reaped.
pub struct OomCgroup {
    pub dir: PathBuf,
    child: Option<libc::pid_t>,
}

impl OomCgroup {
    /// Creates it with OOM_LIMIT as its limit (swap included), or says why
    /// it cannot. The memory controller is in one hierarchy only: v1 when
    /// /proc/self/cgroup has a `memory` line, else v2 (the `0::` line).
    pub fn create() -> Result<OomCgroup, String> {
        let own = fs::read_to_string("/proc/self/cgroup")
            .map_err(|err| format!("/proc/self/cgroup: {err}"))?;
        let path_of = |wanted: &dyn Fn(&str, &str) -> bool| {
            own.lines().find_map(|line| {
                let mut fields = line.splitn(3, ':');
                let (id, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
                wanted(id, controllers).then(|| path.trim_start_matches('/').to_string())
            })
        };
        if let Some(path) = path_of(&|_, controllers| controllers.split(',').any(|c| c == "memory"))
        {
            return OomCgroup::create_v1(&path);
        }
        if let Some(path) = path_of(&|id, controllers| id == "0" && controllers.is_empty()) {
            return OomCgroup::create_v2(&path);
        }
        Err(format!(
            "this process is in no memory cgroup, v1 or v2 (/proc/self/cgroup: {:?})",
            own.trim()
        ))
    }

    /// A child of the test's own v1 memory cgroup (v1 cgroups may hold both
    /// processes and children).
    fn create_v1(own: &str) -> Result<OomCgroup, String> {
        let mount = cgroup_mount("cgroup", "memory")
            .ok_or("no cgroup v1 memory hierarchy in /proc/self/mounts")?;
        let dir = mount
            .join(own)
            .join(format!("bpfsnap-oomkill-{}", std::process::id()));
        fs::create_dir(&dir).map_err(|err| format!("mkdir {}: {err}", dir.display()))?;
        let cgroup = OomCgroup { dir, child: None };
        cgroup.set("memory.limit_in_bytes", &OOM_LIMIT.to_string())?;
        // With swap, RAM+swap must be limited too or the child just swaps.
        if cgroup.dir.join("memory.memsw.limit_in_bytes").exists() {
            cgroup.set("memory.memsw.limit_in_bytes", &OOM_LIMIT.to_string())?;
        }
        if fs::read_to_string(cgroup.dir.join("memory.oom_control"))
            .is_ok_and(|text| text.contains("oom_kill_disable 1"))
        {
            cgroup.set("memory.oom_control", "0")?;
        }
        Ok(cgroup)
    }

    /// A v2 cgroup beside the test's own (under the root when the test is
    /// in the root, which is exempt): a v2 cgroup holding processes cannot
    /// give controllers to children (the no-internal-process rule), its
    /// parent can.
    fn create_v2(own: &str) -> Result<OomCgroup, String> {
        let mount =
            cgroup_mount("cgroup2", "").ok_or("no cgroup v2 hierarchy in /proc/self/mounts")?;
        let own_dir = mount.join(own);
        let parent = match own_dir.parent() {
            Some(parent) if !own.is_empty() => parent.to_path_buf(),
            _ => mount,
        };
        let read = |file: &str| fs::read_to_string(parent.join(file)).unwrap_or_default();
        let has_memory = |list: String| list.split_whitespace().any(|c| c == "memory");
        if !has_memory(read("cgroup.controllers")) {
            return Err(format!(
                "the cgroup v2 memory controller is not available in {} (cgroup.controllers: {:?})",
                parent.display(),
                read("cgroup.controllers").trim()
            ));
        }
        if !has_memory(read("cgroup.subtree_control")) {
            // Left enabled afterwards: disabling it could take it from
            // cgroups others made meanwhile (systemd enables it anyway).
            let control = parent.join("cgroup.subtree_control");
            fs::write(&control, "+memory").map_err(|err| {
                format!(
                    "enable the memory controller in {}: {err} (a v2 cgroup holding processes \
                     cannot delegate it: run the tests in a cgroup whose parent does)",
                    control.display()
                )
            })?;
        }
        let dir = parent.join(format!("bpfsnap-oomkill-{}", std::process::id()));
        fs::create_dir(&dir).map_err(|err| format!("mkdir {}: {err}", dir.display()))?;
        let cgroup = OomCgroup { dir, child: None };
        cgroup.set("memory.max", &OOM_LIMIT.to_string())?;
        // Without swap accounting there is no memory.swap.max, and no swap
        // to escape to through this cgroup's limit either.
        if cgroup.dir.join("memory.swap.max").exists() {
            cgroup.set("memory.swap.max", "0")?;
        }
        Ok(cgroup)
    }

    fn set(&self, file: &str, value: &str) -> Result<(), String> {
        fs::write(self.dir.join(file), value)
            .map_err(|err| format!("write {value} to {}: {err}", self.dir.join(file).display()))
    }

    /// Forks a child that names itself OOM_COMM, joins this cgroup and
    /// touches up to OOM_TRY bytes; returns how it ended (waitpid status).
    pub fn run_hog(&mut self) -> i32 {
        let adj = CString::new("/proc/self/oom_score_adj").unwrap();
        let comm = CString::new(OOM_COMM).unwrap();
        let mut pipe = [0; 2];
        assert_eq!(
            unsafe { libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC) },
            0,
            "pipe"
        );
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
        if pid == 0 {
            // The child of a threaded process: raw system calls only.
            unsafe { hog(pipe[0], pipe[1], &adj, &comm) }
        }
        self.child = Some(pid);
        unsafe { libc::close(pipe[0]) };
        let joined = self.set("cgroup.procs", &pid.to_string());
        // Go (a byte) or give up (EOF: the child exits).
        if joined.is_ok() {
            assert_eq!(
                unsafe { libc::write(pipe[1], b"g".as_ptr().cast(), 1) },
                1,
                "start the child"
            );
        }
        unsafe { libc::close(pipe[1]) };
        let status = self.reap().expect("the memory hog did not end");
        joined.expect("move the child into the cgroup");
        status
    }

    /// Waits (bounded) for the child; kills it when the patience runs out.
    fn reap(&mut self) -> Option<i32> {
        let pid = self.child.take()?;
        let deadline = Instant::now() + PATIENCE;
        loop {
            let mut status = 0;
            let rc = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
            if rc == pid {
                return Some(status);
            }
            assert!(rc == 0, "waitpid: {}", std::io::Error::last_os_error());
            if Instant::now() >= deadline {
                unsafe { libc::kill(pid, libc::SIGKILL) };
                unsafe { libc::waitpid(pid, &mut status, 0) };
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for OomCgroup {
    fn drop(&mut self) {
        if let Some(pid) = self.child.take() {
            let mut status = 0;
            unsafe { libc::kill(pid, libc::SIGKILL) };
            unsafe { libc::waitpid(pid, &mut status, 0) };
        }
        // Empty once its only task is reaped; retry only while the kernel
        // still says busy (bounded).
        let deadline = Instant::now() + PATIENCE;
        while let Err(err) = fs::remove_dir(&self.dir) {
            if err.raw_os_error() != Some(libc::EBUSY) || Instant::now() >= deadline {
                let _ = writeln!(
                    std::io::stderr(),
                    "oomkill: could not remove {}: {err}",
                    self.dir.display()
                );
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// Where a cgroup hierarchy of `fstype` ("cgroup" for v1, "cgroup2") is
/// mounted; for v1, the one with `option` (its controller) among its mount
/// options.
pub fn cgroup_mount(fstype: &str, option: &str) -> Option<PathBuf> {
    fs::read_to_string("/proc/self/mounts")
        .ok()?
        .lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (dir, kind, options) = (fields.get(1)?, fields.get(2)?, fields.get(3)?);
            (*kind == fstype && (option.is_empty() || options.split(',').any(|o| o == option)))
                .then(|| PathBuf::from(dir))
        })
}

/// The forked child: waits for the go byte, makes itself the OOM killer's
/// obvious choice, names itself OOM_COMM and touches memory until killed.
unsafe fn hog(go: i32, write_end: i32, adj: &CString, comm: &CString) -> ! {
    libc::close(write_end);
    let mut byte = 0u8;
    if libc::read(go, (&mut byte as *mut u8).cast(), 1) != 1 {
        libc::_exit(2);
    }
    // Raising oom_score_adj needs no privilege (an inherited -1000 would
    // make the child unkillable).
    let fd = libc::open(adj.as_ptr(), libc::O_WRONLY);
    if fd >= 0 {
        libc::write(fd, b"1000".as_ptr().cast(), 4);
        libc::close(fd);
    }
    libc::prctl(libc::PR_SET_NAME, comm.as_ptr() as libc::c_ulong, 0, 0, 0);
    let chunk = 1 << 20;
    let mut touched = 0;
    while touched < OOM_TRY {
        let area = libc::mmap(
            std::ptr::null_mut(),
            chunk,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        if area == libc::MAP_FAILED {
            libc::_exit(4);
        }
        for page in (0..chunk).step_by(4096) {
            std::ptr::write_volatile(area.cast::<u8>().add(page), 1);
        }
        touched += chunk;
    }
    libc::_exit(3)
}
