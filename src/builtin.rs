//! Built-in programs: BPF objects compiled from `bpf/NAME.bpf.c` at build time
//! and embedded with their metric spec `bpf/NAME.toml` (see build.rs).

use anyhow::Result;

use crate::spec::{Config, Format};

/// A built-in program as embedded in the binary.
pub struct BuiltinSource {
    pub name: &'static str,
    /// The compiled BPF object (ELF).
    pub object: &'static [u8],
    /// The metric spec (TOML, the user config format).
    pub spec: &'static str,
    /// Its programs' names, and its declared maps' names, in [`LINKED`].
    pub programs: &'static [&'static str],
    pub maps: &'static [&'static str],
    /// The kernel types its CO-RE relocations look up: what the built-ins'
    /// own BTF is made of (`probe::core_btf`), and what built-ins loaded
    /// together share.
    pub types: &'static [&'static str],
}

/// Every built-in, sorted by name.
pub static BUILTINS: &[BuiltinSource] = include!(concat!(env!("OUT_DIR"), "/builtins.rs"));

/// Every built-in linked into one object (build.rs), so that a run of several
/// built-ins loads them in one go (see `probe::Probe::attach_linked`).
pub static LINKED: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/builtins.bpf.o"));

impl BuiltinSource {
    /// The parsed spec; a failure here is a bug in bpfsnap, caught by its tests.
    pub fn config(&self) -> Result<Config> {
        Config::parse(
            self.name,
            &format!("built-in {}", self.name),
            self.spec,
            Format::Toml,
        )
    }
}

/// The built-in called `name`.
pub fn find(name: &str) -> Option<&'static BuiltinSource> {
    BUILTINS.iter().find(|b| b.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The README's table of built-ins names every one of them.
    #[test]
    fn readme_lists_every_builtin() {
        let readme = include_str!("../README.md");
        for builtin in BUILTINS {
            assert!(
                readme.contains(&format!("| `{}` |", builtin.name)),
                "README lacks built-in {}",
                builtin.name
            );
        }
    }

    #[test]
    fn every_builtin_spec_is_valid() {
        assert!(!BUILTINS.is_empty());
        for builtin in BUILTINS {
            builtin.config().unwrap();
            assert!(
                builtin.object.starts_with(b"\x7fELF"),
                "{} is an ELF object",
                builtin.name
            );
            assert!(
                !builtin.programs.is_empty(),
                "{} has programs",
                builtin.name
            );
        }
        assert!(LINKED.starts_with(b"\x7fELF"));
    }

    /// Loading a built-in from the linked object leaves out the others'
    /// maps by name: no two built-ins may declare the same one.
    #[test]
    fn builtins_declare_distinct_maps() {
        let mut seen = std::collections::BTreeSet::new();
        for builtin in BUILTINS {
            for map in builtin.maps {
                assert!(seen.insert(*map), "map {map} is declared twice");
            }
        }
    }
}
