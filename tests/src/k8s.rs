//! A Kubernetes pod as a node shows it, for tests: kubepods-shaped memory cgroups (cgroupfs
//! driver) and the kubelet's files under a private root (memstall --test-k8s-root): the pod's
//! log directory, the container's log link and the projected service-account namespace.
use std::{fs, os::unix::fs::symlink, path::Path};

use anyhow::Result;

use crate::{MIB, MemCgroup};

/// Names a test pod carries.
pub const NAMESPACE: &str = "shop";
pub const POD: &str = "web-7d9f-abcde";
pub const CONTAINER: &str = "nginx";
pub const UID: &str = "8d3a1c9e-1b2c-4d5e-8f90-123456789abc";
pub const CONTAINER_ID: &str = "0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9";

/// `TOP/kubepods/burstable/pod<UID>/<CONTAINER_ID>`; the outer ones are dropped last.
pub struct Pod {
    pub container: MemCgroup,
    pub pod: MemCgroup,
    _qos: MemCgroup,
    _kubepods: MemCgroup,
    _top: MemCgroup,
}

impl Pod {
    /// A pod below a fresh test cgroup (named after `hint`), its container limited to
    /// `container_limit` bytes.
    pub fn create(hint: &str, container_limit: u64) -> Result<Self> {
        let top = MemCgroup::create(hint, 256 * MIB)?;
        let kubepods = top.child_named("kubepods", 256 * MIB)?;
        let qos = kubepods.child_named("burstable", 256 * MIB)?;
        let pod = qos.child_named(&format!("pod{UID}"), 256 * MIB)?;
        let container = pod.child_named(CONTAINER_ID, container_limit)?;
        // Drop order is field order: the container first, the top last.
        Ok(Self {
            container,
            pod,
            _qos: qos,
            _kubepods: kubepods,
            _top: top,
        })
    }
}

/// Writes what the kubelet leaves on a node for the pod below `root`, as the kubelet lays it
/// out: `var/log/pods/NAMESPACE_POD_UID/CONTAINER/0.log`, the link
/// `var/log/containers/POD_NAMESPACE_CONTAINER-ID.log` to it, and
/// `var/lib/kubelet/pods/UID/volumes/kubernetes.io~projected/kube-api-access-*/namespace`.
pub fn kubelet_files(root: &Path) -> Result<()> {
    let pod_logs = root.join(format!("var/log/pods/{NAMESPACE}_{POD}_{UID}/{CONTAINER}"));
    fs::create_dir_all(&pod_logs)?;
    fs::write(pod_logs.join("0.log"), "")?;
    let container_logs = root.join("var/log/containers");
    fs::create_dir_all(&container_logs)?;
    symlink(
        pod_logs.join("0.log"),
        container_logs.join(format!("{POD}_{NAMESPACE}_{CONTAINER}-{CONTAINER_ID}.log")),
    )?;
    let volume = root.join(format!(
        "var/lib/kubelet/pods/{UID}/volumes/kubernetes.io~projected/kube-api-access-x7k2p"
    ));
    fs::create_dir_all(&volume)?;
    fs::write(volume.join("namespace"), NAMESPACE)?;
    Ok(())
}
