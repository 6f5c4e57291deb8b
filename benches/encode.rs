//! Text encoding: bpfsnap's encoder on 100k counter series with 2 labels and
//! 1k histograms of 30 buckets, the data set bench/bench.py also gives
//! Python's prometheus_client (same formulas; bench.py checks that both
//! files hold the same samples).
//!
//! Usage: encode OUTPUT_FILE RUNS — prints one JSON object of medians (ns):
//! `build` (families from the raw series, their series put in order),
//! `encode` (bpfsnap's Exposition: the text), `write` (the atomic textfile write), `text_encoder`
//! (the prometheus crate's TextEncoder on the same families, for reference)
//! and `bytes` (the text's size).

use std::path::Path;
use std::time::Instant;

use bpfsnap::exposition::{Exposition, Family, Kind};
use prometheus::proto::{Bucket, Histogram, LabelPair, Metric, MetricFamily};

const COUNTERS: usize = 100_000;
const HISTOGRAMS: usize = 1_000;
const BUCKETS: usize = 30;

/// The raw data: counter (labels, value) and histogram (label, cumulative
/// bucket counts, sum) series.
struct Data {
    counters: Vec<(Vec<String>, f64)>,
    histograms: Vec<(String, Vec<u64>, f64)>,
    bounds: Vec<f64>,
}

fn data() -> Data {
    let counters = (0..COUNTERS)
        .map(|i| {
            (
                vec![(1000 + i / 64).to_string(), format!("sc{:02}", i % 64)],
                (i % 1000 + 1) as f64,
            )
        })
        .collect();
    let histograms = (0..HISTOGRAMS)
        .map(|j| {
            let mut total = 0;
            let cumulative = (0..BUCKETS)
                .map(|k| {
                    total += ((j + k) % 7) as u64;
                    total
                })
                .collect();
            (format!("op{j:04}"), cumulative, j as f64 * 0.5)
        })
        .collect();
    // 2^7 .. 2^36 ns, in seconds.
    let bounds = (0..BUCKETS)
        .map(|k| 2f64.powi(k as i32 + 7) * 1e-9)
        .collect();
    Data {
        counters,
        histograms,
        bounds,
    }
}

fn histogram_family(data: &Data) -> Family {
    let metrics = data
        .histograms
        .iter()
        .map(|(op, cumulative, sum)| {
            let mut label = LabelPair::default();
            label.set_name("op".to_string());
            label.set_value(op.clone());
            let mut metric = Metric::from_label(vec![label]);
            let mut histogram = Histogram::default();
            histogram.set_bucket(
                data.bounds
                    .iter()
                    .zip(cumulative)
                    .map(|(bound, count)| {
                        let mut bucket = Bucket::default();
                        bucket.set_upper_bound(*bound);
                        bucket.set_cumulative_count(*count);
                        bucket
                    })
                    .collect(),
            );
            histogram.set_sample_count(cumulative.last().copied().unwrap_or(0));
            histogram.set_sample_sum(*sum);
            metric.set_histogram(histogram);
            metric
        })
        .collect();
    Family::metrics(
        "bench_latency_seconds",
        "Benchmark histograms.",
        Kind::Histogram,
        metrics,
    )
}

fn families(data: &Data) -> Vec<Family> {
    vec![
        Family::samples(
            "bench_series_total",
            "Benchmark counter series.",
            Kind::Counter,
            &["pid", "syscall"],
            data.counters.clone(),
        ),
        histogram_family(data),
    ]
}

fn median(mut samples: Vec<u128>) -> u128 {
    samples.sort_unstable();
    samples[samples.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|arg| !arg.starts_with("--"))
        .collect();
    if args.is_empty() {
        // Plain `cargo bench` (or `cargo test --all-targets`): nothing to do
        // without bench/bench.py's map and files.
        eprintln!("usage: encode OUTPUT_FILE RUNS (run by `make bench`)");
        return;
    }
    let (Some(output), Some(runs)) = (
        args.first(),
        args.get(1).and_then(|a| a.parse::<usize>().ok()),
    ) else {
        eprintln!("usage: encode OUTPUT_FILE RUNS");
        std::process::exit(2);
    };
    let data = data();
    let (mut build, mut encode, mut write, mut text_encoder) = (vec![], vec![], vec![], vec![]);
    let mut bytes = 0;
    for _ in 0..runs.max(1) {
        let started = Instant::now();
        let built = families(&data);
        build.push(started.elapsed().as_nanos());

        // What `bpfsnap run` does with the families it holds.
        let started = Instant::now();
        let mut exposition = Exposition::default();
        exposition.add_all(&built).expect("encoding");
        let text = exposition.into_text();
        encode.push(started.elapsed().as_nanos());
        bytes = text.len();

        let started = Instant::now();
        bpfsnap::sink::write_atomic(Path::new(output), text.as_bytes()).expect("writing");
        write.push(started.elapsed().as_nanos());

        // TextEncoder writes families in the order given; Exposition by name.
        let mut protos: Vec<MetricFamily> = built.iter().map(Family::to_proto).collect();
        protos.sort_by(|a, b| a.name().cmp(b.name()));
        let started = Instant::now();
        let theirs = prometheus::TextEncoder::new()
            .encode_to_string(&protos)
            .expect("TextEncoder");
        text_encoder.push(started.elapsed().as_nanos());
        if theirs != text {
            eprintln!("encode: bpfsnap's text differs from TextEncoder's");
            std::process::exit(1);
        }
    }
    println!(
        "{{\"build\": {}, \"encode\": {}, \"write\": {}, \"text_encoder\": {}, \"bytes\": {bytes}, \"series\": {}}}",
        median(build),
        median(encode),
        median(write),
        median(text_encoder),
        COUNTERS + HISTOGRAMS * (BUCKETS + 3),
    );
}
