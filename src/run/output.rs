//! What each window writes: the configs' families and bpfsnap's own
//! ([`Collector`]), the window's gauges, and, into a textfile without
//! `--pin`, the counters carried on from the file it replaces ([`Carried`]).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use anyhow::Result;

use super::RunOptions;
use crate::collect::Collector;
use crate::exposition::self_metrics::{unix_seconds, SelfMetric};
use crate::exposition::{
    self, metric_name, Carried, Carry, Exposition, Family, Held, Kind, OutputFormat,
};
use crate::probe::Probe;
use crate::program::{Failed, Program};
use crate::sink::{self, collide::OUTPUT_LABEL, Partial, Sink};
use crate::snapshot::Counts;

/// What the counts of an output cover, and the file they carry on from.
pub(super) struct Counting {
    /// Cumulative (counters and histograms) or of one window (gauges).
    counts: Counts,
    /// Without --pin, into a textfile: the file this run replaces, and the
    /// families that carry on from it.
    carry: Option<(Carried, BTreeMap<String, Carry>)>,
}

impl Counting {
    /// How the counts of `options`' output are to be read over time:
    /// cumulative where they carry on from one output to the next
    /// (--interval, --pin, or a textfile, whose counters carry on from the
    /// file they replace), else counts of one window (standard output, a
    /// pipe, or `--counts window`), which are gauges. Reads the file to
    /// replace, so call it holding the output's lock.
    pub(super) fn of(options: &RunOptions, programs: &[Program]) -> Result<Counting> {
        let continues = options.interval.is_some() || options.pin.is_some();
        let counts = match (options.counts, &options.sink) {
            (Counts::Window, _) => Counts::Window,
            (Counts::Cumulative, Sink::Textfile(_)) => Counts::Cumulative,
            (Counts::Cumulative, _) if continues => Counts::Cumulative,
            (Counts::Cumulative, _) => Counts::Window,
        };
        let carries = counts == Counts::Cumulative
            && options.pin.is_none()
            && options.format == OutputFormat::Text;
        let previous = match carries {
            true => options.sink.previous_text()?,
            false => None,
        };
        let carry = previous.map(|text| (Carried::parse(text), carried(options, programs)));
        Ok(Counting { counts, carry })
    }
}

/// The families a run without --pin carries on from the file it replaces:
/// every counter and histogram it can write, and when counting began.
fn carried(options: &RunOptions, programs: &[Program]) -> BTreeMap<String, Carry> {
    let ns = options.namespace.as_str();
    let mut carried: BTreeMap<String, Carry> = programs
        .iter()
        .flat_map(|p| p.plan.metrics.iter())
        .map(|m| (metric_name(ns, &m.name), Carry::Add { cap: m.max_series }))
        .collect();
    for metric in SelfMetric::ALL.iter().filter(|m| m.kind != Kind::Gauge) {
        let cap = usize::MAX;
        carried.insert(metric.name_in(ns), Carry::Add { cap });
    }
    carried.insert(SelfMetric::COUNTERS_START.name_in(ns), Carry::Earliest);
    carried
}

/// What one output covers.
pub(super) struct Window {
    pub start: SystemTime,
    pub end: SystemTime,
    pub measured: Duration,
}

/// What writes each window's output.
pub(super) struct Output<'a> {
    options: &'a RunOptions,
    counting: Counting,
    collector: Collector,
}

impl<'a> Output<'a> {
    pub(super) fn new(
        options: &'a RunOptions,
        counting: Counting,
        attached_at: SystemTime,
    ) -> Self {
        let subtract = options.counts == Counts::Window;
        let collector = Collector::new(&options.namespace, counting.counts, subtract, attached_at);
        Output {
            options,
            counting,
            collector,
        }
    }

    pub(super) fn options(&self) -> &'a RunOptions {
        self.options
    }

    /// When nothing attached, a textfile says so all the same: an alert on
    /// `up` fires now rather than when last_success has aged. (On stdout the
    /// error says it.)
    pub(super) fn write_failure(&mut self, failed: &[Failed]) {
        let options = self.options;
        if !matches!(options.sink, Sink::Textfile(_)) || options.format != OutputFormat::Text {
            return;
        }
        let now = SystemTime::now();
        let window = Window {
            start: now,
            end: now,
            measured: Duration::ZERO,
        };
        if let Err(err) = self.snapshot_and_write(&mut [], failed, &window, None) {
            options.session.log.warn(&format!(
                "could not record the failure in the output: {err:#}"
            ));
        }
    }

    /// Collects the probes and writes the output; `write_failures` (interval
    /// mode) is how many earlier windows failed to write. Returns the
    /// configs whose maps could not be read (written as down).
    pub(super) fn snapshot_and_write(
        &mut self,
        probes: &mut [Probe],
        failed: &[Failed],
        window: &Window,
        write_failures: Option<u64>,
    ) -> Result<Vec<Failed>> {
        let options = self.options;
        let ns = options.namespace.as_str();
        let text_format = options.format == OutputFormat::Text;
        // A textfile's large families go into it as they are encoded.
        let mut partial = match text_format {
            true => options.sink.start()?,
            false => None,
        };
        let mut output = exposition_of(&self.counting, partial.as_mut());
        let mut kept: Vec<Family> = Vec::new();
        // In the text format each config's families are encoded as they
        // come and freed (a large map's family is most of the text); the
        // terminal view keeps them.
        let collected = self
            .collector
            .collect(probes, failed, |families| match text_format {
                true => output.add_all(&families),
                false => {
                    kept.extend(families);
                    Ok(())
                }
            })?;
        let mut own = collected.families;
        own.extend(window_families(options, probes, window, collected.up));
        let failures = write_failures.map(|n| SelfMetric::WRITE_FAILURES.value(ns, n as f64));
        let (pretty, held);
        let (text, written): (sink::Text, usize) = match text_format {
            true => {
                held = add_own(options, output, own, failures)?;
                (sink::Text::from(&held.0), held.1)
            }
            false => {
                drop(output);
                own.extend(failures);
                pretty = window_heading(options, window)
                    + &exposition::pretty::render(&kept, &own, &options.view);
                (sink::Text::whole(&pretty), kept.len())
            }
        };
        options.sink.finish(partial, &text)?;
        if let Sink::Textfile(path) = &options.sink {
            options.session.log.info(&format!(
                "wrote {written} metric families to {}",
                path.display()
            ));
        }
        Ok(collected.unread)
    }
}

/// Adds bpfsnap's own families to a text exposition (`failures`, the
/// count of failed writes, cumulative), labelled with the output, then
/// carries on the families of the file it replaces. Returns what is left
/// to write and how many families the output has.
fn add_own(
    options: &RunOptions,
    mut output: Exposition<'_>,
    mut own: Vec<Family>,
    failures: Option<Family>,
) -> Result<(Held, usize)> {
    label_output(options, &mut own);
    output.add_all(&own)?;
    if let Some(mut failures) = failures {
        label_output(options, std::slice::from_mut(&mut failures));
        output.add_cumulative(&failures)?;
    }
    output.carry_on();
    let written = output.len();
    Ok((output.into_held(), written))
}

/// An exposition of counts as `counting` says, carrying on from the file
/// it replaces if any, spilling into `partial` if given.
fn exposition_of<'e>(counting: &'e Counting, partial: Option<&'e mut Partial>) -> Exposition<'e> {
    let mut exposition = Exposition::default().counting(counting.counts);
    if let Some((previous, carried)) = &counting.carry {
        exposition = exposition.carrying_on(previous, carried);
    }
    match partial {
        Some(partial) => exposition.spilling_into(partial),
        None => exposition,
    }
}

/// In a textfile directory several outputs' self metrics meet: a label
/// keeps their series apart (sink::collide).
fn label_output(options: &RunOptions, families: &mut [Family]) {
    if let Some(output) = options.sink.output_label() {
        for family in families {
            family.add_label(OUTPUT_LABEL, &output);
        }
    }
}

/// The window's own families: its length and bounds, and when every config
/// last ran (`up` says whether they all ran now).
fn window_families(
    options: &RunOptions,
    probes: &[Probe],
    window: &Window,
    up: bool,
) -> Vec<Family> {
    let ns = options.namespace.as_str();
    let window_seconds = match probes.iter().all(Probe::outlives_process) {
        true => window
            .end
            .duration_since(window.start)
            .unwrap_or_default()
            .as_secs_f64(),
        false => window.measured.as_secs_f64(),
    };
    let mut families = vec![
        SelfMetric::WINDOW.value(ns, window_seconds),
        SelfMetric::WINDOW_START.value(ns, unix_seconds(window.start)),
        SelfMetric::WINDOW_END.value(ns, unix_seconds(window.end)),
    ];
    let last_success = match up {
        true => Some(unix_seconds(SystemTime::now())),
        false => previous_last_success(&options.sink, ns),
    };
    if let Some(last) = last_success {
        families.push(SelfMetric::LAST_SUCCESS.value(ns, last));
    }
    families
}

/// In --interval mode on a terminal, a line before each window's tables
/// saying when it ended, how long it was and what the counts cover.
fn window_heading(options: &RunOptions, window: &Window) -> String {
    if options.interval.is_none() {
        return String::new();
    }
    let covering = match options.counts {
        Counts::Window => "counts of this window",
        Counts::Cumulative => "counts since the start",
    };
    format!(
        "--- {} ({:.3} s window; {covering}) ---\n",
        humantime::format_rfc3339_seconds(window.end),
        window.measured.as_secs_f64()
    )
}

/// `last_success_timestamp_seconds` from the file we are about to replace, so
/// a partly failed run keeps telling when things last fully worked.
fn previous_last_success(sink: &Sink, ns: &str) -> Option<f64> {
    let Sink::Textfile(path) = sink else {
        return None;
    };
    let text = std::fs::read_to_string(path).ok()?;
    let name = metric_name(ns, "last_success_timestamp_seconds");
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(&name)?;
        // Its labels, if any (the output's), end at the last '}'.
        let value = match rest.strip_prefix('{') {
            Some(labelled) => labelled.rsplit_once("} ")?.1,
            None => rest.strip_prefix(' ')?,
        };
        value.trim().parse().ok()
    })
}
