//! The gate of tests that need the kernel: they run as root, one at a time,
//! and otherwise skip loudly, or fail where kernel tests are required (CI,
//! `make test`); what a kernel or machine cannot do is said, never skipped
//! silently.

use std::io::Write;
use std::sync::{Mutex, MutexGuard};

static KERNEL: Mutex<()> = Mutex::new(());

/// Whether kernel tests must run: in CI and under `make test` they never skip.
fn kernel_tests_required() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false")
        || std::env::var_os("BPFSNAP_REQUIRE_KERNEL_TESTS").is_some_and(|v| v == "1")
}

/// Gate for the test it is written in, which loads BPF programs:
/// `let Some(_kernel) = common::kernel_test!() else { return; };`. See
/// [`kernel_test_named`].
macro_rules! kernel_test {
    () => {
        $crate::common::kernel_test_named($crate::common::test_name!())
    };
}
pub(crate) use kernel_test;

/// Gate for test `name`, which loads BPF programs. As root: a guard that
/// serialises such tests (they compare the kernel's list of programs before
/// and after). Otherwise the test is skipped, loudly, unless kernel tests are
/// required, in which case it fails.
pub fn kernel_test_named(name: &str) -> Option<MutexGuard<'static, ()>> {
    if unsafe { libc::geteuid() } == 0 {
        return Some(
            KERNEL
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        );
    }
    assert!(
        !kernel_tests_required(),
        "{name}: kernel tests are required here (CI or BPFSNAP_REQUIRE_KERNEL_TESTS=1) but need root: run `make test` as root"
    );
    // Straight to the stream: libtest captures eprintln! of passing tests.
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {name}: needs root to load BPF programs (run `make test` as root)"
    );
    None
}

/// Whether built-in `name` can run on this kernel; if not, says on stderr
/// that `test` is skipped and why. Not a silent skip: tests/kernels.rs
/// checks on every kernel that such a built-in is left out of the default
/// set and refused in one line when named.
pub fn builtin_runs_here(name: &str, test: &str) -> bool {
    let config = bpfsnap::builtin::find(name)
        .expect("a built-in")
        .config()
        .expect("its spec");
    let kernel = bpfsnap::probe::availability::KernelTypes::load();
    match bpfsnap::probe::variants::fit(&config, &kernel) {
        Ok(_) => true,
        Err(reason) => {
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED {test}: {name} cannot run on this kernel ({reason})"
            );
            false
        }
    }
}

/// For a kernel test that cannot make its load on this machine (no loop
/// device, no memory cgroup): fails when kernel tests are required, else says
/// on stderr what was not exercised and why, so a run never passes silently.
pub fn not_exercised(name: &str, why: &str) {
    assert!(
        !kernel_tests_required(),
        "{name}: kernel tests are required here (CI or BPFSNAP_REQUIRE_KERNEL_TESTS=1) but its load cannot be made: {why}"
    );
    let _ = writeln!(std::io::stderr(), "NOT EXERCISED {name}: {why}");
}
