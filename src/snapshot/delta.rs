//! Counts per window (`--counts window`): each snapshot's values minus the
//! previous snapshot's, per key and per CPU slot, so counters and histogram
//! buckets cover the last window only. Computed here rather than by clearing
//! the maps: the kernel keeps counting between the read and a clear, and
//! those events would be lost; a difference loses nothing.

use std::collections::HashMap;

use super::{MapData, Snapshot};

/// The previous snapshot's values of every map, by config and map name.
#[derive(Debug, Default)]
pub struct Deltas {
    previous: HashMap<(String, String), HashMap<Vec<u8>, Vec<u64>>>,
}

impl Deltas {
    /// Replaces the values of `config`'s `snapshot` by what each grew since
    /// the previous call (the first call leaves them: they count from
    /// attach). A value below the previous one counts from zero: its entry
    /// was evicted (LRU) or deleted and made again meanwhile.
    pub fn apply(&mut self, config: &str, snapshot: &mut Snapshot) {
        for map in &mut snapshot.maps {
            let key = (config.to_string(), map.name.clone());
            let previous = self.previous.remove(&key).unwrap_or_default();
            let current = values_by_key(map);
            subtract(map, &previous);
            self.previous.insert(key, current);
        }
    }
}

fn values_by_key(map: &MapData) -> HashMap<Vec<u8>, Vec<u64>> {
    map.entries()
        .map(|(key, values)| (key.to_vec(), values.to_vec()))
        .collect()
}

fn subtract(map: &mut MapData, previous: &HashMap<Vec<u8>, Vec<u64>>) {
    let (key_size, stride) = (map.key_size.max(1), map.values_per_key.max(1));
    for (key, values) in map
        .keys
        .chunks_exact(key_size)
        .zip(map.values.chunks_exact_mut(stride))
    {
        let Some(before) = previous.get(key) else {
            continue;
        };
        for (value, before) in values.iter_mut().zip(before) {
            if *value >= *before {
                *value -= before;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(entries: &[(u8, [u64; 2])]) -> Snapshot {
        Snapshot {
            maps: vec![MapData {
                name: "m".into(),
                key_size: 1,
                values_per_key: 2,
                per_cpu: true,
                keys: entries.iter().map(|(key, _)| *key).collect(),
                values: entries.iter().flat_map(|(_, values)| *values).collect(),
                ..MapData::default()
            }],
            ..Snapshot::default()
        }
    }

    /// A map's entries: key byte, values on two CPUs.
    type Entries = &'static [(u8, [u64; 2])];

    /// (snapshot read, what the window shows), in order.
    #[test]
    fn each_window_shows_what_grew_in_it() {
        let cases: &[(Entries, Entries)] = &[
            // The first window counts from attach.
            (&[(1, [5, 2])], &[(1, [5, 2])]),
            // Grown on one CPU; a new key counts from zero.
            (&[(1, [7, 2]), (2, [1, 0])], &[(1, [2, 0]), (2, [1, 0])]),
            // Nothing new: zeros.
            (&[(1, [7, 2]), (2, [1, 0])], &[(1, [0, 0]), (2, [0, 0])]),
            // Key 2 evicted and made again with less: counts from zero.
            (&[(1, [9, 3]), (2, [0, 1])], &[(1, [2, 1]), (2, [0, 1])]),
        ];
        let mut deltas = Deltas::default();
        for (read, shown) in cases {
            let mut snapshot = map(read);
            deltas.apply("c", &mut snapshot);
            assert_eq!(snapshot.maps, map(shown).maps, "read {read:?}");
        }
        // Another config's map of the same name is its own.
        let mut other = map(&[(1, [1, 1])]);
        deltas.apply("other", &mut other);
        assert_eq!(other.maps, map(&[(1, [1, 1])]).maps);
    }
}
