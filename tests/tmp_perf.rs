use bpfsnap::exposition::{self, Exposition};
use bpfsnap::plan::Plan;
use bpfsnap::snapshot::{MapData, Snapshot};
use bpfsnap::spec::{Config, Format};
use std::time::Instant;

fn run(decoder: &str, size: usize, n: usize) {
    let spec = format!("[[metrics.counters]]\nname = \"x_total\"\nhelp = \"X.\"\n[[metrics.counters.labels]]\nname = \"a\"\nsize = {size}\ndecoders = [{{ name = \"{decoder}\" }}]\n");
    let config = Config::parse("t", "t", &spec, Format::Toml).unwrap();
    let plan = Plan::compile(&config).unwrap();
    let mut state = 0x1234_5678_9abc_def0u64;
    let mut keys = Vec::with_capacity(n * size);
    for _ in 0..n {
        state ^= state << 13; state ^= state >> 7; state ^= state << 17;
        keys.extend_from_slice(&state.to_ne_bytes()[..size]);
    }
    let snapshot = Snapshot { events_lost: vec![], maps: vec![MapData { name: "x_total".into(), key_size: size, values_per_key: 1, is_array: false, per_cpu: false, keys, values: (0..n as u64).collect() }] };
    let mut best = f64::MAX;
    for _ in 0..3 {
        let t = Instant::now();
        let exposed = exposition::families(&plan, &snapshot, "b").unwrap();
        let mut e = Exposition::default();
        e.add_all(&exposed.families).unwrap();
        let text = e.into_text();
        std::hint::black_box(text);
        best = best.min(t.elapsed().as_secs_f64());
    }
    println!("{decoder} {size}: {:.0} ns/key", best * 1e9 / n as f64);
}

#[test]
#[ignore]
fn perf() {
    let which = std::env::var("SHAPE").unwrap_or_default();
    for (decoder, size) in [("uint", 8), ("hex", 8), ("uint", 4), ("string", 16), ("ksym", 8), ("inet_ip", 4)] {
        if which.is_empty() || which == decoder {
            run(decoder, size, 1_000_000);
        }
    }
}
