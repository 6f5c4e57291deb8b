//! Config ↔ object checks before anything loads: every metric's map is in
//! the object, of a type bpfsnap reads, with keys as long as its labels
//! say and u64 values.

use std::collections::BTreeMap;

use anyhow::{bail, Result};
use libbpf_rs::{MapType, OpenObject};

use super::events;
use crate::plan::Plan;
use crate::spec::{self, Config};

/// Map types a counter or histogram can be read from.
fn readable(map_type: MapType) -> bool {
    matches!(
        map_type,
        MapType::Hash
            | MapType::PercpuHash
            | MapType::LruHash
            | MapType::LruPercpuHash
            | MapType::Array
            | MapType::PercpuArray
    )
}

/// Config ↔ object checks: each metric's map exists, its keys are as long as
/// the plan lays them out (minus a synthetic `cpu` label on per-CPU maps),
/// and its values are u64.
pub(super) fn check_maps(config: &Config, plan: &Plan, object: &OpenObject) -> Result<()> {
    let maps: BTreeMap<String, (MapType, u32, u32)> = object
        .maps()
        .map(|m| {
            (
                m.name().to_string_lossy().into_owned(),
                (m.map_type(), m.key_size(), m.value_size()),
            )
        })
        .collect();
    // Every metric's problems, so `bpfsnap check` lists them all.
    let problems: Vec<String> = config
        .metrics()
        .filter_map(|metric| check_map(config, plan, &metric, &maps).err())
        .map(|err| format!("{err:#}"))
        .collect();
    if problems.is_empty() {
        return Ok(());
    }
    Err(spec::Problems {
        origin: config.name.clone(),
        problems,
    }
    .into())
}

/// The problem with `metric`'s map, if it has one (see [`check_maps`]).
fn check_map(
    config: &Config,
    plan: &Plan,
    metric: &spec::MetricRef,
    maps: &BTreeMap<String, (MapType, u32, u32)>,
) -> Result<()> {
    let context = || format!("{} {:?}", metric.kind, metric.name);
    let Some(&(map_type, key_size, value_size)) = maps.get(metric.name) else {
        let names: Vec<&str> = maps
            .keys()
            .map(String::as_str)
            .filter(|n| !n.contains('.'))
            .collect();
        bail!(
            "{}: reads the map of the same name, but the object has none (its maps: {})",
            context(),
            names.join(", ")
        );
    };
    if events::is_stream(map_type) && metric.kind == spec::MetricKind::Counter {
        // Events are counted by their leading label bytes; their size is
        // only known per event (short ones count as lost).
        return Ok(());
    }
    check_map_type(config, metric, map_type).map_err(|err| err.context(context()))?;
    let Some(layout) = plan.metric(metric.name) else {
        bail!("{}: not in the config's plan", context());
    };
    let label_bytes = layout.key_size(map_type.is_percpu());
    // ebpf_exporter's unlabelled counters: one sample at key u32 0.
    let histogram = metric.kind == spec::MetricKind::Histogram;
    let unlabelled =
        !histogram && label_bytes == 0 && key_size as usize == spec::UNLABELLED_KEY.len();
    if key_size as usize != label_bytes && !unlabelled {
        let cpu_hint = match layout.cpu_label_named() {
            Some(_) if !map_type.is_percpu() => {
                " (a label named cpu is left out of the key only on per-CPU maps)"
            }
            _ => "",
        };
        bail!(
            "{}: the labels take {label_bytes} bytes but the map's keys are {key_size} bytes: \
             make the label sizes and paddings add up to the key{cpu_hint}",
            context()
        );
    }
    if value_size != 8 {
        bail!(
            "{}: values must be u64 (8 bytes), the map's are {value_size}",
            context()
        );
    }
    Ok(())
}

/// The problem with a map of `map_type` (not an event stream) for `metric`.
fn check_map_type(config: &Config, metric: &spec::MetricRef, map_type: MapType) -> Result<()> {
    let counter = config
        .metrics
        .counters
        .iter()
        .find(|c| c.name == metric.name);
    if counter.is_some_and(|c| c.perf_event_array) {
        bail!("perf_event_array is set but the map is a {map_type:?}, not a perf event array");
    }
    if counter.is_some_and(|c| c.flush_interval.is_some()) {
        bail!("flush_interval applies only to event streams (ring buffers, perf event arrays)");
    }
    if !readable(map_type) {
        bail!(
            "map type {map_type:?} cannot be read as metrics: use a hash or array map{}",
            if events::is_stream(map_type) {
                " (event streams can back counters, not histograms)"
            } else {
                ""
            }
        );
    }
    Ok(())
}
