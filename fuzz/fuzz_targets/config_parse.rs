//! Config parsing (TOML and YAML) and validation, decoder chains included:
//! never a panic, never a hang; an accepted config has only valid names and
//! label layouts; a refused one gets a one-line error (bpfsnap's promise:
//! one line per problem, with its path and line).
#![no_main]

use bpfsnap::spec::{Config, Format};
use bpfsnap_fuzz::{valid_label_name, valid_metric_name};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let format = if selector & 1 == 0 {
        Format::Toml
    } else {
        Format::Yaml
    };
    match Config::parse("fuzz", "fuzz.cfg", text, format) {
        Ok(config) => {
            assert!(config.metrics().count() > 0, "a config without metrics");
            for metric in config.metrics() {
                assert!(valid_metric_name(metric.name), "{:?}", metric.name);
                for label in metric.labels {
                    assert!(
                        valid_label_name(&label.name) && !label.name.starts_with("__"),
                        "{:?}",
                        label.name
                    );
                    assert!(label.size > 0 && !label.decoders.is_empty());
                }
            }
        }
        Err(err) => {
            let message = format!("{err:#}");
            // Keys are escaped in the error's key path too (bug 4 in
            // RELIABILITY.md: a YAML key `? "a\nb"` once broke the line).
            assert!(
                !message.contains('\n'),
                "a multi-line error: {message:?}"
            );
        }
    }
});
