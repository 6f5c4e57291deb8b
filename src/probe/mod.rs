//! Probes: open a program's BPF object, check it against its config, load it,
//! attach every program, and detach everything when dropped.
//!
//! This is the only stage that talks to the kernel's program side; the
//! snapshot stage reads maps through [`Probe::map`], and nothing here formats
//! metrics. Errors name the config, the program and its section, and say why in
//! words: libbpf's own hints (RLIMIT_MEMLOCK) are wrong on current kernels.

pub mod availability;
pub mod cgroups;
mod check;
mod core_btf;
mod events;
mod explain;
pub mod host;
mod kaddr;
mod libbpf_log;
mod perf;
pub mod pin;
pub mod pinning;
mod raw_btf;
pub mod section;
pub mod variants;

use std::collections::BTreeMap;
use std::os::fd::{AsFd, AsRawFd, IntoRawFd};
use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use libbpf_rs::{
    Link, MapCore, MapHandle, Object, ObjectBuilder, OpenObject, ProgramAttachType, ProgramType,
};

use crate::builtin::BuiltinSource;
use crate::plan::Plan;
use crate::program::{LeftOut, ObjectSource, Program};
use crate::spec::{self, Config};
use check::check_maps;
use explain::{attach_error, last_message, load_error};
use section::Attach;

pub use events::StreamSnapshot;
pub use libbpf_log::install as capture_libbpf_log;

/// A loaded, attached program. Dropping it detaches its links, then unloads
/// the object (fields drop in declaration order).
pub struct Probe {
    /// Event-stream consumers; first, so they stop before anything else goes.
    events: Vec<events::EventStream>,
    links: Vec<Link>,
    /// The program each link attaches (same order as `links`).
    link_programs: Vec<String>,
    /// The metrics' maps, by name (own descriptors, valid without `object`).
    maps: BTreeMap<String, MetricMap>,
    /// Keeps the loaded object (programs, BTF) alive until the links are gone;
    /// None when the programs were loaded by an earlier run and pinned.
    _object: Option<Object>,
    config: Config,
    /// The config compiled: what reading its maps needs.
    plan: Arc<Plan>,
    programs: Vec<ProgramInfo>,
    /// Set when this probe lives on in bpffs after the process (`--pin`).
    pinned: Option<pin::Pinned>,
    /// Why each program that did not attach did not (the others run).
    unattached: Vec<anyhow::Error>,
    /// The config's cgroup id map, kept current at each snapshot.
    cgroup_map: Option<cgroups::CgroupIdMap>,
    /// A descriptor of every program, taken while privileged, so the run
    /// statistics can be read after capabilities are dropped.
    program_fds: BTreeMap<u32, std::os::fd::OwnedFd>,
    /// Why the kernel would not pin this probe's links (`--pin`), if it
    /// would not.
    link_pin_refusal: Option<String>,
}

/// A config that needs the bpfsnap process while it counts (event-stream
/// counters, a cgroup id map it keeps current), so it cannot outlive it,
/// pinned: the config's name and what it needs.
#[derive(Debug)]
pub struct NotPinnable {
    pub config: String,
    pub needs: &'static str,
}

impl std::fmt::Display for NotPinnable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {}, so it cannot be pinned: use --interval or `bpfsnap serve` for this config",
            self.config, self.needs
        )
    }
}

impl std::error::Error for NotPinnable {}

/// A metric's map: its handle, and whether the kernel reads it in batches,
/// learned at its first read and kept, so each map is read one way (see
/// `snapshot::read_map_as`).
pub struct MetricMap {
    pub handle: MapHandle,
    /// Shared with the map's unread snapshots (`snapshot::Unread`).
    pub batched: std::sync::Arc<std::sync::OnceLock<bool>>,
}

impl MetricMap {
    fn new(handle: MapHandle) -> MetricMap {
        MetricMap {
            handle,
            batched: std::sync::Arc::default(),
        }
    }
}

/// What the kernel says about one loaded program, for self metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProgramInfo {
    pub name: String,
    pub section: String,
    pub attach: String,
    pub id: u32,
    pub tag: String,
    /// Run time and count, maintained while kernel.bpf_stats_enabled=1.
    pub run_time_ns: u64,
    pub run_count: u64,
    /// Events the kernel did not run the program for because it was already
    /// running on that CPU (a hardirq interrupting it, say): counted always.
    pub recursion_misses: u64,
    /// Whether it is attached (a program that failed to attach stays loaded,
    /// reported as not attached, as ebpf_exporter does).
    pub attached: bool,
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

/// The kernel's types, held while a session loads (they go with the last
/// holder, see [`raw_btf::RawBtf::kernel`]).
pub struct KernelBtf {
    _held: Arc<Result<raw_btf::RawBtf, String>>,
}

/// Opens the kernel's types and makes those the built-ins relocate against
/// ([`core_btf`]) on a thread of its own, so that both are ready when
/// loading starts; the thread gives the kernel's types back to be held.
/// None if no thread can be made now (the first load makes them then).
pub fn make_core_btf_for_builtins() -> Option<std::thread::JoinHandle<KernelBtf>> {
    let thread = std::thread::Builder::new().name("bpfsnap-btf".into());
    let making = thread.spawn(|| {
        let kernel = raw_btf::RawBtf::kernel();
        core_btf::for_builtins();
        KernelBtf { _held: kernel }
    });
    making.ok()
}

/// A function of ours that user programs can put a uprobe on
/// (`uprobe//proc/self/exe:post_attach_mark`, ebpf_exporter's convention):
/// it is called once every program is attached, so a program can run once at
/// start, e.g. to seed a map. build.rs exports its symbol.
#[no_mangle]
#[inline(never)]
pub extern "C" fn post_attach_mark() {
    std::hint::black_box(());
}

fn open(program: &Program) -> Result<OpenObject> {
    let name = &program.config.name;
    let builtin = matches!(program.object, ObjectSource::Embedded(_));
    let mut builder = object_builder(name, builtin)?;
    libbpf_log::take();
    let opened = match &program.object {
        ObjectSource::Embedded(bytes) => builder.open_memory(bytes),
        ObjectSource::Read { bytes, .. } => builder.open_memory(bytes),
        ObjectSource::File(path) => {
            // libbpf's own message for a missing or unreadable file is terse.
            std::fs::File::open(path)
                .with_context(|| format!("{name}: cannot read BPF object {}", path.display()))
                .map_err(crate::BadInput::wrap)?;
            builder.open_file(path)
        }
    };
    opened.map_err(|err| {
        crate::BadInput::wrap(anyhow!(
            "{name}: cannot open the BPF object{}: {err}{}",
            object_path(program),
            last_message(&libbpf_log::take())
        ))
    })
}

/// An object builder for `name`, with `--btf`'s file for CO-RE if given,
/// else for a built-in's object the kernel's types it relocates against
/// ([`core_btf`]).
fn object_builder(name: &str, builtin: bool) -> Result<ObjectBuilder> {
    let mut builder = ObjectBuilder::default();
    builder.name(name).map_err(|err| anyhow!("{name}: {err}"))?;
    let core_btf = match host::external_btf() {
        Some(path) => Some(path),
        None if builtin => core_btf::for_builtins(),
        None => None,
    };
    if let Some(path) = core_btf {
        builder.btf_custom_path(path)?;
    }
    Ok(builder)
}

fn object_path(program: &Program) -> String {
    match &program.object {
        ObjectSource::File(path) | ObjectSource::Read { path, .. } => {
            format!(" {}", path.display())
        }
        ObjectSource::Embedded(_) => String::new(),
    }
}

/// One program of an object: its name, its section and how that attaches.
struct AttachPoint {
    program: String,
    section: String,
    attach: Attach,
}

/// The attach point of program `name` among `points`.
fn point_of<'p>(points: &'p [AttachPoint], name: &str) -> Option<&'p AttachPoint> {
    points.iter().find(|point| point.program == name)
}

/// Every program's attach point (those set to load).
fn attach_points(config: &Config, object: &OpenObject) -> Result<Vec<AttachPoint>> {
    let mut points = Vec::new();
    for prog in object.progs().filter(|prog| prog.autoload()) {
        let program = prog.name().to_string_lossy().into_owned();
        let section = prog.section().to_string_lossy().into_owned();
        let attach = section::parse(&section)
            .with_context(|| format!("{}: program {program}", config.name))?;
        points.push(AttachPoint {
            program,
            section,
            attach,
        });
    }
    if points.is_empty() {
        bail!("{}: the BPF object has no programs", config.name);
    }
    Ok(points)
}

/// Leaves out what `left_out` names: those programs are not loaded, those
/// maps not created (the variants of the config not chosen for this kernel).
fn leave_out(object: &mut OpenObject, left_out: &LeftOut) -> Result<()> {
    for mut prog in object.progs_mut() {
        if left_out.programs.iter().any(|p| prog.name() == p.as_str()) {
            prog.set_autoload(false);
        }
    }
    for mut map in object.maps_mut() {
        if left_out.maps.iter().any(|m| map.name() == m.as_str()) {
            map.set_autocreate(false)?;
        }
    }
    Ok(())
}

/// What loading needs done by hand: sections libbpf does not know get their
/// program type set; classic tracepoints need tracefs mounted.
fn prepare(object: &mut OpenObject, points: &[AttachPoint]) -> Result<()> {
    for mut prog in object.progs_mut() {
        let prog_name = prog.name().to_string_lossy().into_owned();
        match point_of(points, &prog_name).map(|point| &point.attach) {
            Some(Attach::PerfEvent(_)) => prog.set_prog_type(ProgramType::PerfEvent),
            Some(Attach::Xdp { .. }) => {
                prog.set_prog_type(ProgramType::Xdp);
                prog.set_attach_type(ProgramAttachType::Xdp);
            }
            _ => {}
        }
    }
    if points
        .iter()
        .any(|point| host::section_needs_tracefs(&point.section))
    {
        host::ensure_tracefs()?;
    }
    Ok(())
}

/// The section of every program of `program`'s object it loads (those its
/// `left_out` does not name).
pub fn sections(program: &Program) -> Result<Vec<String>> {
    let mut object = open(program)?;
    leave_out(&mut object, &program.left_out)?;
    Ok(attach_points(&program.config, &object)?
        .into_iter()
        .map(|point| point.section)
        .collect())
}

/// Why `program` cannot attach on this kernel, if something says so before
/// trying (see [`availability`]).
pub fn unavailable(
    program: &Program,
    kernel: &availability::KernelTypes,
) -> Result<Option<String>> {
    let object = open(program)?;
    for point in attach_points(&program.config, &object)? {
        if let Some(reason) = kernel.missing(&point.section, &point.attach) {
            return Ok(Some(format!(
                "program {} (section {}): {reason}",
                point.program, point.section
            )));
        }
    }
    Ok(None)
}

/// Everything `bpfsnap check` can verify without loading anything into the
/// kernel: the object opens, its sections are understood, and every metric's
/// map exists with the key and value layout the config describes.
pub fn check(program: &Program) -> Result<()> {
    let object = open(program)?;
    attach_points(&program.config, &object).map_err(crate::BadInput::wrap)?;
    check_maps(&program.config, &program.plan, &object).map_err(crate::BadInput::wrap)
}

/// Everything a pinned run can know of `program` before it pins anything:
/// the object opens and matches the config, and nothing in it needs the
/// bpfsnap process while it counts (so it can outlive the process).
pub fn check_pinnable(program: &Program) -> Result<()> {
    let object = open(program)?;
    check_maps(&program.config, &program.plan, &object).map_err(crate::BadInput::wrap)?;
    let streams = object.maps().any(|map| {
        let name = map.name().to_string_lossy();
        events::is_stream(map.map_type()) && program.config.metrics().any(|m| m.name == name)
    });
    not_pinnable(&program.config, streams).map_or(Ok(()), Err)
}

/// The error of a config that cannot be pinned, if it cannot: one whose
/// cgroup id map or event streams (`streams`) the bpfsnap process serves.
fn not_pinnable(config: &Config, streams: bool) -> Option<anyhow::Error> {
    let needs = if config.cgroup_id_map.is_some() {
        "its cgroup_id_map is kept current by the bpfsnap process at every window"
    } else if streams {
        "its event-stream counters are counted by the bpfsnap process itself"
    } else {
        return None;
    };
    Some(crate::BadInput::wrap(anyhow::Error::new(NotPinnable {
        config: config.name.clone(),
        needs,
    })))
}

impl Probe {
    /// Opens, checks, loads and attaches `program`.
    pub fn attach(program: &Program) -> Result<Probe> {
        Probe::attach_reusing(program, None)
    }

    /// [`Probe::attach`], with the metric maps pinned under `maps_dir` (if
    /// any) reused instead of created, so their counts carry on.
    fn attach_reusing(program: &Program, maps_dir: Option<&Path>) -> Result<Probe> {
        let config = program.config.clone();
        let name = config.name.clone();
        let mut object = open(program)?;
        leave_out(&mut object, &program.left_out)?;
        let points = attach_points(&config, &object).map_err(crate::BadInput::wrap)?;
        check_maps(&config, &program.plan, &object).map_err(crate::BadInput::wrap)?;
        if let Some(dir) = maps_dir {
            for mut map in object.maps_mut() {
                let path = dir.join(map.name());
                if path.exists() {
                    map.reuse_pinned_map(&path)
                        .with_context(|| format!("{name}: reusing {}", path.display()))?;
                }
            }
        }

        prepare(&mut object, &points)?;
        if !config.kaddrs.is_empty() {
            let kallsyms =
                std::fs::read_to_string("/proc/kallsyms").context("reading /proc/kallsyms")?;
            let addresses =
                kaddr::resolve(&kallsyms, &config.kaddrs).with_context(|| name.clone())?;
            kaddr::set(&mut object, &addresses).with_context(|| name.clone())?;
        }

        libbpf_log::take();
        let object = object
            .load()
            .map_err(|err| load_error(&name, &points, &err))?;
        let mut probe = Probe::attach_loaded(program, &object, &points)?;
        probe._object = Some(object);
        Ok(probe)
    }

    /// Several built-ins at once, from the object build.rs linked them into:
    /// one load, so libbpf parses the kernel's BTF and resolves CO-RE
    /// relocations once instead of once per built-in (most of the start-up
    /// time). The other built-ins' programs and maps are left out. Any
    /// failure fails them all: the caller then attaches each on its own,
    /// which says which one failed and why.
    pub fn attach_linked(programs: &[&Program]) -> Result<Vec<Probe>> {
        let mut sources = Vec::with_capacity(programs.len());
        for program in programs {
            match program.linked_builtin() {
                Some(source) => sources.push(source),
                None => bail!("{} is not a linked built-in", program.config.name),
            }
        }
        let mut builder = object_builder("bpfsnap", true)?;
        libbpf_log::take();
        let mut object = builder.open_memory(crate::builtin::LINKED)?;
        let wanted = |name: &str, of: fn(&BuiltinSource) -> &[&str]| {
            sources.iter().any(|source| of(source).contains(&name))
        };
        let others_maps: Vec<&str> = crate::builtin::BUILTINS
            .iter()
            .flat_map(|source| source.maps.iter().copied())
            .filter(|map| !wanted(map, |source| source.maps))
            .collect();
        for mut prog in object.progs_mut() {
            let name = prog.name().to_string_lossy().into_owned();
            prog.set_autoload(wanted(&name, |source| source.programs));
        }
        for mut map in object.maps_mut() {
            if others_maps.contains(&&*map.name().to_string_lossy()) {
                map.set_autocreate(false)?;
            }
        }
        for program in programs {
            leave_out(&mut object, &program.left_out)?;
        }
        let mut all_points = Vec::new();
        let mut counts = Vec::with_capacity(programs.len());
        for (program, source) in programs.iter().zip(&sources) {
            let mut points = attach_points(&program.config, &object)?;
            points.retain(|point| source.programs.contains(&point.program.as_str()));
            check_maps(&program.config, &program.plan, &object)?;
            counts.push(points.len());
            all_points.extend(points);
        }
        prepare(&mut object, &all_points)?;
        libbpf_log::take();
        let object = object
            .load()
            .map_err(|err| load_error("built-ins", &all_points, &err))?;
        // The object itself may go once attached: links and map handles
        // hold what keeps running.
        let mut rest = all_points.as_slice();
        programs
            .iter()
            .zip(counts)
            .map(|(program, count)| {
                let (points, after) = rest.split_at(count);
                rest = after;
                Probe::attach_loaded(program, &object, points)
            })
            .collect()
    }

    /// Attaches the programs at `points` in the loaded `object`, and takes
    /// handles of `program`'s metric maps.
    fn attach_loaded(program: &Program, object: &Object, points: &[AttachPoint]) -> Result<Probe> {
        let config = program.config.clone();
        let name = config.name.clone();
        // Filled before anything attaches: no event is counted unmatched
        // for want of it.
        let cgroup_map = match &config.cgroup_id_map {
            Some(spec) => {
                Some(cgroups::CgroupIdMap::open(spec, object).with_context(|| name.clone())?)
            }
            None => None,
        };
        let mut attached = attach_programs(&name, object, points);
        if attached.links.is_empty() && !attached.unattached.is_empty() {
            return Err(attached.unattached.swap_remove(0).1);
        }
        let programs = loaded_programs(object, points, &attached.unattached);
        let (maps, streams) = metric_maps(program, object)?;
        let program_fds = program_fds(&programs);
        Ok(Probe {
            events: streams,
            links: attached.links,
            link_programs: attached.link_programs,
            maps,
            _object: None,
            config,
            plan: program.plan.clone(),
            programs,
            pinned: None,
            unattached: attached
                .unattached
                .into_iter()
                .map(|(_, err)| err)
                .collect(),
            cgroup_map,
            program_fds,
            link_pin_refusal: None,
        })
    }

    /// Like [`Probe::attach`], but the programs live on in bpffs under
    /// `root/NAME` after this process: an earlier run's pinned set is reused
    /// when its fingerprint matches, else replaced.
    pub fn attach_pinned(program: &Program, root: &Path) -> Result<Probe> {
        let config = &program.config;
        let dir = root.join(&config.name);
        let object_bytes = match &program.object {
            ObjectSource::Embedded(bytes) => bytes.to_vec(),
            ObjectSource::Read { bytes, .. } => bytes.clone(),
            ObjectSource::File(path) => std::fs::read(path)
                .with_context(|| format!("{}: reading {}", config.name, path.display()))?,
        };
        let fingerprint = pin::fingerprint(&[
            env!("CARGO_PKG_VERSION").as_bytes(),
            pin::LAYOUT,
            format!("{:?}{:?}", config.metrics, config.kaddrs).as_bytes(),
            &object_bytes,
        ]);
        if let Some(manifest) = pin::read_manifest(&dir)? {
            if manifest.fingerprint == fingerprint {
                if manifest.links_pinned() {
                    if let Ok(probe) = Probe::from_pins(program, &dir, manifest) {
                        return Ok(probe);
                    }
                } else {
                    return Probe::attach_to_pinned_maps(program, &dir, manifest);
                }
            }
        }
        let mut probe = Probe::attach(program)?;
        if let Some(err) = not_pinnable(config, !probe.events.is_empty()) {
            return Err(err);
        }
        // An outdated (or broken) set waits aside until this run ends.
        let aside =
            match dir.exists() {
                true => Some(pinning::set_aside(root, &dir).with_context(|| {
                    format!("{}: replacing the outdated pinned set", config.name)
                })?),
                false => None,
            };
        let pinned = pin_set(&mut probe, &dir, fingerprint);
        match pinned {
            Ok(pinned) => {
                probe.pinned = Some(pinned);
                Ok(probe)
            }
            Err(err) => {
                // Half a pinned set is worse than none.
                let _ = pin::remove(&dir);
                if let Some(aside) = aside {
                    let _ = std::fs::rename(aside, &dir);
                }
                Err(err.context(format!("{}: pinning in {}", config.name, dir.display())))
            }
        }
    }

    /// A set of maps only (the kernel would not pin the links): the programs
    /// attached again, counting on in the pinned maps, and the links pinned
    /// if the kernel now takes them (a refusal that stands is said again).
    fn attach_to_pinned_maps(
        program: &Program,
        dir: &Path,
        manifest: pin::Manifest,
    ) -> Result<Probe> {
        let mut probe = Probe::attach_reusing(program, Some(&dir.join("maps")))?;
        let mut pinned = pin::Pinned {
            dir: dir.to_path_buf(),
            manifest,
        };
        let links = probe.pin_links(&dir.join("links"))?;
        if links > 0 {
            pinned.links_now_pinned(links, unix_now())?;
        }
        probe.pinned = Some(pinned);
        Ok(probe)
    }

    /// Whether every link is attached for good (cron mode): false when this
    /// run's programs detach when it exits.
    pub fn outlives_process(&self) -> bool {
        self.pinned
            .as_ref()
            .is_some_and(|p| p.manifest.links_pinned())
    }

    /// Links pinned for good (`--pin`): 0 for a set of maps only.
    pub fn pinned_links(&self) -> Option<usize> {
        self.pinned.as_ref().map(|p| p.manifest.links)
    }

    /// A probe over an earlier run's pinned maps; its programs stay attached
    /// through their pinned links.
    fn from_pins(program: &Program, dir: &Path, manifest: pin::Manifest) -> Result<Probe> {
        let config = &program.config;
        let points = attach_points(config, &open(program)?)?;
        let mut maps = BTreeMap::new();
        for metric in config.metrics().filter(|m| {
            config.map_counters().any(|c| c.name == m.name) || m.kind == spec::MetricKind::Histogram
        }) {
            let path = dir.join("maps").join(metric.name);
            let map = MapHandle::from_pinned_path(&path)
                .with_context(|| format!("opening {}", path.display()))?;
            maps.insert(metric.name.to_string(), MetricMap::new(map));
        }
        let programs: Vec<ProgramInfo> = manifest
            .programs
            .iter()
            .map(|(name, id)| {
                let (section, attach) = point_of(&points, name)
                    .map(|point| (point.section.clone(), point.attach.kind().to_string()))
                    .unwrap_or_default();
                let tag = program_info_by_id(*id)
                    .map(|info| info.tag)
                    .unwrap_or_default();
                ProgramInfo {
                    name: name.clone(),
                    section,
                    attach,
                    id: *id,
                    tag,
                    // Through the links an earlier run pinned.
                    attached: true,
                    ..ProgramInfo::default()
                }
            })
            .collect();
        let program_fds = program_fds(&programs);
        Ok(Probe {
            events: Vec::new(),
            program_fds,
            links: Vec::new(),
            link_programs: Vec::new(),
            maps,
            _object: None,
            config: config.clone(),
            plan: program.plan.clone(),
            programs,
            pinned: Some(pin::Pinned {
                dir: dir.to_path_buf(),
                manifest,
            }),
            unattached: Vec::new(),
            cgroup_map: None,
            link_pin_refusal: None,
        })
    }

    pub fn pinned_mut(&mut self) -> Option<&mut pin::Pinned> {
        self.pinned.as_mut()
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Number of attached links (one per perf event CPU).
    pub fn attached(&self) -> usize {
        self.links.len()
    }

    pub fn programs(&self) -> &[ProgramInfo] {
        &self.programs
    }

    /// What the user should know about this probe once it is attached.
    pub fn warnings(&self) -> impl Iterator<Item = String> + '_ {
        self.events
            .iter()
            .filter_map(|stream| stream.warning())
            .chain(self.link_pin_refusal.clone())
    }

    /// Brings the config's cgroup id map up to date, if it has one.
    pub fn refresh_cgroups(&mut self) -> Result<()> {
        match &mut self.cgroup_map {
            Some(map) => map
                .refresh()
                .with_context(|| format!("{}: cgroup_id_map", self.config.name)),
            None => Ok(()),
        }
    }

    /// Why each of its programs that did not attach did not; the others run.
    pub fn unattached(&self) -> &[anyhow::Error] {
        &self.unattached
    }

    /// Whether one of its attached programs is a uprobe on bpfsnap's own
    /// `post_attach_mark`, which the session calls once everything attached.
    pub fn waits_for_post_attach_mark(&self) -> bool {
        self.programs
            .iter()
            .any(|p| p.attached && p.section.ends_with(":post_attach_mark"))
    }

    /// Whether the threads it started before the capability drop (event
    /// consumers) hold no more capabilities than the process kept.
    pub fn threads_follow_drop(&self) -> bool {
        self.events.iter().all(events::EventStream::follows_drop)
    }

    /// Has the threads it started before the capability drop look at it now.
    pub fn wake_threads(&self) {
        self.events.iter().for_each(events::EventStream::wake);
    }

    /// The event stream feeding counter `name`, if it is one.
    pub fn event_stream(&self, name: &str) -> Option<&events::EventStream> {
        self.events.iter().find(|stream| stream.map == name)
    }

    /// The metric map called `name`.
    pub fn map(&self, name: &str) -> Result<&MetricMap> {
        self.maps
            .get(name)
            .with_context(|| format!("{}: no map named {name:?}", self.config.name))
    }

    /// Fresh run statistics of every program (run time and count with
    /// bpf_stats, recursion misses always).
    pub fn refresh_stats(&mut self) {
        for info in &mut self.programs {
            let fresh = self
                .program_fds
                .get(&info.id)
                .and_then(|fd| program_info(fd.as_raw_fd()));
            if let Some(fresh) = fresh {
                info.run_time_ns = fresh.run_time_ns;
                info.run_count = fresh.run_count;
                info.recursion_misses = fresh.recursion_misses;
            }
        }
    }

    /// Whether this probe is pinned (it outlives the process).
    pub fn pinned(&self) -> Option<&pin::Pinned> {
        self.pinned.as_ref()
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        // Pinned links and maps stay in bpffs; dropping our descriptors is all.
        self.links.clear();
    }
}

/// What attaching a loaded object's programs gave.
struct Attached {
    links: Vec<Link>,
    /// The program each link attaches (same order as `links`).
    link_programs: Vec<String>,
    /// Programs that did not attach, with why: the others run (as in
    /// ebpf_exporter; the session fails the config if asked to be strict).
    unattached: Vec<(String, anyhow::Error)>,
}

/// Attaches every program of `object` that `points` names (config `name`).
fn attach_programs(name: &str, object: &Object, points: &[AttachPoint]) -> Attached {
    let mut attached = Attached {
        links: Vec::new(),
        link_programs: Vec::new(),
        unattached: Vec::new(),
    };
    for prog in object.progs_mut() {
        let prog_name = prog.name().to_string_lossy().into_owned();
        let Some(point) = point_of(points, &prog_name) else {
            continue;
        };
        libbpf_log::take();
        match attach_program(&prog, &point.attach) {
            Ok(new) => {
                let names = new.iter().map(|_| prog_name.clone());
                attached.link_programs.extend(names);
                attached.links.extend(new);
            }
            Err(err) => {
                let err = attach_error(name, point, &err);
                attached.unattached.push((prog_name.clone(), err));
            }
        }
    }
    attached
}

/// What the kernel says of each program of `object` at `points`, and
/// whether it attached.
fn loaded_programs(
    object: &Object,
    points: &[AttachPoint],
    unattached: &[(String, anyhow::Error)],
) -> Vec<ProgramInfo> {
    object
        .progs()
        .filter_map(|prog| {
            let prog_name = prog.name().to_string_lossy().into_owned();
            let point = point_of(points, &prog_name)?;
            let mut info = program_info(prog.as_fd().as_raw_fd()).unwrap_or_default();
            info.attached = !unattached.iter().any(|(n, _)| *n == prog_name);
            info.name = prog_name;
            info.section = point.section.clone();
            info.attach = point.attach.kind().to_string();
            Some(info)
        })
        .collect()
}

/// Handles of `program`'s metric maps in the loaded `object`, by name, and
/// its event streams, consumed from now on.
fn metric_maps(
    program: &Program,
    object: &Object,
) -> Result<(BTreeMap<String, MetricMap>, Vec<events::EventStream>)> {
    let config = &program.config;
    let name = &config.name;
    let mut maps = BTreeMap::new();
    let mut streams = Vec::new();
    for map in object.maps() {
        let map_name = map.name().to_string_lossy().into_owned();
        if !config.metrics().any(|m| m.name == map_name) {
            continue;
        }
        let handle =
            MapHandle::try_from(&map).with_context(|| format!("{name}: map {map_name}"))?;
        if !events::is_stream(map.map_type()) {
            maps.insert(map_name, MetricMap::new(handle));
            continue;
        }
        let lost_name = format!("{map_name}_lost");
        let lost = object
            .maps()
            .find(|m| m.name().to_string_lossy() == lost_name)
            .and_then(|m| MapHandle::try_from(&m).ok());
        // Every label of an event comes from its leading bytes.
        let key_size = program
            .plan
            .metric(&map_name)
            .map_or(0, |m| m.key_size(false));
        let stream = events::EventStream::start(
            &map_name,
            handle,
            key_size,
            config.max_series(&map_name),
            config.flush_interval(&map_name),
            lost,
        )
        .with_context(|| name.clone())?;
        streams.push(stream);
    }
    Ok((maps, streams))
}

/// Attaches one loaded program as `attach` says: its links (one per CPU for
/// a perf event).
fn attach_program(prog: &libbpf_rs::ProgramMut<'_>, attach: &Attach) -> Result<Vec<Link>> {
    match attach {
        Attach::Libbpf { .. } => Ok(vec![prog.attach()?]),
        Attach::PerfEvent(event) => perf::online_cpus()?
            .into_iter()
            .map(|cpu| {
                let fd = perf::open(event, cpu)?;
                // The link owns the perf event fd from here on.
                Ok(prog.attach_perf_event(fd.into_raw_fd())?)
            })
            .collect(),
        Attach::Xdp { interface } => Ok(vec![prog.attach_xdp(ifindex(interface)?)?]),
    }
}

/// A descriptor of each program, by id.
fn program_fds(programs: &[ProgramInfo]) -> BTreeMap<u32, std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    programs
        .iter()
        .filter_map(|program| {
            // SAFETY: a plain syscall wrapper; on success we own the fd.
            let fd = unsafe { libbpf_sys::bpf_prog_get_fd_by_id(program.id) };
            (fd >= 0).then(|| (program.id, unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) }))
        })
        .collect()
}

/// Program info by kernel id (for pinned programs, which we hold no fd of).
fn program_info_by_id(id: u32) -> Option<ProgramInfo> {
    // SAFETY: a plain syscall wrapper; the fd is closed below.
    let fd = unsafe { libbpf_sys::bpf_prog_get_fd_by_id(id) };
    if fd < 0 {
        return None;
    }
    let info = program_info(fd);
    // SAFETY: we own this descriptor.
    unsafe { libc::close(fd) };
    info
}

fn program_info(fd: i32) -> Option<ProgramInfo> {
    // SAFETY: bpf_prog_info is plain data, zero is valid; the kernel fills at
    // most `len` bytes.
    let mut info: libbpf_sys::bpf_prog_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libbpf_sys::bpf_prog_info>() as u32;
    let rc = unsafe { libbpf_sys::bpf_prog_get_info_by_fd(fd, &mut info, &mut len) };
    if rc != 0 {
        return None;
    }
    Some(ProgramInfo {
        id: info.id,
        tag: info.tag.iter().map(|b| format!("{b:02x}")).collect(),
        run_time_ns: info.run_time_ns,
        run_count: info.run_cnt,
        recursion_misses: info.recursion_misses,
        ..ProgramInfo::default()
    })
}

/// Pins a freshly attached probe's maps and links in `dir`, then the
/// manifest that makes the set complete (written last: a set without it
/// is half-pinned). Links the kernel refuses to pin leave a set of maps
/// only, and the refusal in `probe.link_pin_refusal`.
fn pin_set(probe: &mut Probe, dir: &Path, fingerprint: String) -> Result<pin::Pinned> {
    std::fs::create_dir_all(dir.join("maps"))?;
    for (name, map) in &mut probe.maps {
        let path = dir.join("maps").join(name);
        map.handle
            .pin(&path)
            .with_context(|| format!("pinning map {name} at {}", path.display()))?;
    }
    let links = probe.pin_links(&dir.join("links"))?;
    let manifest = pin::Manifest {
        fingerprint,
        attached_at: pin::stored_time(unix_now()),
        last_snapshot: None,
        links,
        counted: 0.0,
        programs: probe
            .programs
            .iter()
            .map(|p| (p.name.clone(), p.id))
            .collect(),
    };
    pin::write_manifest(dir, &manifest)?;
    Ok(pin::Pinned {
        dir: dir.to_path_buf(),
        manifest,
    })
}

impl Probe {
    /// Pins every link under `dir` as `PROGRAM_N`: all or none. When the
    /// kernel refuses one, those pinned are removed, the refusal (the link,
    /// its path and the errno) is kept in `link_pin_refusal`, and 0 is
    /// returned; otherwise the number pinned.
    fn pin_links(&mut self, dir: &Path) -> Result<usize> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        for (i, (link, program)) in self.links.iter().zip(&self.link_programs).enumerate() {
            let path = dir.join(pin::link_name(program, i));
            if let Err(refusal) = pin_link(link, &path) {
                for entry in std::fs::read_dir(dir)?.flatten() {
                    std::fs::remove_file(entry.path())
                        .with_context(|| format!("unpinning {}", entry.path().display()))?;
                }
                std::fs::remove_dir(dir).with_context(|| format!("removing {}", dir.display()))?;
                self.link_pin_refusal = Some(format!(
                    "the kernel refused to pin the link of program {program} at {}: {refusal}; \
                     its maps stay pinned, so its counters carry on across runs, but the programs \
                     count only during each run's window (--for, 10 s by default)",
                    path.display()
                ));
                return Ok(0);
            }
        }
        // Pinned, the links are bpffs's now: dropping ours must not detach
        // them. libbpf detaches a perf event link by disabling the perf
        // event (PERF_EVENT_IOC_DISABLE), which left a pinned `profile`
        // attached but sampling nothing once the run had exited.
        for link in &mut self.links {
            link.disconnect();
        }
        Ok(self.links.len())
    }
}

/// Pins `link` at `path`; on refusal, the errno and what it means here.
fn pin_link(link: &Link, path: &Path) -> std::result::Result<(), String> {
    let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| "the path holds a NUL byte".to_string())?;
    let fd = link.as_fd().as_raw_fd();
    // SAFETY: a valid descriptor and NUL-terminated path.
    if unsafe { libbpf_sys::bpf_obj_pin(fd, c_path.as_ptr()) } == 0 {
        return Ok(());
    }
    let error = std::io::Error::last_os_error();
    let errno = error.raw_os_error().unwrap_or(0);
    let name = crate::decode::errno::name(errno as u64).unwrap_or("errno");
    let error = error.to_string();
    let error = error.split(" (os error").next().unwrap_or_default();
    // Evidence, not a guess: a descriptor the kernel has no BPF link info
    // for is a perf event that the program was attached to directly.
    let how = match is_bpf_link(fd) {
        true => String::new(),
        false => "; the link is a perf event the program was attached to, not a BPF link \
                  object, which is how this kernel attaches this program type and which \
                  bpffs cannot hold"
            .to_string(),
    };
    Err(format!("{name} ({error}){how}"))
}

/// Whether `fd` is a BPF link (the kernel has link info for it).
fn is_bpf_link(fd: i32) -> bool {
    // SAFETY: bpf_link_info is plain data; the kernel fills at most `len` bytes.
    let mut info: libbpf_sys::bpf_link_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libbpf_sys::bpf_link_info>() as u32;
    unsafe { libbpf_sys::bpf_link_get_info_by_fd(fd, &mut info, &mut len) == 0 }
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn ifindex(interface: &str) -> Result<i32> {
    let name = std::ffi::CString::new(interface).context("interface name contains NUL")?;
    // SAFETY: a valid NUL-terminated string.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if index == 0 {
        bail!("no network interface {interface:?}");
    }
    Ok(index as i32)
}
