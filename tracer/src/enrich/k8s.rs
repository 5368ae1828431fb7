//! Names for container cgroups: Kubernetes QoS class, pod uid and container id from kubepods
//! paths (cgroupfs and systemd drivers; containerd, CRI-O and docker), docker containers and
//! systemd units; pod names from the kubelet's pod directory when it is readable.
use std::{collections::HashMap, fs, path::PathBuf};

use crate::event::Labels;

const RUNTIME_PREFIXES: &[(&str, &str)] = &[
    ("cri-containerd-", "containerd"),
    ("crio-", "crio"),
    ("docker-", "docker"),
    ("cri-o-", "crio"),
];

fn is_container_id(s: &str) -> bool {
    s.len() >= 12 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

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
        && is_container_id(id)
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
        if let Some(id) = id.strip_prefix(prefix).filter(|id| is_container_id(id)) {
            labels.container_id = Some(id.to_owned());
            labels.runtime = Some((*runtime).to_owned());
            return;
        }
    }
    if is_container_id(id) {
        labels.container_id = Some(id.to_owned());
    }
}

/// The pod's name: the kubelet writes it as the pod's hostname into its etc-hosts.
fn pod_name(kubelet_pods: &std::path::Path, uid: &str) -> Option<String> {
    let hosts = fs::read_to_string(kubelet_pods.join(uid).join("etc-hosts")).ok()?;
    hosts
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_whitespace().nth(1))
        .find(|name| !name.starts_with("localhost") && !name.starts_with("ip6-"))
        .map(|name| name.split('.').next().unwrap_or(name).to_owned())
}

/// Labels per cgroup path, cached (events of one cgroup come in runs).
pub struct Labeler {
    kubelet_pods: PathBuf,
    cache: HashMap<String, Option<Labels>>,
}

pub const KUBELET_PODS: &str = "/var/lib/kubelet/pods";

impl Labeler {
    pub fn new(kubelet_pods: impl Into<PathBuf>) -> Self {
        Self {
            kubelet_pods: kubelet_pods.into(),
            cache: HashMap::new(),
        }
    }

    /// Whether pod names can be read on this node.
    pub fn has_pod_names(&self) -> bool {
        self.kubelet_pods.is_dir()
    }

    pub fn labels(&mut self, path: &str) -> Option<Labels> {
        if let Some(hit) = self.cache.get(path) {
            return hit.clone();
        }
        let mut labels = parse(path);
        if let Some(l) = labels.as_mut() {
            l.pod = l
                .pod_uid
                .as_deref()
                .and_then(|uid| pod_name(&self.kubelet_pods, uid));
        }
        if self.cache.len() > 10_000 {
            self.cache.clear();
        }
        self.cache.insert(path.to_owned(), labels.clone());
        labels
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CID: &str = "0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9";

    /// What `parse` returns for a pod cgroup, to compare with it.
    #[allow(clippy::unnecessary_wraps)]
    fn l(qos: &str, uid: &str, cid: Option<&str>, runtime: Option<&str>) -> Option<Labels> {
        Some(Labels {
            qos: Some(qos.into()),
            pod_uid: Some(uid.into()),
            container_id: cid.map(Into::into),
            runtime: runtime.map(Into::into),
            ..Default::default()
        })
    }

    #[test]
    fn cgroupfs_driver() {
        let uid = "8d3a1c9e-1b2c-4d5e-8f90-123456789abc";
        assert_eq!(
            parse(&format!("/kubepods/burstable/pod{uid}/{CID}")),
            l("burstable", uid, Some(CID), None)
        );
        assert_eq!(
            parse(&format!("/kubepods/besteffort/pod{uid}")),
            l("besteffort", uid, None, None)
        );
        assert_eq!(
            parse(&format!("/kubepods/pod{uid}/{CID}")),
            l("guaranteed", uid, Some(CID), None)
        );
        assert_eq!(parse("/kubepods/burstable"), None);
    }

    #[test]
    fn systemd_driver_with_every_runtime() {
        let uid = "8d3a1c9e-1b2c-4d5e-8f90-123456789abc";
        let slice_uid = uid.replace('-', "_");
        for (scope, runtime) in [
            ("cri-containerd", "containerd"),
            ("crio", "crio"),
            ("docker", "docker"),
        ] {
            let path = format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{slice_uid}.slice/{scope}-{CID}.scope"
            );
            assert_eq!(
                parse(&path),
                l("burstable", uid, Some(CID), Some(runtime)),
                "{path}"
            );
        }
        let guaranteed = format!("/kubepods.slice/kubepods-pod{slice_uid}.slice");
        assert_eq!(parse(&guaranteed), l("guaranteed", uid, None, None));
        let nested = format!(
            "/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{slice_uid}.slice"
        );
        assert_eq!(parse(&nested), l("besteffort", uid, None, None));
    }

    #[test]
    fn docker_and_systemd_units() {
        let docker = parse(&format!("/docker/{CID}")).unwrap();
        assert_eq!(
            (docker.container_id.as_deref(), docker.runtime.as_deref()),
            (Some(CID), Some("docker"))
        );
        let scope = parse(&format!("/system.slice/docker-{CID}.scope")).unwrap();
        assert_eq!(scope.container_id.as_deref(), Some(CID));
        assert_eq!(scope.unit.as_deref(), Some(&*format!("docker-{CID}.scope")));
        let unit = parse("/system.slice/nginx.service").unwrap();
        assert_eq!(
            (unit.unit.as_deref(), unit.container_id),
            (Some("nginx.service"), None)
        );
        assert_eq!(parse("/user.slice"), None);
        assert_eq!(parse("/"), None);
        assert_eq!(parse("/odd name:with,chars"), None);
    }

    #[test]
    fn pod_names_from_the_kubelet_directory() {
        let dir = tempfile::tempdir().unwrap();
        let uid = "8d3a1c9e-1b2c-4d5e-8f90-123456789abc";
        fs::create_dir_all(dir.path().join(uid)).unwrap();
        fs::write(
            dir.path().join(uid).join("etc-hosts"),
            "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n10.1.2.3\tweb-7d9f-abcde\n",
        )
        .unwrap();
        let mut labeler = Labeler::new(dir.path());
        assert!(labeler.has_pod_names());
        let labels = labeler
            .labels(&format!("/kubepods/burstable/pod{uid}"))
            .unwrap();
        assert_eq!(labels.pod.as_deref(), Some("web-7d9f-abcde"));
        assert_eq!(
            Labeler::new("/nonexistent")
                .labels(&format!("/kubepods/pod{uid}"))
                .unwrap()
                .pod,
            None
        );
    }
}
