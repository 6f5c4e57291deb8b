//! The formats `bpfsnap run` writes.

/// How the metrics are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// Prometheus text exposition format 0.0.4 (for files, pipes, node_exporter).
    Text,
    /// Tables and histogram bars for a person at a terminal.
    Pretty,
}
