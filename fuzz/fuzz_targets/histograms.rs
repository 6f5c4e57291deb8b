//! The histogram transform on arbitrary bucket maps: a histogram config
//! made from the input (any bucket type, ranges anywhere in u64, sizes of
//! the bucket label 1 to 8 bytes, multipliers from tiny to huge) and a
//! per-CPU map of arbitrary (series, bucket) keys. Never a panic; every
//! series has finite, strictly increasing bounds, cumulative counts that
//! never decrease, `+Inf` = `_count` ≥ every bucket; the text is well-formed.
#![no_main]

use bpfsnap::exposition;
use bpfsnap::spec::Format;
use bpfsnap::snapshot::{MapData, Snapshot};
use bpfsnap_fuzz::{check_exposition, Bytes};
use libfuzzer_sys::fuzz_target;

const MULTIPLIERS: [&str; 8] = [
    "1",
    "0.001",
    "0.000000001",
    "0.1",
    "3",
    "1024",
    "1e-300",
    "1e300",
];

/// Widest bucket range generated: validation refuses more than 4096 buckets
/// (bug 3 in RELIABILITY.md), and wider ranges would only be refused.
const MAX_SPAN: u64 = 64;

fuzz_target!(|data: &[u8]| {
    let mut bytes = Bytes(data);
    let kind = bytes.u8();
    let bucket_type = ["exp2", "exp2zero", "linear", "fixed"][kind as usize % 4];
    let wide = kind & 4 != 0;
    let min = if wide {
        bytes.u64()
    } else {
        u64::from(bytes.u8())
    };
    let span = u64::from(bytes.u16()) % MAX_SPAN;
    let max = match bucket_type {
        "exp2" | "exp2zero" => min.min(70).saturating_add(span % 72),
        _ => min.saturating_add(span),
    };
    let multiplier = MULTIPLIERS[bytes.u8() as usize % MULTIPLIERS.len()];
    let bucket_size = [1usize, 2, 4, 8][bytes.u8() as usize % 4];
    let range = if bucket_type == "fixed" {
        let count = 1 + bytes.u8() as usize % 16;
        let mut keys: Vec<u64> = (0..count)
            .map(|_| {
                if wide {
                    bytes.u64()
                } else {
                    u64::from(bytes.u16())
                }
            })
            .collect();
        keys.sort_unstable();
        keys.dedup();
        let list: Vec<String> = keys.iter().map(u64::to_string).collect();
        format!("      bucket_keys: [{}]\n", list.join(", "))
    } else {
        format!(
            "      bucket_min: {}\n      bucket_max: {}\n",
            min.min(max),
            max
        )
    };
    let yaml = format!(
        "metrics:\n  histograms:\n    - name: h_seconds\n      help: H.\n      bucket_type: {bucket_type}\n\
         {range}      bucket_multiplier: {multiplier}\n      labels:\n\
         \x20       - name: op\n          size: 2\n          decoders:\n            - name: uint\n\
         \x20       - name: bucket\n          size: {bucket_size}\n          decoders:\n            - name: uint\n"
    );
    let Ok((_, plan)) = bpfsnap::plan::parse("fuzz", "fuzz.yaml", &yaml, Format::Yaml) else {
        return;
    };
    let values_per_key = 1 + bytes.u8() as usize % 3;
    let key_size = 2 + bucket_size;
    let (mut keys, mut values) = (Vec::new(), Vec::new());
    while bytes.0.len() >= key_size + values_per_key {
        keys.extend_from_slice(bytes.take(key_size));
        for &b in bytes.take(values_per_key) {
            // Shifted so that counts near 2^64 meet in one bucket: they
            // must saturate (bug 8 in RELIABILITY.md).
            let shift = b % 8 * 7;
            values.push(u64::from(b) << shift);
        }
    }
    let snapshot = Snapshot {
        maps: vec![MapData {
            name: "h_seconds".into(),
            key_size,
            values_per_key,
            is_array: false,
            per_cpu: values_per_key > 1,
            keys,
            values,
        }],
        unread: Vec::new(),
        events_lost: Vec::new(),
    };
    let exposed = exposition::families(&plan, snapshot, "fuzz").expect("histograms");
    for family in exposed.families.iter().map(exposition::Family::to_proto) {
        for metric in family.get_metric() {
            let histogram = metric.get_histogram();
            let buckets = histogram.get_bucket();
            // No finite bucket at all is right when every bound overflows
            // (a huge multiplier): the series is its `+Inf` bucket, which
            // the text check below requires.
            for pair in buckets.windows(2) {
                assert!(
                    pair[0].upper_bound() < pair[1].upper_bound(),
                    "bounds not strictly increasing: {} then {}\n{yaml}",
                    pair[0].upper_bound(),
                    pair[1].upper_bound()
                );
                assert!(
                    pair[0].cumulative_count() <= pair[1].cumulative_count(),
                    "{yaml}"
                );
            }
            for bucket in buckets {
                assert!(
                    bucket.upper_bound().is_finite(),
                    "bound {} in\n{yaml}",
                    bucket.upper_bound()
                );
            }
            let last = buckets.last().map_or(0, |b| b.cumulative_count());
            assert!(histogram.get_sample_count() >= last, "{yaml}");
            // A huge multiplier may make the sum +Inf (a valid value); never NaN.
            assert!(!histogram.get_sample_sum().is_nan(), "{yaml}");
        }
    }
    let text = exposition::encode(&exposed.families).expect("encode");
    let samples = check_exposition(&text);
    let inf: Vec<f64> = samples
        .iter()
        .filter(|s| s.labels.iter().any(|(k, v)| k == "le" && v == "+Inf"))
        .map(|s| s.value)
        .collect();
    let counts: Vec<f64> = samples
        .iter()
        .filter(|s| s.name.ends_with("_count"))
        .map(|s| s.value)
        .collect();
    assert_eq!(
        inf, counts,
        "+Inf bucket = _count, series by series\n{text}"
    );
});
