//! Exposition: map snapshots become metric families, and families become
//! text.
//!
//! Takes a [`Plan`] and a [`Snapshot`] per config; hands on [`Family`]s
//! (the one type the text and OpenMetrics encoders and the terminal view
//! read) and, encoded, an [`Exposition`]'s parts for a sink to write.
//!
//! Each key is split into its labels (size + padding, in config order) and
//! each label decoded by its decoder chain; per-CPU values are summed. Keys
//! whose labels decode to the same values are added together. A key a
//! decoder rejects is skipped and counted in `bpfsnap_decoder_errors_total`.
//! Families come out sorted by name; a counter's series in the order of
//! their keys' bytes (integer labels as numbers: see `keys`), histograms'
//! and self metrics' by label values. Either way the text of two runs over
//! the same data is identical.

mod carry;
mod family;
mod format;
mod histogram;
mod keys;
mod labels;
pub mod pretty;
mod rows;
pub mod self_metrics;
mod series;
mod spill;
pub mod text;

use carry::Theirs;
pub use carry::{Carried, Carry};
pub use family::{Family, Kind, Samples, Series};
pub use format::OutputFormat;
use spill::Spilling;
pub use spill::{Spill, SPILL_AT};

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{bail, Context, Result};

use crate::plan::{self, Plan};
use crate::snapshot::{Counts, MapData, Snapshot, Source};

/// (decoder, count) of keys skipped because a decoder rejected them.
pub type Errors = BTreeMap<&'static str, u64>;

/// The families of one config's snapshot, and what building them left out.
#[derive(Default)]
pub struct Exposed {
    pub families: Vec<Family>,
    pub decode_errors: Errors,
    /// (metric without namespace, count) of series left out over `max_series`.
    pub series_dropped: Vec<(String, u64)>,
}

/// The metric's full name: `NAMESPACE_NAME`.
pub fn metric_name(namespace: &str, name: &str) -> String {
    if namespace.is_empty() {
        name.to_string()
    } else {
        format!("{namespace}_{name}")
    }
}

/// Every family `plan` defines from `snapshot`, each capped at its
/// `max_series`.
pub fn families(plan: &Plan, mut snapshot: Snapshot, namespace: &str) -> Result<Exposed> {
    let mut exposed = Exposed::default();
    for metric in &plan.metrics {
        // Each metric has a map of its own (the spec refuses a name twice).
        let missing = || format!("{}: no snapshot of map {}", plan.config, metric.name);
        let name = metric_name(namespace, &metric.name);
        let errors = &mut exposed.decode_errors;
        let mut family = match &metric.kind {
            plan::Kind::Counter => {
                let map = snapshot.take_source(&metric.name).with_context(missing)?;
                counter_family(metric, name, map, errors)
                    .with_context(|| format!("{}: metric {}", plan.config, metric.name))?
            }
            plan::Kind::Histogram(layout) => {
                let map = snapshot.take_map(&metric.name).with_context(missing)?;
                histogram::family(metric, layout, &name, &map, errors)
                    .with_context(|| format!("{}: histogram {}", plan.config, metric.name))?
            }
        };
        let dropped = family.cap(metric.max_series);
        if dropped > 0 {
            exposed
                .series_dropped
                .push((metric.name.clone(), dropped as u64));
        }
        exposed.families.push(family);
    }
    Ok(exposed)
}

/// The decoded, ordered, merged series of one counter's map (read as it
/// is decoded when it is still to read).
fn counter_family(
    metric: &plan::Metric,
    name: String,
    map: Source,
    errors: &mut Errors,
) -> Result<Family> {
    let header = map.header();
    let label_bytes = metric.key_size(header.per_cpu);
    let cpu_label = metric.cpu_label(header.per_cpu);
    let map = if label_bytes == 0 && header.key_size == crate::spec::UNLABELLED_KEY.len() {
        Source::Read(unlabelled_entry(&map.into_whole()?, errors))
    } else if header.key_size == label_bytes {
        map
    } else {
        bail!("label sizes do not match the map's key size");
    };
    let table = series::counter_table(&metric.labels, cpu_label, map, errors)?;
    let labels = metric.labels.iter().map(|l| l.name.clone()).collect();
    Ok(Family::table(name, &metric.help, labels, table))
}

/// An unlabelled counter's map (ebpf_exporter's rule): its entry at key u32
/// 0 is the sample, even when zero (a gauge-like count, such as pages in
/// use); any other key cannot be labelled and counts as a decoder error.
fn unlabelled_entry(map: &MapData, errors: &mut Errors) -> MapData {
    let mut entry = MapData {
        name: map.name.clone(),
        key_size: map.key_size,
        values_per_key: map.values_per_key,
        is_array: false,
        per_cpu: map.per_cpu,
        keys: Vec::new(),
        values: Vec::new(),
    };
    for (key, values) in map.entries() {
        if key == crate::spec::UNLABELLED_KEY {
            entry.keys.extend_from_slice(key);
            entry.values.extend_from_slice(values);
        } else if values.iter().any(|value| *value != 0) {
            *errors.entry("unlabelled_key").or_default() += 1;
        }
    }
    entry
}

/// Label values of `key`; None when a decoder rejected it (counted in
/// `errors`) or asked to skip it.
fn decode_key(labels: &[plan::Label], key: &[u8], errors: &mut Errors) -> Option<Vec<String>> {
    let mut values = Vec::with_capacity(labels.len());
    for label in labels {
        let bytes = key.get(label.offset..label.offset + label.size)?;
        match label.decoders.decode(bytes) {
            Ok(value) => values.push(value),
            Err(err) if err.skip => return None,
            Err(err) => {
                *errors.entry(err.decoder).or_default() += 1;
                return None;
            }
        }
    }
    Some(values)
}

/// How families are written: the text format 0.0.4 or OpenMetrics 1.0.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Encoding {
    #[default]
    Text,
    /// A counter family is named without `_total` in HELP/TYPE (its samples
    /// keep it, or get it), and `# EOF` ends the exposition.
    OpenMetrics,
}

/// An exposition being assembled: each family is encoded as it is added,
/// and the parts come out sorted by name. Families without series are left
/// out (the format allows them, but they carry nothing); a name added twice
/// is an error, as node_exporter would silently drop one of the two.
///
/// In an exposition of one window's counts ([`Counts::Window`]) a counter
/// whose counts restart with each window is written as a gauge named
/// without `_total`, and a histogram as a gauge histogram
/// ([`text::Typed`]): `rate()` and `increase()` see a reset only where a
/// value goes down, so such counts typed `counter` would be misread.
///
/// An exposition replacing a file whose counters it carries on
/// ([`Exposition::carrying_on`]) adds the previous values to a counter
/// map's series as it encodes them; [`Exposition::carry_on`] then carries
/// on the other families.
///
/// An exposition spilling into a textfile ([`Exposition::spilling_into`])
/// writes a family out as it encodes it once its text is large (see
/// [`Spill`]); it holds the others, whose parts the sink writes after,
/// sorted by name (the text format does not order families: the large
/// ones come first in the file, in the order they were added).
#[derive(Debug, Default)]
pub struct Exposition<'c> {
    encoding: Encoding,
    counts: Counts,
    families: BTreeMap<String, String>,
    carry: Option<Carrying<'c>>,
    spill: Option<(&'c mut dyn Spill, usize)>,
    /// The head of each family spilled (see [`Held`]).
    spilled: BTreeMap<String, String>,
}

/// An exposition's text once every family is added: the families it holds,
/// by name, and the head of each it spilled (its lines up to its first
/// sample, which a collision check reads).
#[derive(Debug, Default)]
pub struct Held {
    pub families: BTreeMap<String, String>,
    pub spilled: BTreeMap<String, String>,
}

/// The file an exposition replaces, what carries on from it, and which
/// families have already.
#[derive(Debug)]
struct Carrying<'c> {
    previous: &'c Carried,
    carried: &'c BTreeMap<String, Carry>,
    done: BTreeSet<String>,
}

/// Ends an OpenMetrics exposition.
const OPENMETRICS_END: &str = "# EOF\n";

impl<'c> Exposition<'c> {
    pub fn new(encoding: Encoding) -> Exposition<'c> {
        Exposition {
            encoding,
            ..Exposition::default()
        }
    }

    /// What the counts of the families added with [`Exposition::add`]
    /// cover (by default, everything since counting began).
    pub fn counting(mut self, counts: Counts) -> Exposition<'c> {
        self.counts = counts;
        self
    }

    /// Carries on the counters and histograms of `previous`, the file this
    /// exposition replaces (see [`Carried`]): each family `carried` names
    /// carries on as it says, a counter map's as it is added, the others in
    /// [`Exposition::carry_on`].
    pub fn carrying_on(
        mut self,
        previous: &'c Carried,
        carried: &'c BTreeMap<String, Carry>,
    ) -> Exposition<'c> {
        self.carry = Some(Carrying {
            previous,
            carried,
            done: BTreeSet::new(),
        });
        self
    }

    /// Spills into `spill` each family whose text reaches [`SPILL_AT`]
    /// bytes as it is encoded (see [`Spill`]). Families spilled cannot be
    /// replaced, nor carried on after they are added: a counter map's
    /// carries on as it is encoded, the others are held.
    pub fn spilling_into(self, spill: &'c mut dyn Spill) -> Exposition<'c> {
        self.spilling_every(spill, SPILL_AT)
    }

    fn spilling_every(mut self, spill: &'c mut dyn Spill, bytes: usize) -> Exposition<'c> {
        self.spill = Some((spill, bytes.max(1)));
        self
    }

    /// Adds a family whose counts cover what the exposition's do.
    pub fn add(&mut self, family: &Family) -> Result<()> {
        self.add_typed(family, self.counts)
    }

    /// Adds a family whose counts are the process's own, cumulative since
    /// it started whatever the exposition's counts cover (failed writes,
    /// scrape errors).
    pub fn add_cumulative(&mut self, family: &Family) -> Result<()> {
        self.add_typed(family, Counts::Cumulative)
    }

    /// Adds a family in place of the one of its name, if any.
    pub fn replace(&mut self, family: &Family) -> Result<()> {
        if self.spilled.contains_key(&family.name) {
            bail!("metric {} is written out already", family.name);
        }
        self.families.remove(&family.name);
        if let Some(carrying) = &mut self.carry {
            carrying.done.remove(&family.name);
        }
        self.add(family)
    }

    fn add_typed(&mut self, family: &Family, counts: Counts) -> Result<()> {
        if family.is_empty() {
            return Ok(());
        }
        if self.families.contains_key(&family.name) || self.spilled.contains_key(&family.name) {
            bail!(
                "metric {} is defined twice: rename one of them",
                family.name
            );
        }
        let name = family.name.as_str();
        let openmetrics = self.encoding == Encoding::OpenMetrics;
        let total = format!("{name}_total");
        let written = match (counts, family.kind) {
            (Counts::Window, Kind::Counter) => {
                let gauge = name.strip_suffix("_total").unwrap_or(name);
                text::Written {
                    header: gauge,
                    sample: gauge,
                    typed: text::Typed::Gauge,
                }
            }
            (Counts::Window, Kind::Histogram) => text::Written {
                header: name,
                sample: name,
                typed: text::Typed::GaugeHistogram { openmetrics },
            },
            (Counts::Cumulative, Kind::Counter) if openmetrics => text::Written {
                header: name.strip_suffix("_total").unwrap_or(name),
                sample: match name.ends_with("_total") {
                    true => name,
                    false => &total,
                },
                typed: text::Typed::Own,
            },
            _ => text::Written {
                header: name,
                sample: name,
                typed: text::Typed::Own,
            },
        };
        let previous = self.previous_counter(family, counts);
        let carried = previous.is_some();
        let mut spilling = self.spilling(name, carried);
        let mut text = String::new();
        family
            .encode(written, previous, &mut text, spilling.as_mut())
            .with_context(|| format!("encoding {name}"))?;
        let head = spilling.and_then(|spilling| spilling.finish(&mut text));
        if let Some(carrying) = self.carry.as_mut().filter(|_| carried) {
            carrying.done.insert(family.name.clone());
        }
        match head {
            Some(head) => self.spilled.insert(family.name.clone(), head),
            None => self.families.insert(family.name.clone(), text),
        };
        Ok(())
    }

    /// How family `name` is spilled as it is encoded, if this exposition
    /// spills: unless carry_on() still has to merge it (it is carried on,
    /// but not as it is encoded: not `carried`), which needs it held.
    fn spilling(&mut self, name: &str, carried: bool) -> Option<Spilling<'_>> {
        let held_for_carrying =
            !carried && (self.carry.as_ref()).is_some_and(|c| c.carried.contains_key(name));
        match &mut self.spill {
            Some((spill, at)) if !held_for_carrying => Some(Spilling::new(&mut **spill, *at)),
            _ => None,
        }
    }

    /// The previous file's samples of counter map `family` and its cap,
    /// when it carries on as it is encoded: a counter the previous file
    /// has, written as one (cumulative, in the text format).
    fn previous_counter(&self, family: &Family, counts: Counts) -> Option<(Theirs<'c>, usize)> {
        let carrying = self.carry.as_ref()?;
        let as_counter = counts == Counts::Cumulative
            && family.kind == Kind::Counter
            && self.encoding == Encoding::Text;
        if !as_counter || !matches!(family.series, Series::Table { .. }) {
            return None;
        }
        let Carry::Add { cap } = *carrying.carried.get(&family.name)? else {
            return None;
        };
        Some((carrying.previous.counter(&family.name)?, cap))
    }

    /// Carries on the families of the file this exposition replaces (see
    /// [`Exposition::carrying_on`]) that have not carried on as they were
    /// added: each one this exposition has as it says, and a counter or
    /// histogram it has no series of as it was.
    pub fn carry_on(&mut self) {
        let Some(carrying) = &self.carry else {
            return;
        };
        for (name, &carry) in carrying.carried {
            if carrying.done.contains(name) {
                continue;
            }
            let merged = match self.families.get(name) {
                Some(text) => carrying.previous.carry_on(name, text, carry),
                None => carrying.previous.family_text(name).map(str::to_string),
            };
            if let Some(text) = merged {
                self.families.insert(name.clone(), text);
            }
        }
    }

    pub fn add_all<'f>(&mut self, families: impl IntoIterator<Item = &'f Family>) -> Result<()> {
        families.into_iter().try_for_each(|family| self.add(family))
    }

    /// Number of families with at least one series.
    pub fn len(&self) -> usize {
        self.families.len() + self.spilled.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// What is left to write once every family is added (see [`Held`]).
    pub fn into_held(self) -> Held {
        Held {
            families: self.families,
            spilled: self.spilled,
        }
    }

    /// Each family's name and text, in order: for a sink that writes them
    /// one after another instead of joining them (a textfile, in the text
    /// format).
    pub fn parts(&self) -> impl Iterator<Item = (&str, &str)> {
        self.families
            .iter()
            .map(|(name, text)| (name.as_str(), text.as_str()))
    }

    /// The text, without copying the largest family's (for a big map,
    /// nearly all of it): the others are put around it in place.
    pub fn into_text(self) -> String {
        let end = match self.encoding {
            Encoding::OpenMetrics => OPENMETRICS_END,
            Encoding::Text => "",
        };
        let Some(largest) = self
            .families
            .iter()
            .max_by_key(|(_, text)| text.len())
            .map(|(name, _)| name.clone())
        else {
            return end.to_string();
        };
        let total = self.families.values().map(String::len).sum::<usize>() + end.len();
        let (mut before, mut text, mut after) = (String::new(), String::new(), Vec::new());
        for (name, family) in self.families {
            match name.cmp(&largest) {
                std::cmp::Ordering::Less => before.push_str(&family),
                std::cmp::Ordering::Equal => text = family,
                std::cmp::Ordering::Greater => after.push(family),
            }
        }
        text.reserve(total - text.len());
        if !before.is_empty() {
            // (Inserting even "" moves every byte after the insertion point.)
            text.insert_str(0, &before);
        }
        for family in after {
            text.push_str(&family);
        }
        text.push_str(end);
        text
    }
}

/// `families` encoded in the text format, in one go (see [`Exposition`]).
pub fn encode<'f>(families: impl IntoIterator<Item = &'f Family>) -> Result<String> {
    let mut exposition = Exposition::default();
    exposition.add_all(families)?;
    Ok(exposition.into_text())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{Config, Format};
    use prometheus::proto::{Counter, Metric, MetricFamily};

    fn compile(spec: &str) -> Plan {
        Plan::compile(&Config::parse("t", "t", spec, Format::Toml).unwrap()).unwrap()
    }

    /// The text of `plan`'s families from `snapshot` under namespace `ns`.
    fn text_of(plan: &Plan, snapshot: &Snapshot, ns: &str) -> String {
        encode(&families(plan, snapshot.clone(), ns).unwrap().families).unwrap()
    }

    /// What the prometheus crate's encoder writes for these families.
    fn theirs(families: &[MetricFamily]) -> String {
        families
            .iter()
            .filter(|family| !family.get_metric().is_empty())
            .map(|family| {
                prometheus::TextEncoder::new()
                    .encode_to_string(std::slice::from_ref(family))
                    .unwrap()
            })
            .collect()
    }

    const SPEC: &str = r#"
[[metrics.counters]]
name = "events_total"
help = "Events."
[[metrics.counters.labels]]
name = "kind"
size = 4
decoders = [{ name = "uint" }]
[[metrics.counters.labels]]
name = "comm"
size = 4
decoders = [{ name = "string" }]
"#;

    fn key(kind: u32, comm: &[u8; 4]) -> Vec<u8> {
        let mut key = kind.to_ne_bytes().to_vec();
        key.extend_from_slice(comm);
        key
    }

    fn snapshot(entries: &[(Vec<u8>, [u64; 2])], is_array: bool) -> Snapshot {
        Snapshot {
            events_lost: Vec::new(),
            unread: Vec::new(),
            maps: vec![MapData {
                name: "events_total".into(),
                key_size: 8,
                values_per_key: 2,
                is_array,
                per_cpu: true,
                keys: entries.iter().flat_map(|(k, _)| k.clone()).collect(),
                values: entries.iter().flat_map(|(_, v)| *v).collect(),
            }],
        }
    }

    #[test]
    fn decodes_sums_cpus_merges_and_sorts() {
        let config = compile(SPEC);
        let snap = snapshot(
            &[
                (key(2, b"sh\0\0"), [1, 2]),
                (key(1, b"zsh\0"), [5, 0]),
                (key(1, b"bash"), [0, 7]),
                (key(1, b"bash"), [1, 0]),    // same labels again: added
                (key(3, b"x\0\0\0"), [0, 0]), // zero: kept in a hash map
            ],
            false,
        );
        let text = text_of(&config, &snap, "bpfsnap");
        assert_eq!(
            text,
            "# HELP bpfsnap_events_total Events.\n\
             # TYPE bpfsnap_events_total counter\n\
             bpfsnap_events_total{kind=\"1\",comm=\"bash\"} 8\n\
             bpfsnap_events_total{kind=\"1\",comm=\"zsh\"} 5\n\
             bpfsnap_events_total{kind=\"2\",comm=\"sh\"} 3\n\
             bpfsnap_events_total{kind=\"3\",comm=\"x\"} 0\n"
        );
    }

    /// Previous files of `events_total` (namespace bpfsnap) for the
    /// carrying tests: in step with this run's series and not.
    fn previous_files() -> Vec<String> {
        let name = "bpfsnap_events_total";
        let head = format!("# HELP {name} Events.\n# TYPE {name} counter\n");
        let line = |labels: &str, value: &str| format!("{name}{{{labels}}} {value}\n");
        let (bash, zsh) = ("kind=\"1\",comm=\"bash\"", "kind=\"1\",comm=\"zsh\"");
        let (sh, spaced) = ("kind=\"2\",comm=\"sh\"", "kind=\"3\",comm=\"a b\"");
        let old = "kind=\"9\",comm=\"old\"";
        let cases: [&[(&str, &str)]; 7] = [
            // In step, then a series this run does not have.
            &[(bash, "10"), (zsh, "20"), (sh, "30"), (old, "7")],
            // Out of step; a series missing; a value past 2^53.
            &[(old, "7"), (sh, "9007199254740993"), (bash, "1")],
            // A series gone in the middle, then in step again.
            &[
                (bash, "1"),
                (old, "7"),
                (zsh, "2"),
                (sh, "3"),
                (spaced, "4"),
            ],
            // A series new in the middle.
            &[(bash, "1"), (sh, "3"), (spaced, "4")],
            // A series twice, a timestamp, a value that is not one.
            &[(bash, "2"), (bash, "3"), (zsh, "4 1700000000"), (sh, "x")],
            // A label value with a space; an empty line; a line ending in \r.
            &[(spaced, "6"), ("", ""), (zsh, "1\r"), (sh, "2")],
            &[],
        ];
        let mut files: Vec<String> = cases
            .iter()
            .map(|samples| {
                let lines = samples
                    .iter()
                    .map(|(labels, value)| match labels.is_empty() {
                        true => "\n".to_string(),
                        false => line(labels, value),
                    });
                head.clone() + &lines.collect::<String>()
            })
            .collect();
        // Another family in between and around; a gauge of the name; none.
        files.push(format!(
            "# TYPE a gauge\na 1\n{head}{}# TYPE z gauge\nz 2\n",
            line(zsh, "5")
        ));
        files.push(format!(
            "# HELP {name} Events.\n# TYPE {name} gauge\n{}",
            line(bash, "5")
        ));
        files.push(String::new());
        files
    }

    /// Asserts that `text` carries `ours` on from `previous` as a naive
    /// reading would: each series' value plus the first of its previous
    /// ones, every series the previous file alone had kept (no cap), no
    /// series twice.
    fn assert_carried_naively(previous: &str, ours: &str, text: &str) {
        // Split at \n alone: a value "1\r" is not a number here either.
        let parse = |text: &str| -> Vec<(String, f64)> {
            text.split('\n')
                .filter(|line| !line.starts_with('#'))
                .filter_map(|line| line.rsplit_once(' '))
                .filter_map(|(series, value)| Some((series.to_string(), value.parse().ok()?)))
                .collect()
        };
        let mut before: BTreeMap<String, f64> = BTreeMap::new();
        if previous.contains("bpfsnap_events_total counter") {
            let family = parse(previous).into_iter();
            for (series, value) in family.filter(|(series, _)| series.starts_with("bpfsnap_")) {
                before.entry(series).or_insert(value);
            }
        }
        let mut want: BTreeMap<String, f64> = before.clone();
        for (series, value) in parse(ours) {
            want.insert(
                series.clone(),
                value + before.get(&series).copied().unwrap_or(0.0),
            );
        }
        let got = parse(text);
        let distinct: BTreeMap<String, f64> = got.iter().cloned().collect();
        assert_eq!(got.len(), distinct.len(), "a series twice:\n{text}");
        assert_eq!(distinct, want, "previous:\n{previous}\nwritten:\n{text}");
    }

    /// A counter map's family carried on as it is encoded is what the
    /// general path (encode, then [`Carried::carry_on`]) makes of its text,
    /// and what a naive reading of both files gives.
    #[test]
    fn counters_carried_as_encoded_are_as_carried_in_text() {
        let config = compile(SPEC);
        let snap = snapshot(
            &[
                (key(1, b"bash"), [1, 2]),
                (key(1, b"zsh\0"), [5, 0]),
                (key(2, b"sh\0\0"), [0, 4]),
                (key(3, b"a b\0"), [1, 0]),
            ],
            false,
        );
        let name = "bpfsnap_events_total";
        let ours = text_of(&config, &snap, "bpfsnap");
        for previous in previous_files() {
            let carried_file = Carried::parse(previous.clone());
            for cap in [1, 3, 4, 100] {
                let carried = BTreeMap::from([(name.to_string(), Carry::Add { cap })]);
                let exposed = families(&config, snap.clone(), "bpfsnap").unwrap();
                let mut exposition = Exposition::default().carrying_on(&carried_file, &carried);
                exposition.add_all(&exposed.families).unwrap();
                let as_encoded = exposition.carry.as_ref().unwrap().done.contains(name);
                let has_counter = previous.contains(&format!("{name} counter"));
                assert_eq!(as_encoded, has_counter, "carried as encoded:\n{previous}");
                exposition.carry_on();
                let in_text = carried_file.carry_on(name, &ours, Carry::Add { cap });
                let text = exposition.into_text();
                assert_eq!(
                    text,
                    in_text.unwrap_or_else(|| ours.clone()),
                    "cap {cap}, previous:\n{previous}"
                );
                if cap == 100 {
                    assert_carried_naively(&previous, &ours, &text);
                }
            }
        }
    }

    /// What a [`Spill`] is given, in order.
    #[derive(Debug, Default)]
    struct Spilled(String);

    impl Spill for Spilled {
        fn spill(&mut self, text: &mut String) {
            self.0.push_str(text);
            text.clear();
        }
    }

    /// A family spilled as it is encoded (in parts of any size, carried on
    /// or not) is written as it would be held; a family carry_on() merges
    /// later is held, whatever its size.
    #[test]
    fn spilled_families_are_written_as_held_ones_would_be() {
        let config = compile(SPEC);
        let few = [(key(1, b"bash"), [1, 2]), (key(2, b"sh\0\0"), [0, 4])];
        let many: Vec<(Vec<u8>, [u64; 2])> = (0..300)
            .map(|n| (key(n, b"x\0\0\0"), [n as u64, 1]))
            .collect();
        let name = "bpfsnap_events_total";
        let gauge = Family::gauge("bpfsnap_up", "Up.", 1.0);
        for entries in [&few[..], &many[..]] {
            let snap = snapshot(entries, false);
            for previous in previous_files() {
                let carried_file = Carried::parse(previous.clone());
                let carried = BTreeMap::from([(name.to_string(), Carry::Add { cap: 1000 })]);
                let exposed = families(&config, snap.clone(), "bpfsnap").unwrap();
                let mut held = Exposition::default().carrying_on(&carried_file, &carried);
                held.add_all(exposed.families.iter().chain([&gauge]))
                    .unwrap();
                held.carry_on();
                let want: BTreeMap<&str, &str> = held.parts().collect();
                for every in [1, 100, 1 << 20] {
                    let mut spilled = Spilled::default();
                    let mut exposition = Exposition::default()
                        .carrying_on(&carried_file, &carried)
                        .spilling_every(&mut spilled, every);
                    exposition
                        .add_all(exposed.families.iter().chain([&gauge]))
                        .unwrap();
                    exposition.carry_on();
                    let as_encoded = exposition.carry.as_ref().unwrap().done.contains(name);
                    assert_eq!(exposition.len(), 2);
                    let left = exposition.into_held();
                    let family = want[name];
                    if as_encoded && family.len() >= every {
                        assert_eq!(spilled.0, family, "every {every}, previous:\n{previous}");
                        let head = family.split_inclusive('\n').take(3).collect::<String>();
                        assert_eq!(left.spilled, BTreeMap::from([(name.to_string(), head)]));
                        assert_eq!(Vec::from_iter(left.families.keys()), ["bpfsnap_up"]);
                    } else {
                        assert_eq!(spilled.0, "", "every {every}, previous:\n{previous}");
                        assert!(left.spilled.is_empty());
                        assert_eq!(left.families[name], family);
                    }
                    assert_eq!(left.families["bpfsnap_up"], want["bpfsnap_up"]);
                }
            }
        }
    }

    #[test]
    fn a_label_with_same_bytes_as_decodes_the_bytes_of_another() {
        let spec = SPEC.replace(
            "[[metrics.counters.labels]]\nname = \"comm\"",
            "[[metrics.counters.labels]]\nname = \"kind_name\"\nsame_bytes_as = \"kind\"\n\
             decoders = [{ name = \"uint\" }, { name = \"static_map\", static_map = { 1 = \"one\" }, \
             allow_unknown = true }]\n[[metrics.counters.labels]]\nname = \"comm\"",
        );
        let plan = compile(&spec);
        let offsets: Vec<_> = plan.metrics[0]
            .labels
            .iter()
            .map(|l| (l.offset, l.size))
            .collect();
        assert_eq!(offsets, [(0, 4), (0, 4), (4, 4)]);
        assert_eq!(plan.metrics[0].key_size(true), 8);
        let snap = snapshot(
            &[(key(1, b"sh\0\0"), [1, 2]), (key(2, b"ls\0\0"), [3, 0])],
            false,
        );
        assert_eq!(
            text_of(&plan, &snap, "bpfsnap"),
            "# HELP bpfsnap_events_total Events.\n\
             # TYPE bpfsnap_events_total counter\n\
             bpfsnap_events_total{kind=\"1\",kind_name=\"one\",comm=\"sh\"} 3\n\
             bpfsnap_events_total{kind=\"2\",kind_name=\"2\",comm=\"ls\"} 3\n"
        );
    }

    #[test]
    fn array_zeros_are_left_out() {
        let config = compile(SPEC);
        let snap = snapshot(
            &[(key(1, b"a\0\0\0"), [0, 0]), (key(2, b"b\0\0\0"), [0, 1])],
            true,
        );
        let text = text_of(&config, &snap, "bpfsnap");
        assert!(!text.contains("comm=\"a\""));
        assert!(text.contains("comm=\"b\"} 1"));
    }

    #[test]
    fn escapes_label_values_and_replaces_invalid_utf8() {
        let config = compile(SPEC);
        let snap = snapshot(
            &[
                (key(1, b"a\"\\\n"), [1, 0]),
                (key(2, b"\xff\xfeok"), [1, 0]),
            ],
            false,
        );
        let text = text_of(&config, &snap, "bpfsnap");
        assert!(text.contains(r#"comm="a\"\\\n"} 1"#), "{text}");
        assert!(text.contains("comm=\"\u{fffd}\u{fffd}ok\"} 1"), "{text}");
    }

    #[test]
    fn a_key_that_fails_to_decode_is_skipped_and_counted() {
        let spec = SPEC.replace("\"string\"", "\"string\" }, { name = \"syscall\"");
        let config = compile(&spec);
        let snap = snapshot(
            &[(key(1, b"39\0\0"), [1, 0]), (key(2, b"bad\0"), [1, 0])],
            false,
        );
        let exposed = families(&config, snap, "bpfsnap").unwrap();
        assert_eq!(exposed.decode_errors.get("syscall"), Some(&1));
        let text = encode(&exposed.families).unwrap();
        assert!(text.contains("kind=\"1\""));
        assert!(!text.contains("kind=\"2\""));
    }

    #[test]
    fn families_sorted_by_name_empty_ones_dropped_duplicates_refused() {
        let families = [
            Family::gauge("b_seconds", "B.", 1.5),
            Family::gauge("a_seconds", "A with \\ and\nnewline.", 0.001),
            Family::metrics("c_total", "C.", Kind::Counter, vec![]),
        ];
        assert_eq!(
            encode(&families).unwrap(),
            "# HELP a_seconds A with \\\\ and\\nnewline.\n# TYPE a_seconds gauge\na_seconds 0.001\n\
             # HELP b_seconds B.\n# TYPE b_seconds gauge\nb_seconds 1.5\n"
        );
        let err = encode(&[Family::gauge("x", "X.", 1.0), Family::gauge("x", "X.", 2.0)])
            .unwrap_err()
            .to_string();
        assert!(err.contains("metric x is defined twice"), "{err}");
    }

    /// The series the original algorithm gives: every key decoded on its
    /// own into a `BTreeMap<Vec<String>, u128>`, added exactly.
    fn reference(
        plan: &Plan,
        snapshot: &Snapshot,
        namespace: &str,
    ) -> (Vec<MetricFamily>, BTreeMap<&'static str, u64>) {
        let mut errors = BTreeMap::new();
        let mut built = Vec::new();
        for metric in &plan.metrics {
            let map = snapshot.map(&metric.name).unwrap();
            let cpu_size = metric.cpu_label(map.per_cpu).map(|i| metric.labels[i].size);
            let mut series: BTreeMap<Vec<String>, u128> = BTreeMap::new();
            for (key, values) in map.entries() {
                if let Some(size) = cpu_size {
                    for (cpu, value) in values.iter().enumerate().filter(|(_, v)| **v != 0) {
                        let mut full = key.to_vec();
                        full.extend_from_slice(&(cpu as u64).to_ne_bytes()[..size.min(8)]);
                        if let Some(labels) = decode_key(&metric.labels, &full, &mut errors) {
                            *series.entry(labels).or_default() += u128::from(*value);
                        }
                    }
                    continue;
                }
                let total: u64 = values.iter().fold(0u64, |sum, v| sum.wrapping_add(*v));
                if map.is_array && total == 0 {
                    continue;
                }
                if let Some(labels) = decode_key(&metric.labels, key, &mut errors) {
                    *series.entry(labels).or_default() += u128::from(total);
                }
            }
            let names = metric.label_names();
            let metrics = series
                .into_iter()
                .map(|(values, value)| {
                    let mut sample = Metric::from_label(family::label_pairs(&names, values));
                    let mut counter = Counter::default();
                    counter.set_value(value as f64);
                    sample.set_counter(counter);
                    sample
                })
                .collect();
            let mut family = MetricFamily::default();
            family.set_name(metric_name(namespace, &metric.name));
            family.set_help(metric.help.clone());
            family.set_field_type(prometheus::proto::MetricType::COUNTER);
            family.set_metric(metrics);
            built.push(family);
        }
        (built, errors)
    }

    /// xorshift64*: deterministic test data without a crate.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// Specs and maps exercising the fast path: per-CPU sums and the `cpu`
    /// label, array zeros, labels over 8 bytes, padding, decode errors and
    /// skips, keys merging into one series, escaping, many labels (rows
    /// too wide to pack into 64 bits). One generator runs through them all,
    /// in this order.
    fn cases() -> Vec<(String, MapData)> {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut cases = per_cpu_cases(&mut rng);
        cases.extend(plain_cases(&mut rng));
        cases.extend(distinct_first_label_cases(&mut rng));
        cases.extend(wide_cases(&mut rng));
        cases
    }

    /// The words `comm` labels are made of: quotes, backslashes, a newline,
    /// numbers, a word `regexp` skips, invalid UTF-8, all 12 bytes used.
    const WORDS: [&[u8]; 7] = [
        b"x\"q\\",
        b"xa\nb",
        b"12",
        b"x",
        b"nope",
        b"x\xff\xfe",
        b"123456789012",
    ];

    /// A word of [`WORDS`] picked by `rng`.
    fn word(rng: &mut Rng) -> &'static [u8] {
        WORDS[rng.below(WORDS.len() as u64) as usize]
    }

    /// The spec of `m_total`, keyed by {u32 kind, char comm[12]}: comm
    /// through regexp (skips) and syscall (errors on non-numbers).
    /// kind: numbers below 300 are mapped to names, which `syscall` then
    /// rejects (decode errors); the others pass through to `syscall`.
    fn per_cpu_spec() -> String {
        let names: Vec<String> = (0..300)
            .map(|k| match k {
                7 => format!("\"{k}\" = 'a\\\"b\\\\c\\nd'"),
                _ => format!("\"{k}\" = \"v{}\"", k / 2),
            })
            .collect();
        format!(
            r#"
[[metrics.counters]]
name = "m_total"
help = "M."
[[metrics.counters.labels]]
name = "kind"
size = 2
padding = 2
decoders = [{{ name = "uint" }}, {{ name = "static_map", allow_unknown = true, static_map = {{ {} }} }}, {{ name = "syscall" }}]
[[metrics.counters.labels]]
name = "comm"
size = 12
decoders = [{{ name = "string" }}, {{ name = "regexp", regexps = ["^(x.*|[0-9]+)$"] }}]
"#,
            names.join(", ")
        )
    }

    /// The keys and values of a per-CPU hash of [`per_cpu_spec`] on two
    /// CPUs.
    fn per_cpu_keys(rng: &mut Rng) -> (Vec<u8>, Vec<u64>) {
        let mut keys = Vec::new();
        let mut values = Vec::new();
        for _ in 0..3000 {
            let kind = rng.below(600) as u16;
            keys.extend_from_slice(&kind.to_ne_bytes());
            keys.extend_from_slice(&[rng.below(256) as u8, 0]); // padding: ignored
            let mut comm = [0u8; 12];
            let word = word(rng);
            comm[..word.len()].copy_from_slice(word);
            if rng.below(4) == 0 {
                comm[11] = b'z'; // junk after the NUL, or a longer word
            }
            keys.extend_from_slice(&comm);
            values.extend([rng.below(1 << 60), rng.below(3)]);
        }
        (keys, values)
    }

    /// One set of per-CPU keys three ways: a hash summed over the CPUs, an
    /// array with zeros split by CPU, and the array without the cpu label.
    fn per_cpu_cases(rng: &mut Rng) -> Vec<(String, MapData)> {
        let spec = per_cpu_spec();
        let (keys, values) = per_cpu_keys(rng);
        let summed = MapData {
            name: "m_total".into(),
            key_size: 16,
            values_per_key: 2,
            is_array: false,
            per_cpu: true,
            keys,
            values,
        };
        // The same keys split by CPU (last label `cpu`), as an array with zeros.
        let cpu_spec = spec.clone()
            + "[[metrics.counters.labels]]\nname = \"cpu\"\nsize = 4\ndecoders = [{ name = \"uint\" }]\n";
        let zeroed = MapData {
            is_array: true,
            values: summed
                .values
                .iter()
                .enumerate()
                .map(|(i, v)| if i % 5 == 0 { 0 } else { *v })
                .collect(),
            ..summed.clone()
        };
        vec![
            (spec.clone(), summed),
            (cpu_spec, zeroed.clone()),
            // Array zeros without the cpu label.
            (spec, zeroed),
        ]
    }

    /// Labels read without decoding (a lone `uint` or `string`): a u64
    /// nearly every key of which is new (past the point where ids are no
    /// longer looked up, with some values twice), and a 12-byte string,
    /// once all valid UTF-8 and once with invalid bytes (ranked as text).
    fn plain_cases(rng: &mut Rng) -> Vec<(String, MapData)> {
        let plain = "[[metrics.counters]]\nname = \"p_total\"\nhelp = \"P.\"\nmax_series = 100000\n\
            [[metrics.counters.labels]]\nname = \"addr\"\nsize = 8\ndecoders = [{ name = \"uint\" }]\n\
            [[metrics.counters.labels]]\nname = \"comm\"\nsize = 12\ndecoders = [{ name = \"string\" }]\n";
        let mut cases = Vec::new();
        for with_invalid in [false, true] {
            let mut keys = Vec::new();
            for _ in 0..40_000 {
                let addr = 0xffff_8880_0000_0000u64 | (rng.below(60_000) * 64);
                keys.extend_from_slice(&addr.to_ne_bytes());
                let mut comm = [0u8; 12];
                let word = match (with_invalid, word(rng)) {
                    (false, b"x\xff\xfe") => &b"x\\y"[..],
                    (_, word) => word,
                };
                comm[..word.len()].copy_from_slice(word);
                keys.extend_from_slice(&comm);
            }
            cases.push((
                plain.to_string(),
                MapData {
                    name: "p_total".into(),
                    key_size: 20,
                    values_per_key: 1,
                    is_array: false,
                    per_cpu: false,
                    keys,
                    values: (0..40_000).map(|_| rng.below(1000)).collect(),
                },
            ));
        }
        cases
    }

    /// A first label whose values are all distinct orders the keys by
    /// itself; the labels after it keep their values unranked: a string
    /// (with invalid UTF-8 in some) and a chain that rejects some keys.
    /// Some addresses come twice, the second time with a value `regexp`
    /// skips, so that as many addresses are left as keys but two keys
    /// share one.
    fn distinct_first_label_cases(rng: &mut Rng) -> Vec<(String, MapData)> {
        let distinct = "[[metrics.counters]]\nname = \"d_total\"\nhelp = \"D.\"\nmax_series = 100000\n\
            [[metrics.counters.labels]]\nname = \"addr\"\nsize = 8\ndecoders = [{ name = \"uint\" }]\n\
            [[metrics.counters.labels]]\nname = \"comm\"\nsize = 12\ndecoders = [{ name = \"string\" }]\n\
            [[metrics.counters.labels]]\nname = \"nr\"\nsize = 4\ndecoders = [{ name = \"uint\" }, { name = \"regexp\", regexps = [\"^[0-9]{1,3}$\"] }]\n";
        let mut cases = Vec::new();
        for (keys, repeats) in [(30_000u64, false), (30, false), (30_000, true)] {
            let mut data = Vec::new();
            let mut add = |addr: u64, nr: u32, rng: &mut Rng| {
                data.extend_from_slice(&addr.to_ne_bytes());
                let mut comm = [0u8; 12];
                let word = word(rng);
                comm[..word.len()].copy_from_slice(word);
                data.extend_from_slice(&comm);
                data.extend_from_slice(&nr.to_ne_bytes());
            };
            for i in 0..keys {
                let addr = 0xffff_8880_0000_0000u64 | ((i * 7919 % keys) * 64);
                add(addr, rng.below(300) as u32, rng);
                if repeats && i % 100 == 0 {
                    // The same address, kept; then a new one, rejected.
                    add(addr, 0, rng);
                    add(addr + 1, 100_000, rng);
                }
            }
            let count = data.len() / 24;
            cases.push((
                distinct.to_string(),
                MapData {
                    name: "d_total".into(),
                    key_size: 24,
                    values_per_key: 1,
                    is_array: false,
                    per_cpu: false,
                    keys: data,
                    values: (0..count).map(|_| rng.below(1000)).collect(),
                },
            ));
        }
        cases
    }

    /// 1-byte labels of ~200 values each: 7 of them (56 bits) pack into
    /// a u64 but not with the key's index; 9 (72 bits) do not pack.
    fn wide_cases(rng: &mut Rng) -> Vec<(String, MapData)> {
        let mut cases = Vec::new();
        for width in [7usize, 9] {
            let mut wide =
                String::from("[[metrics.counters]]\nname = \"w_total\"\nhelp = \"W.\"\n");
            for i in 0..width {
                wide += &format!(
                    "[[metrics.counters.labels]]\nname = \"l{i}\"\nsize = 1\ndecoders = [{{ name = \"uint\" }}]\n"
                );
            }
            let keys: Vec<u8> = (0..width * 4000).map(|_| rng.below(200) as u8).collect();
            // Some duplicate keys, to merge.
            let keys = [keys.clone(), keys[..width * 500].to_vec()].concat();
            let values = (0..4500).map(|_| rng.below(1000)).collect();
            cases.push((
                wide,
                MapData {
                    name: "w_total".into(),
                    key_size: width,
                    values_per_key: 1,
                    is_array: false,
                    per_cpu: false,
                    keys,
                    values,
                },
            ));
        }
        cases
    }

    #[test]
    fn fast_series_match_the_original_algorithm() {
        for (spec, map) in cases() {
            let config = compile(&spec);
            let snapshot = Snapshot {
                maps: vec![map],
                ..Snapshot::default()
            };
            let (want, want_errors) = reference(&config, &snapshot, "ns");
            let exposed = families(&config, snapshot, "ns").unwrap();
            assert!(
                want[0].get_metric().len() > 10,
                "{spec}: too few series to mean much"
            );
            // The same series; their order is the keys' (see `keys`).
            let mut ours: Vec<MetricFamily> =
                exposed.families.iter().map(Family::to_proto).collect();
            for family in &mut ours {
                family.mut_metric().sort_by(|a, b| {
                    let pairs = |m: &Metric| {
                        let labels = m.get_label().iter();
                        labels
                            .map(|l| (l.name().to_string(), l.value().to_string()))
                            .collect::<Vec<_>>()
                    };
                    pairs(a).cmp(&pairs(b))
                });
            }
            assert_eq!(ours, want, "{spec}");
            assert_eq!(exposed.decode_errors, want_errors, "{spec}");
            assert!(
                !want_errors.is_empty()
                    || ["w_total", "p_total", "d_total"]
                        .iter()
                        .any(|m| spec.contains(m))
            );
            assert!(exposed.series_dropped.is_empty());
            // The text, straight from the table.
            let lines = |text: String| {
                let mut lines: Vec<String> = text.lines().map(String::from).collect();
                lines.sort();
                lines
            };
            assert_eq!(
                lines(encode(&exposed.families).unwrap()),
                lines(theirs(&want)),
                "{spec}"
            );
        }
    }

    #[test]
    fn counters_and_histograms_encode_as_the_prometheus_crate_does() {
        let spec = format!(
            "{SPEC}{}",
            r#"
[[metrics.histograms]]
name = "latency_seconds"
help = "Latency."
bucket_type = "exp2"
bucket_min = 0
bucket_max = 3
[[metrics.histograms.labels]]
name = "op"
size = 4
decoders = [{ name = "uint" }]
[[metrics.histograms.labels]]
name = "bucket"
size = 4
decoders = [{ name = "uint" }]
"#
        );
        let config = compile(&spec);
        let mut snap = snapshot(
            &[
                (key(2, b"sh\0\0"), [1, 2]),
                (key(1, b"zsh\0"), [5, 0]),
                (key(1, b"bash"), [0, 7]),
                (key(1, b"bash"), [1, 0]),
            ],
            false,
        );
        snap.maps.push(MapData {
            name: "latency_seconds".into(),
            key_size: 8,
            values_per_key: 1,
            is_array: false,
            per_cpu: false,
            keys: [(1u32, 0u32), (1, 2), (2, 4)]
                .iter()
                .flat_map(|(op, b)| [op.to_ne_bytes(), b.to_ne_bytes()].concat())
                .collect(),
            values: vec![3, 4, 5],
        });
        let exposed = families(&config, snap, "bpfsnap").unwrap();
        let mut streamed = Exposition::default();
        streamed.add_all(&exposed.families).unwrap();
        assert_eq!(streamed.len(), 2);
        // A name already added is refused.
        let err = streamed.add_all(&exposed.families).unwrap_err();
        assert!(err.to_string().contains("defined twice"), "{err}");
        let protos: Vec<MetricFamily> = exposed.families.iter().map(Family::to_proto).collect();
        assert_eq!(streamed.into_text(), theirs(&protos));
    }

    #[test]
    fn unsorted_families_are_sorted_by_labels_as_before() {
        let series: Samples = vec![
            (vec!["2".into(), "a".into()], 1.0),
            (vec!["10".into(), "b".into()], 2.0),
            (vec!["2".into(), "".into()], 3.0),
            (vec!["10".into(), "b".into()], 4.0), // equal labels: kept in order
        ];
        let family = Family::samples("x_total", "X.", Kind::Counter, &["a", "b"], series.clone());
        let mut by_key = series;
        by_key.sort_by(|a, b| a.0.cmp(&b.0));
        let unsorted = Family {
            series: Series::Metrics(Vec::new()),
            ..Family::samples("x_total", "X.", Kind::Counter, &["a", "b"], Vec::new())
        };
        let mut want = unsorted.to_proto();
        want.set_metric(
            Family::samples("x_total", "X.", Kind::Counter, &["a", "b"], by_key)
                .to_proto()
                .take_metric(),
        );
        let want = theirs(&[want]);
        assert_eq!(encode([&family]).unwrap(), want);
        assert!(want.find("b=\"b\"} 2").unwrap() < want.find("b=\"b\"} 4").unwrap());
    }

    #[test]
    fn openmetrics_names_counters_without_total_and_ends_with_eof() {
        let families = [
            Family::samples(
                "a_total",
                "A.",
                Kind::Counter,
                &["x"],
                vec![(vec!["1".into()], 3.0)],
            ),
            Family::samples("b", "B.", Kind::Counter, &[], vec![(Vec::new(), 4.0)]),
            Family::gauge("g_seconds", "G.", 1.5),
        ];
        let mut exposition = Exposition::new(Encoding::OpenMetrics);
        exposition.add_all(&families).unwrap();
        assert_eq!(
            exposition.into_text(),
            "# HELP a A.\n# TYPE a counter\na_total{x=\"1\"} 3\n\
             # HELP b B.\n# TYPE b counter\nb_total 4\n\
             # HELP g_seconds G.\n# TYPE g_seconds gauge\ng_seconds 1.5\n# EOF\n"
        );
    }

    #[test]
    fn families_keep_the_largest_series_up_to_max_series() {
        let spec = SPEC.replace("help = \"Events.\"", "help = \"Events.\"\nmax_series = 2");
        let config = compile(&spec);
        let snap = snapshot(
            &[
                (key(1, b"a\0\0\0"), [1, 0]),
                (key(4, b"d\0\0\0"), [5, 0]), // ties with c, which comes first
                (key(2, b"b\0\0\0"), [9, 0]),
                (key(3, b"c\0\0\0"), [5, 0]),
                (key(5, b"e\0\0\0"), [2, 0]),
            ],
            false,
        );
        let exposed = families(&config, snap, "bpfsnap").unwrap();
        assert_eq!(exposed.series_dropped, [("events_total".to_string(), 3)]);
        // The terminal view reads the same series.
        let mut rows = Vec::new();
        exposed.families[0]
            .for_each_sample(|labels, value| rows.push((labels[1].1.to_string(), value)));
        assert_eq!(rows, [("b".to_string(), 9.0), ("c".to_string(), 5.0)]);
        assert_eq!(
            encode(&exposed.families).unwrap(),
            "# HELP bpfsnap_events_total Events.\n\
             # TYPE bpfsnap_events_total counter\n\
             bpfsnap_events_total{kind=\"2\",comm=\"b\"} 9\n\
             bpfsnap_events_total{kind=\"3\",comm=\"c\"} 5\n"
        );
    }

    #[test]
    fn families_cap_histograms_by_count() {
        let spec = r#"
[[metrics.histograms]]
name = "latency_seconds"
help = "Latency."
max_series = 1
bucket_type = "exp2"
bucket_min = 0
bucket_max = 1
[[metrics.histograms.labels]]
name = "op"
size = 4
decoders = [{ name = "uint" }]
[[metrics.histograms.labels]]
name = "bucket"
size = 4
decoders = [{ name = "uint" }]
"#;
        let config = compile(spec);
        let snap = Snapshot {
            maps: vec![MapData {
                name: "latency_seconds".into(),
                key_size: 8,
                values_per_key: 1,
                is_array: false,
                per_cpu: false,
                keys: [(1u32, 0u32), (2, 1), (3, 0)]
                    .iter()
                    .flat_map(|(op, b)| [op.to_ne_bytes(), b.to_ne_bytes()].concat())
                    .collect(),
                values: vec![3, 7, 1],
            }],
            ..Snapshot::default()
        };
        let exposed = families(&config, snap, "bpfsnap").unwrap();
        assert_eq!(exposed.series_dropped, [("latency_seconds".to_string(), 2)]);
        let text = encode(&exposed.families).unwrap();
        assert!(text.contains("_count{op=\"2\"} 7\n"), "{text}");
        assert!(
            !text.contains("op=\"1\"") && !text.contains("op=\"3\""),
            "{text}"
        );
    }
}
