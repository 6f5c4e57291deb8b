//! Spilling: a large family's text written out while it is encoded.
//!
//! A million-key map's family is tens of MB of text. Held whole until the
//! sink writes it, every page of it is fresh memory (a page fault each) and
//! the disk only starts on it once it is complete, after which the writer
//! waits for all of it at the fsync. Spilled instead, the text passes
//! through a few buffers of [`SPILL_AT`] bytes, written and reused, and
//! the disk writes the first parts while the rest is encoded.

/// Where an exposition writes a family's text while it encodes it: a
/// textfile's temporary file (`sink::Partial`). A spilled family comes
/// before the families held (the text format does not order families). A
/// write error is the receiver's to keep and report when it is finished:
/// the encoding goes on, its text abandoned.
pub trait Spill: std::fmt::Debug {
    /// Takes the next part of the text, leaving `text` empty: the
    /// receiver may keep the buffer and put another in its place.
    fn spill(&mut self, text: &mut String);
}

/// Bytes of a family's text that are written out as soon as they are
/// encoded: a buffer that stays in the CPU's caches, and still few writes.
pub const SPILL_AT: usize = 256 << 10;

/// One family's text being spilled, and its head.
pub(super) struct Spilling<'s> {
    to: &'s mut dyn Spill,
    at: usize,
    /// The family's lines up to its first sample (`# HELP`, `# TYPE`, the
    /// sample), once it has spilled: what a collision check reads.
    head: Option<String>,
}

impl<'s> Spilling<'s> {
    pub(super) fn new(to: &'s mut dyn Spill, at: usize) -> Spilling<'s> {
        Spilling { to, at, head: None }
    }

    /// Spills `out`, the family's text since the last spill, if it holds
    /// enough: call it between samples.
    pub(super) fn maybe(&mut self, out: &mut String) {
        if out.len() >= self.at {
            self.flush(out);
        }
    }

    /// Spills what `out` holds, if the family has spilled before: the
    /// end of its text. Returns its head if it has.
    pub(super) fn finish(mut self, out: &mut String) -> Option<String> {
        if self.head.is_some() {
            self.flush(out);
        }
        self.head
    }

    fn flush(&mut self, out: &mut String) {
        if self.head.is_none() {
            self.head = Some(head_of(out).to_string());
        }
        self.to.spill(out);
        // (Empty already, unless the receiver failed to take it.)
        out.clear();
    }
}

/// The lines of a family's text up to and including its first sample.
fn head_of(text: &str) -> &str {
    let mut at = 0;
    for line in text.split_inclusive('\n') {
        at += line.len();
        if !line.trim_end().is_empty() && !line.starts_with('#') {
            break;
        }
    }
    &text[..at]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_head_ends_after_the_first_sample() {
        let cases = [
            (
                "# HELP a x\n# TYPE a counter\na 1\na{b=\"c\"} 2\n",
                "# HELP a x\n# TYPE a counter\na 1\n",
            ),
            ("a 1\nb 2\n", "a 1\n"),
            ("# HELP a x\n", "# HELP a x\n"),
            ("", ""),
        ];
        for (text, head) in cases {
            assert_eq!(head_of(text), head, "{text:?}");
        }
    }
}
