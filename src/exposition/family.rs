//! [`Family`]: one metric family as every output reads it — the text and
//! OpenMetrics encoders ([`super::Exposition`]) and the terminal view
//! ([`super::pretty`]). A family's series cap is applied once, where it is
//! built, so every output shows the same series.

use prometheus::proto::{Counter, Gauge, LabelPair, Metric};

use super::carry::Theirs;
use super::series::Table;
use super::spill::Spilling;
use super::text;

/// What a metric family is: a counter, a gauge or a histogram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// A metric family: name (with the namespace), help, kind and its series.
pub struct Family {
    pub name: String,
    pub help: String,
    pub kind: Kind,
    pub series: Series,
}

/// A family's series.
pub enum Series {
    /// A counter map's keys, decoded and merged: label values kept once per
    /// distinct value, series as rows of indices into them (for a large
    /// map, a struct and strings per series would cost more than reading
    /// it).
    Table { labels: Vec<String>, table: Table },
    /// Series set one by one (histograms, self metrics), in label order.
    Metrics(Vec<Metric>),
}

/// Series of a simple family: (label values, value).
pub type Samples = Vec<(Vec<String>, f64)>;

impl Family {
    /// A counter map's decoded series.
    pub fn table(name: String, help: &str, labels: Vec<String>, table: Table) -> Family {
        Family {
            name,
            help: help.to_string(),
            kind: Kind::Counter,
            series: Series::Table { labels, table },
        }
    }

    /// A family of series set one by one; they are put in label order.
    pub fn metrics(name: &str, help: &str, kind: Kind, mut metrics: Vec<Metric>) -> Family {
        if !metrics.is_sorted_by(|a, b| label_order(a, b).is_le()) {
            metrics.sort_by(label_order);
        }
        Family {
            name: name.to_string(),
            help: help.to_string(),
            kind,
            series: Series::Metrics(metrics),
        }
    }

    /// A gauge with one unlabelled sample.
    pub fn gauge(name: &str, help: &str, value: f64) -> Family {
        Family::samples(name, help, Kind::Gauge, &[], vec![(Vec::new(), value)])
    }

    /// A counter or gauge with one series per (label values, value).
    pub fn samples(name: &str, help: &str, kind: Kind, labels: &[&str], series: Samples) -> Family {
        let metrics = series
            .into_iter()
            .map(|(values, value)| {
                let mut metric = Metric::from_label(label_pairs(labels, values));
                if kind == Kind::Gauge {
                    let mut sample = Gauge::default();
                    sample.set_value(value);
                    metric.set_gauge(sample);
                } else {
                    let mut sample = Counter::default();
                    sample.set_value(value);
                    metric.set_counter(sample);
                }
                metric
            })
            .collect();
        Family::metrics(name, help, kind, metrics)
    }

    /// Whether it has no series (such a family is not written).
    pub fn is_empty(&self) -> bool {
        match &self.series {
            Series::Table { table, .. } => table.is_empty(),
            Series::Metrics(metrics) => metrics.is_empty(),
        }
    }

    /// Keeps the `cap` series with the largest values (counts for
    /// histograms; on equal values, the first in order): node_exporter
    /// and the disk are protected, and what is kept is what matters most.
    /// Returns how many were left out.
    pub fn cap(&mut self, cap: usize) -> usize {
        match &mut self.series {
            Series::Table { table, .. } => table.cap(cap),
            Series::Metrics(metrics) => cap_metrics(metrics, self.kind, cap),
        }
    }

    /// Adds label `name="value"` to every series set one by one, after its
    /// own (tables are configs' metrics, which never get one).
    pub fn add_label(&mut self, name: &str, value: &str) {
        if let Series::Metrics(metrics) = &mut self.series {
            for metric in metrics {
                let mut labels = metric.take_label();
                labels.extend(label_pairs(&[name], vec![value.to_string()]));
                metric.set_label(labels);
            }
        }
    }

    /// Calls `f` with each counter or gauge series' (label name, value)
    /// pairs and value, in order (histograms have none).
    pub fn for_each_sample(&self, mut f: impl FnMut(&[(&str, &str)], f64)) {
        match &self.series {
            Series::Table { labels, table } => {
                table.for_each_series(|row, value| {
                    let pairs: Vec<(&str, &str)> = labels
                        .iter()
                        .zip(&table.values)
                        .zip(row)
                        .map(|((name, values), &id)| (name.as_str(), values.get(id as usize)))
                        .collect();
                    f(&pairs, value);
                });
            }
            Series::Metrics(metrics) => {
                for metric in metrics {
                    let value = match self.kind {
                        Kind::Counter => metric.get_counter().get_value(),
                        Kind::Gauge => metric.get_gauge().get_value(),
                        Kind::Histogram => continue,
                    };
                    let pairs: Vec<(&str, &str)> = metric
                        .get_label()
                        .iter()
                        .map(|pair| (pair.name(), pair.value()))
                        .collect();
                    f(&pairs, value);
                }
            }
        }
    }

    /// Appends the family in the text format, named and typed as `written`
    /// says; a counter table's values carried on from `previous` (see
    /// [`super::carry`]), with the series only it has that fit under `cap`.
    pub(super) fn encode(
        &self,
        written: text::Written<'_>,
        previous: Option<(Theirs<'_>, usize)>,
        out: &mut String,
        spill: Option<&mut Spilling<'_>>,
    ) -> anyhow::Result<()> {
        match &self.series {
            Series::Table { labels, table } => {
                let type_name = text::type_name(self.kind, written.typed);
                text::push_header(out, written.header, &self.help, type_name)?;
                let names: Vec<&str> = labels.iter().map(String::as_str).collect();
                let mut previous = previous;
                let theirs = previous.as_mut().map(|(theirs, _)| theirs);
                let ours = table.encode_samples(written.sample, &names, theirs, out, spill);
                if let Some((theirs, cap)) = previous {
                    theirs.keep_only_theirs(written.sample, ours, cap, out);
                }
                Ok(())
            }
            Series::Metrics(metrics) => {
                text::encode_metrics(written, &self.help, self.kind, metrics.iter(), out)
            }
        }
    }

    /// The same family as the prometheus crate's type, for tests and
    /// benchmarks that compare with its encoder.
    pub fn to_proto(&self) -> prometheus::proto::MetricFamily {
        let mut family = prometheus::proto::MetricFamily::default();
        family.set_name(self.name.clone());
        family.set_help(self.help.clone());
        family.set_field_type(match self.kind {
            Kind::Counter => prometheus::proto::MetricType::COUNTER,
            Kind::Gauge => prometheus::proto::MetricType::GAUGE,
            Kind::Histogram => prometheus::proto::MetricType::HISTOGRAM,
        });
        let metrics = match &self.series {
            Series::Metrics(metrics) => metrics.clone(),
            Series::Table { .. } => {
                let mut metrics = Vec::new();
                self.for_each_sample(|pairs, value| {
                    let names: Vec<&str> = pairs.iter().map(|(name, _)| *name).collect();
                    let values = pairs.iter().map(|(_, value)| value.to_string()).collect();
                    let mut metric = Metric::from_label(label_pairs(&names, values));
                    let mut sample = Counter::default();
                    sample.set_value(value);
                    metric.set_counter(sample);
                    metrics.push(metric);
                });
                metrics
            }
        };
        family.set_metric(metrics);
        family
    }
}

pub(crate) fn label_pairs(names: &[&str], values: Vec<String>) -> Vec<LabelPair> {
    names
        .iter()
        .zip(values)
        .map(|(name, value)| {
            let mut pair = LabelPair::default();
            pair.set_name(name.to_string());
            pair.set_value(value);
            pair
        })
        .collect()
}

/// Series order: by label (name, value) pairs, lexicographically.
fn label_order(a: &Metric, b: &Metric) -> std::cmp::Ordering {
    let (a, b) = (a.get_label(), b.get_label());
    a.iter()
        .map(|l| (l.name(), l.value()))
        .cmp(b.iter().map(|l| (l.name(), l.value())))
}

/// [`Family::cap`] of series set one by one.
fn cap_metrics(metrics: &mut Vec<Metric>, kind: Kind, cap: usize) -> usize {
    let total = metrics.len();
    if total <= cap {
        return 0;
    }
    let cap = cap.max(1);
    let weight = |m: &Metric| match kind {
        Kind::Histogram => m.get_histogram().get_sample_count() as f64,
        Kind::Gauge => m.get_gauge().get_value(),
        Kind::Counter => m.get_counter().get_value(),
    };
    let mut order: Vec<usize> = (0..total).collect();
    order.sort_by(|&a, &b| {
        weight(&metrics[b])
            .total_cmp(&weight(&metrics[a]))
            .then(a.cmp(&b))
    });
    let mut kept = vec![false; total];
    for &i in &order[..cap] {
        kept[i] = true;
    }
    let mut index = 0;
    metrics.retain(|_| {
        index += 1;
        kept[index - 1]
    });
    total - cap
}
