//! Counters that carry on from the textfile a run replaces.
//!
//! A run without `--pin` counts only while its process lives. Written
//! afresh, each file's counters would start again from zero, and
//! Prometheus, which takes a counter as reset only where a value goes down,
//! would misread them: a window that counts more than the one before looks
//! like an increase of the difference, and its events are lost to
//! `increase()`. So a run writing a textfile reads the file it is about to
//! replace once, when it starts, and adds that file's value of each series
//! to every counter and histogram it writes; series only that file had are
//! written as they were (up to the metric's `max_series`). The file is the
//! state: nothing else is kept, and a file that is missing or unreadable
//! starts the counts again.
//!
//! The time the counts began (`counters_start_timestamp_seconds`, a gauge)
//! is carried the same way: the earlier of the two.
//!
//! A counter map's family, most of a large file, takes the previous values
//! as it is encoded ([`Theirs`], through `Exposition::carrying_on`); the
//! other families are encoded first and carried on in their text
//! ([`Carried::carry_on`]). Both give the same text.
//!
//! The previous file is read as bpfsnap writes the text format 0.0.4. A
//! family whose type is not the same, or a histogram whose buckets are not
//! the same, starts again instead (a config changed its meaning).

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::ops::Range;

use rustc_hash::FxHashMap;

use super::text::push_float;

/// The previous file's families, by name.
#[derive(Debug, Default)]
pub struct Carried {
    /// The previous file, whole: its families are ranges of it, not copies
    /// (a large map's family is most of it).
    text: String,
    families: HashMap<String, Previous>,
}

/// How a family carries on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carry {
    /// A counter or histogram: the previous values are added, and series
    /// only the previous file had kept, `cap` series in all.
    Add { cap: usize },
    /// A gauge of when counting began: the earlier of the two.
    Earliest,
}

/// One family of the previous file.
#[derive(Debug)]
struct Previous {
    type_name: String,
    /// Where its text as written (header and samples) is in the file.
    text: Range<usize>,
}

/// A sample line: the series (name and labels, as written) and its value.
fn split_sample(line: &str) -> Option<(&str, f64)> {
    let (key, value) = line.rsplit_once(' ')?;
    Some((key, parse_value(value)?))
}

/// A sample's value. Counters are written as integers: those of up to 15
/// digits (exact in an f64) are read without the general float parser,
/// which took most of the time of carrying a large family on.
fn parse_value(text: &str) -> Option<f64> {
    let digits = text.as_bytes();
    if !digits.is_empty() && digits.len() <= 15 && digits.iter().all(u8::is_ascii_digit) {
        let value = digits
            .iter()
            .fold(0u64, |value, digit| value * 10 + u64::from(digit - b'0'));
        return Some(value as f64);
    }
    text.parse().ok()
}

impl Carried {
    /// The counters and histograms of `text`, a previous output.
    pub fn parse(mut text: String) -> Carried {
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        let mut families = HashMap::new();
        let mut current: Option<(String, Previous)> = None;
        let mut at = 0;
        for line in text.split_inclusive('\n') {
            let start = at;
            at += line.len();
            let line = line.trim_end_matches('\n');
            let header = line
                .strip_prefix("# HELP ")
                .or_else(|| line.strip_prefix("# TYPE "));
            if let Some(rest) = header {
                let name = rest.split(' ').next().unwrap_or_default();
                if current.as_ref().is_none_or(|(open, _)| open != name) {
                    if let Some((done, family)) = current.take() {
                        families.insert(done, family);
                    }
                    let family = Previous {
                        type_name: String::new(),
                        text: start..start,
                    };
                    current = Some((name.to_string(), family));
                }
            }
            let Some((_, family)) = current.as_mut() else {
                continue;
            };
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                family.type_name = rest.split(' ').nth(1).unwrap_or_default().to_string();
            }
            family.text.end = at;
        }
        families.extend(current);
        Carried { text, families }
    }

    /// The text and type of the previous file's family `name`.
    fn family(&self, name: &str) -> Option<(&str, &str)> {
        let family = self.families.get(name)?;
        let text = self.text.get(family.text.clone())?;
        Some((text, family.type_name.as_str()))
    }

    /// The previous file's text of counter or histogram family `name`, to
    /// write as it was when this run has no series of it.
    pub fn family_text(&self, name: &str) -> Option<&str> {
        let (text, type_name) = self.family(name)?;
        matches!(type_name, "counter" | "histogram").then_some(text)
    }

    /// The previous file's samples of counter `name`, for this run's
    /// counter of that name to take theirs as it is encoded: what
    /// [`Carry::Add`] does to a counter's text, without writing the text
    /// twice (a large map's counter is most of the file).
    pub(super) fn counter(&self, name: &str) -> Option<Theirs<'_>> {
        let (text, type_name) = self.family(name)?;
        (type_name == "counter").then(|| Theirs::of(text))
    }

    /// `text`, this run's family `name` (header and samples), carried on
    /// from the previous file's as `carry` says; None (unchanged) when the
    /// previous file has no such family, or one of another type or with
    /// other buckets.
    pub fn carry_on(&self, name: &str, text: &str, carry: Carry) -> Option<String> {
        match carry {
            Carry::Add { cap } => self.add(name, text, cap),
            Carry::Earliest => self.earliest(name, text),
        }
    }

    /// [`Carry::Add`]. Each of this run's samples is matched with the
    /// previous file's of the same series: both files are bpfsnap's text of
    /// the same maps, in the same order, so the previous file's next sample
    /// nearly always is the one; only where it is not are its samples
    /// looked up by series (indexed at the first miss).
    fn add(&self, name: &str, text: &str, cap: usize) -> Option<String> {
        let (before, type_name) = self.family(name)?;
        let ours_type = text
            .lines()
            .find_map(|line| line.strip_prefix("# TYPE "))
            .and_then(|rest| rest.split(' ').nth(1))?;
        if ours_type != type_name
            || (type_name == "histogram" && bucket_bounds(text) != bucket_bounds(before))
        {
            return None;
        }
        let mut theirs = Theirs::of(before);
        let mut out = String::with_capacity(text.len() + before.len() / 4);
        let mut ours = 0usize;
        for line in text.lines() {
            match split_sample(line).filter(|_| !line.starts_with('#')) {
                Some((key, value)) => {
                    ours += usize::from(is_count(name, key));
                    let carried = theirs.take(key).unwrap_or(0.0);
                    out.push_str(key);
                    out.push(' ');
                    push_float(&mut out, value + carried);
                    out.push('\n');
                }
                None => {
                    out.push_str(line);
                    out.push('\n');
                }
            }
        }
        theirs.keep_only_theirs(name, ours, cap, &mut out);
        Some(out)
    }

    /// [`Carry::Earliest`].
    fn earliest(&self, name: &str, text: &str) -> Option<String> {
        let (before, _) = self.family(name)?;
        let values: HashMap<&str, f64> = samples(before).collect();
        let mut out = String::with_capacity(text.len());
        for line in text.lines() {
            match split_sample(line).filter(|_| !line.starts_with('#')) {
                Some((key, value)) => {
                    let earliest = values.get(key).map_or(value, |then| then.min(value));
                    out.push_str(key);
                    out.push(' ');
                    push_float(&mut out, earliest);
                }
                None => out.push_str(line),
            }
            out.push('\n');
        }
        Some(out)
    }
}

/// The previous file's samples of one family, as this run's take theirs.
///
/// Both files are bpfsnap's text of the same maps, in the same order, so
/// the previous file's next sample nearly always is the one this run asks
/// for: its samples are read in step with this run's. At the first that is
/// not where expected (a series gone or new since) every sample is indexed
/// by series, and the reading goes on in step from the one found.
/// (Indexing them all up front cost a large map's carry more than encoding
/// it; looking every sample up once indexed, twice the encoding.)
pub(super) struct Theirs<'t> {
    /// The family's text.
    text: &'t str,
    /// Where the next sample is expected: the start of its line (or of
    /// comments before it), and how many samples come before it.
    next: usize,
    ordinal: usize,
    /// Made at the first sample not where expected; until then, every
    /// sample before `next` has been taken.
    index: Option<Index<'t>>,
}

/// The previous file's samples of one family, by series.
struct Index<'t> {
    /// The ordinal of each series' sample (the first, of a series written
    /// twice).
    by_series: FxHashMap<&'t str, usize>,
    /// Where each sample's line starts, by ordinal.
    starts: Vec<usize>,
    taken: Vec<bool>,
    /// Whether a series is written twice: then the sample where expected
    /// may not be its series' first, and every sample is looked up.
    twice: bool,
}

impl<'t> Theirs<'t> {
    fn of(text: &'t str) -> Theirs<'t> {
        Theirs {
            text,
            next: 0,
            ordinal: 0,
            index: None,
        }
    }

    /// The sample lines of the text: (where the line starts, series as
    /// written, value as written).
    fn samples(&self) -> impl Iterator<Item = (usize, &'t str, &'t str)> {
        let mut start = 0;
        self.text.split_inclusive('\n').filter_map(move |line| {
            let at = start;
            start += line.len();
            let line = line.trim_end_matches('\n');
            let (key, value) = line.rsplit_once(' ').filter(|_| !line.starts_with('#'))?;
            Some((at, key, value))
        })
    }

    /// The value of the sample at `at` (or after comments there) if it is
    /// of series `key`, and where the line after it starts. (Compared in
    /// place: splitting each line first took as long.)
    fn sample_at(&self, mut at: usize, key: &str) -> Option<(&'t str, usize)> {
        let text: &'t str = self.text;
        while text.get(at..)?.starts_with('#') {
            at += text[at..].find('\n')? + 1;
        }
        let sample = text[at..].strip_prefix(key)?.strip_prefix(' ')?;
        let length = sample.find('\n').unwrap_or(sample.len());
        let value = &sample[..length];
        if value.contains(' ') {
            // A timestamp after the value: not bpfsnap's, and not this one.
            return None;
        }
        Some((value, (at + key.len() + 1 + length + 1).min(text.len())))
    }

    /// The previous value of series `key`, once: a series taken is not
    /// carried again, nor kept as theirs alone.
    pub(super) fn take(&mut self, key: &str) -> Option<f64> {
        let in_step = match &self.index {
            Some(index) if index.twice => None,
            _ => self.sample_at(self.next, key),
        };
        let (ordinal, (value, after)) = match in_step {
            Some(found) => (self.ordinal, found),
            None => {
                let index = self.index();
                let ordinal = *index.by_series.get(key)?;
                let start = index.starts[ordinal];
                (ordinal, self.sample_at(start, key)?)
            }
        };
        if let Some(index) = &mut self.index {
            if std::mem::replace(&mut index.taken[ordinal], true) {
                return None;
            }
        }
        (self.next, self.ordinal) = (after, ordinal + 1);
        parse_value(value)
    }

    /// Every sample by series, those before `next` taken.
    fn index(&mut self) -> &mut Index<'t> {
        let index = match self.index.take() {
            Some(index) => index,
            None => self.make_index(),
        };
        self.index.insert(index)
    }

    fn make_index(&self) -> Index<'t> {
        let lines = memchr::memchr_iter(b'\n', self.text.as_bytes()).count() + 1;
        let mut index = Index {
            by_series: FxHashMap::with_capacity_and_hasher(lines, Default::default()),
            starts: Vec::with_capacity(lines),
            taken: Vec::with_capacity(lines),
            twice: false,
        };
        for (ordinal, (at, key, _)) in self.samples().enumerate() {
            index.starts.push(at);
            index.taken.push(ordinal < self.ordinal);
            match index.by_series.entry(key) {
                Entry::Occupied(_) => index.twice = true,
                Entry::Vacant(entry) => {
                    entry.insert(ordinal);
                }
            }
        }
        index
    }

    /// Appends the series only the previous file had that fit under `cap`
    /// beside this run's `ours` series: the largest first (by
    /// value; for a histogram, by count), in the previous file's order.
    /// A series twice in that file is not kept beside this run's.
    pub(super) fn keep_only_theirs(
        mut self,
        name: &str,
        ours: usize,
        cap: usize,
        out: &mut String,
    ) {
        let text = self.text;
        let no_sample = |line: &str| line.is_empty() || line.starts_with('#');
        if self.index.is_none() && text[self.next..].split('\n').all(no_sample) {
            // Every sample taken in step: nothing is theirs alone.
            return;
        }
        let index = self.index();
        let mut left: Vec<usize> = index
            .by_series
            .values()
            .copied()
            .filter(|&ordinal| !index.taken[ordinal])
            .collect();
        left.sort_unstable();
        let left: Vec<(&str, f64)> = left
            .into_iter()
            .filter_map(|ordinal| {
                // Split at \n alone, as `samples` reads them.
                let line = text[index.starts[ordinal]..].split('\n').next()?;
                let (key, value) = line.rsplit_once(' ')?;
                Some((key, parse_value(value)?))
            })
            .collect();
        if left.is_empty() {
            return;
        }
        let kept = kept_series(name, &left, ours, cap);
        for (key, value) in left {
            if kept.contains(series_of(name, key).as_str()) {
                out.push_str(key);
                out.push(' ');
                push_float(out, value);
                out.push('\n');
            }
        }
    }
}

/// Whether sample `key` of family `name` is the one that stands for its
/// series: a counter's only sample, a histogram's `_count`.
fn is_count(name: &str, key: &str) -> bool {
    key.strip_prefix(name)
        .is_some_and(|rest| rest.starts_with("_count") || !rest.starts_with('_'))
}

/// The sample lines of a family's text.
fn samples(text: &str) -> impl Iterator<Item = (&str, f64)> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(split_sample)
}

/// The series a sample of family `name` belongs to: its labels without
/// `le`, so that a histogram's bucket, sum and count lines are one series.
fn series_of(name: &str, key: &str) -> String {
    let labels = key
        .strip_prefix(name)
        .map(|rest| rest.trim_start_matches(|c: char| c != '{'))
        .unwrap_or(key);
    // bpfsnap writes `le` last; in a label value the quote would be escaped.
    match labels.rfind("le=\"") {
        Some(at) if at == 1 || labels[..at].ends_with(',') => {
            let end = labels[at + 4..]
                .find('"')
                .map_or(labels.len(), |e| at + 4 + e + 1);
            let before = labels[..at].trim_end_matches(',');
            let series = format!("{before}{}", labels[end..].trim_start_matches(','));
            match series.as_str() {
                "{}" => String::new(),
                _ => series,
            }
        }
        _ => labels.to_string(),
    }
}

/// The series only the previous file had (`left`: its samples no sample of
/// this run took; a file bpfsnap wrote has each series once, so none of
/// them is one of this run's) that fit under `cap` beside this run's `ours`
/// series: the largest first (by value; for a histogram, by count).
fn kept_series(name: &str, left: &[(&str, f64)], ours: usize, cap: usize) -> HashSet<String> {
    let mut theirs: HashMap<String, f64> = HashMap::new();
    for &(key, value) in left {
        let weight = theirs.entry(series_of(name, key)).or_insert(0.0);
        if is_count(name, key) {
            *weight = value;
        }
    }
    let room = cap.saturating_sub(ours);
    let mut ranked: Vec<(String, f64)> = theirs.into_iter().collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    ranked
        .into_iter()
        .take(room)
        .map(|(series, _)| series)
        .collect()
}

/// The distinct `le` bounds of a histogram family's text, in order.
fn bucket_bounds(text: &str) -> Vec<&str> {
    let mut bounds: Vec<&str> = Vec::new();
    for line in text.lines().filter(|line| !line.starts_with('#')) {
        let Some(at) = line.find("le=\"") else {
            continue;
        };
        let rest = &line[at + 4..];
        let bound = &rest[..rest.find('"').unwrap_or(rest.len())];
        if !bounds.contains(&bound) {
            bounds.push(bound);
        }
    }
    bounds.sort_unstable();
    bounds
}

#[cfg(test)]
mod tests {
    use super::*;

    const PREVIOUS: &str = "\
# HELP x_total X.
# TYPE x_total counter
x_total{a=\"1\"} 10
x_total{a=\"2\"} 5
# HELP g Gauge.
# TYPE g gauge
g 3
# HELP h_seconds H.
# TYPE h_seconds histogram
h_seconds_bucket{k=\"a\",le=\"1\"} 1
h_seconds_bucket{k=\"a\",le=\"+Inf\"} 2
h_seconds_sum{k=\"a\"} 2.5
h_seconds_count{k=\"a\"} 2
h_seconds_bucket{k=\"b\",le=\"1\"} 0
h_seconds_bucket{k=\"b\",le=\"+Inf\"} 1
h_seconds_sum{k=\"b\"} 4
h_seconds_count{k=\"b\"} 1
";

    fn add(cap: usize) -> Carry {
        Carry::Add { cap }
    }

    #[test]
    fn the_start_of_counting_is_the_earlier_one() {
        let carried = Carried::parse(PREVIOUS.to_string());
        let now = "# TYPE g gauge\ng 5\n";
        assert_eq!(
            carried.carry_on("g", now, Carry::Earliest).unwrap(),
            "# TYPE g gauge\ng 3\n"
        );
        let earlier = "# TYPE g gauge\ng 1\n";
        assert_eq!(
            carried.carry_on("g", earlier, Carry::Earliest).unwrap(),
            earlier
        );
    }

    #[test]
    fn counters_add_up_and_series_only_the_previous_file_had_are_kept() {
        let carried = Carried::parse(PREVIOUS.to_string());
        assert!(
            carried.family_text("g").is_none(),
            "gauges are not written as they were"
        );
        let now =
            "# HELP x_total X.\n# TYPE x_total counter\nx_total{a=\"1\"} 3\nx_total{a=\"3\"} 1\n";
        assert_eq!(
            carried.carry_on("x_total", now, add(100)).unwrap(),
            "# HELP x_total X.\n# TYPE x_total counter\nx_total{a=\"1\"} 13\nx_total{a=\"3\"} 1\n\
             x_total{a=\"2\"} 5\n"
        );
        // The cap keeps ours, then the largest of theirs.
        let capped = carried.carry_on("x_total", now, add(2)).unwrap();
        assert!(!capped.contains("a=\"2\""), "{capped}");
    }

    #[test]
    fn histograms_add_bucket_by_bucket_and_keep_whole_series() {
        let carried = Carried::parse(PREVIOUS.to_string());
        let now = "# HELP h_seconds H.\n# TYPE h_seconds histogram\n\
                   h_seconds_bucket{k=\"a\",le=\"1\"} 4\nh_seconds_bucket{k=\"a\",le=\"+Inf\"} 4\n\
                   h_seconds_sum{k=\"a\"} 1\nh_seconds_count{k=\"a\"} 4\n";
        let out = carried.carry_on("h_seconds", now, add(100)).unwrap();
        for line in [
            "h_seconds_bucket{k=\"a\",le=\"1\"} 5",
            "h_seconds_bucket{k=\"a\",le=\"+Inf\"} 6",
            "h_seconds_sum{k=\"a\"} 3.5",
            "h_seconds_count{k=\"a\"} 6",
            "h_seconds_bucket{k=\"b\",le=\"+Inf\"} 1",
            "h_seconds_count{k=\"b\"} 1",
        ] {
            assert!(out.lines().any(|l| l == line), "{line} in\n{out}");
        }
        // One series of theirs over the cap: b goes whole.
        let capped = carried.carry_on("h_seconds", now, add(1)).unwrap();
        assert!(!capped.contains("k=\"b\""), "{capped}");
    }

    #[test]
    fn another_type_or_other_buckets_start_again() {
        let carried = Carried::parse(PREVIOUS.to_string());
        let gauge = "# TYPE x_total gauge\nx_total{a=\"1\"} 3\n";
        assert_eq!(carried.carry_on("x_total", gauge, add(100)), None);
        let buckets = "# TYPE h_seconds histogram\nh_seconds_bucket{k=\"a\",le=\"2\"} 1\n\
                       h_seconds_bucket{k=\"a\",le=\"+Inf\"} 1\nh_seconds_sum{k=\"a\"} 1\n\
                       h_seconds_count{k=\"a\"} 1\n";
        assert_eq!(carried.carry_on("h_seconds", buckets, add(100)), None);
        assert_eq!(carried.carry_on("y_total", gauge, add(100)), None);
    }

    #[test]
    fn series_of_drops_le_wherever_it_is() {
        for (key, series) in [
            ("h_bucket{k=\"a\",le=\"1\"}", "{k=\"a\"}"),
            ("h_bucket{le=\"1\"}", ""),
            ("h_bucket{le=\"1\",k=\"a\"}", "{k=\"a\"}"),
            ("h_sum{k=\"a\"}", "{k=\"a\"}"),
            ("h_count", ""),
            (
                "h_bucket{file=\"le=\\\"x\",le=\"2\"}",
                "{file=\"le=\\\"x\"}",
            ),
            ("h_sum{handle=\"x\"}", "{handle=\"x\"}"),
        ] {
            assert_eq!(series_of("h", key), series, "{key}");
        }
    }

    #[test]
    fn garbage_is_no_family() {
        let carried = Carried::parse("not a file\n\u{0}\nx 1\n# TYPE\n".to_string());
        assert!(carried.family_text("x").is_none() && carried.family_text("").is_none());
    }
}
