//! SIGINT and SIGTERM, caught from the start and forwarded as messages by a
//! thread started only once capabilities are dropped (a thread keeps the
//! capabilities it was started with).

use std::sync::mpsc;

use anyhow::{Context, Result};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

/// SIGINT and SIGTERM caught: from here on they no longer kill the process;
/// those that come before [`Caught::forward`] wait for it.
pub struct Caught(Signals);

pub fn catch() -> Result<Caught> {
    Signals::new([SIGINT, SIGTERM])
        .map(Caught)
        .context("installing signal handlers")
}

impl Caught {
    /// The signals as messages, from a thread of their own.
    pub fn forward(self) -> Result<mpsc::Receiver<i32>> {
        let Caught(mut signals) = self;
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
}
