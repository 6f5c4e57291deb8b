//! Messages on stderr, at the levels the command line asks for. Under
//! systemd, when stderr is the journal, every line starts with its priority
//! as sd-daemon(3) spells it (`<3>` error, `<4>` warning, `<6>` info, `<7>`
//! debug), so that `journalctl -p warning` shows bpfsnap's warnings and
//! errors; anywhere else lines are plain.
//!
//! `--log.format logfmt|json` writes each message as a record instead, as
//! exporter-toolkit's loggers do (`time=… level=info msg="…"`), with a
//! timestamp unless stderr is the journal (which has its own); and
//! `--log.level` sets the lowest level shown in place of `-v` and `-q`.

use std::ffi::OsStr;
use std::io::{IsTerminal, Write};
use std::sync::OnceLock;

/// A message's priority, most urgent first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
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

    /// exporter-toolkit's name for it (--log.level, and in records).
    pub fn name(self) -> &'static str {
        match self {
            Level::Error => "error",
            Level::Warning => "warn",
            Level::Info => "info",
            Level::Debug => "debug",
        }
    }

    /// The level `name` names (`--log.level`).
    pub fn parse(name: &str) -> Result<Level, String> {
        [Level::Debug, Level::Info, Level::Warning, Level::Error]
            .into_iter()
            .find(|level| level.name() == name)
            .ok_or_else(|| format!("{name:?}: give debug, info, warn or error"))
    }
}

/// How messages are written on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// `bpfsnap: warning: …` lines.
    #[default]
    Plain,
    /// `time=… level=warn msg="…"`, as go-kit's and slog's logfmt.
    Logfmt,
    /// `{"time":"…","level":"warn","msg":"…"}`, one object a line.
    Json,
}

impl Format {
    /// The format `name` names (`--log.format`).
    pub fn parse(name: &str) -> Result<Format, String> {
        match name {
            "logfmt" => Ok(Format::Logfmt),
            "json" => Ok(Format::Json),
            _ => Err(format!("{name:?}: give logfmt or json")),
        }
    }
}

static FORMAT: OnceLock<Format> = OnceLock::new();

/// Sets how every message is written from now on (once, at start: the
/// command line's `--log.format`).
pub fn set_format(format: Format) {
    let _ = FORMAT.set(format);
}

/// Messages on stderr: errors always, warnings unless quiet, progress with
/// `-v` or on a terminal, libbpf's own messages with `-vv`; or, with
/// `--log.level`, those of that level and above.
#[derive(Debug, Clone, Copy, Default)]
pub struct Log {
    pub verbose: bool,
    pub quiet: bool,
    /// Echo libbpf's debug messages (thousands of lines for the default set:
    /// formatting them costs a third of the start-up).
    pub libbpf: bool,
    /// `--log.level`: the lowest level shown, whatever stderr is.
    pub level: Option<Level>,
}

impl Log {
    /// From the number of `-v` given and `-q`.
    pub fn new(verbosity: u8, quiet: bool) -> Log {
        Log {
            verbose: verbosity >= 1,
            quiet,
            libbpf: verbosity >= 2,
            level: None,
        }
    }

    /// From `--log.level`: debug is `-vv` (libbpf's messages too), info
    /// `-v`, warn shows no progress even on a terminal, error is `-q`.
    pub fn at_level(level: Level) -> Log {
        Log {
            verbose: level >= Level::Info,
            quiet: level == Level::Error,
            libbpf: level == Level::Debug,
            level: Some(level),
        }
    }

    /// Progress: with `-v` or on a terminal.
    pub fn info(&self, message: &str) {
        let shown = match self.level {
            Some(level) => level >= Level::Info,
            None => !self.quiet && (self.verbose || std::io::stderr().is_terminal()),
        };
        if shown {
            print(Level::Info, &format!("bpfsnap: {message}"));
        }
    }

    /// What a long-running command says once it is ready (where `serve`
    /// listens): at info priority, but printed unless quiet, as exporters
    /// say where they listen.
    pub fn ready(&self, message: &str) {
        if self.level.map_or(!self.quiet, |level| level >= Level::Info) {
            print(Level::Info, &format!("bpfsnap: {message}"));
        }
    }

    pub fn warn(&self, message: &str) {
        if self
            .level
            .map_or(!self.quiet, |level| level >= Level::Warning)
        {
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
    let journal = stderr_is_journal();
    let out = match FORMAT.get().copied().unwrap_or_default() {
        Format::Plain => lines(level, text, journal),
        format => {
            // The journal stamps each line itself.
            let time = (!journal).then(std::time::SystemTime::now);
            lines(level, &record(format, level, text, time), journal)
        }
    };
    let _ = std::io::stderr().lock().write_all(out.as_bytes());
}

/// `text` (a plain message, `bpfsnap: warning: …`) as one logfmt or JSON
/// record: its prefix gives way to the level, its lines are escaped.
pub fn record(
    format: Format,
    level: Level,
    text: &str,
    time: Option<std::time::SystemTime>,
) -> String {
    let message = ["bpfsnap: error: ", "bpfsnap: warning: ", "bpfsnap: "]
        .iter()
        .find_map(|prefix| text.strip_prefix(prefix))
        .unwrap_or(text)
        .trim_end_matches('\n');
    let time = time.map(|time| humantime::format_rfc3339_millis(time).to_string());
    match format {
        Format::Json => {
            let time = time.map_or(String::new(), |time| format!("\"time\":\"{time}\","));
            format!(
                "{{{time}\"level\":\"{}\",\"msg\":{}}}",
                level.name(),
                json_string(message)
            )
        }
        _ => {
            let time = time.map_or(String::new(), |time| format!("time={time} "));
            format!("{time}level={} msg={}", level.name(), logfmt_value(message))
        }
    }
}

/// A logfmt value: as it is if it needs no quotes, else quoted and escaped.
fn logfmt_value(text: &str) -> String {
    let plain = !text.is_empty()
        && !text
            .chars()
            .any(|c| c == ' ' || c == '=' || c == '"' || c == '\\' || c.is_control());
    match plain {
        true => text.to_string(),
        false => json_string(text),
    }
}

/// `text` as a JSON string (logfmt quotes values the same way).
fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
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
    fn records_are_logfmt_or_json_with_the_level_for_the_prefix() {
        let time = std::time::UNIX_EPOCH + std::time::Duration::from_millis(784111777123);
        for (format, level, text, time, expected) in [
            (
                Format::Logfmt,
                Level::Warning,
                "bpfsnap: warning: listening on [::]:9435, \"reachable\"",
                Some(time),
                r#"time=1994-11-06T08:49:37.123Z level=warn msg="listening on [::]:9435, \"reachable\"""#,
            ),
            (
                Format::Logfmt,
                Level::Info,
                "bpfsnap: ready",
                None,
                "level=info msg=ready",
            ),
            (
                Format::Logfmt,
                Level::Error,
                "bpfsnap: error: a\nb\n",
                None,
                r#"level=error msg="a\nb""#,
            ),
            (
                Format::Json,
                Level::Debug,
                "libbpf: x\t\u{1}\n",
                Some(time),
                r#"{"time":"1994-11-06T08:49:37.123Z","level":"debug","msg":"libbpf: x\t\u0001"}"#,
            ),
            (
                Format::Json,
                Level::Info,
                "bpfsnap: serving http://127.0.0.1:9435/metrics",
                None,
                r#"{"level":"info","msg":"serving http://127.0.0.1:9435/metrics"}"#,
            ),
        ] {
            assert_eq!(record(format, level, text, time), expected, "{text:?}");
        }
    }

    #[test]
    fn levels_are_named_as_exporter_toolkit_names_them() {
        for name in ["debug", "info", "warn", "error"] {
            assert_eq!(Level::parse(name).unwrap().name(), name);
        }
        assert!(Level::parse("warning").unwrap_err().contains("warn"));
        assert!(Format::parse("text")
            .unwrap_err()
            .contains("logfmt or json"));
        let warn = Log::at_level(Level::Warning);
        assert!(!warn.verbose && !warn.quiet && !warn.libbpf);
        assert!(Log::at_level(Level::Error).quiet);
        assert!(Log::at_level(Level::Debug).libbpf);
    }

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
