//! `--pin`'s bookkeeping over one run: what was pinned when it began, the
//! sets it adopts, each window's snapshot time, and, at the end, keeping
//! what it pinned or undoing it ([`Pinning`]) with a note on the error.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::Result;

use crate::exposition::self_metrics::unix_seconds;
use crate::log::Log;
use crate::probe::pinning::Pinning;
use crate::probe::Probe;
use crate::session::Selected;

/// A run's pinning: nothing without `--pin`.
pub(super) struct Pins {
    root: Option<PathBuf>,
    /// Once begun: the run's changes to bpffs.
    pinning: Option<Pinning>,
}

impl Pins {
    pub(super) fn new(root: Option<&Path>) -> Pins {
        Pins {
            root: root.map(Path::to_path_buf),
            pinning: None,
        }
    }

    /// Begins a pinned run: leaves out what cannot be pinned (checked
    /// before anything is), removes what an interrupted run left, and notes
    /// what is pinned already, so that a failure can undo this run's pins.
    pub(super) fn begin(&mut self, selected: &mut Selected<'_>, log: Log) -> Result<()> {
        let Some(root) = &self.root else {
            return Ok(());
        };
        selected.fit_to_pin()?;
        let names: Vec<&str> = selected
            .programs()
            .iter()
            .map(|p| p.config.name.as_str())
            .collect();
        let (pinning, recovered) = Pinning::begin(root, &names)?;
        for line in recovered {
            log.info(&line);
        }
        self.pinning = Some(pinning);
        Ok(())
    }

    /// Says (with -v) which configs count on in a set an earlier run pinned.
    pub(super) fn say_adopted(&self, probes: &[Probe], log: Log) {
        let Some(pinning) = &self.pinning else {
            return;
        };
        for pinned in probes.iter().filter_map(Probe::pinned) {
            if pinning.is_earlier(&pinned.dir) {
                log.info(&format!(
                    "{}: counting on in the set pinned in {}",
                    pinned.dir.file_name().unwrap_or_default().to_string_lossy(),
                    pinned.dir.display()
                ));
            }
        }
    }

    /// After a window is written (at `written_at`; the probes attached at
    /// `attached_at`): each pinned set records its snapshot time (the next
    /// window starts there), and a pinned run in which every config ran
    /// (`all_ran`) keeps what it pinned.
    pub(super) fn written(
        &mut self,
        probes: &mut [Probe],
        all_ran: bool,
        (written_at, attached_at): (SystemTime, SystemTime),
        log: Log,
    ) -> Result<()> {
        for probe in probes.iter_mut() {
            if let Some(pinned) = probe.pinned_mut() {
                pinned.record_snapshot(unix_seconds(written_at), unix_seconds(attached_at))?;
            }
        }
        if let (true, Some(pinning)) = (all_ran, &mut self.pinning) {
            for line in pinning.commit()? {
                log.info(&line);
            }
        }
        Ok(())
    }

    /// `err`, the run's, with a note on what is left pinned (what the run
    /// pinned is undone unless it was kept).
    pub(super) fn failed(self, err: anyhow::Error) -> anyhow::Error {
        let note = match (self.root, self.pinning) {
            (None, _) => return err,
            (Some(_), None) => "--pin: this run pinned nothing".to_string(),
            (Some(_), Some(mut pinning)) => pinning.failed_note(),
        };
        let noted = anyhow::anyhow!("{err:#}; {note}");
        match crate::BadInput::is(&err) {
            true => crate::BadInput::wrap(noted),
            false => noted,
        }
    }
}
