//! Waiting out a window: until it ends or SIGINT/SIGTERM comes, with the
//! time left shown on a terminal's stderr (never in pipes or cron).

use std::io::Write;
use std::time::{Duration, Instant};

use crate::log::Log;
use crate::session::Stop;

/// Waits `length` or until a signal comes on `stop` (then true).
pub(super) fn wait(stop: &mut Stop, length: Duration, log: Log) -> bool {
    let deadline = Instant::now() + length;
    let shown = log.countdown() && length >= Duration::from_secs(2);
    let signalled = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break false;
        }
        if shown {
            show(&format!(
                "bpfsnap: sampling, {}s left",
                left.as_secs_f64().ceil()
            ));
        }
        let step = match shown {
            true => left.min(Duration::from_secs(1)),
            false => left,
        };
        if let Some(signal) = stop.wait(Some(step)) {
            if shown {
                show("");
            }
            log.info(&format!("signal {signal}: ending the window early"));
            break true;
        }
    };
    if shown && !signalled {
        show("");
    }
    signalled
}

/// `line` in place of the countdown's line.
fn show(line: &str) {
    let _ = write!(std::io::stderr(), "\r\x1b[K{line}");
}
