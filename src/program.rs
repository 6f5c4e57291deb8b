//! Which programs a run uses: built-ins embedded in the binary and user
//! configs (`NAME.toml` or ebpf_exporter's `NAME.yaml`, with `NAME.bpf.o`).
//!
//! Names are unique within a run: two configs with one name are an error,
//! since their metrics and self metrics would collide.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use std::sync::Arc;

use crate::builtin::{self, BuiltinSource};
use crate::plan::{self, Plan};
use crate::spec::{Config, Format};

/// A config that failed while others ran: the run goes on without it and
/// reports it in `bpfsnap_config_up` and the exit status.
pub struct Failed {
    pub config: String,
    pub error: anyhow::Error,
}

/// Where a program's BPF object comes from.
#[derive(Debug, Clone)]
pub enum ObjectSource {
    Embedded(&'static [u8]),
    File(PathBuf),
    /// A file already read (after its trust check, through one descriptor).
    Read {
        path: PathBuf,
        bytes: Vec<u8>,
    },
}

/// A config with its plan and its object: what the probe stage loads.
#[derive(Clone)]
pub struct Program {
    pub config: Config,
    /// The config compiled, once (shared by the probe that loads it).
    pub plan: Arc<Plan>,
    pub object: ObjectSource,
    /// A member of the default set: when this kernel lacks one of its attach
    /// points it is left out with a warning rather than failing the run.
    /// (Checked only when it fails to load, to keep start-up fast.)
    pub optional: bool,
    /// What of the object not to load on this kernel: the programs and maps
    /// of the config's variants that were not chosen (set by the probe
    /// stage's `variants::fit`; nothing by default).
    pub left_out: LeftOut,
}

/// Programs not to load and maps not to create.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeftOut {
    pub programs: Vec<String>,
    pub maps: Vec<String>,
}

impl std::fmt::Debug for Program {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Program")
            .field("config", &self.config.name)
            .field("object", &self.object)
            .field("optional", &self.optional)
            .finish_non_exhaustive()
    }
}

impl Program {
    /// The built-in this is, as embedded, if it can be loaded from the object
    /// all built-ins are linked into ([`builtin::LINKED`]).
    pub fn linked_builtin(&self) -> Option<&'static BuiltinSource> {
        let ObjectSource::Embedded(bytes) = self.object else {
            return None;
        };
        builtin::find(&self.config.name)
            .filter(|source| std::ptr::eq(source.object, bytes) && self.config.kaddrs.is_empty())
    }
}

/// What the command line selected.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Config files named directly.
    pub files: Vec<PathBuf>,
    /// Directory `configs` are looked up in.
    pub config_dir: Option<PathBuf>,
    pub configs: Vec<String>,
    pub builtins: Vec<String>,
    /// `--by container`: every built-in taken (named or default) that has
    /// a `NAME_by_container` twin is replaced by it.
    pub by_container: bool,
}

impl Selection {
    pub fn is_empty(&self) -> bool {
        self.files.is_empty() && self.configs.is_empty() && self.builtins.is_empty()
    }
}

/// Resolves a selection into programs; nothing selected: the default set.
/// Stops at the first problem.
pub fn select(selection: &Selection) -> Result<Vec<Program>> {
    select_each(selection).into_iter().collect()
}

/// Resolves every selected config on its own, so `bpfsnap check` can report
/// every problem, not just the first.
pub fn select_each(selection: &Selection) -> Vec<Result<Program>> {
    if selection.is_empty() {
        return builtin::BUILTINS
            .iter()
            .filter_map(|source| match source.config() {
                Ok(config) if config.builtin.default => {
                    let source = twin(selection, source.name).unwrap_or(source);
                    let config = match source.config() {
                        Ok(config) => config,
                        Err(err) => return Some(Err(err)),
                    };
                    Some(from_builtin(source, config).map(|program| Program {
                        optional: true,
                        ..program
                    }))
                }
                Ok(_) => None,
                Err(err) => Some(Err(err)),
            })
            .collect();
    }
    let mut results = Vec::new();
    for name in &selection.configs {
        results.push(match &selection.config_dir {
            // Without a directory, --configs can only mean built-ins.
            None => builtin_program(name),
            Some(dir) => match find_in_dir(dir, name) {
                Ok(Some(path)) => load_file(&path),
                Ok(None) if builtin::find(name).is_some() => builtin_program(name),
                Ok(None) => Err(anyhow::anyhow!(
                    "config {name:?} not found: no {name}.toml or {name}.yaml in {} and no built-in of that name",
                    dir.display()
                )),
                Err(err) => Err(err),
            },
        });
    }
    results.extend(selection.files.iter().map(|path| load_file(path)));
    results.extend(selection.builtins.iter().map(|name| {
        builtin_program(twin(selection, name).map_or(name.as_str(), |source| source.name))
    }));

    // Names are unique in a run.
    let mut seen: Vec<(String, String)> = Vec::new();
    for result in &mut results {
        let Ok(program) = result else { continue };
        let (name, origin) = (program.config.name.clone(), program.config.origin.clone());
        if let Some((_, other)) = seen.iter().find(|(n, _)| *n == name) {
            *result = Err(anyhow::anyhow!(
                "two configs are named {name:?} ({other} and {origin}): each name may appear once"
            ));
        } else {
            seen.push((name, origin));
        }
    }
    results
}

/// The `_by_container` twin of built-in `name`, if the selection asks for
/// them and it has one.
fn twin(selection: &Selection, name: &str) -> Option<&'static BuiltinSource> {
    if !selection.by_container {
        return None;
    }
    builtin::find(&format!("{name}_by_container"))
}

/// A built-in's program, its spec compiled.
pub fn from_builtin(source: &'static BuiltinSource, config: Config) -> Result<Program> {
    Ok(Program {
        plan: Arc::new(Plan::compile(&config)?),
        config,
        object: ObjectSource::Embedded(source.object),
        optional: false,
        left_out: LeftOut::default(),
    })
}

fn builtin_program(name: &str) -> Result<Program> {
    let Some(source) = builtin::find(name) else {
        let known: Vec<_> = builtin::BUILTINS.iter().map(|b| b.name).collect();
        bail!(
            "no built-in program {name:?}: choose from {}",
            known.join(", ")
        );
    };
    from_builtin(source, source.config()?)
}

/// `DIR/NAME.toml` or `DIR/NAME.yaml` (`.yml`), if one exists; both is an error.
fn find_in_dir(dir: &Path, name: &str) -> Result<Option<PathBuf>> {
    if name.is_empty() || name.contains('/') {
        bail!("config name {name:?} is not a plain name: use --configs NAME, or give the file path itself");
    }
    if !dir.is_dir() {
        bail!("--config-dir {} is not a directory", dir.display());
    }
    let found: Vec<PathBuf> = ["toml", "yaml", "yml"]
        .iter()
        .map(|ext| dir.join(format!("{name}.{ext}")))
        .filter(|path| path.exists())
        .collect();
    match found.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(one.clone())),
        [first, second, ..] => bail!(
            "config {name:?} is defined twice, by {} and {}: keep one",
            first.display(),
            second.display()
        ),
    }
}

/// Reads a config file; its object is `object` from the config (relative to
/// the config's directory) or NAME.bpf.o beside it.
pub fn load_file(path: &Path) -> Result<Program> {
    let format = Format::of(path).with_context(|| {
        format!(
            "{}: a config file must end in .toml or .yaml",
            path.display()
        )
    })?;
    let file_name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let name = file_name
        .rsplit_once('.')
        .map_or(file_name, |(stem, _)| stem)
        .to_string();
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config {}", path.display()))?;
    let (config, plan) = plan::parse(&name, &path.display().to_string(), &text, format)?;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let object = match &config.object {
        Some(object) => dir.join(object),
        None => dir.join(format!("{name}.bpf.o")),
    };
    if !object.is_file() {
        bail!(
            "{}: BPF object {} not found: compile its program into it (bpfsnap build {}), or set `object`",
            path.display(),
            object.display(),
            dir.join(format!("{name}.bpf.c")).display()
        );
    }
    Ok(Program {
        config,
        plan: Arc::new(plan),
        object: ObjectSource::File(object),
        optional: false,
        left_out: LeftOut::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    const CONFIG: &str = "[[metrics.counters]]\nname = \"x_total\"\nhelp = \"X.\"\n";

    fn dir_with(files: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for file in files {
            let text = if file.ends_with(".yaml") {
                "metrics:\n  counters:\n    - name: x_total\n      help: X.\n"
            } else if file.ends_with(".toml") {
                CONFIG
            } else {
                "not really ELF"
            };
            fs::write(dir.path().join(file), text).unwrap();
        }
        dir
    }

    fn names(programs: &[Program]) -> Vec<&str> {
        programs.iter().map(|p| p.config.name.as_str()).collect()
    }

    #[test]
    fn default_set_when_nothing_is_named() {
        let programs = select(&Selection::default()).unwrap();
        assert!(names(&programs).contains(&"syscalls"));
    }

    #[test]
    fn finds_configs_in_a_directory_and_falls_back_to_builtins() {
        let dir = dir_with(&["a.toml", "a.bpf.o", "b.yaml", "b.bpf.o"]);
        let selection = Selection {
            config_dir: Some(dir.path().into()),
            configs: vec!["a".into(), "b".into(), "syscalls".into()],
            ..Selection::default()
        };
        let programs = select(&selection).unwrap();
        assert_eq!(names(&programs), ["a", "b", "syscalls"]);
        assert!(matches!(&programs[0].object, ObjectSource::File(p) if p.ends_with("a.bpf.o")));
        assert!(matches!(programs[2].object, ObjectSource::Embedded(_)));
    }

    #[test]
    fn by_container_takes_the_twins_of_the_builtins_that_have_one() {
        let by_container = |builtins: &[&str]| Selection {
            builtins: builtins.iter().map(|b| b.to_string()).collect(),
            by_container: true,
            ..Selection::default()
        };
        let named = select(&by_container(&[
            "oomkill",
            "syscalls",
            "runqlat_by_container",
        ]))
        .unwrap();
        assert_eq!(
            names(&named),
            ["oomkill_by_container", "syscalls", "runqlat_by_container"]
        );
        let defaults = select(&by_container(&[])).unwrap();
        let defaults = names(&defaults);
        let plain = select(&Selection::default()).unwrap();
        assert_eq!(defaults.len(), plain.len());
        for name in names(&plain) {
            let twin = format!("{name}_by_container");
            let expected = if crate::builtin::find(&twin).is_some() {
                twin.as_str()
            } else {
                name
            };
            assert!(defaults.contains(&expected), "{expected} in {defaults:?}");
        }
        assert!(defaults.contains(&"exits_by_container"));
    }

    #[test]
    fn selection_errors() {
        let dir = dir_with(&[
            "a.toml",
            "a.yaml",
            "a.bpf.o",
            "noobj.toml",
            "c.toml",
            "c.bpf.o",
        ]);
        let in_dir = |configs: &[&str]| Selection {
            config_dir: Some(dir.path().into()),
            configs: configs.iter().map(|c| c.to_string()).collect(),
            ..Selection::default()
        };
        let cases: Vec<(Selection, &str)> = vec![
            (in_dir(&["a"]), "is defined twice"),
            (in_dir(&["noobj"]), "noobj.bpf.o not found"),
            (
                in_dir(&["nothere"]),
                "not found: no nothere.toml or nothere.yaml",
            ),
            (in_dir(&["c", "c"]), "two configs are named \"c\""),
            (in_dir(&["../c"]), "not a plain name"),
            (
                Selection {
                    builtins: vec!["syscalls".into()],
                    configs: vec!["syscalls".into()],
                    ..Selection::default()
                },
                "two configs are named \"syscalls\"",
            ),
            (
                Selection {
                    builtins: vec!["nosuch".into()],
                    ..Selection::default()
                },
                "no built-in program \"nosuch\"",
            ),
            (
                Selection {
                    files: vec![dir.path().join("c.conf")],
                    ..Selection::default()
                },
                "must end in .toml or .yaml",
            ),
            (
                Selection {
                    files: vec![dir.path().join("gone.toml")],
                    ..Selection::default()
                },
                "cannot read config",
            ),
        ];
        assert_each_refused(cases);
    }

    /// Asserts that selecting each selection fails with an error that
    /// contains its text.
    fn assert_each_refused(cases: Vec<(Selection, &str)>) {
        for (selection, expected) in cases {
            let err = format!("{:#}", select(&selection).unwrap_err());
            assert!(
                err.contains(expected),
                "{err:?} should contain {expected:?}"
            );
        }
    }
}
