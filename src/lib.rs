//! bpfsnap turns eBPF measurements into Prometheus metrics for node_exporter's
//! textfile collector.
//!
//! Data flows one way, one module per stage; the types each stage hands to the
//! next are its only contract, and no stage imports a later one:
//!
//! ```text
//! spec ──► plan ──► session ──► snapshot ──► exposition ──► collect ──► sink
//! configs  compiled  select,     read maps    families:      snapshot →  textfile
//! parsed,  once:     trust,      (batched,    text, Open-    families →  (atomic),
//! problems decoders, attach,     deltas)      Metrics, the   self        stdout
//! (builtin) layouts  caps in                  terminal view  metrics,
//!          (decode)  every thread,                           up
//!                    signals
//!                    (program, probe)
//! ```
//!
//! - [`spec`] (with [`builtin`], the embedded specs) is a leaf: the config
//!   model, its parser and its problems. [`decode`] (one decoder per file)
//!   depends on it alone.
//! - [`plan`] compiles each config once: metric kinds, decoder chains, key
//!   layouts, caps. [`program`] pairs a plan with its BPF object.
//! - [`session`] is what `run` and `serve` share: [`probe`] loads and
//!   attaches, [`privilege`] drops capabilities and checks file trust.
//! - [`snapshot`] reads the maps (a counter's batch by batch, as the
//!   exposition decodes it), [`exposition`] turns a snapshot into
//!   [`exposition::Family`]s (plain data in, text out), [`collect`] is the
//!   one path every mode takes from probes to families and bpfsnap's own
//!   metrics (`bpfsnap_up` among them), [`sink`] writes the text.
//!
//! The modes drive the stages: [`run`] writes windows to a textfile or
//! stdout, [`serve`] answers scrapes, [`check`] and [`list`] load nothing,
//! [`build_program`] compiles a user's program with the embedded headers;
//! [`cli`] picks one. Built-in programs are data: `bpf/NAME.bpf.c` plus its
//! spec `bpf/NAME.toml`, in the same config format users write.

pub mod build_program;
pub mod builtin;
pub mod check;
pub mod cli;
pub mod collect;
pub mod decode;
pub mod exposition;
pub mod list;
pub mod log;
pub mod plan;
pub mod privilege;
pub mod probe;
pub mod program;
pub mod run;
pub mod serve;
pub mod session;
pub mod sink;
pub mod snapshot;
pub mod spec;

/// build.rs's reader of CO-RE relocations, here for its unit tests (a build
/// script's own tests are never run).
#[cfg(test)]
#[path = "../build/core_relocations.rs"]
mod core_relocations;

/// The exit status of bad input ([`BadInput`]) and bad usage, in every
/// command: an invalid config gives 2 whether `check`, `run` or `serve`
/// found it.
pub const BAD_INPUT_STATUS: u8 = 2;

/// An error in what the user gave — command line, config, BPF object layout —
/// as opposed to a failure at run time: exit status 2 instead of 1.
#[derive(Debug)]
pub struct BadInput(anyhow::Error);

impl BadInput {
    pub fn new(message: impl std::fmt::Display) -> BadInput {
        BadInput(anyhow::anyhow!("{message}"))
    }

    /// The error it marks.
    pub fn inner(&self) -> &anyhow::Error {
        &self.0
    }

    /// Marks `err` as bad input.
    pub fn wrap(err: anyhow::Error) -> anyhow::Error {
        if err.chain().any(|e| e.is::<BadInput>()) {
            return err;
        }
        anyhow::Error::new(BadInput(err))
    }

    /// Whether `err` is (or wraps) bad input.
    pub fn is(err: &anyhow::Error) -> bool {
        err.chain().any(|e| e.is::<BadInput>())
    }
}

impl std::fmt::Display for BadInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#}", self.0)
    }
}

impl std::error::Error for BadInput {}

/// For unit tests that need the kernel (root, to create maps or load
/// programs): whether to go on. Without root the test is skipped, loudly,
/// unless kernel tests are required (CI, BPFSNAP_REQUIRE_KERNEL_TESTS=1, as
/// tests/common says): then it fails.
#[cfg(test)]
pub(crate) fn kernel_unit_test(test: &str) -> bool {
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    let required = std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false")
        || std::env::var_os("BPFSNAP_REQUIRE_KERNEL_TESTS").is_some_and(|v| v == "1");
    assert!(!required, "{test}: kernel tests are required but need root");
    eprintln!("SKIPPED {test}: needs root for BPF");
    false
}

/// Has glibc's malloc serve every block of 256 KiB or more with its own
/// mmap, unmapped when freed. By default the threshold rises (up to 32 MiB)
/// each time such a block is freed, so a snapshot's sort buffers and tables
/// of a large map end up in the heap, where freeing them keeps them
/// resident: measured on a million `{string, u32}` keys, the peak grew by
/// 2.2× the text written with the default and by 1.3× with this, and a
/// `serve` or `--interval` process stayed at its largest snapshot's size.
pub fn give_back_large_allocations() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets a tunable; called at start,
    // before other threads.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
    }
}
