//! bpfsnap turns eBPF measurements into Prometheus metrics for node_exporter's
//! textfile collector.
//!
//! Data flows one way, one module per stage; the types each stage hands to the
//! next are plain data and its only contract:
//!
//! ```text
//! cli ─► config ─► probe ─► snapshot ─► expose ─► sink
//!        parse +   load,     read maps   decode     textfile
//!        validate  attach,   (batched)   labels,    (atomic) or
//!                  detach               families   stdout
//! ```
//!
//! [`run`] drives the stages for `bpfsnap run`. Built-in programs
//! ([`builtin`]) are data: `bpf/NAME.bpf.c` plus its spec `bpf/NAME.toml`, in
//! the same config format users write.

pub mod builtin;
pub mod check;
pub mod cli;
pub mod config;
pub mod expose;
pub mod list;
pub mod probe;
pub mod program;
pub mod run;
pub mod sink;
pub mod snapshot;
