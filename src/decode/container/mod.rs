//! The container decoders: a cgroup id → who runs in that cgroup.
//!
//! `container_name`, `container_id`, `container_image`, `kube_namespace`,
//! `kube_pod` and `kube_container` each take a decimal cgroup id (from
//! `uint`, as `cgroup` does: the id `bpf_get_current_cgroup_id()` returns)
//! and give one field of the container's identity. The id is resolved to
//! its cgroup's path ([`super::cgroup`]'s walk of the tree), the path to a
//! container id ([`cgroup_path`]), the id to what its runtime recorded
//! about it ([`runtime`]). A cgroup that is not a container's has no
//! Kubernetes namespace or pod (empty); its other fields are its path below
//! the v2 root, as /proc/PID/cgroup shows it, or the configured host value
//! (`--container-host host`); an id with no cgroup `unknown_cgroup_id:<id>`.
//!
//! One cache of identities by cgroup id serves every label of every
//! config, so that a config's namespace, pod and container labels read the
//! runtime's files once per container. Identities found are kept while
//! their cgroup is (a cgroup id is never reused), and forgotten when the
//! cgroup tree's walk forgets the cgroup's path: the cache follows the
//! containers that run, not every one there has been. A container whose
//! runtime files are missing or unreadable is asked again after
//! [`RETRY_INTERVAL`]. The cache is bounded all the same ([`MAX_CACHED`]):
//! when full it starts again empty.

mod cgroup_path;
mod filter;
mod runtime;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use super::cgroup::{self, CgroupPaths};
use super::{DecodeError, Decoder};
use crate::spec::DecoderSpec;
pub use runtime::Identity;

/// How long a container without readable metadata stays so before its
/// runtime's files are read again.
const RETRY_INTERVAL: Duration = Duration::from_secs(10);

/// Cgroups whose identity is kept; far more than a node runs at once.
const MAX_CACHED: usize = 16_384;

/// Where the container decoders look: the host's `/` (a DaemonSet mounts
/// the host's directories elsewhere) and what non-container cgroups become.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Where the host's root is: its `/sys/fs/cgroup`, `/run` and
    /// `/var/lib` are read below it.
    pub root: PathBuf,
    /// The value of a cgroup that is not a container's; None: its path.
    pub host: Option<String>,
    /// `FIELD=REGEX` rules of the containers whose keys are kept, and of
    /// those dropped (see [`filter`]).
    pub include: Vec<String>,
    pub exclude: Vec<String>,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            root: PathBuf::from("/"),
            host: None,
            include: Vec::new(),
            exclude: Vec::new(),
        }
    }
}

static SETTINGS: OnceLock<Settings> = OnceLock::new();
static FILTER: OnceLock<filter::Filter> = OnceLock::new();

/// Sets where the container decoders look and which containers they keep,
/// once, before any is built; the root must be a directory.
pub fn configure(settings: Settings) -> Result<()> {
    if let Err(err) = std::fs::read_dir(&settings.root) {
        bail!("--container-root {}: {err}", settings.root.display());
    }
    let compiled = filter::Filter::new(&settings.include, &settings.exclude)?;
    let set = SETTINGS.get_or_init(|| settings.clone());
    FILTER.get_or_init(|| compiled);
    if *set != settings {
        bail!("the container decoders were configured already, with {set:?}");
    }
    Ok(())
}

fn settings() -> &'static Settings {
    SETTINGS.get_or_init(Settings::default)
}

/// The field of the identity a decoder gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Name,
    Id,
    Image,
    KubeNamespace,
    KubePod,
    KubeContainer,
}

impl Field {
    /// The decoder's name in configs.
    fn decoder(self) -> &'static str {
        match self {
            Field::Name => "container_name",
            Field::Id => "container_id",
            Field::Image => "container_image",
            Field::KubeNamespace => "kube_namespace",
            Field::KubePod => "kube_pod",
            Field::KubeContainer => "kube_container",
        }
    }

    /// Whether the field groups containers (a namespace, a pod), which a
    /// cgroup that is no container's has none of.
    fn is_kube_grouping(self) -> bool {
        matches!(self, Field::KubeNamespace | Field::KubePod)
    }

    fn of(self, identity: &Identity) -> &str {
        match self {
            Field::Name => &identity.name,
            Field::Id => &identity.id,
            Field::Image => &identity.image,
            Field::KubeNamespace => &identity.namespace,
            Field::KubePod => &identity.pod,
            Field::KubeContainer => &identity.kube_container,
        }
    }
}

/// What a cgroup id is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Owner {
    Container(Arc<Identity>),
    /// Not a container's: the cgroup's path as the host shows it.
    Host(Arc<str>),
    /// No such cgroup (maybe gone before the tree was walked).
    Unknown,
}

/// A lookup kept: the owner, or why its runtime's files could not be read,
/// and whether to read them again later.
struct Cached {
    owner: Result<Owner, String>,
    retry_after: Option<Instant>,
}

/// Identities by cgroup id, from one cgroup tree and one host root.
pub struct Identities {
    paths: &'static CgroupPaths,
    root: PathBuf,
    cache: Mutex<Cache>,
}

#[derive(Default)]
struct Cache {
    entries: HashMap<u64, Cached>,
    /// The walk of `paths` after which gone cgroups were last dropped.
    pruned_at: u64,
}

impl Identities {
    fn new(paths: &'static CgroupPaths, root: PathBuf) -> Identities {
        Identities {
            paths,
            root,
            cache: Mutex::new(Cache::default()),
        }
    }

    /// Who cgroup `id` belongs to; Err names the runtime file that could
    /// not be read, and why.
    fn owner(&self, id: u64) -> Result<Owner, String> {
        let mut guard = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        let Cache {
            entries: cache,
            pruned_at,
        } = &mut *guard;
        // Cgroups the tree's walks have forgotten are dropped first, so that
        // what is kept is the identities of the containers there are.
        self.paths.forget_gone(cache, pruned_at);
        if let Some(cached) = cache.get(&id) {
            if cached.retry_after.is_none_or(|at| Instant::now() < at) {
                return cached.owner.clone();
            }
        }
        let Some(path) = self.paths.path(id) else {
            return Ok(Owner::Unknown);
        };
        let (owner, complete) = self.look_up(&path);
        if cache.len() >= MAX_CACHED {
            cache.clear();
        }
        let retry_after = (!complete).then(|| Instant::now() + RETRY_INTERVAL);
        cache.insert(
            id,
            Cached {
                owner: owner.clone(),
                retry_after,
            },
        );
        owner
    }

    /// The owner of the cgroup at `path`, and whether that is final (its
    /// runtime's files were read, or it is no container).
    fn look_up(&self, path: &Path) -> (Result<Owner, String>, bool) {
        let Some(container) = cgroup_path::container_id(path) else {
            return (Ok(Owner::Host(self.host_path(path).into())), true);
        };
        match runtime::identity(&self.root, container) {
            Ok(Some(identity)) => (Ok(Owner::Container(Arc::new(identity))), true),
            Ok(None) => {
                let identity = Identity {
                    id: container.to_string(),
                    name: container.chars().take(12).collect(),
                    ..Identity::default()
                };
                (Ok(Owner::Container(Arc::new(identity))), false)
            }
            Err(reason) => (Err(reason), false),
        }
    }

    /// The cgroup at `path` as /proc/PID/cgroup and systemd name it: its
    /// path below the v2 hierarchy's root (`/system.slice/ssh.service`, `/`
    /// for the root), wherever the tree is mounted.
    fn host_path(&self, path: &Path) -> String {
        match path.strip_prefix(self.paths.root()) {
            Ok(rest) => format!("/{}", rest.display()),
            Err(_) => path.display().to_string(),
        }
    }
}

/// The host's identities, shared by every container decoder.
fn system() -> &'static Identities {
    static SYSTEM: OnceLock<Identities> = OnceLock::new();
    static HOST_PATHS: CgroupPaths = CgroupPaths::new(host_cgroup_root, Duration::from_secs(1));
    SYSTEM.get_or_init(|| {
        let root = settings().root.clone();
        let paths = if root == Path::new("/") {
            &cgroup::SYSTEM
        } else {
            &HOST_PATHS
        };
        Identities::new(paths, root)
    })
}

/// The host's cgroup v2 tree under the configured root.
fn host_cgroup_root() -> PathBuf {
    cgroup::v2_root(&settings().root.join("sys/fs/cgroup"))
}

/// One field of the identity of the cgroup whose decimal id is the input.
pub struct ContainerField {
    field: Field,
    identities: &'static Identities,
    host: Option<String>,
    /// Keys of containers it drops.
    filter: &'static filter::Filter,
}

impl Decoder for ContainerField {
    fn decode(&self, input: &[u8], out: &mut Vec<u8>) -> Result<(), DecodeError> {
        let name = self.field.decoder();
        let id = std::str::from_utf8(input)
            .ok()
            .and_then(|text| text.parse::<u64>().ok())
            .ok_or_else(|| {
                DecodeError::new(
                    name,
                    format!("input is not a decimal number: put `uint` before `{name}`"),
                )
            })?;
        let owner = self
            .identities
            .owner(id)
            .map_err(|reason| DecodeError::new(name, reason))?;
        let identity = match &owner {
            Owner::Container(identity) => Some(identity.as_ref()),
            Owner::Host(_) | Owner::Unknown => None,
        };
        if !self.filter.keeps(identity) {
            return Err(DecodeError::skip(name));
        }
        match owner {
            Owner::Container(identity) => {
                out.extend_from_slice(self.field.of(&identity).as_bytes())
            }
            // Not in Kubernetes: no namespace or pod.
            Owner::Host(_) if self.field.is_kube_grouping() => {}
            Owner::Host(path) => {
                out.extend_from_slice(self.host.as_deref().unwrap_or(&path).as_bytes())
            }
            Owner::Unknown => out.extend_from_slice(format!("unknown_cgroup_id:{id}").as_bytes()),
        }
        Ok(())
    }
}

fn build(field: Field, spec: &DecoderSpec) -> Result<Box<dyn Decoder>> {
    super::no_options(spec)?;
    Ok(Box::new(ContainerField {
        field,
        identities: system(),
        host: settings().host.clone(),
        filter: FILTER.get_or_init(filter::Filter::default),
    }))
}

pub fn build_name(spec: &DecoderSpec, _size: usize) -> Result<Box<dyn Decoder>> {
    build(Field::Name, spec)
}

pub fn build_id(spec: &DecoderSpec, _size: usize) -> Result<Box<dyn Decoder>> {
    build(Field::Id, spec)
}

pub fn build_image(spec: &DecoderSpec, _size: usize) -> Result<Box<dyn Decoder>> {
    build(Field::Image, spec)
}

pub fn build_kube_namespace(spec: &DecoderSpec, _size: usize) -> Result<Box<dyn Decoder>> {
    build(Field::KubeNamespace, spec)
}

pub fn build_kube_pod(spec: &DecoderSpec, _size: usize) -> Result<Box<dyn Decoder>> {
    build(Field::KubePod, spec)
}

pub fn build_kube_container(spec: &DecoderSpec, _size: usize) -> Result<Box<dyn Decoder>> {
    build(Field::KubeContainer, spec)
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::MetadataExt;

    use super::runtime::tests::*;
    use super::*;
    use crate::decode::{check_table, lasting_temp_dir};

    /// A host root: the runtimes' files and a cgroup tree with a cgroup per
    /// fixture container, a service and a conmon scope.
    fn host() -> &'static Path {
        static DIR: OnceLock<PathBuf> = OnceLock::new();
        DIR.get_or_init(|| {
            let dir = lasting_temp_dir();
            fixture(&dir);
            dir
        })
    }

    fn cgroups() -> PathBuf {
        host().join("sys/fs/cgroup")
    }

    /// Makes the cgroup `path` (under the fixture's tree); its id as text.
    fn cgroup(path: &str) -> String {
        let dir = cgroups().join(path);
        fs::create_dir_all(&dir).unwrap();
        fs::metadata(dir).unwrap().ino().to_string()
    }

    fn decoder(field: Field, host_value: Option<&str>) -> ContainerField {
        filtered(field, host_value, &[])
    }

    /// A decoder keeping only what the `--container-include` rules `include` keep.
    fn filtered(field: Field, host_value: Option<&str>, include: &[&str]) -> ContainerField {
        static PATHS: CgroupPaths = CgroupPaths::new(cgroups, Duration::ZERO);
        static IDENTITIES: OnceLock<Identities> = OnceLock::new();
        let identities = IDENTITIES.get_or_init(|| Identities::new(&PATHS, host().to_path_buf()));
        ContainerField {
            field,
            identities,
            host: host_value.map(str::to_string),
            filter: Box::leak(Box::new(
                filter::Filter::new(
                    &include.iter().map(|r| r.to_string()).collect::<Vec<_>>(),
                    &[],
                )
                .unwrap(),
            )),
        }
    }

    /// Every field, in the order of the rows' columns below.
    const FIELDS: [Field; 6] = [
        Field::Name,
        Field::Id,
        Field::Image,
        Field::KubeNamespace,
        Field::KubePod,
        Field::KubeContainer,
    ];

    #[test]
    fn gives_each_field_of_the_cgroups_container() {
        let pod = "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-podab_cd.slice";
        let web = cgroup(&format!("{pod}/cri-containerd-{CONTAINERD}.scope"));
        let api = cgroup(&format!("kubepods/burstable/podef/{CRIO}"));
        let busy = cgroup(&format!("machine.slice/libpod-{PODMAN}.scope/container"));
        let db = cgroup(&format!("system.slice/docker-{DOCKER}.scope"));
        let bare = cgroup(&format!("system.slice/docker-{NO_METADATA}.scope"));
        let ssh = cgroup("system.slice/ssh.service");
        let conmon = cgroup(&format!("machine.slice/libpod-conmon-{PODMAN}.scope"));
        // Below the tree's root, as /proc/PID/cgroup shows them.
        let ssh_path = "/system.slice/ssh.service";
        let conmon_path = format!("/machine.slice/libpod-conmon-{PODMAN}.scope");
        let short = &NO_METADATA[..12];
        let rows: [(&str, [&str; 6]); 5] = [
            (
                &web,
                [
                    "web",
                    CONTAINERD,
                    "docker.io/library/nginx:1.27",
                    "shop",
                    "web-7d9f",
                    "web",
                ],
            ),
            (
                &api,
                ["api", CRIO, "quay.io/app/api:2", "backend", "api-0", "api"],
            ),
            (
                &busy,
                [
                    "busy",
                    PODMAN,
                    "docker.io/library/busybox:latest",
                    "",
                    "",
                    "",
                ],
            ),
            (&db, ["db", DOCKER, "postgres:16", "", "", ""]),
            (&bare, [short, NO_METADATA, "", "", "", ""]),
        ];
        for (column, field) in FIELDS.into_iter().enumerate() {
            let mut cases: Vec<(&[u8], Result<&str, &str>)> = rows
                .iter()
                .map(|(id, values)| (id.as_bytes(), Ok(values[column])))
                .collect();
            // A host cgroup is in no Kubernetes namespace or pod.
            let grouping = field.is_kube_grouping();
            let host_cgroup = |path| Ok(if grouping { "" } else { path });
            cases.push((ssh.as_bytes(), host_cgroup(ssh_path)));
            cases.push((conmon.as_bytes(), host_cgroup(conmon_path.as_str())));
            cases.push((b"1", Ok("unknown_cgroup_id:1")));
            cases.push((b"", Err("put `uint` before")));
            cases.push((&[1, 0, 0, 0, 0, 0, 0, 0], Err("not a decimal number")));
            check_table(&decoder(field, None), &cases);
            let hosted = [
                (ssh.as_bytes(), host_cgroup("host")),
                (web.as_bytes(), Ok(rows[0].1[column])),
            ];
            check_table(&decoder(field, Some("host")), &hosted);
        }
    }

    #[test]
    fn a_filter_drops_the_keys_of_other_containers() {
        let web = cgroup(&format!("shop.slice/cri-containerd-{CONTAINERD}.scope"));
        let api = cgroup(&format!("kubepods/podef/{CRIO}"));
        let ssh = cgroup("system.slice/ssh.service");
        let skip = "label set skipped";
        let cases: [(&[u8], Result<&str, &str>); 3] = [
            (web.as_bytes(), Ok("web-7d9f")),
            (api.as_bytes(), Err(skip)),
            (ssh.as_bytes(), Err(skip)),
        ];
        check_table(
            &filtered(Field::KubePod, None, &["namespace=^shop$"]),
            &cases,
        );
    }

    #[test]
    fn an_unreadable_runtime_file_is_an_error_naming_it() {
        let broken = cgroup(&format!("system.slice/docker-{UNREADABLE}.scope"));
        let reason = format!("{UNREADABLE}/config.v2.json: not the JSON");
        check_table(
            &decoder(Field::Name, None),
            &[(broken.as_bytes(), Err(reason.as_str()))],
        );
    }

    #[test]
    fn the_cache_keeps_identities_and_retries_missing_ones() {
        static PATHS: CgroupPaths = CgroupPaths::new(cgroups, Duration::ZERO);
        let identities = Identities::new(&PATHS, host().to_path_buf());
        let late = cgroup(&format!("system.slice/docker-{}.scope", "9".repeat(64)));
        let late_id: u64 = late.parse().unwrap();
        let web = cgroup(&format!("system.slice/docker-{DOCKER}.scope"));
        let web_id: u64 = web.parse().unwrap();
        assert!(identities.owner(web_id).is_ok());
        let Ok(Owner::Container(first)) = identities.owner(late_id) else {
            panic!("not a container");
        };
        assert_eq!(first.name, "999999999999");
        let cached = identities.cache.lock().unwrap();
        assert!(
            cached.entries[&late_id].retry_after.is_some(),
            "a miss is asked again"
        );
    }

    /// A container's identity goes with its cgroup: kept while a map read
    /// one last time may still name it (the tree's walk keeps a removed
    /// cgroup for one walk), then forgotten; other containers' stay.
    #[test]
    fn identities_of_removed_cgroups_are_forgotten() {
        // A host of its own: no other test's walk sees or reuses its cgroups.
        fn host() -> &'static Path {
            static DIR: OnceLock<PathBuf> = OnceLock::new();
            DIR.get_or_init(|| {
                let dir = lasting_temp_dir();
                fixture(&dir);
                dir
            })
        }
        fn cgroups() -> PathBuf {
            host().join("sys/fs/cgroup")
        }
        static PATHS: CgroupPaths = CgroupPaths::new(cgroups, Duration::ZERO);
        let identities = Identities::new(&PATHS, host().to_path_buf());
        let gone = cgroups().join(format!("libpod_parent/libpod-{PODMAN}"));
        let stays = cgroups().join(format!("system.slice/docker-{DOCKER}.scope"));
        let ids: Vec<u64> = [&gone, &stays]
            .iter()
            .map(|dir| {
                fs::create_dir_all(dir).unwrap();
                fs::metadata(dir).unwrap().ino()
            })
            .collect();
        let (gone_id, stays_id) = (ids[0], ids[1]);
        let name = |id| match identities.owner(id) {
            Ok(Owner::Container(identity)) => identity.name.clone(),
            other => format!("{other:?}"),
        };
        assert_eq!(
            (name(gone_id), name(stays_id)),
            ("busy".into(), "db".into())
        );
        fs::remove_dir(&gone).unwrap();
        // Each row: the lookup of an id, then whose identities are cached.
        let unknown = format!("{:?}", Ok::<Owner, String>(Owner::Unknown));
        let rows: [(u64, &str, &[u64]); 4] = [
            (1, &unknown, &[gone_id, stays_id]), // a miss walks: gone once
            (gone_id, "busy", &[gone_id, stays_id]), // read one last time
            (1, &unknown, &[gone_id, stays_id]), // gone twice: the path goes
            (gone_id, &unknown, &[stays_id]),    // and the identity with it
        ];
        for (row, (id, want, cached)) in rows.into_iter().enumerate() {
            assert_eq!(name(id), want, "row {row}");
            let mut held: Vec<u64> = identities
                .cache
                .lock()
                .unwrap()
                .entries
                .keys()
                .copied()
                .collect();
            held.sort();
            let mut cached = cached.to_vec();
            cached.sort();
            assert_eq!(held, cached, "row {row}");
        }
        assert_eq!(name(stays_id), "db");
    }

    #[test]
    fn host_cgroups_are_named_below_the_trees_root_wherever_it_is_mounted() {
        fn mounted() -> PathBuf {
            PathBuf::from("/host/sys/fs/cgroup/unified")
        }
        static PATHS: CgroupPaths = CgroupPaths::new(mounted, Duration::ZERO);
        let identities = Identities::new(&PATHS, PathBuf::from("/host"));
        for (path, shown) in [
            (
                "/host/sys/fs/cgroup/unified/system.slice/ssh.service",
                "/system.slice/ssh.service",
            ),
            ("/host/sys/fs/cgroup/unified", "/"),
            ("/elsewhere/a", "/elsewhere/a"),
        ] {
            assert_eq!(identities.host_path(Path::new(path)), shown, "{path}");
        }
    }

    #[test]
    fn every_decoder_is_known_and_takes_no_options() {
        for field in [
            "container_name",
            "container_id",
            "container_image",
            "kube_namespace",
            "kube_pod",
            "kube_container",
        ] {
            assert!(crate::decode::names().any(|name| name == field), "{field}");
            let mut spec = DecoderSpec::named(field);
            spec.allow_unknown = true;
            assert!(crate::decode::Chain::build(&[spec], 8).is_err(), "{field}");
        }
    }
}
