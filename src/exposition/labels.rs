//! One label's distinct values, as a counter map's keys are read: each
//! key's label bytes get an id (the same bytes, the same id), and once every
//! key is read the ids are ranked in the order of their values' text.
//!
//! A label decoded by a general chain keeps each distinct value as a
//! `String`, decoded once. A label whose chain is a lone `uint` or `string`
//! ([`Plain`]) keeps its value as a number (an integer, or the string's
//! bytes packed into a `u128`), ranked by comparing numbers and written
//! straight into the text: a map of a million distinct addresses or names
//! then costs no string, no allocation and no string comparison per key.

use std::borrow::Cow;

use super::text::{push_escaped, push_u64};
use crate::decode::{host_uint, until_nul, Chain, Plain};

/// Marks the id of a value a decoder rejected.
pub const REJECTED: u32 = 1 << 31;

/// The most bytes of a `string` label kept as a number.
const SHORT: usize = 16;

/// FxHash (rustc-hash): label bytes are short and not adversarial enough to
/// need SipHash's protection for one snapshot.
type FxMap<K, V> = rustc_hash::FxHashMap<K, V>;

/// The decoded value of a label's bytes: its value, or the decoder that
/// rejected it (and whether that was a skip rather than an error).
type Decoded = Result<String, (&'static str, bool)>;

/// A label's distinct values in rank order, as the encoders read them.
pub enum Values {
    /// Decoded by a general chain.
    Text(Vec<String>),
    /// `uint` values, in the order of their decimal text.
    Uint(Vec<u64>),
    /// `string` values of up to 16 bytes, valid UTF-8, packed big-endian
    /// and zero-padded (so numeric order is byte order is text order).
    Short(Vec<u128>),
}

impl Values {
    pub fn len(&self) -> usize {
        match self {
            Values::Text(values) => values.len(),
            Values::Uint(values) => values.len(),
            Values::Short(values) => values.len(),
        }
    }

    /// The text of value `index`.
    pub fn get(&self, index: usize) -> Cow<'_, str> {
        match self {
            Values::Text(values) => Cow::Borrowed(&values[index]),
            Values::Uint(values) => Cow::Owned(values[index].to_string()),
            Values::Short(values) => {
                let bytes = values[index].to_be_bytes();
                Cow::Owned(String::from_utf8_lossy(unpadded(&bytes)).into_owned())
            }
        }
    }

    /// Appends value `index`, escaped as a label value.
    pub fn push_escaped(&self, index: usize, out: &mut String) {
        match self {
            Values::Text(values) => push_escaped(out, &values[index], true),
            Values::Uint(values) => push_u64(out, values[index]),
            Values::Short(values) => {
                let bytes = values[index].to_be_bytes();
                // Valid UTF-8: checked when ranked.
                let text = std::str::from_utf8(unpadded(&bytes)).unwrap_or_default();
                push_escaped(out, text, true);
            }
        }
    }

    /// Whether reading values one by one is as cheap as keeping their
    /// escaped text (numbers are written straight into the text).
    pub fn writes_directly(&self) -> bool {
        !matches!(self, Values::Text(_))
    }
}

/// The bytes of a packed `string` value, without its padding.
fn unpadded(bytes: &[u8; SHORT]) -> &[u8] {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(SHORT);
    &bytes[..end]
}

/// One label's values seen so far.
pub enum LabelCache<'c> {
    Text(TextCache<'c>),
    Uint(PlainCache<u64>),
    Short(PlainCache<u128>),
}

/// Distinct values of a label past which, when nearly every key brings a
/// new one (an address, a thread id), looking each up costs more than
/// sorting them all once: ids are then given without looking.
const DIRECT_AFTER: usize = 1 << 14;

/// A [`Plain`] label's values as numbers, each with its id.
pub struct PlainCache<T> {
    /// Value → id while values repeat; None once nearly every key brings a
    /// new one (each key then gets an id of its own, and equal values are
    /// merged when ranked).
    ids: Option<FxMap<T, u32>>,
    values: Vec<T>,
    seen: usize,
}

impl<T: Copy + Eq + std::hash::Hash> PlainCache<T> {
    fn new() -> Self {
        PlainCache {
            ids: Some(FxMap::default()),
            values: Vec::new(),
            seen: 0,
        }
    }

    fn id(&mut self, value: T) -> u32 {
        self.seen += 1;
        let next = self.values.len() as u32;
        if let Some(ids) = &mut self.ids {
            if let Some(&id) = ids.get(&value) {
                return id;
            }
            ids.insert(value, next);
            let distinct = self.values.len() + 1;
            if distinct >= DIRECT_AFTER && distinct * 4 > self.seen * 3 {
                self.ids = None;
            }
        }
        self.values.push(value);
        next
    }

    /// Ranks by `key` (which orders the values as their text does, and
    /// from which `value` gives them back): the rank of each id (equal
    /// values share one), and the distinct values in order.
    fn ranks(self, key: impl Fn(&T) -> u128, value: impl Fn(u128) -> T) -> (Vec<u32>, Vec<T>) {
        let mut order: Vec<Keyed> = self
            .values
            .iter()
            .enumerate()
            .map(|(id, value)| Keyed {
                key: key(value),
                id: id as u32,
            })
            .collect();
        // The keys hold the values: a million of them need not be kept twice.
        let ids = self.values.len();
        drop(self.values);
        // Stable, so equal values keep their ids' order.
        radsort::sort_by_key(&mut order, |keyed| keyed.key);
        let mut ranks = vec![0u32; ids];
        let mut sorted: Vec<T> = Vec::new();
        let mut last = None;
        for Keyed { key, id } in order {
            if last != Some(key) {
                sorted.push(value(key));
                last = Some(key);
            }
            ranks[id as usize] = (sorted.len() - 1) as u32;
        }
        (ranks, sorted)
    }
}

/// A sort key and the id it is of, packed (20 bytes, not 32: a million of
/// them, and as many again while they are sorted).
#[derive(Clone, Copy, Default)]
#[repr(C, packed)]
struct Keyed {
    key: u128,
    id: u32,
}

impl<'c> LabelCache<'c> {
    /// The cache for a label of `size` bytes decoded by `chain`.
    pub fn new(chain: &'c Chain, size: usize) -> Self {
        match chain.plain() {
            Some(Plain::Uint) if matches!(size, 1 | 2 | 4 | 8) => {
                LabelCache::Uint(PlainCache::new())
            }
            Some(Plain::CString) if size <= SHORT => LabelCache::Short(PlainCache::new()),
            _ => LabelCache::Text(TextCache::new(chain)),
        }
    }

    /// The id of the value of `bytes`, with [`REJECTED`] set when a decoder
    /// rejected it.
    pub fn id(&mut self, bytes: &[u8]) -> u32 {
        match self {
            LabelCache::Text(cache) => cache.id(bytes),
            // The label's size is one `uint` takes (checked in `new`).
            LabelCache::Uint(cache) => cache.id(host_uint(bytes).unwrap_or_default()),
            LabelCache::Short(cache) => {
                let text = until_nul(bytes);
                let mut padded = [0u8; SHORT];
                padded[..text.len()].copy_from_slice(text);
                cache.id(u128::from_be_bytes(padded))
            }
        }
    }

    /// Why the value of id `id` (which has [`REJECTED`] set) was rejected:
    /// the decoder, and whether it asked to skip rather than failed.
    pub fn rejection(&self, id: u32) -> Option<(&'static str, bool)> {
        match self {
            LabelCache::Text(cache) => cache.decoded[(id & !REJECTED) as usize]
                .as_ref()
                .err()
                .copied(),
            _ => None,
        }
    }

    /// Ranks the distinct values: (rank of each id — equal values share a
    /// rank —, the values in rank order). Ids of rejected values get rank 0
    /// (they are never used).
    pub fn ranks(self) -> (Vec<u32>, Values) {
        match self {
            LabelCache::Text(cache) => cache.ranks(),
            LabelCache::Uint(cache) => {
                let (ranks, sorted) = match cache.same_digits() {
                    true => cache.ranks_by_value(),
                    false => cache.ranks(decimal_order, from_decimal_order),
                };
                (ranks, Values::Uint(sorted))
            }
            LabelCache::Short(cache) => {
                if !cache.values.iter().all(|v| valid_short(*v)) {
                    // Text with U+FFFD in it orders differently from its
                    // bytes: rank as text.
                    return TextCache::of_strings(cache.values.iter().map(|v| lossy_short(*v)))
                        .ranks();
                }
                let (ranks, sorted) = cache.ranks(|v| *v, |key| key);
                (ranks, Values::Short(sorted))
            }
        }
    }
}

impl LabelCache<'_> {
    /// The values in the order they came, each id its index (for a label
    /// whose order does not matter); a rejected id's value is empty.
    pub fn into_values(self) -> Values {
        match self {
            LabelCache::Text(cache) => Values::Text(
                cache
                    .decoded
                    .into_iter()
                    .map(Result::unwrap_or_default)
                    .collect(),
            ),
            LabelCache::Uint(cache) => Values::Uint(cache.values),
            LabelCache::Short(cache) => match cache.values.iter().all(|v| valid_short(*v)) {
                true => Values::Short(cache.values),
                false => Values::Text(cache.values.iter().map(|v| lossy_short(*v)).collect()),
            },
        }
    }
}

/// Whether a packed `string` value is valid UTF-8.
fn valid_short(value: u128) -> bool {
    std::str::from_utf8(unpadded(&value.to_be_bytes())).is_ok()
}

/// A packed `string` value as text, invalid UTF-8 replaced.
fn lossy_short(value: u128) -> String {
    String::from_utf8_lossy(unpadded(&value.to_be_bytes())).into_owned()
}

/// A key that orders integers as their decimal text does ("10" < "9"): the
/// digits left-aligned in 20 places, then the number of digits (a prefix
/// comes first).
fn decimal_order(value: &u64) -> u128 {
    let digits = value.checked_ilog10().map_or(1, |log| log + 1);
    ((u128::from(*value) * 10u128.pow(20 - digits)) << 5) | u128::from(digits)
}

impl PlainCache<u64> {
    /// Whether every value has as many decimal digits as every other (the
    /// smallest and the largest do): their text's order is then theirs.
    fn same_digits(&self) -> bool {
        let digits = |value: u64| value.checked_ilog10().unwrap_or(0);
        match (self.values.iter().min(), self.values.iter().max()) {
            (Some(&min), Some(&max)) => digits(min) == digits(max),
            _ => true,
        }
    }

    /// [`PlainCache::ranks`] of values whose numeric order is their text's:
    /// a radix sort of the integers themselves.
    fn ranks_by_value(self) -> (Vec<u32>, Vec<u64>) {
        let mut order: Vec<(u64, u32)> = self
            .values
            .iter()
            .enumerate()
            .map(|(id, value)| (*value, id as u32))
            .collect();
        let ids = self.values.len();
        drop(self.values);
        radsort::sort_by_key(&mut order, |(value, _)| *value);
        let mut ranks = vec![0u32; ids];
        let mut sorted: Vec<u64> = Vec::new();
        for (value, id) in order {
            if sorted.last() != Some(&value) {
                sorted.push(value);
            }
            ranks[id as usize] = (sorted.len() - 1) as u32;
        }
        (ranks, sorted)
    }
}

/// The value whose [`decimal_order`] key is `key`.
fn from_decimal_order(key: u128) -> u64 {
    let digits = (key & 31) as u32;
    ((key >> 5) / 10u128.pow(20 - digits)) as u64
}

/// A label decoded by a general chain, each distinct value once.
pub struct TextCache<'c> {
    chain: Option<&'c Chain>,
    /// Labels of up to 8 bytes are keyed by their bytes as a number.
    small: FxMap<u64, u32>,
    large: FxMap<Box<[u8]>, u32>,
    decoded: Vec<Decoded>,
}

impl<'c> TextCache<'c> {
    fn new(chain: &'c Chain) -> Self {
        TextCache {
            chain: Some(chain),
            small: FxMap::default(),
            large: FxMap::default(),
            decoded: Vec::new(),
        }
    }

    /// Values already decoded, with ids in their order.
    fn of_strings(values: impl Iterator<Item = String>) -> TextCache<'static> {
        TextCache {
            chain: None,
            small: FxMap::default(),
            large: FxMap::default(),
            decoded: values.map(Ok).collect(),
        }
    }

    fn id(&mut self, bytes: &[u8]) -> u32 {
        let next = self.decoded.len() as u32;
        let (id, new) = if bytes.len() <= 8 {
            let mut word = [0u8; 8];
            word[..bytes.len()].copy_from_slice(bytes);
            let word = u64::from_le_bytes(word);
            match self.small.get(&word) {
                Some(id) => (*id, false),
                None => {
                    self.small.insert(word, next);
                    (next, true)
                }
            }
        } else {
            match self.large.get(bytes) {
                Some(id) => (*id, false),
                None => {
                    self.large.insert(bytes.into(), next);
                    (next, true)
                }
            }
        };
        if !new {
            return id;
        }
        let decoded = match self.chain {
            Some(chain) => chain.decode(bytes).map_err(|err| (err.decoder, err.skip)),
            None => Err(("", true)),
        };
        let rejected = decoded.is_err();
        self.decoded.push(decoded);
        if rejected {
            // Looked up again by later keys with these bytes: flag it there too.
            if bytes.len() <= 8 {
                let mut word = [0u8; 8];
                word[..bytes.len()].copy_from_slice(bytes);
                self.small.insert(u64::from_le_bytes(word), id | REJECTED);
            } else {
                self.large.insert(bytes.into(), id | REJECTED);
            }
            return id | REJECTED;
        }
        id
    }

    fn ranks(self) -> (Vec<u32>, Values) {
        let mut order: Vec<u32> = (0..self.decoded.len() as u32)
            .filter(|&id| self.decoded[id as usize].is_ok())
            .collect();
        let text = |id: u32| self.decoded[id as usize].as_deref().unwrap_or("");
        order.sort_unstable_by(|&a, &b| text(a).cmp(text(b)));
        let mut ranks = vec![0u32; self.decoded.len()];
        let mut sorted: Vec<String> = Vec::new();
        for &id in &order {
            let value = text(id);
            if sorted.last().map(String::as_str) != Some(value) {
                sorted.push(value.to_string());
            }
            ranks[id as usize] = (sorted.len() - 1) as u32;
        }
        (ranks, Values::Text(sorted))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_order_is_the_order_of_the_text() {
        let mut values: Vec<u64> = vec![
            0,
            1,
            9,
            10,
            11,
            19,
            100,
            99,
            101,
            1_000_000,
            999_999,
            u64::MAX,
            u64::MAX - 1,
            10_000_000_000_000_000_000,
            9_999_999_999_999_999_999,
            1_844_674_407_370_955_161,
        ];
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..2000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            values.push(state >> (state % 64));
        }
        for value in &values {
            assert_eq!(from_decimal_order(decimal_order(value)), *value);
        }
        let mut by_key = values.clone();
        by_key.sort_by_key(decimal_order);
        let mut by_text = values;
        by_text.sort_by_key(|v| v.to_string());
        assert_eq!(by_key, by_text);
    }

    #[test]
    fn plain_labels_rank_as_their_text_would() {
        let uint = Chain::build(&[crate::spec::DecoderSpec::named("uint")], 4).unwrap();
        let string = Chain::build(&[crate::spec::DecoderSpec::named("string")], 8).unwrap();
        let cases: [(&Chain, usize, Vec<Vec<u8>>); 3] = [
            (
                &uint,
                4,
                [9u32, 10, 2, 10, 100, 0]
                    .iter()
                    .map(|v| v.to_ne_bytes().to_vec())
                    .collect(),
            ),
            (
                &string,
                8,
                [
                    &b"b\0junk\0\0"[..],
                    b"a\"b\\c\0\0\0",
                    b"b\0other\0",
                    b"\0\0\0\0\0\0\0\0",
                    b"ab\0\0\0\0\0\0",
                    b"\xce\xbb\0\0\0\0\0\0",
                ]
                .iter()
                .map(|b| b.to_vec())
                .collect(),
            ),
            (
                &string,
                8,
                [
                    &b"b\0\0\0\0\0\0\0"[..],
                    b"\xff\xfe\0\0\0\0\0\0",
                    b"a\0\0\0\0\0\0\0",
                ]
                .iter()
                .map(|b| b.to_vec())
                .collect(),
            ),
        ];
        for (chain, size, keys) in cases {
            assert_ranks_as_text(chain, size, &keys);
        }
    }

    /// Asserts that a plain label of `size` bytes decoded by `chain` is not
    /// cached as text, and that it gives these keys the ranks, values and
    /// escaped values the text cache gives them.
    fn assert_ranks_as_text(chain: &Chain, size: usize, keys: &[Vec<u8>]) {
        let mut fast = LabelCache::new(chain, size);
        assert!(!matches!(fast, LabelCache::Text(_)));
        let mut text = TextCache::new(chain);
        let fast_ids: Vec<u32> = keys.iter().map(|k| fast.id(k)).collect();
        let text_ids: Vec<u32> = keys.iter().map(|k| text.id(k)).collect();
        let (fast_ranks, fast_values) = fast.ranks();
        let (text_ranks, text_values) = text.ranks();
        let ranked = |ids: &[u32], ranks: &[u32]| -> Vec<u32> {
            ids.iter().map(|id| ranks[*id as usize]).collect()
        };
        assert_eq!(
            ranked(&fast_ids, &fast_ranks),
            ranked(&text_ids, &text_ranks)
        );
        assert_eq!(fast_values.len(), text_values.len());
        for index in 0..fast_values.len() {
            assert_eq!(fast_values.get(index), text_values.get(index));
            let (mut a, mut b) = (String::new(), String::new());
            fast_values.push_escaped(index, &mut a);
            text_values.push_escaped(index, &mut b);
            assert_eq!(a, b);
        }
    }
}
