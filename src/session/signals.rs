//! SIGINT and SIGTERM, caught from the start.

use std::sync::mpsc;

use anyhow::{Context, Result};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

/// SIGINT and SIGTERM as messages; once this is set up they no longer kill the
/// process, they end the window.
pub fn stop_signals() -> Result<mpsc::Receiver<i32>> {
    let mut signals = Signals::new([SIGINT, SIGTERM]).context("installing signal handlers")?;
    let (sender, receiver) = mpsc::channel();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                if sender.send(signal).is_err() {
                    break;
                }
            }
        })
        .context("starting the signal thread")?;
    Ok(receiver)
}
