//! Unit tests of kubepods path parsing and of names from synthetic kubelet trees.
use std::{fs, os::unix::fs::symlink, path::Path};

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

const UID: &str = "8d3a1c9e-1b2c-4d5e-8f90-123456789abc";

/// A node's kubelet files below `root`: the pod's log directory and the container's log link
/// (pointing into it, as the kubelet makes it), the projected service-account volume (its
/// `namespace` a link into `..data`, as the kubelet's atomic writer makes it) and etc-hosts.
fn kubelet_tree(root: &Path, namespace: &str, pod: &str, container: &str) -> KubeletRoots {
    let roots = KubeletRoots::under(root);
    let pod_dir = roots.pod_logs.join(format!("{namespace}_{pod}_{UID}"));
    fs::create_dir_all(pod_dir.join(container)).unwrap();
    fs::write(pod_dir.join(container).join("0.log"), "").unwrap();
    // Another pod, and a file that only looks like a pod directory.
    fs::create_dir_all(roots.pod_logs.join("kube-system_coredns-abc_0000-1111")).unwrap();
    fs::create_dir_all(&roots.container_logs).unwrap();
    symlink(
        pod_dir.join(container).join("0.log"),
        roots
            .container_logs
            .join(format!("{pod}_{namespace}_{container}-{CID}.log")),
    )
    .unwrap();
    let volume = roots
        .pods
        .join(UID)
        .join("volumes/kubernetes.io~projected/kube-api-access-x7k2p");
    fs::create_dir_all(volume.join("..2026_11_30_19_00_00.1")).unwrap();
    fs::write(volume.join("..2026_11_30_19_00_00.1/namespace"), namespace).unwrap();
    symlink("..2026_11_30_19_00_00.1", volume.join("..data")).unwrap();
    symlink("..data/namespace", volume.join("namespace")).unwrap();
    fs::write(
        roots.pods.join(UID).join("etc-hosts"),
        format!("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n10.1.2.3\t{pod}\n"),
    )
    .unwrap();
    roots
}

fn names(labels: &Labels) -> (Option<&str>, Option<&str>, Option<&str>) {
    (
        labels.namespace.as_deref(),
        labels.pod.as_deref(),
        labels.container.as_deref(),
    )
}

#[test]
fn names_from_the_log_layout() {
    let dir = tempfile::tempdir().unwrap();
    let roots = kubelet_tree(dir.path(), "shop", "web-7d9f-abcde", "nginx");
    assert!(roots.any_present());
    let mut labeler = Labeler::new(roots);
    let container = labeler
        .labels(&format!("/kubepods/burstable/pod{UID}/{CID}"))
        .unwrap();
    assert_eq!(
        names(&container),
        (Some("shop"), Some("web-7d9f-abcde"), Some("nginx"))
    );
    assert_eq!(container.container_id.as_deref(), Some(CID));
    let slice_uid = UID.replace('-', "_");
    let pod = labeler
        .labels(&format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{slice_uid}.slice"
        ))
        .unwrap();
    assert_eq!(names(&pod), (Some("shop"), Some("web-7d9f-abcde"), None));
    // A container the logs do not know (the pause container): its pod's names still.
    let pause = "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff";
    let sandbox = labeler
        .labels(&format!("/kubepods/burstable/pod{UID}/{pause}"))
        .unwrap();
    assert_eq!(
        names(&sandbox),
        (Some("shop"), Some("web-7d9f-abcde"), None)
    );
}

#[test]
fn names_from_the_pod_volume_without_logs() {
    let dir = tempfile::tempdir().unwrap();
    let roots = kubelet_tree(dir.path(), "shop", "web-7d9f-abcde", "nginx");
    fs::remove_dir_all(&roots.pod_logs).unwrap();
    fs::remove_dir_all(&roots.container_logs).unwrap();
    let mut labeler = Labeler::new(roots);
    let labels = labeler
        .labels(&format!("/kubepods/burstable/pod{UID}/{CID}"))
        .unwrap();
    assert_eq!(names(&labels), (Some("shop"), Some("web-7d9f-abcde"), None));
    let absent = KubeletRoots::under(Path::new("/nonexistent"));
    assert!(!absent.any_present());
    let mut nowhere = Labeler::new(absent);
    let bare = nowhere.labels(&format!("/kubepods/pod{UID}")).unwrap();
    assert_eq!(names(&bare), (None, None, None));
    assert_eq!(bare.pod_uid.as_deref(), Some(UID));
}

/// Names other users could plant: never a path out of the roots, never a name Kubernetes
/// would refuse, never a blocked tracer.
#[test]
fn hostile_trees_and_paths() {
    let dir = tempfile::tempdir().unwrap();
    let roots = KubeletRoots::under(dir.path());
    // A cgroup named `pod..` must not reach /var/lib/kubelet/etc-hosts.
    fs::create_dir_all(&roots.pods).unwrap();
    fs::write(
        roots.pods.parent().unwrap().join("etc-hosts"),
        "10.0.0.1 leaked\n",
    )
    .unwrap();
    for uid in ["..", "../..", "a/b", "", "x".repeat(65).as_str()] {
        assert_eq!(roots.pod_from_hosts(uid), None, "{uid}");
        assert_eq!(roots.namespace_from_volume(uid), None, "{uid}");
        assert_eq!(roots.pod_from_logs(uid), None, "{uid}");
    }
    let mut labeler = Labeler::new(roots.clone());
    let traversal = labeler.labels("/kubepods/burstable/pod..").unwrap();
    assert_eq!(names(&traversal), (None, None, None));

    // Names Kubernetes would refuse are left out, whatever the layout says.
    fs::create_dir_all(roots.pod_logs.join(format!("Shop_web\x1b[2J_{UID}"))).unwrap();
    fs::create_dir_all(&roots.container_logs).unwrap();
    fs::write(
        roots
            .container_logs
            .join(format!("web_shop_evil\u{202e}x-{CID}.log")),
        "",
    )
    .unwrap();
    assert_eq!(roots.pod_from_logs(UID), None);
    assert_eq!(roots.container_from_logs(CID), None);
    assert_eq!(roots.container_from_logs("../../etc/passwd"), None);

    // A FIFO in place of the namespace file does not block, and is not read.
    let volume = roots
        .pods
        .join(UID)
        .join("volumes/kubernetes.io~projected/kube-api-access-1");
    fs::create_dir_all(&volume).unwrap();
    let fifo = std::ffi::CString::new(volume.join("namespace").to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    assert_eq!(roots.namespace_from_volume(UID), None);
    // A huge namespace file is cut short and refused.
    fs::remove_file(volume.join("namespace")).unwrap();
    fs::write(volume.join("namespace"), "a".repeat(10_000)).unwrap();
    assert_eq!(roots.namespace_from_volume(UID), None);
}

#[test]
fn kubernetes_name_rules() {
    use kubelet::{is_dns_label, is_dns_subdomain, is_uid};
    assert!(is_dns_label("kube-system") && is_dns_label("a") && is_dns_label("x1"));
    for bad in ["", "-a", "a-", "A", "a_b", "a.b", &"a".repeat(64)] {
        assert!(!is_dns_label(bad), "{bad}");
    }
    assert!(is_dns_subdomain("web-7d9f-abcde") && is_dns_subdomain("a.b.c"));
    assert!(!is_dns_subdomain("a..b") && !is_dns_subdomain(".a") && !is_dns_subdomain(""));
    assert!(is_uid(UID) && is_uid("0123456789abcdef0123456789abcdef"));
    assert!(!is_uid("..") && !is_uid("a/b") && !is_uid(""));
}
