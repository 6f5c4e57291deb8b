//! libbpf's messages, captured instead of printed: a failed load can then show
//! the useful tail of the verifier log in its error, and a healthy run stays
//! quiet (cron mails every line on stderr). `-v` echoes them as they come.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};

use libbpf_rs::PrintLevel;

static ECHO: AtomicBool = AtomicBool::new(false);

thread_local! {
    /// Per thread: libbpf calls back on the thread that loads the object, so
    /// objects loaded in parallel keep their messages apart.
    static CAPTURED: RefCell<String> = const { RefCell::new(String::new()) };
}

fn capture(level: PrintLevel, message: String) {
    if ECHO.load(Ordering::Relaxed) {
        crate::log::print(crate::log::Level::Debug, &message);
    }
    if level == PrintLevel::Debug {
        return;
    }
    CAPTURED.with_borrow_mut(|captured| {
        // Bounded: only the tail is ever shown.
        if captured.len() > 1 << 20 {
            captured.clear();
        }
        captured.push_str(&message);
    });
}

/// Routes libbpf's messages here; `echo` also prints them (verbose mode).
pub fn install(echo: bool) {
    ECHO.store(echo, Ordering::Relaxed);
    let level = if echo {
        PrintLevel::Debug
    } else {
        PrintLevel::Info
    };
    libbpf_rs::set_print(Some((level, capture)));
}

/// Takes what libbpf said on this thread since the last call.
pub fn take() -> String {
    CAPTURED.with_borrow_mut(std::mem::take)
}

/// The part of libbpf's output worth showing with a load error: the last lines
/// of the verifier log if there is one (where the verifier says why), else
/// libbpf's last messages.
pub fn useful_tail(log: &str, lines: usize) -> Vec<String> {
    let verifier: Vec<&str> = log
        .lines()
        .skip_while(|line| !line.contains("-- BEGIN PROG LOAD LOG --"))
        .skip(1)
        .take_while(|line| !line.contains("-- END PROG LOAD LOG --"))
        .filter(|line| !line.trim().is_empty() && !line.starts_with("processed "))
        .collect();
    let source: Vec<&str> = if verifier.is_empty() {
        log.lines().collect()
    } else {
        verifier
    };
    let skip = source.len().saturating_sub(lines);
    source[skip..]
        .iter()
        .map(|line| line.trim_end().to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_end_of_the_verifier_log() {
        let log = "libbpf: prog 'x': BPF program load failed: Permission denied\n\
                   libbpf: prog 'x': -- BEGIN PROG LOAD LOG --\n\
                   0: R1=ctx() R10=fp0\n\
                   1: (79) r0 = *(u64 *)(r1 +0)\n\
                   invalid bpf_context access off=0 size=8\n\
                   processed 2 insns (limit 1000000)\n\
                   -- END PROG LOAD LOG --\n\
                   libbpf: prog 'x': failed to load: -13\n";
        assert_eq!(
            useful_tail(log, 2),
            [
                "1: (79) r0 = *(u64 *)(r1 +0)",
                "invalid bpf_context access off=0 size=8"
            ]
        );
        assert_eq!(useful_tail("libbpf: a\nlibbpf: b\n", 1), ["libbpf: b"]);
        assert!(useful_tail("", 3).is_empty());
    }
}
