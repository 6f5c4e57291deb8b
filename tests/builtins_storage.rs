//! Storage and memory built-ins under the load they measure, on the real
//! kernel: biolatency and biosize (O_DIRECT I/O on a loop device the test
//! sets up), oomkill (a child OOM-killed in a memory cgroup of its
//! own) and pagefaults (fresh anonymous pages touched one by one). Each test
//! starts bpfsnap on one built-in, makes the events happen, ends the window
//! with SIGINT and checks the exact series moved at least as much as the load
//! made. promtool must accept every output.

mod common;

use common::{run_builtin, LoopDevice, OomCgroup, OOM_COMM, OOM_LIMIT, OOM_TRY};

use std::fs;
use std::io::Write;
use std::path::Path;

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
