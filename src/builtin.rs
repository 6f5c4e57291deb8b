//! Built-in programs: BPF objects compiled from `bpf/NAME.bpf.c` at build time
//! and embedded with their metric spec `bpf/NAME.toml` (see build.rs).

use anyhow::{bail, Result};

use crate::config::Config;

/// A built-in program as embedded in the binary.
pub struct BuiltinSource {
    pub name: &'static str,
    /// The compiled BPF object (ELF).
    pub object: &'static [u8],
    /// The metric spec (TOML, the user config format).
    pub spec: &'static str,
}

/// Every built-in, sorted by name.
pub static BUILTINS: &[BuiltinSource] = include!(concat!(env!("OUT_DIR"), "/builtins.rs"));

impl BuiltinSource {
    /// The parsed spec; a failure here is a bug in bpfsnap, caught by its tests.
    pub fn config(&self) -> Result<Config> {
        Config::parse(self.name, &format!("built-in {}", self.name), self.spec)
    }
}

/// The built-ins `names` lists (empty: the default set), in the order given.
pub fn select(names: &[String]) -> Result<Vec<&'static BuiltinSource>> {
    if names.is_empty() {
        let mut set = Vec::new();
        for builtin in BUILTINS {
            if builtin.config()?.builtin.default {
                set.push(builtin);
            }
        }
        return Ok(set);
    }
    let mut set: Vec<&'static BuiltinSource> = Vec::new();
    for name in names {
        let Some(builtin) = BUILTINS.iter().find(|b| b.name == name) else {
            let known: Vec<_> = BUILTINS.iter().map(|b| b.name).collect();
            bail!(
                "no built-in program {name:?}: choose from {}",
                known.join(", ")
            );
        };
        if set.iter().any(|b| b.name == builtin.name) {
            bail!("built-in {name:?} is named twice");
        }
        set.push(builtin);
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        }
    }

    #[test]
    fn selects_by_name_or_the_default_set() {
        assert!(select(&[]).unwrap().iter().any(|b| b.name == "syscalls"));
        assert_eq!(select(&["syscalls".into()]).unwrap()[0].name, "syscalls");
        let err = select(&["nope".into()]).err().unwrap().to_string();
        assert!(
            err.contains("no built-in program \"nope\": choose from") && err.contains("syscalls"),
            "{err}"
        );
        assert!(select(&["syscalls".into(), "syscalls".into()]).is_err());
    }
}
