//! Probes: open a program's BPF object, load it, check its maps against the
//! config, attach every program, and detach everything when dropped.
//!
//! This is the only stage that talks to the kernel's program side; the snapshot
//! stage reads maps through [`Probe::map`], and nothing here formats metrics.

pub mod host;
mod libbpf_log;

use anyhow::{anyhow, bail, Context, Result};
use libbpf_rs::{Link, Map, MapCore, MapType, Object, ObjectBuilder};

use crate::config::{self, Config};

pub use libbpf_log::install as capture_libbpf_log;

/// A loaded, attached program. Dropping it detaches its links, then unloads
/// the object (fields drop in declaration order).
pub struct Probe {
    links: Vec<Link>,
    object: Object,
    config: Config,
}

impl std::fmt::Debug for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Probe")
            .field("config", &self.config.name)
            .field("links", &self.links.len())
            .finish()
    }
}

/// Checks that hold for every run on this host, once, before any load.
pub fn check_host() -> Result<()> {
    host::check_privileges()?;
    host::check_btf()
}

impl Probe {
    /// Opens `object` (an ELF BPF object), loads and attaches it.
    pub fn attach(config: Config, object: &[u8]) -> Result<Probe> {
        let name = config.name.clone();
        let mut builder = ObjectBuilder::default();
        builder
            .name(&name)
            .map_err(|err| anyhow!("{name}: {err}"))?;
        let open = builder
            .open_memory(object)
            .map_err(|err| anyhow!("{name}: cannot open the BPF object: {err}"))?;

        for prog in open.progs() {
            if host::section_needs_tracefs(&prog.section().to_string_lossy()) {
                host::ensure_tracefs()?;
                break;
            }
        }

        libbpf_log::take();
        let object = open.load().map_err(|err| load_error(&name, &err))?;
        check_maps(&config, &object)?;

        let mut links = Vec::new();
        for prog in object.progs_mut() {
            let prog_name = prog.name().to_string_lossy().into_owned();
            let section = prog.section().to_string_lossy().into_owned();
            libbpf_log::take();
            let link = prog.attach().map_err(|err| {
                anyhow!(
                    "{name}: cannot attach program {prog_name} (section {section}): {err}{}",
                    last_message(&libbpf_log::take())
                )
            })?;
            links.push(link);
        }
        if links.is_empty() {
            bail!("{name}: the BPF object has no programs to attach");
        }
        Ok(Probe {
            links,
            object,
            config,
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Number of attached programs.
    pub fn attached(&self) -> usize {
        self.links.len()
    }

    /// The object's map called `name`.
    pub fn map(&self, name: &str) -> Result<Map<'_>> {
        find_map(&self.object, name)
            .with_context(|| format!("{}: no map named {name:?}", self.config.name))
    }
}

fn find_map<'a>(object: &'a Object, name: &str) -> Option<Map<'a>> {
    object.maps().find(|map| map.name() == name)
}

/// Config ↔ object checks that need the loaded maps: each metric's map exists,
/// its keys are as long as the labels say, and its values are u64 counters.
fn check_maps(config: &Config, object: &Object) -> Result<()> {
    for counter in &config.metrics.counters {
        let Some(map) = find_map(object, &counter.name) else {
            let maps: Vec<_> = object
                .maps()
                .map(|m| m.name().to_string_lossy().into_owned())
                .collect();
            bail!(
                "{}: metric {:?} reads the map of the same name, but the object has none \
                 (its maps: {})",
                config.name,
                counter.name,
                maps.join(", ")
            );
        };
        let key_size = map.key_size() as usize;
        let label_bytes = config::key_size(&counter.labels);
        if key_size != label_bytes {
            bail!(
                "{}: metric {:?}: the labels take {label_bytes} bytes but the map's keys are \
                 {key_size} bytes: make the label sizes and paddings add up to the key",
                config.name,
                counter.name
            );
        }
        if !matches!(
            map.map_type(),
            MapType::Hash
                | MapType::PercpuHash
                | MapType::LruHash
                | MapType::LruPercpuHash
                | MapType::Array
                | MapType::PercpuArray
        ) {
            bail!(
                "{}: metric {:?}: map type {:?} cannot back a counter: use a hash or array map",
                config.name,
                counter.name,
                map.map_type()
            );
        }
        if map.value_size() != 8 {
            bail!(
                "{}: metric {:?}: counter values must be u64 (8 bytes), the map's are {}",
                config.name,
                counter.name,
                map.value_size()
            );
        }
    }
    Ok(())
}

/// Explains a failed load: privileges (libbpf's RLIMIT_MEMLOCK hint is wrong on
/// current kernels), or the verifier's reason.
fn load_error(name: &str, err: &libbpf_rs::Error) -> anyhow::Error {
    let log = libbpf_log::take();
    if err.kind() == libbpf_rs::ErrorKind::PermissionDenied
        && !host::effective_capabilities().is_ok_and(host::can_trace)
    {
        return anyhow!(
            "{name}: the kernel refused to load the program: {}",
            host::PRIVILEGE_ADVICE
        );
    }
    let failed_prog = log
        .lines()
        .find_map(|line| {
            line.split_once("prog '")?
                .1
                .split_once("': BPF program load failed")
        })
        .map(|(prog, _)| format!(" program {prog}"))
        .unwrap_or_default();
    let tail = libbpf_log::useful_tail(&log, 8);
    let mut message = format!("{name}: loading{failed_prog} failed: {err}");
    if !tail.is_empty() {
        message.push_str("\n  log tail:\n    ");
        message.push_str(&tail.join("\n    "));
    }
    anyhow!(message)
}

fn last_message(log: &str) -> String {
    log.lines()
        .rev()
        .find(|line| !line.trim().is_empty())
        .map(|line| format!(" (libbpf: {})", line.trim_start_matches("libbpf: ").trim()))
        .unwrap_or_default()
}
