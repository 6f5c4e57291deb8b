//! Messages on stderr, at the levels the command line asks for. Under
//! systemd, when stderr is the journal, every line starts with its priority
//! as sd-daemon(3) spells it (`<3>` error, `<4>` warning, `<6>` info, `<7>`
//! debug), so that `journalctl -p warning` shows bpfsnap's warnings and
//! errors; anywhere else lines are plain.

use std::ffi::OsStr;
use std::io::{IsTerminal, Write};
use std::sync::OnceLock;

/// A message's priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Error,
    Warning,
    Info,
    Debug,
}

impl Level {
    /// The sd-daemon(3) prefix: the syslog priority in angle brackets.
    fn journal_prefix(self) -> &'static str {
        match self {
            Level::Error => "<3>",
            Level::Warning => "<4>",
            Level::Info => "<6>",
            Level::Debug => "<7>",
        }
    }
}

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

    /// Progress: with `-v` or on a terminal.
    pub fn info(&self, message: &str) {
        if !self.quiet && (self.verbose || std::io::stderr().is_terminal()) {
            print(Level::Info, &format!("bpfsnap: {message}"));
        }
    }

    /// What a long-running command says once it is ready (where `serve`
    /// listens): at info priority, but printed unless quiet, as exporters
    /// say where they listen.
    pub fn ready(&self, message: &str) {
        if !self.quiet {
            print(Level::Info, &format!("bpfsnap: {message}"));
        }
    }

    pub fn warn(&self, message: &str) {
        if !self.quiet {
            print(Level::Warning, &format!("bpfsnap: warning: {message}"));
        }
    }

    pub fn error(&self, message: &str) {
        print(Level::Error, &format!("bpfsnap: error: {message}"));
    }

    /// Whether to show a countdown on stderr (a terminal, not quiet).
    pub fn countdown(&self) -> bool {
        !self.quiet && std::io::stderr().is_terminal()
    }
}

/// Writes `text` on stderr, each line ended by a newline and, when stderr is
/// the journal, started by `level`'s priority. One write, so that lines of
/// threads writing at once do not interleave.
pub fn print(level: Level, text: &str) {
    let out = lines(level, text, stderr_is_journal());
    let _ = std::io::stderr().lock().write_all(out.as_bytes());
}

/// `text` as lines for stderr: each ends with a newline and, for the
/// journal, starts with `level`'s prefix (the journal reads the priority of
/// every line on its own).
pub fn lines(level: Level, text: &str, journal: bool) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for line in text.lines() {
        if journal {
            out.push_str(level.journal_prefix());
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Whether stderr is the journal, decided once: systemd sets JOURNAL_STREAM
/// to the `device:inode` of the stream it connected to stdout/stderr
/// (systemd.exec(5)). A process whose stderr was redirected (cron's pipe, a
/// shell's file) inherits the variable but not the stream, hence the
/// comparison with what stderr is now.
pub fn stderr_is_journal() -> bool {
    static JOURNAL: OnceLock<bool> = OnceLock::new();
    *JOURNAL.get_or_init(|| {
        journal_stream_is(
            std::env::var_os("JOURNAL_STREAM").as_deref(),
            stderr_device_inode(),
        )
    })
}

/// Whether JOURNAL_STREAM's `value` (`DEV:INODE`, decimal) names `stream`
/// (the device and inode of stderr, if it could be read).
pub fn journal_stream_is(value: Option<&OsStr>, stream: Option<(u64, u64)>) -> bool {
    let (Some(value), Some((dev, ino))) = (value.and_then(OsStr::to_str), stream) else {
        return false;
    };
    let Some((value_dev, value_ino)) = value.split_once(':') else {
        return false;
    };
    let number = |text: &str| -> Option<u64> {
        // u64's parser takes a leading '+', which systemd never writes.
        text.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| text.parse().ok())
            .flatten()
    };
    number(value_dev) == Some(dev) && number(value_ino) == Some(ino)
}

/// stderr's device and inode numbers, as fstat(2) gives them.
fn stderr_device_inode() -> Option<(u64, u64)> {
    let mut stat = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat writes a whole `struct stat` into the buffer given, on
    // success only, which is when it is read.
    let stat = unsafe {
        if libc::fstat(libc::STDERR_FILENO, stat.as_mut_ptr()) != 0 {
            return None;
        }
        stat.assume_init()
    };
    Some((stat.st_dev, stat.st_ino))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_stream_must_name_stderr() {
        let stderr = Some((64769, 123456));
        for (value, stream, journal) in [
            (Some("64769:123456"), stderr, true),
            // Another stream: stderr was redirected after systemd started us.
            (Some("64769:123457"), stderr, false),
            (Some("64770:123456"), stderr, false),
            (None, stderr, false),
            (Some("64769:123456"), None, false),
            (Some(""), stderr, false),
            (Some("64769"), stderr, false),
            (Some("64769:"), stderr, false),
            (Some(":123456"), stderr, false),
            (Some("64769:123456:0"), stderr, false),
            (Some("+64769:123456"), stderr, false),
            (Some(" 64769:123456"), stderr, false),
            (Some("0x fd01:123456"), stderr, false),
            (Some("18446744073709551616:123456"), stderr, false),
        ] {
            assert_eq!(
                journal_stream_is(value.map(OsStr::new), stream),
                journal,
                "JOURNAL_STREAM={value:?}, stderr {stream:?}"
            );
        }
    }

    #[test]
    fn journal_lines_carry_their_priority() {
        for (level, text, journal, expected) in [
            (
                Level::Error,
                "bpfsnap: error: x",
                true,
                "<3>bpfsnap: error: x\n",
            ),
            (
                Level::Warning,
                "bpfsnap: warning: x",
                true,
                "<4>bpfsnap: warning: x\n",
            ),
            (Level::Info, "bpfsnap: x", true, "<6>bpfsnap: x\n"),
            (Level::Debug, "libbpf: x\n", true, "<7>libbpf: x\n"),
            // Every line of a message, for the journal reads lines.
            (Level::Error, "a\nb\n", true, "<3>a\n<3>b\n"),
            (Level::Error, "a\n\nb", true, "<3>a\n<3>\n<3>b\n"),
            (
                Level::Error,
                "bpfsnap: error: x",
                false,
                "bpfsnap: error: x\n",
            ),
            (Level::Debug, "libbpf: x\n", false, "libbpf: x\n"),
            (Level::Warning, "a\nb", false, "a\nb\n"),
            (Level::Info, "", true, ""),
        ] {
            assert_eq!(
                lines(level, text, journal),
                expected,
                "{level:?} {text:?} journal={journal}"
            );
        }
    }
}
