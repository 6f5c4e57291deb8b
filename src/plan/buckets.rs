//! A histogram's buckets as configured: bucket keys, their upper bounds
//! (`le`) by `bucket_type`, and the sum key (see `exposition::histogram` for
//! how a map's keys become series).

use std::collections::BTreeMap;

use crate::spec::{BucketType, Histogram};

/// One series' histogram: (upper bound, cumulative count) per configured
/// bucket, the number of observations and their sum.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    pub buckets: Vec<(f64, u64)>,
    pub count: u64,
    pub sum: f64,
}

/// The configured buckets of one histogram: (bucket key, upper bound), in
/// ascending order of both, plus the sum key (none when the last key is
/// u64::MAX) and the multiplier.
pub struct Layout {
    buckets: Vec<(u64, f64)>,
    sum_key: Option<u64>,
    multiplier: f64,
}

impl Layout {
    pub fn of(histogram: &Histogram) -> Layout {
        let multiplier = histogram.bucket_multiplier;
        let (min, max) = (
            histogram.bucket_min,
            histogram.bucket_max.unwrap_or(histogram.bucket_min),
        );
        let bound = |key: u64| -> f64 {
            let raw = match histogram.bucket_type {
                BucketType::Exp2 => 2f64.powi(key as i32),
                BucketType::Exp2Zero if key == 0 => 0.0,
                BucketType::Exp2Zero => 2f64.powi(key as i32 - 1),
                BucketType::Linear | BucketType::Fixed => key as f64,
            };
            without_float_noise(raw * multiplier)
        };
        let keys: Vec<u64> = match histogram.bucket_type {
            BucketType::Fixed => histogram.bucket_keys.iter().map(|k| *k as u64).collect(),
            _ => (min..=max).collect(),
        };
        let sum_key = keys.last().and_then(|last| last.checked_add(1));
        // Bounds rise with the keys. Keys whose bounds meet after rounding
        // (beyond ~10^15) share one bucket, the last of them holding it; keys
        // whose bound overflows to infinity are +Inf's, like keys above the
        // range. So every `le` is distinct and finite.
        let mut buckets: Vec<(u64, f64)> = Vec::with_capacity(keys.len());
        for key in keys {
            let le = bound(key);
            if !le.is_finite() {
                break;
            }
            match buckets.last_mut() {
                Some(last) if last.1 >= le => last.0 = key,
                _ => buckets.push((key, le)),
            }
        }
        Layout {
            buckets,
            sum_key,
            multiplier,
        }
    }

    /// One series' observations: bucket key → count.
    pub fn observe(&self, counts: &BTreeMap<u64, u64>) -> Observed {
        let mut per_bucket = vec![0u64; self.buckets.len()];
        let mut total = 0u64;
        for (&key, &count) in counts {
            if Some(key) == self.sum_key {
                continue;
            }
            // Saturating: wrapped counts would break the buckets' order.
            total = total.saturating_add(count);
            // The first configured bucket whose key is ≥ this key holds it;
            // above the last bucket it is in +Inf only.
            let slot = self.buckets.partition_point(|(bucket, _)| *bucket < key);
            if let Some(cell) = per_bucket.get_mut(slot) {
                *cell = cell.saturating_add(count);
            }
        }
        let mut cumulative = 0u64;
        let buckets = self
            .buckets
            .iter()
            .zip(per_bucket)
            .map(|((_, le), count)| {
                cumulative = cumulative.saturating_add(count);
                (*le, cumulative)
            })
            .collect();
        let sum = self
            .sum_key
            .and_then(|key| counts.get(&key))
            .copied()
            .unwrap_or(0);
        Observed {
            buckets,
            count: total,
            sum: without_float_noise(sum as f64 * self.multiplier),
        }
    }
}

/// Rounds to 15 significant digits, so `3 × 0.1` prints as `0.3`, not
/// `0.30000000000000004`: bucket bounds are labels, and a label that varies
/// with float noise would change series identity.
pub fn without_float_noise(value: f64) -> f64 {
    if !value.is_finite() || value == 0.0 {
        return value;
    }
    format!("{value:.14e}").parse().unwrap_or(value)
}
