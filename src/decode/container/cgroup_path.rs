//! Which container a cgroup belongs to, from its path alone: the container
//! id that container runtimes write into the names of the cgroups they make.
//!
//! The shapes, by cgroup driver:
//! - systemd: a scope named `<runtime>-<id>.scope` (`docker-`, `libpod-`,
//!   `crio-`, `cri-containerd-`), e.g.
//!   `/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod<uid>.slice/cri-containerd-<id>.scope`;
//!   kubelet's systemd driver on a cgroupfs tree (kind, k3s) writes
//!   `<slice>:<runtime>:<id>` instead.
//! - cgroupfs: the id itself as a directory (`/docker/<id>`,
//!   `/kubepods/burstable/pod<uid>/<id>`, containerd's `/<namespace>/<id>`),
//!   or podman's `/libpod_parent/libpod-<id>`.
//!
//! A cgroup below a container's (crun's `<scope>/container`, systemd run
//! inside a container) belongs to that container, so the deepest component
//! that names one decides. The monitors beside containers
//! (`libpod-conmon-<id>.scope`, `crio-conmon-<id>.scope`) are not in the
//! container: their id is not where a container's is, and they keep their
//! path.

use std::path::Path;

/// Prefixes of the systemd scopes runtimes create, `<prefix><id>.scope`.
const SCOPE_PREFIXES: [&str; 4] = ["docker-", "libpod-", "crio-", "cri-containerd-"];

/// The runtimes kubelet's systemd cgroup driver names in `<slice>:<runtime>:<id>`.
const SYSTEMD_DRIVER_RUNTIMES: [&str; 3] = ["docker", "crio", "cri-containerd"];

/// The id of the container cgroup `path` belongs to, if any.
pub fn container_id(path: &Path) -> Option<&str> {
    path.iter()
        .rev()
        .filter_map(|component| component.to_str())
        .find_map(component_id)
}

/// The container id one path component names, if it names one.
fn component_id(component: &str) -> Option<&str> {
    if let Some(stem) = component.strip_suffix(".scope") {
        return SCOPE_PREFIXES
            .iter()
            .find_map(|prefix| stem.strip_prefix(prefix))
            .filter(|id| is_container_id(id));
    }
    if let Some(id) = component.strip_prefix("libpod-") {
        return Some(id).filter(|id| is_container_id(id));
    }
    let mut parts = component.rsplitn(3, ':');
    if let (Some(id), Some(runtime), Some(_slice)) = (parts.next(), parts.next(), parts.next()) {
        return (SYSTEMD_DRIVER_RUNTIMES.contains(&runtime) && is_container_id(id)).then_some(id);
    }
    Some(component).filter(|id| is_container_id(id))
}

/// Whether `text` is a container id as docker, containerd, CRI-O and podman
/// make them: 64 lowercase hexadecimal digits (a SHA-256).
fn is_container_id(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    /// Paths of every shape a container's cgroup has, and the id each names.
    fn shapes() -> Vec<(String, Option<&'static str>)> {
        let pod = "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234_5678.slice";
        let cases: Vec<(String, Option<&'static str>)> = vec![
            (
                format!("/sys/fs/cgroup/system.slice/docker-{ID}.scope"),
                Some(ID),
            ),
            (
                format!("/sys/fs/cgroup/machine.slice/libpod-{ID}.scope"),
                Some(ID),
            ),
            (
                format!("/sys/fs/cgroup/machine.slice/libpod-{ID}.scope/container"),
                Some(ID),
            ),
            (format!("/sys/fs/cgroup/{pod}/crio-{ID}.scope"), Some(ID)),
            (
                format!("/sys/fs/cgroup/{pod}/cri-containerd-{ID}.scope"),
                Some(ID),
            ),
            (
                format!("/sys/fs/cgroup/kubepods-besteffort-pod9.slice:cri-containerd:{ID}"),
                Some(ID),
            ),
            (
                format!("/sys/fs/cgroup/kubepods-pod9.slice:crio:{ID}"),
                Some(ID),
            ),
            (
                format!("/sys/fs/cgroup/kubepods/burstable/pod1234-5678/{ID}"),
                Some(ID),
            ),
            (format!("/sys/fs/cgroup/docker/{ID}"), Some(ID)),
            (format!("/sys/fs/cgroup/default/{ID}"), Some(ID)),
            (
                format!("/sys/fs/cgroup/libpod_parent/libpod-{ID}"),
                Some(ID),
            ),
            // systemd inside a container: still that container.
            (
                format!("/sys/fs/cgroup/system.slice/docker-{ID}.scope/system.slice/cron.service"),
                Some(ID),
            ),
        ];
        cases
    }

    /// Paths that name no container: monitors, services, near misses.
    fn not_containers() -> Vec<String> {
        let pod = "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234_5678.slice";
        vec![
            format!("/sys/fs/cgroup/machine.slice/libpod-conmon-{ID}.scope"),
            format!("/sys/fs/cgroup/{pod}/crio-conmon-{ID}.scope"),
            format!("/sys/fs/cgroup/{pod}"),
            "/sys/fs/cgroup/system.slice/ssh.service".into(),
            "/sys/fs/cgroup/user.slice/user-1000.slice/session-2.scope".into(),
            "/sys/fs/cgroup".into(),
            format!("/sys/fs/cgroup/docker/{}", &ID[..63]),
            format!("/sys/fs/cgroup/docker/{}", ID.to_uppercase()),
            format!("/sys/fs/cgroup/system.slice/docker-{ID}.service"),
            format!("/sys/fs/cgroup/x.slice:unknown:{ID}"),
        ]
    }

    #[test]
    fn finds_the_id_in_every_runtime_shape() {
        for (path, want) in &shapes() {
            assert_eq!(container_id(Path::new(path)), *want, "{path}");
        }
        for path in &not_containers() {
            assert_eq!(container_id(Path::new(path)), None, "{path}");
        }
    }
}
