//! A snapshot through bpfsnap's library, in process, on the map of a running
//! bpfsnap (by map id): the map left to read (`snapshot::Unread::of_map`),
//! then `exposition::families`, which reads it batch by batch on a reader
//! thread while decoding the batches before, and `Exposition::add_all`
//! (encode straight into text, no struct or string per series; a large
//! family spilled into the temporary file as it is encoded), then the rest
//! of the atomic textfile write — the path `bpfsnap run` takes, timed part
//! by part (see BENCHMARKS.md). bench/bench.py
//! runs it beside the whole `bpfsnap run`, the raw batch loop and bpftool.
//!
//! Before each run bench.py's evictor sweeps twice the largest CPU cache,
//! evicting the map, as for benches/maploop.rs (the floor).
//!
//! Usage: snapshot CONFIG.toml MAP_ID OUTPUT RUNS EVICT_FDS — prints one JSON object:
//! medians in ns of `expose` (read, decode and encode, overlapped, and
//! writing what spills), `write` (the rest, fsync, rename) and
//! `total`, the text's `bytes`, and `rss_growth_kib` (max RSS growth over
//! the first run).

#[path = "common/evict.rs"]
mod evict;

use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use bpfsnap::exposition::{self, Exposition};
use bpfsnap::plan::Plan;
use bpfsnap::sink::{Sink, Text};
use bpfsnap::snapshot::{Snapshot, Unread};
use bpfsnap::spec::{Config, Format};
use libbpf_rs::MapHandle;

/// This process's peak RSS (VmHWM: of this program only, unlike getrusage's
/// ru_maxrss, which starts at the peak of the process that forked it).
fn max_rss_kib() -> i64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn median(mut samples: Vec<u128>) -> u128 {
    samples.sort_unstable();
    samples[samples.len() / 2]
}

fn main() {
    // As the binary does (src/main.rs): the same allocator settings.
    bpfsnap::give_back_large_allocations();
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|arg| !arg.starts_with("--"))
        .collect();
    if args.is_empty() {
        // Plain `cargo bench` (or `cargo test --all-targets`): nothing to do
        // without bench/bench.py's map and files.
        eprintln!("usage: snapshot CONFIG.toml MAP_ID OUTPUT RUNS EVICT_FDS (run by `make bench`)");
        return;
    }
    let [config_path, id, output, runs, evict_fds] = &args[..] else {
        eprintln!("usage: snapshot CONFIG.toml MAP_ID OUTPUT RUNS EVICT_FDS");
        std::process::exit(2);
    };
    let (id, runs): (u32, usize) = (id.parse().expect("MAP_ID"), runs.parse().expect("RUNS"));
    let text = std::fs::read_to_string(config_path).expect("reading the config");
    let config = Config::parse("bench", config_path, &text, Format::Toml).expect("config");
    // The kernel keeps 15 characters of a map's name; the config has it whole.
    let name = config.metrics.counters[0].name.clone();
    let plan = Plan::compile(&config).expect("compiling the config");
    // As `bpfsnap run` does once the probes are attached, long before its
    // window ends: what the decoders need (kallsyms for `ksym`) is read
    // before the snapshot. Decoding a key of zeros waits for it.
    plan.prepare();
    for label in plan.metrics.iter().flat_map(|metric| &metric.labels) {
        drop(label.decoders.decode(&vec![0; label.size]));
    }
    let map = MapHandle::from_map_id(id).expect("map id");

    let mut evictor = evict::Evictor::from_fds(evict_fds).expect("EVICT_FDS: W,R");
    let before = max_rss_kib();
    let mut rss_growth = 0;
    let batched = Arc::new(OnceLock::new());
    let (mut expose, mut write, mut total) = (vec![], vec![], vec![]);
    let mut bytes = 0;
    for run in 0..runs.max(1) {
        evictor.evict();
        let started = Instant::now();
        let unread = Unread::of_map(&map, &name, "bench", &batched).expect("the map");
        let snapshot = Snapshot {
            unread: vec![unread],
            ..Snapshot::default()
        };
        let exposed = exposition::families(&plan, snapshot, "bpfsnap").expect("exposing");
        // As `bpfsnap run` writes: large families spilled into the
        // temporary file as they are encoded, then the collision check
        // and the rest of the text, family by family.
        let sink = Sink::Textfile(Path::new(output).to_path_buf());
        let mut partial = sink.start().expect("creating the file");
        let mut exposition = Exposition::default();
        if let Some(partial) = partial.as_mut() {
            exposition = exposition.spilling_into(partial);
        }
        exposition.add_all(&exposed.families).expect("encoding");
        drop(exposed);
        let held = exposition.into_held();
        let exposed_at = Instant::now();
        sink.finish(partial, &Text::from(&held)).expect("writing");
        let done = Instant::now();
        bytes = std::fs::metadata(output).expect("the file written").len();
        drop(held);
        expose.push((exposed_at - started).as_nanos());
        write.push((done - exposed_at).as_nanos());
        total.push((done - started).as_nanos());
        if run == 0 {
            rss_growth = max_rss_kib() - before;
        }
    }
    println!(
        "{{\"expose\": {}, \"write\": {}, \"total\": {}, \"bytes\": {bytes}, \"rss_growth_kib\": {rss_growth}}}",
        median(expose),
        median(write),
        median(total),
    );
}
