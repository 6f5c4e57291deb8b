//! Storage and memory built-ins under the load they measure, on the real
//! kernel: biolatency and biosize (O_DIRECT I/O on a loop device the test
//! sets up), oomkill (a child OOM-killed in a memory cgroup of its
//! own) and pagefaults (fresh anonymous pages touched one by one). Each test
//! starts bpfsnap on one built-in, makes the events happen, ends the window
//! with SIGINT and checks the exact series moved at least as much as the load
//! made. promtool must accept every output.

mod common;

use common::{run_builtin, LoopDevice};

use std::ffi::CString;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Straight to the stream: libtest captures eprintln! of passing tests.
fn say(text: &str) {
    let _ = writeln!(std::io::stderr(), "{text}");
}

// ---------------------------------------------------------------- block I/O

/// Requests of this size land in the `le="65536"` bucket, not `le="32768"`.
const IO_SIZE: usize = 64 * 1024;
/// O_DIRECT writes, then as many O_DIRECT reads, of IO_SIZE each.
const IO_COUNT: usize = 64;

/// IO_COUNT O_DIRECT writes of IO_SIZE to `device`, an fsync, then IO_COUNT
/// O_DIRECT reads of it back (see [`common::direct_io`]).
fn direct_io(device: &Path) {
    common::direct_io(device, IO_SIZE, IO_COUNT);
}

/// A loop device for `test`; without one (only allowed when kernel tests
/// are not required) says so and checks `builtin`'s output is valid anyway.
fn loop_device(test: &str, builtin: &str) -> Option<LoopDevice> {
    match LoopDevice::attach(2 * IO_SIZE * IO_COUNT) {
        Ok(device) => Some(device),
        Err(why) => {
            common::not_exercised(
                test,
                &format!("no loop device for the O_DIRECT load: {why}"),
            );
            say(&format!(
                "{test}: checking only that {builtin}'s output is valid"
            ));
            run_builtin(builtin, || {});
            None
        }
    }
}

/// Whether `disk` has a volatile write cache, so that fsync sends flushes.
fn write_back_cache(disk: &str) -> bool {
    fs::read_to_string(format!("/sys/block/{disk}/queue/write_cache"))
        .is_ok_and(|mode| mode.trim() == "write back")
}

#[test]
fn biolatency_times_every_direct_read_and_write() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    let Some(device) = loop_device(common::test_name!(), "biolatency") else {
        return;
    };
    let text = run_builtin("biolatency", || direct_io(&device.path));
    let disk = &device.name;
    let metric = "bpfsnap_block_io_latency_seconds";
    for op in ["write", "read"] {
        let series = format!(r#"{metric}_count{{device="{disk}",operation="{op}"}}"#);
        let count = common::sample(&text, &series).unwrap_or_else(|| panic!("no {series}\n{text}"));
        // A completion in hardirq context while the program ran for another
        // in softirq is skipped by the kernel and counted as a miss.
        let missed = common::recursion_misses(&text);
        assert!(
            count + missed >= IO_COUNT as f64,
            "{count} {op}s timed and {missed} recursion misses for {IO_COUNT} O_DIRECT {op}s\n{text}"
        );
        let inf = format!(r#"{metric}_bucket{{device="{disk}",operation="{op}",le="+Inf"}}"#);
        assert_eq!(common::sample(&text, &inf), Some(count), "{inf}");
        let sum = format!(r#"{metric}_sum{{device="{disk}",operation="{op}"}}"#);
        let sum = common::sample(&text, &sum).unwrap_or_default();
        // Whole microseconds are summed: a disk round trip takes several.
        assert!(sum > 0.0, "{op} latency sum {sum}\n{text}");
    }
    // fsync after the writes flushes the disk's cache when it has one.
    let flushes = common::sample(
        &text,
        &format!(r#"{metric}_count{{device="{disk}",operation="flush"}}"#),
    );
    if write_back_cache(disk) {
        assert!(
            flushes.unwrap_or_default() >= 1.0,
            "fsync on a write-back disk sent no flush\n{text}"
        );
    } else {
        say(&format!(
            "biolatency: {disk} has no write-back cache: flushes not checked"
        ));
    }
}

#[test]
fn biosize_sizes_every_direct_read_and_write() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    let Some(device) = loop_device(common::test_name!(), "biosize") else {
        return;
    };
    let text = run_builtin("biosize", || direct_io(&device.path));
    let disk = &device.name;
    let metric = "bpfsnap_block_io_size_bytes";
    for op in ["write", "read"] {
        let bucket = |le: &str| {
            let series =
                format!(r#"{metric}_bucket{{device="{disk}",operation="{op}",le="{le}"}}"#);
            common::sample(&text, &series).unwrap_or_else(|| panic!("no {series}\n{text}"))
        };
        // Exactly 64 KiB: in (32 KiB, 64 KiB].
        let in_64k = bucket("65536") - bucket("32768");
        let missed = common::recursion_misses(&text);
        assert!(
            in_64k + missed >= IO_COUNT as f64,
            "{in_64k} {op}s of (32 KiB, 64 KiB] and {missed} recursion misses for {IO_COUNT} O_DIRECT {op}s of 64 KiB\n{text}"
        );
        assert!(bucket("512") <= bucket("32768"), "buckets are cumulative");
        let sum = format!(r#"{metric}_sum{{device="{disk}",operation="{op}"}}"#);
        let sum = common::sample(&text, &sum).unwrap_or_default();
        assert!(
            sum >= (IO_COUNT * IO_SIZE) as f64,
            "{op} bytes {sum} < {}\n{text}",
            IO_COUNT * IO_SIZE
        );
    }
    // Flushes move no data: not sizes.
    assert!(
        !text.contains(r#"operation="flush""#),
        "biosize counted data-less flushes\n{text}"
    );
}

// ---------------------------------------------------------------- OOM kill

/// The comm of the child the test gets OOM-killed (15 bytes: the whole comm).
const OOM_COMM: &str = "bpfsnap-oomtest";
/// The memory limit of its cgroup, and how much it tries to touch.
const OOM_LIMIT: usize = 32 << 20;
const OOM_TRY: usize = 1 << 30;

/// A memory cgroup made for the test (cgroup v1 or v2, whichever holds the
/// memory controller here); removed on drop, after the child in it (if still
/// there) is killed and reaped.
struct OomCgroup {
    dir: PathBuf,
    child: Option<libc::pid_t>,
}

impl OomCgroup {
    /// Creates it with OOM_LIMIT as its limit (swap included), or says why
    /// it cannot. The memory controller is in one hierarchy only: v1 when
    /// /proc/self/cgroup has a `memory` line, else v2 (the `0::` line).
    fn create() -> Result<OomCgroup, String> {
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
    fn run_hog(&mut self) -> i32 {
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
        let deadline = Instant::now() + common::PATIENCE;
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
        let deadline = Instant::now() + common::PATIENCE;
        while let Err(err) = fs::remove_dir(&self.dir) {
            if err.raw_os_error() != Some(libc::EBUSY) || Instant::now() >= deadline {
                say(&format!(
                    "oomkill: could not remove {}: {err}",
                    self.dir.display()
                ));
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// Where a cgroup hierarchy of `fstype` ("cgroup" for v1, "cgroup2") is
/// mounted; for v1, the one with `option` (its controller) among its mount
/// options.
fn cgroup_mount(fstype: &str, option: &str) -> Option<PathBuf> {
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

#[test]
fn oomkill_names_the_victim_of_a_memory_cgroup_oom() {
    let test = common::test_name!();
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    if !common::builtin_runs_here("oomkill", test) {
        return;
    }
    let mut cgroup = match OomCgroup::create() {
        Ok(cgroup) => cgroup,
        Err(why) => {
            common::not_exercised(test, &format!("no memory cgroup for an OOM kill: {why}"));
            say("oomkill: checking only that the output is valid and names no test victim");
            let text = run_builtin("oomkill", || {});
            let series = format!(r#"bpfsnap_oom_kills_total{{comm="{OOM_COMM}"}}"#);
            assert!(common::sample(&text, &series).is_none(), "{text}");
            return;
        }
    };
    let mut status = None;
    let text = run_builtin("oomkill", || status = Some(cgroup.run_hog()));
    let series = format!(r#"bpfsnap_oom_kills_total{{comm="{OOM_COMM}"}}"#);
    let status = status.expect("the hog ran");
    assert!(
        libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL,
        "the child touching {OOM_TRY} bytes in a {OOM_LIMIT}-byte memory cgroup was not OOM-killed \
         (wait status {status:#x}; exit 3 = touched it all, 4 = mmap failed) in {}",
        cgroup.dir.display()
    );
    let kills = common::sample(&text, &series).unwrap_or_else(|| panic!("no {series}\n{text}"));
    assert!(kills >= 1.0, "{kills} OOM kills of {OOM_COMM}\n{text}");
    drop(cgroup);
}

// ---------------------------------------------------------------- page faults

/// Fresh anonymous pages touched, per kind of fault.
const PAGES: usize = 4096;

/// A private anonymous mapping without huge pages (a huge page would serve
/// 512 touches with one fault); unmapped on drop.
struct Anon {
    ptr: *mut u8,
    len: usize,
}

impl Anon {
    fn new(pages: usize) -> Anon {
        let len = pages * page_size();
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(ptr, libc::MAP_FAILED, "mmap");
        assert_eq!(
            unsafe { libc::madvise(ptr, len, libc::MADV_NOHUGEPAGE) },
            0,
            "madvise"
        );
        Anon {
            ptr: ptr.cast(),
            len,
        }
    }

    fn pages(&self) -> impl Iterator<Item = *mut u8> + '_ {
        (0..self.len)
            .step_by(page_size())
            .map(|off| unsafe { self.ptr.add(off) })
    }
}

impl Drop for Anon {
    fn drop(&mut self) {
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

fn page_size() -> usize {
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize }
}

#[test]
fn pagefaults_counts_each_fresh_page_by_kind() {
    let Some(_kernel) = common::kernel_test!() else {
        return;
    };
    if !cfg!(target_arch = "x86_64") {
        // page_fault_user is an x86 tracepoint: the built-in is unavailable.
        say(
            "pagefaults: tp_btf/page_fault_user exists on x86 only: checked `bpfsnap list` says so",
        );
        let out = common::bpfsnap()
            .args(["list", "--long"])
            .output()
            .expect("bpfsnap list");
        let text = String::from_utf8_lossy(&out.stdout);
        let entry = text
            .split("\n\n")
            .find(|e| e.starts_with("pagefaults"))
            .expect("pagefaults listed");
        assert!(!entry.contains("available here: yes"), "{entry}");
        return;
    }
    let text = run_builtin("pagefaults", || {
        // Reads of never-touched anonymous pages map the shared zero page
        // (not present, read); writes to them then copy it (protection,
        // write); writes to other fresh pages allocate (not present, write).
        let zero_mapped = Anon::new(PAGES);
        let mut sum = 0u64;
        for page in zero_mapped.pages() {
            sum += u64::from(unsafe { std::ptr::read_volatile(page) });
        }
        assert_eq!(sum, 0);
        for page in zero_mapped.pages() {
            unsafe { std::ptr::write_volatile(page, 1) };
        }
        let fresh = Anon::new(PAGES);
        for page in fresh.pages() {
            unsafe { std::ptr::write_volatile(page, 1) };
        }
        // A new program faults its first instructions in.
        let status = std::process::Command::new("/bin/true")
            .status()
            .expect("run /bin/true");
        assert!(status.success());
    });
    let faults = |access: &str, cause: &str| {
        let series =
            format!(r#"bpfsnap_user_page_faults_total{{access="{access}",cause="{cause}"}}"#);
        common::sample(&text, &series).unwrap_or_else(|| panic!("no {series}\n{text}"))
    };
    for (access, cause, at_least) in [
        ("read", "not_present", PAGES),
        ("write", "protection", PAGES),
        ("write", "not_present", PAGES),
        ("exec", "not_present", 1),
    ] {
        let count = faults(access, cause);
        assert!(
            count >= at_least as f64,
            "{count} {access}/{cause} faults, expected at least {at_least}\n{text}"
        );
    }
}
