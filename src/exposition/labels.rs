//! One label's values, as a counter map's keys are read: each key's label
//! bytes get the id of their decoded value, and the values are kept one
//! after another in one string.
//!
//! The cost per key does not depend on the decoder beyond the decoder's own
//! work: a value is decoded into the shared string (no `String` per value,
//! no allocation once the buffers have grown), each distinct label bytes
//! once while they repeat, and values are never sorted or compared as text
//! (series are ordered by the key's bytes, see `series`). Only a label
//! whose decoder can give two byte strings one value (`string`, `ksym`, a
//! `static_map`) compares decoded values, by hash, so that keys with equal
//! labels still become one series.

use std::hash::BuildHasher;

use super::text::push_escaped;
use crate::decode::{Chain, Scratch};

/// Marks the id of a value a decoder rejected.
pub const REJECTED: u32 = 1 << 31;

/// FxHash (rustc-hash): label bytes and values are short and not
/// adversarial enough to need SipHash's protection for one snapshot.
type FxMap<K, V> = rustc_hash::FxHashMap<K, V>;

/// Distinct label bytes past which, when nearly every key brings new ones
/// (an address, a thread id), looking each up costs more than decoding it
/// again: each key's bytes are then decoded without looking.
const DIRECT_AFTER: usize = 1 << 14;

/// The most text one label's values hold (their ends are u32): a million
/// values of 4 KiB each, far beyond what a map key's label decodes to. A
/// value that would end past it rejects its key, counted under
/// [`TOO_MUCH_TEXT`].
const MAX_TEXT: usize = u32::MAX as usize;

/// The decoder a key is rejected by when its label's values outgrow
/// [`MAX_TEXT`] (counted in `bpfsnap_decoder_errors_total` under this name).
const TOO_MUCH_TEXT: &str = "label_text_over_4GiB";

/// Where a value is in [`Values`]' text: its start and end.
pub type Span = (usize, usize);

/// A label's decoded values, one after another in one string; a value's id
/// is its index. Values are written to the text format as they are, unless
/// one of them has a byte to escape.
#[derive(Default)]
pub struct Values {
    text: String,
    /// Where each value ends in `text` (u32: half the memory of a usize
    /// for a million distinct values; a label's text stops at 4 GiB, see
    /// [`MAX_TEXT`]).
    ends: Vec<u32>,
    /// Whether no value has a byte the text format escapes.
    plain: bool,
}

impl Values {
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Where value `index` is in the text.
    pub fn span(&self, index: usize) -> Span {
        let start = match index {
            0 => 0,
            _ => self.ends[index - 1] as usize,
        };
        (start, self.ends[index] as usize)
    }

    /// The text of value `index`.
    pub fn get(&self, index: usize) -> &str {
        self.text_of(self.span(index))
    }

    fn text_of(&self, (start, end): Span) -> &str {
        debug_assert!(start <= end && self.text.is_char_boundary(start));
        debug_assert!(self.text.is_char_boundary(end));
        // SAFETY: spans are made of `ends`, each the text's length right
        // after a whole value (a str) was appended, never past it, in
        // order: char boundaries, start ≤ end ≤ len. Checking them reads
        // the byte after each value, one more cache miss per label of a
        // large map written out of the order its values were decoded in.
        unsafe { self.text.get_unchecked(start..end) }
    }

    /// The first byte of the value at `span` (0 if empty): reading it
    /// brings the value into the cache.
    pub fn first_byte(&self, (start, _): Span) -> u8 {
        self.text.as_bytes().get(start).copied().unwrap_or(0)
    }

    /// Appends the value at `span`, escaped as a label value.
    pub fn push_escaped(&self, span: Span, out: &mut String) {
        let text = self.text_of(span);
        match self.plain {
            true => out.push_str(text),
            false => push_escaped(out, text, true),
        }
    }

    /// Notes whether any value needs escaping (once every value is in).
    fn finish(&mut self) {
        self.plain = memchr::memchr3(b'\\', b'"', b'\n', self.text.as_bytes()).is_none();
    }
}

/// One label's values seen so far, and the id of each label bytes seen.
pub struct LabelCache<'c> {
    chain: &'c Chain,
    /// Label bytes → id, while looking up is worth it. Labels of up to 8
    /// bytes are keyed by their bytes as a number.
    small: FxMap<u64, u32>,
    large: FxMap<Box<[u8]>, u32>,
    looking: bool,
    /// Keys seen, for deciding to stop looking.
    seen: usize,
    /// For a label whose decoder can give different bytes one value: hash
    /// of a value that is not canonical (see `Decoder::canonical`) → its
    /// id, and values whose hash another value already had (equal values
    /// get one id rather than being kept again).
    by_hash: Option<FxMap<u64, u32>>,
    collided: FxMap<String, u32>,
    /// Whether different label bytes were given one value's id, or may
    /// have equal values with different ids.
    merged: bool,
    /// Whether a canonical value was kept without its hash.
    unhashed: bool,
    values: Values,
    /// Why the value of each rejected id was rejected: the decoder, and
    /// whether it asked to skip rather than failed.
    rejections: Vec<(&'static str, bool)>,
    scratch: Scratch,
}

impl<'c> LabelCache<'c> {
    /// The cache of a label decoded by `chain`.
    pub fn new(chain: &'c Chain) -> Self {
        LabelCache {
            chain,
            small: FxMap::default(),
            large: FxMap::default(),
            looking: true,
            seen: 0,
            by_hash: (!chain.injective()).then(FxMap::default),
            collided: FxMap::default(),
            merged: false,
            unhashed: false,
            values: Values::default(),
            rejections: Vec::new(),
            scratch: Scratch::default(),
        }
    }

    /// The id of the value of `bytes`, with [`REJECTED`] set when a decoder
    /// rejected it.
    pub fn id(&mut self, bytes: &[u8]) -> u32 {
        self.seen += 1;
        if !self.looking {
            return self.decode(bytes);
        }
        if let Some(id) = self.looked_up(bytes) {
            return id;
        }
        let id = self.decode(bytes);
        match small_key(bytes) {
            Some(word) => self.small.insert(word, id),
            None => self.large.insert(bytes.into(), id),
        };
        self.stop_looking_if_distinct();
        id
    }

    fn looked_up(&self, bytes: &[u8]) -> Option<u32> {
        match small_key(bytes) {
            Some(word) => self.small.get(&word).copied(),
            None => self.large.get(bytes).copied(),
        }
    }

    /// Stops looking label bytes up once nearly every key brings new ones
    /// (equal values may then have several ids: a label whose decoder can
    /// give different bytes one value still finds them by hash).
    fn stop_looking_if_distinct(&mut self) {
        let distinct = self.small.len() + self.large.len();
        if distinct >= DIRECT_AFTER && distinct * 4 > self.seen * 3 {
            self.looking = false;
            self.small = FxMap::default();
            self.large = FxMap::default();
        }
    }

    /// Decodes `bytes` into a value of its own (or, for a label that
    /// compares values, the id of an equal value already kept).
    fn decode(&mut self, bytes: &[u8]) -> u32 {
        let start = self.values.text.len();
        let decoded = self
            .chain
            .decode_into(bytes, &mut self.scratch, &mut self.values.text);
        let rejected = match decoded {
            Err(err) => Some((err.decoder, err.skip)),
            Ok(()) if self.values.text.len() > MAX_TEXT => Some((TOO_MUCH_TEXT, false)),
            Ok(()) => None,
        };
        if let Some(rejection) = rejected {
            self.values.text.truncate(start);
            self.rejections.push(rejection);
            return (self.rejections.len() - 1) as u32 | REJECTED;
        }
        let next = self.values.ends.len() as u32;
        if self.by_hash.is_some() {
            if self.chain.canonical(bytes) {
                // Kept without a hash: no other canonical value equals it,
                // but one kept with a hash may.
                self.unhashed = true;
                self.merged |= self
                    .by_hash
                    .as_ref()
                    .is_some_and(|hashes| !hashes.is_empty());
            } else if let Some(id) = self.kept_equal(start, next) {
                self.values.text.truncate(start);
                self.merged = true;
                return id;
            } else if self.unhashed {
                // It may equal a value kept without a hash: the table
                // compares them all.
                self.merged = true;
            }
        }
        // At most MAX_TEXT (checked above).
        self.values.ends.push(self.values.text.len() as u32);
        next
    }

    /// For a label that compares values: the id of a kept value equal to
    /// the one just decoded at `start`, else None (and `next` is noted as
    /// its id).
    fn kept_equal(&mut self, start: usize, next: u32) -> Option<u32> {
        let by_hash = self.by_hash.as_mut()?;
        let value = &self.values.text[start..];
        let hash = by_hash.hasher().hash_one(value);
        let Some(&id) = by_hash.get(&hash) else {
            by_hash.insert(hash, next);
            return None;
        };
        if self.values.get(id as usize) == value {
            return Some(id);
        }
        // Another value with this hash: rare enough to key by the text.
        match self.collided.get(value) {
            Some(&id) => Some(id),
            None => {
                self.collided.insert(value.to_string(), next);
                None
            }
        }
    }

    /// How many values are kept: it grows by one when a label bytes' value
    /// is new.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether two keys with different bytes for this label may have equal
    /// values.
    pub fn merged(&self) -> bool {
        self.merged
    }

    /// Why the value of id `id` (which has [`REJECTED`] set) was rejected:
    /// the decoder, and whether it asked to skip rather than failed.
    pub fn rejection(&self, id: u32) -> Option<(&'static str, bool)> {
        self.rejections.get((id & !REJECTED) as usize).copied()
    }

    /// The values, each id its index.
    pub fn into_values(mut self) -> Values {
        self.values.finish();
        self.values
    }
}

/// A label of up to 8 bytes as one number (a label's bytes are all of one
/// size, so no two sizes meet in one map). The usual sizes are read as
/// what they are: a copy of a length known only at run time is a call.
fn small_key(bytes: &[u8]) -> Option<u64> {
    Some(match *bytes {
        [a, b, c, d, e, f, g, h] => u64::from_ne_bytes([a, b, c, d, e, f, g, h]),
        [a, b, c, d] => u64::from(u32::from_ne_bytes([a, b, c, d])),
        [a, b] => u64::from(u16::from_ne_bytes([a, b])),
        [a] => u64::from(a),
        _ if bytes.len() < 8 => {
            let mut word = [0u8; 8];
            word[..bytes.len()].copy_from_slice(bytes);
            u64::from_ne_bytes(word)
        }
        _ => return None,
    })
}

/// Hash `value` as [`LabelCache`] does (tests check collisions).
#[cfg(test)]
fn fx_hash(value: &str) -> u64 {
    rustc_hash::FxBuildHasher.hash_one(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::DecoderSpec;

    fn chain(name: &str, size: usize) -> Chain {
        Chain::build(&[DecoderSpec::named(name)], size).unwrap()
    }

    #[test]
    fn equal_values_share_an_id_where_decoders_can_make_them() {
        let string = chain("string", 8);
        let uint = chain("uint", 4);
        // (chain, keys, the ids they get, the values kept, merged)
        type Case<'a> = (&'a Chain, Vec<Vec<u8>>, Vec<u32>, Vec<&'a str>, bool);
        let cases: [Case; 5] = [
            (
                // Canonical after not: different ids, compared later.
                &string,
                vec![b"ab\0x\0\0\0\0".to_vec(), b"ab\0\0\0\0\0\0".to_vec()],
                vec![0, 1],
                vec!["ab", "ab"],
                true,
            ),
            (
                &string,
                vec![
                    b"ab\0x\0\0\0\0".to_vec(),
                    b"ab\0y\0\0\0\0".to_vec(),
                    b"c\0\0\0\0\0\0\0".to_vec(),
                ],
                vec![0, 0, 1],
                vec!["ab", "c"],
                true,
            ),
            (
                &string,
                vec![
                    b"ab\0\0\0\0\0\0".to_vec(),
                    b"c\0\0\0\0\0\0\0".to_vec(),
                    b"ab\0\0\0\0\0\0".to_vec(),
                ],
                vec![0, 1, 0],
                vec!["ab", "c"],
                false,
            ),
            (
                &uint,
                [7u32, 10, 7]
                    .iter()
                    .map(|v| v.to_ne_bytes().to_vec())
                    .collect(),
                vec![0, 1, 0],
                vec!["7", "10"],
                false,
            ),
            (
                &string,
                vec![
                    b"\xff\0\0\0\0\0\0\0".to_vec(),
                    b"\xfe\0\0\0\0\0\0\0".to_vec(),
                ],
                vec![0, 0],
                vec!["\u{fffd}"],
                true,
            ),
        ];
        for (chain, keys, ids, values, merged) in cases {
            let mut cache = LabelCache::new(chain);
            let got: Vec<u32> = keys.iter().map(|key| cache.id(key)).collect();
            assert_eq!(got, ids, "{values:?}");
            assert_eq!(cache.merged(), merged, "{values:?}");
            let kept = cache.into_values();
            let kept: Vec<&str> = (0..kept.len()).map(|i| kept.get(i)).collect();
            assert_eq!(kept, values);
        }
    }

    #[test]
    fn distinct_keys_stop_the_lookup_but_not_the_comparison() {
        let string = chain("string", 8);
        let mut cache = LabelCache::new(&string);
        let n = DIRECT_AFTER as u64 * 2;
        for i in 0..n {
            // Distinct bytes, each value twice (the byte after the NUL
            // differs, and is not 0: not canonical).
            let mut key = format!("{:06}", i / 2).into_bytes();
            key.extend_from_slice(&[0, 1 + (i % 2) as u8]);
            assert_eq!(cache.id(&key), (i / 2) as u32);
        }
        assert!(!cache.looking);
        assert_eq!(cache.into_values().len() as u64, n / 2);
    }

    #[test]
    fn values_that_share_a_hash_stay_apart() {
        let string = chain("string", 8);
        let mut cache = LabelCache::new(&string);
        // Force a collision: note "b" under the hash of "a".
        assert_eq!(cache.id(b"a\0z\0\0\0\0\0"), 0);
        let hash_of_b = fx_hash("b");
        cache.by_hash.as_mut().unwrap().insert(hash_of_b, 0);
        assert_eq!(cache.id(b"b\0z\0\0\0\0\0"), 1);
        assert_eq!(cache.id(b"b\0x\0\0\0\0\0"), 1);
        assert_eq!(cache.id(b"a\0x\0\0\0\0\0"), 0);
    }

    #[test]
    fn rejections_are_kept_with_their_decoder() {
        let uint = chain("uint", 4);
        let mut cache = LabelCache::new(&uint);
        let id = cache.id(&[1, 2]);
        assert_ne!(id & REJECTED, 0);
        assert_eq!(cache.rejection(id), Some(("uint", false)));
        assert_eq!(cache.id(&[1, 2]), id);
        assert_eq!(cache.id(&5u32.to_ne_bytes()), 0);
    }

    #[test]
    fn values_escape_only_when_they_must() {
        let string = chain("string", 4);
        for (keys, want) in [
            (vec![&b"ab\0\0"[..], b"c\0\0\0"], "ab|c"),
            (vec![&b"a\"b\0"[..], b"c\\\0\0"], "a\\\"b|c\\\\"),
        ] {
            let mut cache = LabelCache::new(&string);
            for key in &keys {
                cache.id(key);
            }
            let values = cache.into_values();
            let mut out = String::new();
            for i in 0..values.len() {
                if i > 0 {
                    out.push('|');
                }
                values.push_escaped(values.span(i), &mut out);
            }
            assert_eq!(out, want);
        }
    }
}
