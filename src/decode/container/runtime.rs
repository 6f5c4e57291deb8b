//! A container's identity read from its runtime's own files, by container
//! id; no runtime API is called. `root` is where the host's `/` is (`/`, or
//! where a DaemonSet mounts the host's directories).
//!
//! Tried in turn, the first file that exists wins:
//! - containerd: the OCI bundle's `config.json` under
//!   `/run/containerd/io.containerd.runtime.v2.task/<namespace>/<id>/`
//!   (containerd `core/runtime/v2/bundle.go`, `NewBundle`: the bundle is
//!   `<state>/<namespace>/<id>`), its annotations written by the CRI plugin
//!   (`internal/cri/annotations/annotations.go`: `io.kubernetes.cri.*`).
//! - CRI-O and podman: the OCI spec they keep in containers/storage,
//!   `/var/lib/containers/storage/<driver>-containers/<id>/userdata/config.json`
//!   (or under `/run/containers/storage`), annotated by CRI-O
//!   (`pkg/annotations/internal.go`: `io.kubernetes.cri-o.*`, the kubelet's
//!   labels in `io.kubernetes.cri-o.Labels`); podman's name and image are in
//!   containers/storage's `containers.json` (containers/storage
//!   `containers.go`, `Container`: `id`, `names`, `metadata`, the latter
//!   podman's `RuntimeContainerMetadata` as JSON, `libpod/storage.go`:
//!   `name`, `image-name`).
//! - docker: `/var/lib/docker/containers/<id>/config.v2.json` (moby
//!   `daemon/container/container.go`, `Container`: `Name`, `Config.Image`,
//!   `Config.Labels`).
//!
//! The Kubernetes names come from the kubelet's container labels (kubernetes
//! `pkg/kubelet/types/labels.go`: `io.kubernetes.pod.name`,
//! `io.kubernetes.pod.namespace`, `io.kubernetes.container.name`), which
//! CRI-O and cri-dockerd keep, or containerd's CRI annotations.

use std::collections::HashMap;
use std::fs::File;
use std::io::{ErrorKind, Read};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Deserialize;

/// Who a container is. Empty strings where its runtime does not say.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    pub id: String,
    /// Kubernetes' container name in a pod, else the runtime's name, else
    /// the id's first 12 digits (as `docker ps` shows it).
    pub name: String,
    pub image: String,
    pub namespace: String,
    pub pod: String,
    /// The container's name in its pod; `POD` for the pod's sandbox (the
    /// kubelet's name for it).
    pub kube_container: String,
}

/// Larger metadata files are refused: a JSON value held in memory whole.
const MAX_FILE_BYTES: u64 = 16 << 20;

/// The CRI annotations containerd writes (containerd
/// `internal/cri/annotations/annotations.go`).
const CRI_SANDBOX_NAMESPACE: &str = "io.kubernetes.cri.sandbox-namespace";
const CRI_SANDBOX_NAME: &str = "io.kubernetes.cri.sandbox-name";
const CRI_CONTAINER_NAME: &str = "io.kubernetes.cri.container-name";
const CRI_CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
const CRI_IMAGE_NAME: &str = "io.kubernetes.cri.image-name";
const CRI_SANDBOX_IMAGE_NAME: &str = "io.kubernetes.cri.podsandbox.image-name";
/// CRI-O's (cri-o `pkg/annotations/internal.go`).
const CRIO_LABELS: &str = "io.kubernetes.cri-o.Labels";
const CRIO_CONTAINER_TYPE: &str = "io.kubernetes.cri-o.ContainerType";
const CRIO_IMAGE: &str = "io.kubernetes.cri-o.Image";
const CRIO_IMAGE_NAME: &str = "io.kubernetes.cri-o.ImageName";
/// The kubelet's labels (kubernetes `pkg/kubelet/types/labels.go`).
const KUBE_POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
const KUBE_POD_NAME: &str = "io.kubernetes.pod.name";
const KUBE_CONTAINER_NAME: &str = "io.kubernetes.container.name";

/// The part of an OCI runtime spec read here.
#[derive(Deserialize)]
struct OciSpec {
    #[serde(default)]
    annotations: HashMap<String, String>,
}

/// One entry of containers/storage's `containers.json`.
#[derive(Deserialize)]
struct StoredContainer {
    id: String,
    #[serde(default)]
    names: Vec<String>,
    #[serde(default)]
    metadata: String,
}

/// podman's `RuntimeContainerMetadata`, a stored container's `metadata`.
#[derive(Deserialize, Default)]
struct PodmanMetadata {
    #[serde(default, rename = "image-name")]
    image_name: String,
    #[serde(default)]
    name: String,
}

/// The part of docker's `config.v2.json` read here.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerContainer {
    #[serde(default)]
    name: String,
    #[serde(default)]
    config: Option<DockerConfig>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerConfig {
    #[serde(default)]
    image: String,
    #[serde(default)]
    labels: Option<HashMap<String, String>>,
}

/// The identity of container `id` from the first runtime that has its
/// files, or None when none has; Err (errno and path) when a file exists
/// but cannot be read or is not what its runtime writes.
pub fn identity(root: &Path, id: &str) -> Result<Option<Identity>, String> {
    let found = match containerd(root, id)? {
        Some(found) => Some(found),
        None => match storage(root, id)? {
            Some(found) => Some(found),
            None => docker(root, id)?,
        },
    };
    Ok(found.map(|mut identity| {
        identity.id = id.to_string();
        if identity.name.is_empty() {
            identity.name = id.chars().take(12).collect();
        }
        identity
    }))
}

/// containerd: the bundle's spec in whichever containerd namespace holds it.
fn containerd(root: &Path, id: &str) -> Result<Option<Identity>, String> {
    let tasks = root.join("run/containerd/io.containerd.runtime.v2.task");
    let namespaces = match std::fs::read_dir(&tasks) {
        Ok(entries) => entries,
        Err(err) if absent(&err) => return Ok(None),
        Err(err) => return Err(format!("cannot read {}: {err}", tasks.display())),
    };
    for namespace in namespaces.flatten() {
        let spec: Option<OciSpec> = read_json(&namespace.path().join(id).join("config.json"))?;
        if let Some(spec) = spec {
            return Ok(Some(from_annotations(&spec.annotations)));
        }
    }
    Ok(None)
}

/// CRI-O and podman: the spec in containers/storage, podman's name and image
/// from its container list.
fn storage(root: &Path, id: &str) -> Result<Option<Identity>, String> {
    let bases = ["var/lib/containers/storage", "run/containers/storage"];
    for containers in bases.iter().flat_map(|base| driver_dirs(&root.join(base))) {
        let spec: Option<OciSpec> = read_json(&containers.join(id).join("userdata/config.json"))?;
        let Some(spec) = spec else {
            continue;
        };
        let mut identity = from_annotations(&spec.annotations);
        if identity.name.is_empty() || identity.image.is_empty() {
            let stored = podman_metadata(&containers, id)?;
            if identity.name.is_empty() {
                identity.name = stored.name;
            }
            if identity.image.is_empty() {
                identity.image = stored.image_name;
            }
        }
        return Ok(Some(identity));
    }
    Ok(None)
}

/// containers/storage's directories of containers in `base`, one per
/// storage driver used there: `<driver>-containers` (containers/storage
/// `store.go`, `load`: `driverPrefix + "containers"`), `overlay-` on most
/// hosts, `vfs-` where overlay cannot be used (on an overlay, in the VMs).
fn driver_dirs(base: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(base) else {
        return Vec::new();
    };
    let mut dirs: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok())
        .filter(|entry| {
            entry
                .file_name()
                .to_str()
                .is_some_and(|name| name.ends_with("-containers"))
        })
        .map(|entry| entry.path())
        .collect();
    dirs.sort();
    dirs
}

/// Container `id`'s name and image from containers/storage's lists in
/// `containers` (the persistent and the volatile one).
fn podman_metadata(containers: &Path, id: &str) -> Result<PodmanMetadata, String> {
    for list in ["containers.json", "volatile-containers.json"] {
        let path = containers.join(list);
        let stored: Option<Vec<StoredContainer>> = read_json(&path)?;
        let Some(entry) = stored.into_iter().flatten().find(|entry| entry.id == id) else {
            continue;
        };
        let mut metadata: PodmanMetadata = if entry.metadata.is_empty() {
            PodmanMetadata::default()
        } else {
            serde_json::from_str(&entry.metadata).map_err(|err| {
                format!(
                    "{}: metadata of {id} is not podman's: {err}",
                    path.display()
                )
            })?
        };
        if metadata.name.is_empty() {
            metadata.name = entry.names.into_iter().next().unwrap_or_default();
        }
        return Ok(metadata);
    }
    Ok(PodmanMetadata::default())
}

/// docker: its own record of the container; the kubelet's labels when
/// cri-dockerd made it.
fn docker(root: &Path, id: &str) -> Result<Option<Identity>, String> {
    let path = root
        .join("var/lib/docker/containers")
        .join(id)
        .join("config.v2.json");
    let container: Option<DockerContainer> = read_json(&path)?;
    Ok(container.map(|container| {
        let (image, labels) = container
            .config
            .map(|config| (config.image, config.labels.unwrap_or_default()))
            .unwrap_or_default();
        let mut identity = from_annotations(&labels);
        identity.image = image;
        if identity.name.is_empty() {
            // docker keeps names with a leading slash.
            identity.name = container.name.trim_start_matches('/').to_string();
        }
        identity
    }))
}

/// An identity from CRI annotations (containerd's, CRI-O's) or the
/// kubelet's labels, whichever the map has.
fn from_annotations(annotations: &HashMap<String, String>) -> Identity {
    let crio_labels: HashMap<String, String> = annotations
        .get(CRIO_LABELS)
        .and_then(|labels| serde_json::from_str(labels).ok())
        .unwrap_or_default();
    let first = |keys: &[&str]| -> String {
        keys.iter()
            .find_map(|key| annotations.get(*key).or_else(|| crio_labels.get(*key)))
            .filter(|value| !value.is_empty())
            .cloned()
            .unwrap_or_default()
    };
    let namespace = first(&[CRI_SANDBOX_NAMESPACE, KUBE_POD_NAMESPACE]);
    let pod = first(&[CRI_SANDBOX_NAME, KUBE_POD_NAME]);
    let mut kube_container = first(&[CRI_CONTAINER_NAME, KUBE_CONTAINER_NAME]);
    let sandbox = first(&[CRI_CONTAINER_TYPE, CRIO_CONTAINER_TYPE]) == "sandbox";
    if kube_container.is_empty() && sandbox && !pod.is_empty() {
        kube_container = "POD".to_string();
    }
    Identity {
        id: String::new(),
        name: kube_container.clone(),
        image: first(&[
            CRI_IMAGE_NAME,
            CRI_SANDBOX_IMAGE_NAME,
            CRIO_IMAGE,
            CRIO_IMAGE_NAME,
        ]),
        namespace,
        pod,
        kube_container,
    }
}

/// Whether a file's absence is what `err` says: it is then another runtime's
/// container, or gone.
fn absent(err: &std::io::Error) -> bool {
    matches!(err.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory)
}

/// The JSON file at `path`, None if it does not exist.
fn read_json<T: DeserializeOwned>(path: &PathBuf) -> Result<Option<T>, String> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(err) if absent(&err) => return Ok(None),
        Err(err) => return Err(format!("cannot read {}: {err}", path.display())),
    };
    let mut text = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut text)
        .map_err(|err| format!("cannot read {}: {err}", path.display()))?;
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(format!(
            "{} is larger than {MAX_FILE_BYTES} bytes",
            path.display()
        ));
    }
    serde_json::from_slice(&text)
        .map(Some)
        .map_err(|err| format!("{}: not the JSON its runtime writes: {err}", path.display()))
}

#[cfg(test)]
pub(super) mod tests {
    use std::fs;

    use super::*;

    pub const CONTAINERD: &str = "1111111111111111111111111111111111111111111111111111111111111111";
    pub const SANDBOX: &str = "2222222222222222222222222222222222222222222222222222222222222222";
    pub const CRIO: &str = "3333333333333333333333333333333333333333333333333333333333333333";
    pub const PODMAN: &str = "4444444444444444444444444444444444444444444444444444444444444444";
    pub const DOCKER: &str = "5555555555555555555555555555555555555555555555555555555555555555";
    pub const DOCKERSHIM: &str = "6666666666666666666666666666666666666666666666666666666666666666";
    pub const NO_METADATA: &str =
        "7777777777777777777777777777777777777777777777777777777777777777";
    pub const UNREADABLE: &str = "8888888888888888888888888888888888888888888888888888888888888888";

    fn write(root: &Path, path: &str, text: &str) {
        let path = root.join(path);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }

    /// Each runtime's files as it writes them, for the containers above.
    pub fn fixture(root: &Path) {
        let tasks = "run/containerd/io.containerd.runtime.v2.task/k8s.io";
        write(
            root,
            &format!("{tasks}/{CONTAINERD}/config.json"),
            r#"{"ociVersion":"1.1.0",
            "annotations":{"io.kubernetes.cri.container-type":"container",
            "io.kubernetes.cri.container-name":"web","io.kubernetes.cri.sandbox-name":"web-7d9f",
            "io.kubernetes.cri.sandbox-namespace":"shop","io.kubernetes.cri.image-name":"docker.io/library/nginx:1.27"}}"#,
        );
        write(
            root,
            &format!("{tasks}/{SANDBOX}/config.json"),
            r#"{"annotations":{
            "io.kubernetes.cri.container-type":"sandbox","io.kubernetes.cri.sandbox-name":"web-7d9f",
            "io.kubernetes.cri.sandbox-namespace":"shop","io.kubernetes.cri.podsandbox.image-name":"registry.k8s.io/pause:3.10"}}"#,
        );
        let storage = "var/lib/containers/storage/overlay-containers";
        write(
            root,
            &format!("{storage}/{CRIO}/userdata/config.json"),
            r#"{"annotations":{
            "io.kubernetes.cri-o.ContainerType":"container","io.kubernetes.cri-o.Image":"quay.io/app/api:2",
            "io.kubernetes.cri-o.Labels":"{\"io.kubernetes.container.name\":\"api\",\"io.kubernetes.pod.name\":\"api-0\",\"io.kubernetes.pod.namespace\":\"backend\"}"}}"#,
        );
        write(
            root,
            &format!("{storage}/{PODMAN}/userdata/config.json"),
            r#"{"annotations":{"io.container.manager":"libpod"}}"#,
        );
        write(
            root,
            &format!("{storage}/containers.json"),
            &format!(
                r#"[{{"id":"{PODMAN}","names":["busy"],
            "image":"abc","layer":"def","metadata":"{{\"image-name\":\"docker.io/library/busybox:latest\",\"image-id\":\"abc\",\"name\":\"busy\",\"created-at\":1}}"}}]"#
            ),
        );
        write(
            root,
            &format!("var/lib/docker/containers/{DOCKER}/config.v2.json"),
            r#"{"ID":"x","Name":"/db",
            "Config":{"Image":"postgres:16","Labels":null}}"#,
        );
        write(
            root,
            &format!("var/lib/docker/containers/{DOCKERSHIM}/config.v2.json"),
            r#"{"Name":"/k8s_app_app-1_ops_uid_0",
            "Config":{"Image":"app:1","Labels":{"io.kubernetes.container.name":"app",
            "io.kubernetes.pod.name":"app-1","io.kubernetes.pod.namespace":"ops"}}}"#,
        );
        write(
            root,
            &format!("var/lib/docker/containers/{UNREADABLE}/config.v2.json"),
            "{not json",
        );
    }

    fn identity(id: &str, name: &str, image: &str, kube: [&str; 3]) -> Identity {
        Identity {
            id: id.into(),
            name: name.into(),
            image: image.into(),
            namespace: kube[0].into(),
            pod: kube[1].into(),
            kube_container: kube[2].into(),
        }
    }

    /// What each fixture container's files say.
    fn expected() -> [(&'static str, Result<Option<Identity>, String>); 7] {
        [
            (
                CONTAINERD,
                Ok(Some(identity(
                    CONTAINERD,
                    "web",
                    "docker.io/library/nginx:1.27",
                    ["shop", "web-7d9f", "web"],
                ))),
            ),
            (
                SANDBOX,
                Ok(Some(identity(
                    SANDBOX,
                    "POD",
                    "registry.k8s.io/pause:3.10",
                    ["shop", "web-7d9f", "POD"],
                ))),
            ),
            (
                CRIO,
                Ok(Some(identity(
                    CRIO,
                    "api",
                    "quay.io/app/api:2",
                    ["backend", "api-0", "api"],
                ))),
            ),
            (
                PODMAN,
                Ok(Some(identity(
                    PODMAN,
                    "busy",
                    "docker.io/library/busybox:latest",
                    ["", "", ""],
                ))),
            ),
            (
                DOCKER,
                Ok(Some(identity(DOCKER, "db", "postgres:16", ["", "", ""]))),
            ),
            (
                DOCKERSHIM,
                Ok(Some(identity(
                    DOCKERSHIM,
                    "app",
                    "app:1",
                    ["ops", "app-1", "app"],
                ))),
            ),
            (NO_METADATA, Ok(None)),
        ]
    }

    #[test]
    fn reads_each_runtimes_files() {
        let dir = tempfile::tempdir().unwrap();
        fixture(dir.path());
        for (id, want) in expected() {
            assert_eq!(super::identity(dir.path(), id), want, "{id}");
        }
        let err = super::identity(dir.path(), UNREADABLE).unwrap_err();
        assert!(
            err.contains(&format!("{UNREADABLE}/config.v2.json: not the JSON")),
            "{err}"
        );
    }

    #[test]
    fn names_the_path_and_errno_of_an_unreadable_file() {
        let dir = tempfile::tempdir().unwrap();
        // A directory where a file should be: EISDIR on read.
        let path = format!("var/lib/docker/containers/{DOCKER}/config.v2.json");
        fs::create_dir_all(dir.path().join(&path)).unwrap();
        let err = super::identity(dir.path(), DOCKER).unwrap_err();
        assert!(err.starts_with("cannot read "), "{err}");
        assert!(err.contains(&path) && err.contains("os error 21"), "{err}");
        assert_eq!(super::identity(Path::new("/nonexistent"), DOCKER), Ok(None));
    }
}
