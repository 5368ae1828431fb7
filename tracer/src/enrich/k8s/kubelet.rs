//! Namespace, pod and container names from what the kubelet leaves on the node, without
//! asking the container runtime (CRI): the log layout every log shipper reads, and the pod's
//! projected service-account volume.
//!
//! - `/var/log/pods/NAMESPACE_POD_UID/CONTAINER/N.log`: namespace and pod of a pod uid;
//! - `/var/log/containers/POD_NAMESPACE_CONTAINER-ID.log`: names of a container id;
//! - `/var/lib/kubelet/pods/UID/volumes/kubernetes.io~projected/*/namespace`: the namespace,
//!   when the logs are not there (a node whose logs are shipped elsewhere, or not mounted).
//!
//! Other users choose these names (and, with write access to cgroupfs, the uids and ids we
//! look up): a uid or id becomes part of a path only when it is hex digits and dashes, names
//! are kept only when Kubernetes would accept them (DNS labels and subdomains), and files
//! are read only when regular, a few hundred bytes at most, without blocking.
use std::{
    fs::{self, File, OpenOptions},
    io::Read as _,
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
};

/// Where the kubelet's files are; tests point these at synthetic trees.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KubeletRoots {
    /// `/var/log/pods`
    pub pod_logs: PathBuf,
    /// `/var/log/containers`
    pub container_logs: PathBuf,
    /// `/var/lib/kubelet/pods`
    pub pods: PathBuf,
}

impl Default for KubeletRoots {
    fn default() -> Self {
        Self::under(Path::new("/"))
    }
}

impl KubeletRoots {
    /// The kubelet's paths below `root` (`/` on the node itself).
    pub fn under(root: &Path) -> Self {
        Self {
            pod_logs: root.join("var/log/pods"),
            container_logs: root.join("var/log/containers"),
            pods: root.join("var/lib/kubelet/pods"),
        }
    }

    /// Whether any of them is there to read.
    pub fn any_present(&self) -> bool {
        [&self.pod_logs, &self.container_logs, &self.pods]
            .iter()
            .any(|dir| dir.is_dir())
    }

    /// `(namespace, pod)` of a pod uid, from its log directory `NAMESPACE_POD_UID`.
    pub fn pod_from_logs(&self, uid: &str) -> Option<(String, String)> {
        if !is_uid(uid) {
            return None;
        }
        let suffix = format!("_{uid}");
        entry_names(&self.pod_logs).find_map(|name| {
            let (namespace, pod) = name.strip_suffix(&suffix)?.split_once('_')?;
            (is_dns_label(namespace) && is_dns_subdomain(pod))
                .then(|| (namespace.to_owned(), pod.to_owned()))
        })
    }

    /// `(namespace, pod, container)` of a container id, from its log link
    /// `POD_NAMESPACE_CONTAINER-ID.log`.
    pub fn container_from_logs(&self, id: &str) -> Option<(String, String, String)> {
        if !is_hex_id(id) {
            return None;
        }
        let suffix = format!("-{id}.log");
        entry_names(&self.container_logs).find_map(|name| {
            let mut parts = name.strip_suffix(&suffix)?.split('_');
            let (pod, namespace, container) = (parts.next()?, parts.next()?, parts.next()?);
            (parts.next().is_none()
                && is_dns_subdomain(pod)
                && is_dns_label(namespace)
                && is_dns_label(container))
            .then(|| (namespace.to_owned(), pod.to_owned(), container.to_owned()))
        })
    }

    /// The namespace the kubelet projected into the pod's service-account volume.
    pub fn namespace_from_volume(&self, uid: &str) -> Option<String> {
        if !is_uid(uid) {
            return None;
        }
        let projected = self.pods.join(uid).join("volumes/kubernetes.io~projected");
        let mut volumes: Vec<String> = entry_names(&projected).collect();
        volumes.sort();
        volumes.iter().find_map(|volume| {
            let text = read_small(&projected.join(volume).join("namespace"))?;
            let namespace = text.trim();
            is_dns_label(namespace).then(|| namespace.to_owned())
        })
    }

    /// The pod's name from the hosts file the kubelet writes for it (its hostname), for nodes
    /// whose pod logs are not readable.
    pub fn pod_from_hosts(&self, uid: &str) -> Option<String> {
        if !is_uid(uid) {
            return None;
        }
        let hosts = read_small(&self.pods.join(uid).join("etc-hosts"))?;
        hosts
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .filter_map(|l| l.split_whitespace().nth(1))
            .find(|name| !name.starts_with("localhost") && !name.starts_with("ip6-"))
            .map(|name| name.split('.').next().unwrap_or(name))
            .filter(|name| is_dns_subdomain(name))
            .map(ToOwned::to_owned)
    }
}

/// UTF-8 names of a directory's entries (none when it cannot be read).
fn entry_names(dir: &Path) -> impl Iterator<Item = String> {
    fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
}

/// The most a kubelet file we read may hold (a hosts file of a pod with a few aliases).
const MAX_FILE_BYTES: u64 = 4096;

/// A regular file's text, if small: a FIFO planted in its place must not block the tracer.
fn read_small(path: &Path) -> Option<String> {
    let file: File = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(path)
        .ok()?;
    if !file.metadata().ok()?.is_file() {
        return None;
    }
    let mut text = String::new();
    file.take(MAX_FILE_BYTES).read_to_string(&mut text).ok()?;
    Some(text)
}

/// A pod uid as cgroup paths carry it: a UUID, or the 32 hex digits of a static pod's hash.
pub fn is_uid(text: &str) -> bool {
    (1..=64).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
}

/// A container id: 64 hex digits as the runtimes make them (12 or more accepted).
pub fn is_hex_id(text: &str) -> bool {
    (12..=64).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// RFC 1123 label: namespaces and container names.
pub fn is_dns_label(text: &str) -> bool {
    (1..=63).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !text.starts_with('-')
        && !text.ends_with('-')
}

/// RFC 1123 subdomain: pod names.
pub fn is_dns_subdomain(text: &str) -> bool {
    text.len() <= 253 && text.split('.').all(is_dns_label)
}
