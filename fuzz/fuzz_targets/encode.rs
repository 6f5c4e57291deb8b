//! The text encoder on arbitrary label values, help texts and sample
//! values: families of counters, gauges and histograms built from the input
//! and encoded with `exposition::encode`. The output parses line by line, and
//! parsing gives back exactly what went in: every label value (escapes
//! undone), every value (NaN and infinities included).
#![no_main]

use std::collections::{BTreeMap, BTreeSet};

use bpfsnap::exposition;
use bpfsnap_fuzz::{check_exposition, Bytes};
use libfuzzer_sys::fuzz_target;
use prometheus::proto::{
    Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricType,
};

const NAMES: [&str; 4] = ["a_total", "b:c", "_d_seconds", "e9"];
const LABELS: [&str; 4] = ["x", "y_2", "_z", "le_not"];

fn text(bytes: &mut Bytes) -> String {
    let len = bytes.u8() as usize % 24;
    String::from_utf8_lossy(bytes.take(len)).into_owned()
}

fn float(bytes: &mut Bytes) -> f64 {
    match bytes.u8() % 4 {
        0 => f64::from_bits(bytes.u64()),
        1 => f64::from(bytes.u16()),
        2 => -f64::from(bytes.u8()) / 8.0,
        _ => [
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            -0.0,
            1e-310,
            9007199254740993.0,
        ][bytes.u8() as usize % 6],
    }
}

fn same(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || a == b
}

fuzz_target!(|data: &[u8]| {
    let mut bytes = Bytes(data);
    let mut families = Vec::new();
    // name → (label values → value) of counters and gauges, to compare with.
    let mut expected: BTreeMap<String, Vec<(Vec<(String, String)>, f64)>> = BTreeMap::new();
    let mut histogram_series = 0;
    for name in NAMES.iter().take(1 + bytes.u8() as usize % 4) {
        let kind = [
            MetricType::COUNTER,
            MetricType::GAUGE,
            MetricType::HISTOGRAM,
        ][bytes.u8() as usize % 3];
        let help = text(&mut bytes);
        let label_count = bytes.u8() as usize % 4;
        let mut seen = BTreeSet::new();
        let mut metrics = Vec::new();
        for _ in 0..1 + bytes.u8() as usize % 5 {
            let values: Vec<String> = (0..label_count).map(|_| text(&mut bytes)).collect();
            if !seen.insert(values.clone()) {
                continue;
            }
            let pairs: Vec<LabelPair> = LABELS
                .iter()
                .zip(&values)
                .map(|(name, value)| {
                    let mut pair = LabelPair::default();
                    pair.set_name(name.to_string());
                    pair.set_value(value.clone());
                    pair
                })
                .collect();
            let mut metric = Metric::from_label(pairs);
            let value = float(&mut bytes);
            match kind {
                MetricType::COUNTER => {
                    let mut counter = Counter::default();
                    counter.set_value(value);
                    metric.set_counter(counter);
                }
                MetricType::GAUGE => {
                    let mut gauge = Gauge::default();
                    gauge.set_value(value);
                    metric.set_gauge(gauge);
                }
                _ => {
                    let mut histogram = Histogram::default();
                    let mut cumulative = 0u64;
                    let buckets = (0..bytes.u8() % 4)
                        .map(|i| {
                            cumulative += u64::from(bytes.u8());
                            let mut bucket = Bucket::default();
                            bucket.set_upper_bound(f64::from(i) * 0.25 + f64::from(bytes.u8()));
                            bucket.set_cumulative_count(cumulative);
                            bucket
                        })
                        .collect();
                    histogram.set_bucket(buckets);
                    histogram.set_sample_count(cumulative + u64::from(bytes.u8()));
                    histogram.set_sample_sum(value);
                    metric.set_histogram(histogram);
                    histogram_series += 1;
                }
            }
            if kind != MetricType::HISTOGRAM {
                let labels = LABELS.iter().map(|l| l.to_string()).zip(values).collect();
                expected
                    .entry(name.to_string())
                    .or_default()
                    .push((labels, value));
            }
            metrics.push(metric);
        }
        let kind = match kind {
            MetricType::COUNTER => exposition::Kind::Counter,
            MetricType::GAUGE => exposition::Kind::Gauge,
            _ => exposition::Kind::Histogram,
        };
        families.push(exposition::Family::metrics(name, &help, kind, metrics));
    }
    let text = exposition::encode(&families).expect("valid families encode");
    let samples = check_exposition(&text);
    for (name, series) in &expected {
        for (labels, value) in series {
            let found = samples
                .iter()
                .find(|s| s.name == *name && s.labels == *labels)
                .unwrap_or_else(|| panic!("{name}{labels:?} missing\n{text}"));
            assert!(
                same(found.value, *value),
                "{name}{labels:?}: {} written as {}\n{text}",
                value,
                found.value
            );
        }
    }
    let infs = samples
        .iter()
        .filter(|s| {
            s.name.ends_with("_bucket")
                && s.labels
                    .last()
                    .is_some_and(|(k, v)| k == "le" && v == "+Inf")
        })
        .count();
    assert_eq!(
        infs, histogram_series,
        "one +Inf bucket per histogram series\n{text}"
    );
});
