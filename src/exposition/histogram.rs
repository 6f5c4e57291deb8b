//! Histograms from bucketed BPF maps, with ebpf_exporter's bucket semantics.
//!
//! The last label of a key is the bucket; the labels before it identify the
//! series. Bucket keys map to upper bounds (`le`) by `bucket_type`:
//!
//! | type       | key k → le                 | range                  | sum key      |
//! |------------|----------------------------|------------------------|--------------|
//! | `exp2`     | 2^k × multiplier           | bucket_min..=bucket_max| bucket_max+1 |
//! | `exp2zero` | 0 for k = 0, else 2^(k-1) × m | bucket_min..=bucket_max| bucket_max+1 |
//! | `linear`   | k × multiplier             | bucket_min..=bucket_max| bucket_max+1 |
//! | `fixed`    | k × multiplier             | the listed bucket_keys | last key + 1 |
//!
//! Buckets are cumulative and every configured bucket is present (missing
//! ones are backfilled). The value at the sum key, times the multiplier, is
//! `_sum` (0 when absent).
//!
//! Keys outside the configured buckets (other than the sum key) are not
//! dropped, unlike ebpf_exporter: an observation is never lost from `_count`.
//! A key below the first bucket is counted in the first bucket (its value is
//! at most that bound), a key between two `fixed` keys in the next one up, and
//! a key above the last bucket only in `+Inf` and `_count`. So `_count` is the
//! true number of observations and every bucket stays a correct upper bound.

use std::collections::BTreeMap;

use anyhow::{bail, Result};
use prometheus::proto::{Bucket, Histogram as HistogramSample, Metric};

use super::family::{label_pairs, Family, Kind};
use super::series::cpu_bytes;
use super::{decode_key, Errors};
use crate::plan::{self, Layout, Observed};
use crate::snapshot::MapData;

/// Per series: bucket key → count.
type Series = BTreeMap<Vec<String>, BTreeMap<u64, u64>>;

/// The family of histogram `metric` (named `name`) from its map.
pub(super) fn family(
    metric: &plan::Metric,
    layout: &Layout,
    name: &str,
    map: &MapData,
    errors: &mut Errors,
) -> Result<Family> {
    if map.key_size != metric.key_size(map.per_cpu) {
        bail!("label sizes do not match the map's key size");
    }
    let series = bucket_counts(metric, map, errors);
    let names = metric.label_names();
    let series_labels = &names[..names.len().saturating_sub(1)];
    let metrics = series
        .into_iter()
        .map(|(labels, counts)| {
            let mut sample = Metric::from_label(label_pairs(series_labels, labels));
            sample.set_histogram(sample_of(layout.observe(&counts)));
            sample
        })
        .collect();
    Ok(Family::metrics(
        name,
        &metric.help,
        Kind::Histogram,
        metrics,
    ))
}

/// Each series' count per bucket key, from the keys of `map` (keys a
/// decoder rejects skipped and counted in `errors`).
fn bucket_counts(metric: &plan::Metric, map: &MapData, errors: &mut Errors) -> Series {
    let mut series = Series::new();
    let mut add = |key: &[u8], count: u64, errors: &mut Errors| {
        let Some(mut labels) = decode_key(&metric.labels, key, errors) else {
            return;
        };
        let Some(bucket) = labels.pop() else { return };
        let Ok(bucket) = bucket.parse::<u64>() else {
            *errors.entry("bucket").or_default() += 1;
            return;
        };
        let cell = series.entry(labels).or_default().entry(bucket).or_default();
        *cell = cell.saturating_add(count);
    };
    let Some(index) = metric.cpu_label(map.per_cpu) else {
        for (key, values) in map.entries() {
            let count = values.iter().fold(0u64, |sum, v| sum.saturating_add(*v));
            if count != 0 {
                add(key, count, errors);
            }
        }
        return series;
    };
    // Each CPU's count is a series of its own: the CPU number goes into
    // the key where the `cpu` label sits (before the bucket).
    let cpu = &metric.labels[index];
    let offset = cpu.offset;
    let mut full = Vec::with_capacity(map.key_size + cpu.span());
    for (key, values) in map.entries() {
        for (number, &count) in values.iter().enumerate().filter(|(_, c)| **c != 0) {
            let Some((bytes, size)) = cpu_bytes(number, cpu.size) else {
                *errors.entry("cpu").or_default() += 1;
                continue;
            };
            full.clear();
            full.extend_from_slice(&key[..offset]);
            full.extend_from_slice(&bytes[..size]);
            full.resize(full.len() + cpu.padding, 0);
            full.extend_from_slice(&key[offset..]);
            add(&full, count, errors);
        }
    }
    series
}

/// A series' observations as the prometheus crate's histogram sample.
fn sample_of(observed: Observed) -> HistogramSample {
    let buckets = observed
        .buckets
        .into_iter()
        .map(|(le, cumulative)| {
            let mut bucket = Bucket::default();
            bucket.set_upper_bound(le);
            bucket.set_cumulative_count(cumulative);
            bucket
        })
        .collect();
    let mut sample = HistogramSample::default();
    sample.set_bucket(buckets);
    sample.set_sample_count(observed.count);
    sample.set_sample_sum(observed.sum);
    sample
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exposition::{encode, families};
    use crate::plan::{without_float_noise, Plan};
    use crate::snapshot::Snapshot;
    use crate::spec::{Config, Format};

    fn compiled(config: Config) -> Plan {
        Plan::compile(&config).unwrap()
    }

    fn config(bucket_settings: &str) -> Plan {
        let text = format!(
            r#"
[[metrics.histograms]]
name = "latency_seconds"
help = "Latency."
{bucket_settings}
[[metrics.histograms.labels]]
name = "op"
size = 4
decoders = [{{ name = "uint" }}]
[[metrics.histograms.labels]]
name = "bucket"
size = 4
decoders = [{{ name = "uint" }}]
"#
        );
        compiled(Config::parse("t", "t.toml", &text, Format::Toml).unwrap())
    }

    /// A per-CPU map (2 CPUs) of (op, bucket) → count.
    fn map(entries: &[(u32, u32, [u64; 2])]) -> Snapshot {
        Snapshot {
            events_lost: Vec::new(),
            unread: Vec::new(),
            maps: vec![MapData {
                name: "latency_seconds".into(),
                key_size: 8,
                values_per_key: 2,
                is_array: false,
                per_cpu: true,
                keys: entries
                    .iter()
                    .flat_map(|(op, b, _)| [op.to_ne_bytes(), b.to_ne_bytes()].concat())
                    .collect(),
                values: entries.iter().flat_map(|(_, _, v)| *v).collect(),
            }],
        }
    }

    fn text(bucket_settings: &str, entries: &[(u32, u32, [u64; 2])]) -> String {
        let exposed = families(&config(bucket_settings), map(entries), "bpfsnap").unwrap();
        encode(&exposed.families).unwrap()
    }

    const HEAD: &str =
        "# HELP bpfsnap_latency_seconds Latency.\n# TYPE bpfsnap_latency_seconds histogram\n";

    #[test]
    fn exp2_backfills_sums_cpus_and_uses_the_sum_key() {
        let got = text(
            "bucket_type = \"exp2\"\nbucket_min = 0\nbucket_max = 3",
            &[(1, 0, [1, 1]), (1, 2, [0, 3]), (1, 4, [100, 5])], // key 4 = max + 1: the sum
        );
        let want = format!(
            "{HEAD}bpfsnap_latency_seconds_bucket{{op=\"1\",le=\"1\"}} 2\n\
             bpfsnap_latency_seconds_bucket{{op=\"1\",le=\"2\"}} 2\n\
             bpfsnap_latency_seconds_bucket{{op=\"1\",le=\"4\"}} 5\n\
             bpfsnap_latency_seconds_bucket{{op=\"1\",le=\"8\"}} 5\n\
             bpfsnap_latency_seconds_bucket{{op=\"1\",le=\"+Inf\"}} 5\n\
             bpfsnap_latency_seconds_sum{{op=\"1\"}} 105\n\
             bpfsnap_latency_seconds_count{{op=\"1\"}} 5\n"
        );
        assert_eq!(got, want);
    }

    #[test]
    fn a_cpu_label_before_the_bucket_splits_per_cpu_maps_by_cpu() {
        // op, cpu (2 bytes + 2 padding: not in the key), bucket.
        let text_config = "[[metrics.histograms]]\nname = \"latency_seconds\"\nhelp = \"Latency.\"\n\
            bucket_type = \"linear\"\nbucket_min = 1\nbucket_max = 2\n\
            [[metrics.histograms.labels]]\nname = \"op\"\nsize = 4\ndecoders = [{ name = \"uint\" }]\n\
            [[metrics.histograms.labels]]\nname = \"cpu\"\nsize = 2\npadding = 2\ndecoders = [{ name = \"uint\" }]\n\
            [[metrics.histograms.labels]]\nname = \"bucket\"\nsize = 4\ndecoders = [{ name = \"uint\" }]\n";
        let config = compiled(Config::parse("t", "t.toml", text_config, Format::Toml).unwrap());
        // CPU 0 saw one value in bucket 1; CPU 1 two in bucket 2 (sum 4).
        let snapshot = map(&[(5, 1, [1, 0]), (5, 2, [0, 2]), (5, 3, [0, 4])]);
        let exposed = families(&config, snapshot.clone(), "bpfsnap").unwrap();
        let want = format!(
            "{HEAD}bpfsnap_latency_seconds_bucket{{op=\"5\",cpu=\"0\",le=\"1\"}} 1\n\
             bpfsnap_latency_seconds_bucket{{op=\"5\",cpu=\"0\",le=\"2\"}} 1\n\
             bpfsnap_latency_seconds_bucket{{op=\"5\",cpu=\"0\",le=\"+Inf\"}} 1\n\
             bpfsnap_latency_seconds_sum{{op=\"5\",cpu=\"0\"}} 0\n\
             bpfsnap_latency_seconds_count{{op=\"5\",cpu=\"0\"}} 1\n\
             bpfsnap_latency_seconds_bucket{{op=\"5\",cpu=\"1\",le=\"1\"}} 0\n\
             bpfsnap_latency_seconds_bucket{{op=\"5\",cpu=\"1\",le=\"2\"}} 2\n\
             bpfsnap_latency_seconds_bucket{{op=\"5\",cpu=\"1\",le=\"+Inf\"}} 2\n\
             bpfsnap_latency_seconds_sum{{op=\"5\",cpu=\"1\"}} 4\n\
             bpfsnap_latency_seconds_count{{op=\"5\",cpu=\"1\"}} 2\n"
        );
        assert_eq!(encode(&exposed.families).unwrap(), want);
        // The same map without per-CPU values has no CPU to fill in: its
        // keys are 4 bytes short of what the labels describe.
        let mut whole = snapshot;
        whole.maps[0].per_cpu = false;
        let err = families(&config, whole, "bpfsnap").err().unwrap();
        assert!(
            format!("{err:#}").contains("label sizes do not match the map's key size"),
            "{err:#}"
        );
    }

    #[test]
    fn exp2zero_has_a_zero_bucket_and_multiplier_without_noise() {
        let got = text(
            "bucket_type = \"exp2zero\"\nbucket_min = 0\nbucket_max = 3\nbucket_multiplier = 0.000001",
            &[(7, 0, [1, 0]), (7, 1, [1, 0]), (7, 3, [2, 0]), (7, 4, [30, 0])],
        );
        let want = format!(
            "{HEAD}bpfsnap_latency_seconds_bucket{{op=\"7\",le=\"0\"}} 1\n\
             bpfsnap_latency_seconds_bucket{{op=\"7\",le=\"0.000001\"}} 2\n\
             bpfsnap_latency_seconds_bucket{{op=\"7\",le=\"0.000002\"}} 2\n\
             bpfsnap_latency_seconds_bucket{{op=\"7\",le=\"0.000004\"}} 4\n\
             bpfsnap_latency_seconds_bucket{{op=\"7\",le=\"+Inf\"}} 4\n\
             bpfsnap_latency_seconds_sum{{op=\"7\"}} 0.00003\n\
             bpfsnap_latency_seconds_count{{op=\"7\"}} 4\n"
        );
        assert_eq!(got, want);
    }

    #[test]
    fn linear_multiplier_bounds_print_cleanly() {
        let got = text(
            "bucket_type = \"linear\"\nbucket_min = 1\nbucket_max = 3\nbucket_multiplier = 0.1",
            &[(2, 3, [1, 0])],
        );
        assert!(got.contains("le=\"0.1\"} 0\n"), "{got}");
        assert!(got.contains("le=\"0.3\"} 1\n"), "{got}");
        assert!(
            got.contains("bpfsnap_latency_seconds_sum{op=\"2\"} 0\n"),
            "no sum key: sum 0\n{got}"
        );
    }

    #[test]
    fn keys_outside_the_range_are_never_lost() {
        // min 2, max 3: key 0 is below (→ first bucket), key 9 above (→ +Inf
        // only), key 4 is the sum.
        let got = text(
            "bucket_type = \"linear\"\nbucket_min = 2\nbucket_max = 3",
            &[
                (1, 0, [1, 0]),
                (1, 3, [1, 0]),
                (1, 9, [2, 0]),
                (1, 4, [50, 0]),
            ],
        );
        assert!(got.contains("le=\"2\"} 1\n"), "{got}");
        assert!(got.contains("le=\"3\"} 2\n"), "{got}");
        assert!(got.contains("le=\"+Inf\"} 4\n"), "{got}");
        assert!(got.contains("_count{op=\"1\"} 4\n"), "{got}");
        assert!(got.contains("_sum{op=\"1\"} 50\n"), "{got}");
    }

    #[test]
    fn fixed_buckets_and_sum_key_after_the_last() {
        let got = text(
            "bucket_type = \"fixed\"\nbucket_keys = [1, 5, 10]\nbucket_multiplier = 0.001",
            &[
                (1, 1, [1, 0]),
                (1, 3, [1, 0]),
                (1, 10, [1, 1]),
                (1, 11, [7, 0]),
            ],
        );
        let want = format!(
            "{HEAD}bpfsnap_latency_seconds_bucket{{op=\"1\",le=\"0.001\"}} 1\n\
             bpfsnap_latency_seconds_bucket{{op=\"1\",le=\"0.005\"}} 2\n\
             bpfsnap_latency_seconds_bucket{{op=\"1\",le=\"0.01\"}} 4\n\
             bpfsnap_latency_seconds_bucket{{op=\"1\",le=\"+Inf\"}} 4\n\
             bpfsnap_latency_seconds_sum{{op=\"1\"}} 0.007\n\
             bpfsnap_latency_seconds_count{{op=\"1\"}} 4\n"
        );
        assert_eq!(got, want);
    }

    #[test]
    fn series_are_grouped_by_the_labels_before_the_bucket() {
        let got = text(
            "bucket_type = \"exp2\"\nbucket_min = 0\nbucket_max = 1",
            &[(2, 0, [1, 0]), (1, 1, [1, 0])],
        );
        let op1 = got.find("op=\"1\"").unwrap();
        let op2 = got.find("op=\"2\"").unwrap();
        assert!(op1 < op2, "sorted by series labels\n{got}");
        assert_eq!(got.matches("le=\"+Inf\"").count(), 2);
    }

    #[test]
    fn yaml_and_toml_forms_give_identical_text() {
        let toml = include_str!("../../examples/histograms.toml");
        let yaml = include_str!("../../tests/fixtures/histograms.yaml");
        let snapshot = |name: &str| MapData {
            name: name.into(),
            key_size: 8,
            values_per_key: 1,
            is_array: false,
            per_cpu: false,
            keys: [(0u32, 3u32), (1, 0), (0, 21), (0, 11), (1, 7)]
                .iter()
                .flat_map(|(w, b)| [w.to_ne_bytes(), b.to_ne_bytes()].concat())
                .collect(),
            values: vec![2, 1, 40, 9, 3],
        };
        let per_cpu = MapData {
            values_per_key: 2,
            per_cpu: true,
            values: vec![2, 0, 0, 1, 40, 0, 9, 9, 0, 3],
            ..snapshot("test_values_per_cpu")
        };
        let maps = Snapshot {
            events_lost: Vec::new(),
            unread: Vec::new(),
            maps: vec![
                snapshot("test_values_exp2"),
                snapshot("test_values_linear"),
                per_cpu,
            ],
        };
        let render = |text: &str, format: Format| {
            let config = compiled(Config::parse("histograms", "h", text, format).unwrap());
            let exposed = families(&config, maps.clone(), "bpfsnap").unwrap();
            encode(&exposed.families).unwrap()
        };
        let from_toml = render(toml, Format::Toml);
        assert_eq!(from_toml, render(yaml, Format::Yaml));
        assert!(
            from_toml.contains("bpfsnap_test_values_exp2_bucket{whence=\"set\",le=\"8\"} 2\n"),
            "{from_toml}"
        );
        assert!(
            from_toml.contains(
                "bpfsnap_test_values_per_cpu_bucket{whence=\"cur\",cpu=\"1\",le=\"1\"} 1\n"
            ),
            "{from_toml}"
        );
    }

    #[test]
    fn float_noise_is_removed() {
        assert_eq!(without_float_noise(3.0 * 0.1).to_string(), "0.3");
        assert_eq!(
            without_float_noise(2f64.powi(10) * 0.000001).to_string(),
            "0.001024"
        );
        assert_eq!(without_float_noise(0.0), 0.0);
        assert_eq!(
            without_float_noise(1e300 * 10.0).to_string(),
            "1e301".parse::<f64>().unwrap().to_string()
        );
    }
}
