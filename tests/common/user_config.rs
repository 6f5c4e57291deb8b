//! User configs that tests write, said as what they count rather than typed
//! as TOML: `UserConfig::counter("calls_total", "Calls.").label("comm", 16,
//! &[Decoder::String])`. Tests of broken or hostile config text write that
//! text itself.

use std::path::{Path, PathBuf};

/// A config of one counter (`[[metrics.counters]]`), which reads the BPF map
/// of its name.
#[derive(Clone, Debug)]
pub struct UserConfig {
    name: String,
    help: String,
    max_series: Option<usize>,
    labels: Vec<Label>,
}

#[derive(Clone, Debug)]
struct Label {
    name: String,
    size: usize,
    decoders: Vec<Decoder>,
}

/// How a label's bytes become its value.
#[derive(Clone, Copy, Debug)]
pub enum Decoder {
    /// The bytes up to the first NUL.
    String,
    /// Keeps only values this pattern matches, as its capture group.
    Regexp(&'static str),
    /// An unsigned integer in decimal.
    Uint,
}

impl UserConfig {
    pub fn counter(name: &str, help: &str) -> UserConfig {
        UserConfig {
            name: name.into(),
            help: help.into(),
            max_series: None,
            labels: Vec::new(),
        }
    }

    pub fn max_series(mut self, max: usize) -> UserConfig {
        self.max_series = Some(max);
        self
    }

    /// The next `size` bytes of the map's key, as label `name`.
    pub fn label(mut self, name: &str, size: usize, decoders: &[Decoder]) -> UserConfig {
        self.labels.push(Label {
            name: name.into(),
            size,
            decoders: decoders.to_vec(),
        });
        self
    }

    pub fn to_toml(&self) -> String {
        let mut toml = format!(
            "[[metrics.counters]]\nname = {}\nhelp = {}\n",
            quoted(&self.name),
            quoted(&self.help)
        );
        if let Some(max) = self.max_series {
            toml += &format!("max_series = {max}\n");
        }
        for label in &self.labels {
            let decoders: Vec<String> = label
                .decoders
                .iter()
                .map(|decoder| match decoder {
                    Decoder::String => r#"{ name = "string" }"#.to_string(),
                    Decoder::Uint => r#"{ name = "uint" }"#.to_string(),
                    Decoder::Regexp(pattern) => {
                        format!(r#"{{ name = "regexp", regexps = [{}] }}"#, quoted(pattern))
                    }
                })
                .collect();
            toml += &format!(
                "\n[[metrics.counters.labels]]\nname = {}\nsize = {}\ndecoders = [{}]\n",
                quoted(&label.name),
                label.size,
                decoders.join(", ")
            );
        }
        toml
    }

    /// Writes the config into `dir` as `NAME.toml`, with `object` beside it
    /// as `NAME.bpf.o`; returns the config's path.
    pub fn install(&self, dir: &Path, name: &str, object: &Path) -> PathBuf {
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(&config, self.to_toml())
            .unwrap_or_else(|err| panic!("write {}: {err}", config.display()));
        std::fs::copy(object, dir.join(format!("{name}.bpf.o")))
            .unwrap_or_else(|err| panic!("copy {}: {err}", object.display()));
        config
    }
}

/// tests/fixtures/many_keys as a config in `dir`: its map's u64 keys as
/// label `n` (see [`super::many_keys`]), every key a series (the default
/// max_series is 10,000). Returns the config's path.
pub fn many_keys_config(dir: &Path) -> PathBuf {
    UserConfig::counter("many_keys_total", "Keys the test added, by number.")
        .max_series(1 << 16)
        .label("n", 8, &[Decoder::Uint])
        .install(dir, "many_keys", &super::fixture_object("many_keys"))
}

/// `text` as a TOML basic string.
fn quoted(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}
