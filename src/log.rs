//! Messages on stderr, at the levels the command line asks for.

use std::io::IsTerminal;

/// Messages on stderr: errors always, warnings unless quiet, progress with
/// `-v` or on a terminal, libbpf's own messages with `-vv`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Log {
    pub verbose: bool,
    pub quiet: bool,
    /// Echo libbpf's debug messages (thousands of lines for the default set:
    /// formatting them costs a third of the start-up).
    pub libbpf: bool,
}

impl Log {
    /// From the number of `-v` given and `-q`.
    pub fn new(verbosity: u8, quiet: bool) -> Log {
        Log {
            verbose: verbosity >= 1,
            quiet,
            libbpf: verbosity >= 2,
        }
    }

    pub fn info(&self, message: &str) {
        if !self.quiet && (self.verbose || std::io::stderr().is_terminal()) {
            eprintln!("bpfsnap: {message}");
        }
    }

    pub fn warn(&self, message: &str) {
        if !self.quiet {
            eprintln!("bpfsnap: warning: {message}");
        }
    }

    pub fn error(&self, message: &str) {
        eprintln!("bpfsnap: error: {message}");
    }

    /// Whether to show a countdown on stderr (a terminal, not quiet).
    pub fn countdown(&self) -> bool {
        !self.quiet && std::io::stderr().is_terminal()
    }
}
