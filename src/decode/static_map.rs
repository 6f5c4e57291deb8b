//! `static_map`: looks its input text (usually `uint`'s decimal output) up in
//! the spec's `static_map` table and outputs the mapped value.
//!
//! Like ebpf_exporter, a value missing from the table becomes `unknown:<input>`,
//! or passes through unchanged with `allow_unknown = true`; it is never an error.

use std::collections::HashMap;

use anyhow::{bail, Result};

use super::{DecodeError, Decoder};
use crate::spec::DecoderSpec;

pub struct StaticMap {
    table: HashMap<Vec<u8>, Vec<u8>>,
    allow_unknown: bool,
}

impl StaticMap {
    pub fn new<'a>(
        entries: impl IntoIterator<Item = (&'a String, &'a String)>,
        allow_unknown: bool,
    ) -> StaticMap {
        let table = entries
            .into_iter()
            .map(|(key, value)| (key.as_bytes().to_vec(), value.as_bytes().to_vec()))
            .collect();
        StaticMap {
            table,
            allow_unknown,
        }
    }
}

impl Decoder for StaticMap {
    fn decode(&self, input: &[u8], out: &mut Vec<u8>) -> Result<(), DecodeError> {
        match self.table.get(input) {
            Some(value) => out.extend_from_slice(value),
            None if self.allow_unknown => out.extend_from_slice(input),
            None => {
                out.extend_from_slice(b"unknown:");
                out.extend_from_slice(input);
            }
        }
        Ok(())
    }
}

/// Builds `static_map` for a label of `size` bytes.
pub fn build(spec: &DecoderSpec, _size: usize) -> Result<Box<dyn Decoder>> {
    if spec.regexps.is_some() {
        bail!("decoder static_map takes no regexps (only static_map and allow_unknown)");
    }
    let Some(map) = &spec.static_map else {
        bail!("decoder static_map needs a static_map table (input value = label value)");
    };
    Ok(Box::new(StaticMap::new(&map.0, spec.allow_unknown)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::check_table;
    use crate::spec::StaticMap as Table;

    fn spec(entries: &[(&str, &str)], allow_unknown: bool) -> DecoderSpec {
        DecoderSpec {
            static_map: Some(Table(
                entries
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            )),
            allow_unknown,
            ..DecoderSpec::named("static_map")
        }
    }

    #[test]
    fn maps_known_values_and_marks_unknown_ones() {
        let decoder = build(
            &spec(&[("1", "read"), ("2", "write"), ("", "empty")], false),
            4,
        )
        .unwrap();
        check_table(
            &*decoder,
            &[
                (b"1", Ok("read")),
                (b"2", Ok("write")),
                (b"", Ok("empty")),
                (b"3", Ok("unknown:3")),
                (b"01", Ok("unknown:01")), // keys are exact text, not numbers
                (b"1 ", Ok("unknown:1 ")),
                (b"\xff", Ok("unknown:\u{fffd}")),
            ],
        );
    }

    #[test]
    fn allow_unknown_passes_unknown_values_through() {
        let decoder = build(&spec(&[("1", "read")], true), 4).unwrap();
        check_table(
            &*decoder,
            &[(b"1", Ok("read")), (b"3", Ok("3")), (b"", Ok(""))],
        );
    }

    #[test]
    fn empty_table_marks_everything_unknown() {
        let decoder = build(&spec(&[], false), 4).unwrap();
        check_table(&*decoder, &[(b"7", Ok("unknown:7"))]);
    }

    #[test]
    fn follows_uint_in_a_chain() {
        let specs = [DecoderSpec::named("uint"), spec(&[("1", "read")], false)];
        let chain = crate::decode::Chain::build(&specs, 1).unwrap();
        assert_eq!(chain.decode(&[1]).unwrap(), "read");
        assert_eq!(chain.decode(&[2]).unwrap(), "unknown:2");
    }

    #[test]
    fn build_needs_a_table_and_no_regexps() {
        let err = build(&DecoderSpec::named("static_map"), 4)
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("decoder static_map needs a static_map table"),
            "{err}"
        );

        let mut with_regexps = spec(&[("1", "read")], false);
        with_regexps.regexps = Some(vec![".*".into()]);
        let err = build(&with_regexps, 4).err().unwrap().to_string();
        assert!(err.contains("takes no regexps"), "{err}");
    }
}
