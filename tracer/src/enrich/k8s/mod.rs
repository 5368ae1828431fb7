//! Names for container cgroups: Kubernetes QoS class, pod uid and container id from kubepods
//! paths (cgroupfs and systemd drivers; containerd, CRI-O and docker), docker containers and
//! systemd units; namespace, pod and container names from the kubelet's files on the node
//! (kubelet.rs), without the CRI.
mod kubelet;

use std::collections::HashMap;

pub use kubelet::KubeletRoots;
use kubelet::is_hex_id;

use crate::event::Labels;

const RUNTIME_PREFIXES: &[(&str, &str)] = &[
    ("cri-containerd-", "containerd"),
    ("crio-", "crio"),
    ("docker-", "docker"),
    ("cri-o-", "crio"),
];

/// `kubepods-burstable-pod1234_56.slice` → ("burstable", "1234-56"); `kubepods-pod..` is
/// Guaranteed.
fn systemd_pod(component: &str) -> Option<(String, String)> {
    let stem = component.strip_suffix(".slice")?;
    let (qos_part, uid) = stem.rsplit_once("-pod")?;
    let qos = match qos_part.rsplit('-').next()? {
        "burstable" => "burstable",
        "besteffort" => "besteffort",
        _ => "guaranteed",
    };
    Some((qos.to_owned(), uid.replace('_', "-")))
}

/// Labels of a hierarchy-relative cgroup path; `None` when it names nothing we know.
pub fn parse(path: &str) -> Option<Labels> {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let mut labels = Labels::default();
    if let Some(k) = parts.iter().position(|p| p.contains("kubepods")) {
        let mut rest = parts[k + 1..].iter().copied();
        let mut next = rest.next();
        if parts[k].ends_with(".slice") {
            // systemd driver: QoS slice (absent for Guaranteed), then the pod slice.
            if next.is_some_and(|p| {
                p.ends_with("-burstable.slice") || p.ends_with("-besteffort.slice")
            }) {
                next = rest.next();
            }
            let (qos, uid) = next.and_then(systemd_pod)?;
            labels.qos = Some(qos);
            labels.pod_uid = Some(uid);
        } else {
            // cgroupfs driver: kubepods/[burstable|besteffort/]pod<uid>/<container-id>
            labels.qos = Some("guaranteed".into());
            if let Some(class @ ("burstable" | "besteffort")) = next {
                labels.qos = Some(class.into());
                next = rest.next();
            }
            labels.pod_uid = Some(next?.strip_prefix("pod")?.to_owned());
        }
        if let Some(container) = rest.next() {
            container_of(container, &mut labels);
        }
        return Some(labels);
    }
    // Plain docker (cgroupfs driver) and systemd units (docker-<id>.scope is both).
    if let [.., "docker", id] = parts.as_slice()
        && is_hex_id(id)
    {
        labels.container_id = Some((*id).to_owned());
        labels.runtime = Some("docker".into());
        return Some(labels);
    }
    let last = parts.last()?;
    if last.ends_with(".service") || last.ends_with(".scope") {
        labels.unit = Some((*last).to_owned());
        container_of(last, &mut labels);
        return Some(labels);
    }
    None
}

fn container_of(component: &str, labels: &mut Labels) {
    let id = component.strip_suffix(".scope").unwrap_or(component);
    for (prefix, runtime) in RUNTIME_PREFIXES {
        if let Some(id) = id.strip_prefix(prefix).filter(|id| is_hex_id(id)) {
            labels.container_id = Some(id.to_owned());
            labels.runtime = Some((*runtime).to_owned());
            return;
        }
    }
    if is_hex_id(id) {
        labels.container_id = Some(id.to_owned());
    }
}

/// Labels per cgroup path, cached (events of one cgroup come in runs).
pub struct Labeler {
    kubelet: KubeletRoots,
    cache: HashMap<String, Option<Labels>>,
}

impl Labeler {
    pub fn new(kubelet: KubeletRoots) -> Self {
        Self {
            kubelet,
            cache: HashMap::new(),
        }
    }

    pub fn labels(&mut self, path: &str) -> Option<Labels> {
        if let Some(hit) = self.cache.get(path) {
            return hit.clone();
        }
        let mut labels = parse(path);
        if let Some(l) = labels.as_mut() {
            self.name(l);
        }
        if self.cache.len() > 10_000 {
            self.cache.clear();
        }
        self.cache.insert(path.to_owned(), labels.clone());
        labels
    }

    /// Namespace, pod and container names: the container's log link names all three; the
    /// pod's log directory, its service-account volume and its hosts file fill what is left.
    fn name(&self, labels: &mut Labels) {
        let Some(uid) = labels.pod_uid.as_deref() else {
            return;
        };
        if let Some((namespace, pod, container)) = labels
            .container_id
            .as_deref()
            .and_then(|id| self.kubelet.container_from_logs(id))
        {
            labels.namespace = Some(namespace);
            labels.pod = Some(pod);
            labels.container = Some(container);
            return;
        }
        if let Some((namespace, pod)) = self.kubelet.pod_from_logs(uid) {
            labels.namespace = Some(namespace);
            labels.pod = Some(pod);
            return;
        }
        labels.namespace = self.kubelet.namespace_from_volume(uid);
        labels.pod = self.kubelet.pod_from_hosts(uid);
    }
}

#[cfg(test)]
mod tests;
