//! Label layout and decoder chains on arbitrary map keys: configs with
//! several labels, paddings and decoder chains (uint, static_map, string,
//! regexp, hex, syscall, errno, majorminor, inet_ip, dname, pci_*), per-CPU
//! maps with and without a `cpu` label, arrays, run through
//! `exposition::families` on a MapData made of the fuzz input. Never a panic;
//! the text is well-formed, every series once, every value a finite count.
#![no_main]

use std::sync::OnceLock;

use bpfsnap::exposition;
use bpfsnap::plan::Plan;
use bpfsnap::spec::{Config, Format};
use bpfsnap::snapshot::{MapData, Snapshot};
use bpfsnap_fuzz::{check_exposition, Bytes};
use libfuzzer_sys::fuzz_target;

const CONFIGS: [&str; 4] = [
    r#"
[[metrics.counters]]
name = "c0_total"
help = "uint + static_map, string + regexp, hex."
[[metrics.counters.labels]]
name = "kind"
size = 4
padding = 4
decoders = [{ name = "uint" }, { name = "static_map", static_map = { "1" = "one", "2" = "two\n\"quoted\"" }, allow_unknown = true }]
[[metrics.counters.labels]]
name = "comm"
size = 16
decoders = [{ name = "string" }, { name = "regexp", regexps = ["^(a.*)$", "b(.)", "^$", "\\x{FFFD}"] }]
[[metrics.counters.labels]]
name = "raw"
size = 3
decoders = [{ name = "hex" }]
"#,
    r#"
[[metrics.counters]]
name = "c1_total"
help = "syscall, errno, majorminor, inet_ip."
[[metrics.counters.labels]]
name = "nr"
size = 4
decoders = [{ name = "uint" }, { name = "syscall" }]
[[metrics.counters.labels]]
name = "err"
size = 2
padding = 2
decoders = [{ name = "uint" }, { name = "errno" }]
[[metrics.counters.labels]]
name = "dev"
size = 4
decoders = [{ name = "majorminor" }]
[[metrics.counters.labels]]
name = "addr"
size = 16
decoders = [{ name = "inet_ip" }]
"#,
    r#"
[[metrics.counters]]
name = "c2_total"
help = "inet_ip v4, dname, pci_vendor, and the cpu label of per-CPU maps."
[[metrics.counters.labels]]
name = "v4"
size = 4
decoders = [{ name = "inet_ip" }]
[[metrics.counters.labels]]
name = "name"
size = 8
decoders = [{ name = "dname" }]
[[metrics.counters.labels]]
name = "vendor"
size = 2
decoders = [{ name = "uint" }, { name = "pci_vendor" }]
[[metrics.counters.labels]]
name = "cpu"
size = 4
decoders = [{ name = "uint" }]
"#,
    r#"
[[metrics.counters]]
name = "c3_total"
help = "static_map without allow_unknown (decode errors), raw bytes, pci classes."
[[metrics.counters.labels]]
name = "a"
size = 1
padding = 1
decoders = [{ name = "uint" }, { name = "static_map", static_map = { "0" = "zero" } }]
[[metrics.counters.labels]]
name = "b"
size = 8
decoders = [{ name = "uint" }]
[[metrics.counters.labels]]
name = "c"
size = 5
decoders = [{ name = "string" }]
[[metrics.counters.labels]]
name = "d"
size = 2
decoders = [{ name = "uint" }, { name = "pci_class" }, { name = "regexp", regexps = ["(.*)"] }]
"#,
];

fuzz_target!(|data: &[u8]| {
    let mut bytes = Bytes(data);
    let choice = bytes.u8() as usize % CONFIGS.len();
    let flags = bytes.u8();
    static PARSED: OnceLock<Vec<(Config, Plan)>> = OnceLock::new();
    let configs = PARSED.get_or_init(|| {
        CONFIGS
            .iter()
            .map(|text| bpfsnap::plan::parse("fuzz", "fuzz.toml", text, Format::Toml).expect("valid"))
            .collect()
    });
    let (config, plan) = &configs[choice];
    let counter = &config.metrics.counters[0];
    let per_cpu = flags & 1 != 0;
    let is_array = flags & 2 != 0;
    let values_per_key = if per_cpu {
        1 + (flags >> 2) as usize % 4
    } else {
        1
    };
    let labels = &counter.labels;
    let full: usize = labels.iter().map(|l| l.size + l.padding).sum();
    let cpu_label = per_cpu && labels.last().is_some_and(|l| l.name == "cpu");
    let key_size = if cpu_label {
        full - labels.last().map_or(0, |l| l.size + l.padding)
    } else {
        full
    };
    let (mut keys, mut values) = (Vec::new(), Vec::new());
    while bytes.0.len() >= key_size + values_per_key {
        keys.extend_from_slice(bytes.take(key_size));
        for &b in bytes.take(values_per_key) {
            values.push(u64::from(b).wrapping_mul(0x0123_4567_89ab_cdef) >> (b % 64));
        }
    }
    let entries = keys.len() / key_size;
    let snapshot = Snapshot {
        maps: vec![MapData {
            name: counter.name.clone(),
            key_size,
            values_per_key,
            is_array,
            per_cpu,
            keys,
            values,
        }],
        unread: Vec::new(),
        events_lost: Vec::new(),
    };
    let exposed =
        exposition::families(plan, snapshot, "fuzz").expect("counters of a matching map");
    let text = exposition::encode(&exposed.families).expect("encode");
    let samples = check_exposition(&text);
    let most = if cpu_label {
        entries * values_per_key
    } else {
        entries
    };
    assert!(
        samples.len() <= most,
        "{} series from {most} keys",
        samples.len()
    );
    for sample in &samples {
        assert!(
            sample.value.is_finite() && sample.value >= 0.0,
            "{sample:?}"
        );
        assert_eq!(sample.labels.len(), labels.len());
    }
});
