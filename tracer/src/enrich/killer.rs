//! Who sent a SIGKILL: the sender and context named into a [`Killer`], with the evidence and
//! how far it goes. A process can give itself any name (prctl), so a name alone is only ever
//! `inferred`; what lifts it is something an unprivileged user cannot fake: a root-owned
//! system executable, or the kill counters oomd and systemd-oomd write as cgroup xattrs on a
//! cgroup only root can write to.
use std::{
    ffi::CString,
    fs,
    os::unix::{ffi::OsStrExt as _, fs::MetadataExt as _},
    path::{Path, PathBuf},
};

use crate::event::{Confidence, Kill, KillMethod, Killer};

/// Container runtimes that stop a pod's containers when the kubelet asks (eviction,
/// preemption, a failed liveness probe, deletion). Names as the kernel truncates them.
const RUNTIMES: &[&str] = &[
    "runc",
    "crun",
    "youki",
    "containerd",
    "containerd-shim",
    "containerd-shi",
    "conmon",
    "crio",
    "dockerd",
];

/// The counters oomd (trusted.* and user.*) and systemd-oomd (user.*) keep on the cgroups
/// they kill in; the `_uuid` ones are oomd's alone.
const OOMD_XATTRS: &[&str] = &[
    "trusted.oomd_kill",
    "trusted.oomd_ooms",
    "trusted.oomd_kill_uuid",
    "user.oomd_kill",
    "user.oomd_ooms",
    "user.oomd_kill_uuid",
];

/// A named agent: which killer a process name means.
fn agent(name: &str) -> Option<Killer> {
    match name {
        "systemd-oomd" => Some(Killer::SystemdOomd),
        "oomd" => Some(Killer::Oomd),
        "earlyoom" => Some(Killer::Earlyoom),
        "kubelet" => Some(Killer::Kubelet),
        _ => None,
    }
}

/// Names `kill`'s killer. `root` is the memory hierarchy's mount; `kill.cgroup` must be named.
pub fn attribute(kill: &mut Kill, root: &Path) {
    let exe = fs::read_link(format!("/proc/{}/exe", kill.sender_tgid)).ok();
    kill.sender_exe = exe.as_ref().map(|p| p.display().to_string());
    let victim_dir = kill
        .cgroup
        .as_deref()
        .map(|c| root.join(c.trim_start_matches('/')));
    let xattrs = victim_dir
        .as_deref()
        .map(|dir| oomd_xattrs(dir, root))
        .unwrap_or_default();
    let (killer, confidence, mut evidence) = classify(kill, exe.as_deref(), &xattrs);
    kill.killer = killer;
    kill.confidence = confidence;
    evidence.extend(xattrs.iter().map(XattrSeen::describe));
    kill.evidence = evidence;
}

/// One oomd counter found on the victim's cgroup or an ancestor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XattrSeen {
    pub name: &'static str,
    pub value: String,
    pub cgroup: String,
    /// Only root could have written it: a trusted.* xattr, or a root-owned cgroup that is
    /// not delegated.
    pub trusted: bool,
}

impl XattrSeen {
    fn describe(&self) -> String {
        format!("{}={} on {}", self.name, self.value, self.cgroup)
    }

    fn is_oomd_only(&self) -> bool {
        self.name.starts_with("trusted.") || self.name.ends_with("_uuid")
    }
}

fn classify(
    kill: &Kill,
    exe: Option<&Path>,
    xattrs: &[XattrSeen],
) -> (Killer, Confidence, Vec<String>) {
    let mut evidence = Vec::new();
    if kill.method == KillMethod::OomKiller {
        evidence.push("sent by the kernel's OOM killer with its victim's".to_owned());
        return (Killer::KernelOom, Confidence::Certain, evidence);
    }
    let named = agent(&kill.sender_process).or_else(|| agent(&kill.sender_comm));
    if let Some(killer) = named {
        evidence.push(format!("sender named {}", kill.sender_process));
        let exe_vouches = exe.is_some_and(|exe| {
            exe.file_name()
                .is_some_and(|f| agent(&f.to_string_lossy()) == Some(killer))
                && is_system_executable(exe)
        });
        if exe_vouches {
            evidence.push(format!(
                "its executable {} is root-owned and not writable by others",
                exe.map(Path::display)
                    .map(|d| d.to_string())
                    .unwrap_or_default()
            ));
        }
        let xattr_vouches = matches!(killer, Killer::Oomd | Killer::SystemdOomd)
            && xattrs
                .iter()
                .any(|x| x.trusted && (killer == Killer::Oomd || !x.is_oomd_only()));
        let confidence = if exe_vouches || xattr_vouches {
            Confidence::High
        } else {
            Confidence::Inferred
        };
        return (killer, confidence, evidence);
    }
    if RUNTIMES.contains(&kill.sender_process.as_str())
        && kill
            .cgroup
            .as_deref()
            .is_some_and(|c| c.contains("kubepods"))
    {
        evidence.push(format!(
            "container runtime {} stopped a container of a Kubernetes pod (at the kubelet's request)",
            kill.sender_process
        ));
        return (Killer::Kubelet, Confidence::Inferred, evidence);
    }
    if let Some(oomd) = xattrs.iter().find(|x| x.trusted && x.is_oomd_only()) {
        evidence.push(format!(
            "the cgroup carries oomd's {} and the sender is not named like a killer",
            oomd.name
        ));
        return (Killer::Oomd, Confidence::Inferred, evidence);
    }
    match kill.method {
        KillMethod::CgroupKill => {
            evidence.push("no siginfo: the kernel's send_sig() of a cgroup.kill write".to_owned());
            (Killer::CgroupKill, Confidence::High, evidence)
        }
        KillMethod::Kernel => {
            evidence.push(
                "sent by the kernel on the sender's behalf (a pid namespace torn down after its init died, or a resource limit)"
                    .to_owned(),
            );
            (Killer::Process, Confidence::Certain, evidence)
        }
        _ => (Killer::Process, Confidence::Certain, evidence),
    }
}

/// Root-owned, not writable by group or others, in a root-owned directory: an unprivileged
/// user cannot have put it there.
fn is_system_executable(exe: &Path) -> bool {
    let safe =
        |path: &Path| fs::metadata(path).is_ok_and(|m| m.uid() == 0 && m.mode() & 0o022 == 0);
    safe(exe) && exe.parent().is_some_and(safe)
}

/// oomd's counters on `dir` and its ancestors up to `root`.
pub fn oomd_xattrs(dir: &Path, root: &Path) -> Vec<XattrSeen> {
    let mut seen = Vec::new();
    let mut current: Option<PathBuf> = Some(dir.to_path_buf());
    while let Some(dir) = current {
        if !dir.starts_with(root) {
            break;
        }
        let root_owned = fs::metadata(&dir).is_ok_and(|m| m.uid() == 0);
        for &name in OOMD_XATTRS {
            if let Some(value) = get_xattr(&dir, name) {
                let cgroup = dir
                    .strip_prefix(root)
                    .map(|p| format!("/{}", p.display()))
                    .unwrap_or_default();
                seen.push(XattrSeen {
                    name,
                    value,
                    cgroup,
                    trusted: name.starts_with("trusted.") || root_owned,
                });
            }
        }
        current = dir.parent().map(Path::to_path_buf);
        if dir == root {
            break;
        }
    }
    seen
}

/// A small text xattr, `None` where absent or unreadable. Values are at most 64 bytes and
/// kept printable: they are another user's text.
fn get_xattr(path: &Path, name: &str) -> Option<String> {
    let path = CString::new(path.as_os_str().as_bytes()).ok()?;
    let name = CString::new(name).ok()?;
    let mut buf = [0u8; 64];
    // SAFETY: both strings are NUL-terminated and the buffer's length is passed with it.
    let n = unsafe {
        libc::getxattr(
            path.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    let n = usize::try_from(n).ok()?;
    Some(
        String::from_utf8_lossy(buf.get(..n)?)
            .trim_end_matches('\0')
            .trim()
            .to_owned(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kill(process: &str, method: KillMethod, cgroup: &str) -> Kill {
        Kill {
            sender_process: process.into(),
            sender_comm: process.into(),
            method,
            cgroup: Some(cgroup.into()),
            ..Kill::default()
        }
    }

    fn xattr(name: &'static str, trusted: bool) -> XattrSeen {
        XattrSeen {
            name,
            value: "1".into(),
            cgroup: "/a".into(),
            trusted,
        }
    }

    #[test]
    fn a_name_alone_is_only_inferred() {
        let (killer, confidence, _) = classify(&kill("oomd", KillMethod::Kill, "/a"), None, &[]);
        assert_eq!((killer, confidence), (Killer::Oomd, Confidence::Inferred));
        let (killer, confidence, _) = classify(
            &kill("systemd-oomd", KillMethod::Kill, "/a"),
            Some(Path::new("/tmp/systemd-oomd")),
            &[xattr("user.oomd_ooms", false)],
        );
        assert_eq!(
            (killer, confidence),
            (Killer::SystemdOomd, Confidence::Inferred)
        );
    }

    #[test]
    fn xattrs_only_root_could_write_vouch() {
        let (killer, confidence, _) = classify(
            &kill("oomd", KillMethod::Kill, "/a"),
            None,
            &[xattr("trusted.oomd_kill", true)],
        );
        assert_eq!((killer, confidence), (Killer::Oomd, Confidence::High));
        // oomd's own counters do not vouch for systemd-oomd.
        let (_, confidence, _) = classify(
            &kill("systemd-oomd", KillMethod::Kill, "/a"),
            None,
            &[xattr("trusted.oomd_kill_uuid", true)],
        );
        assert_eq!(confidence, Confidence::Inferred);
        let (killer, confidence, _) = classify(
            &kill("bash", KillMethod::Kill, "/a"),
            None,
            &[xattr("trusted.oomd_kill_uuid", true)],
        );
        assert_eq!((killer, confidence), (Killer::Oomd, Confidence::Inferred));
    }

    #[test]
    fn context_names_the_rest() {
        let case = |process: &str, method: KillMethod, cgroup: &str| {
            let (killer, confidence, _) = classify(&kill(process, method, cgroup), None, &[]);
            (killer, confidence)
        };
        assert_eq!(
            case(
                "runc",
                KillMethod::CgroupKill,
                "/kubepods/burstable/pod1/c1"
            ),
            (Killer::Kubelet, Confidence::Inferred)
        );
        assert_eq!(
            case("runc", KillMethod::CgroupKill, "/system.slice/x"),
            (Killer::CgroupKill, Confidence::High)
        );
        assert_eq!(
            case("bash", KillMethod::Kill, "/a"),
            (Killer::Process, Confidence::Certain)
        );
        assert_eq!(
            case("bash", KillMethod::Kernel, "/a"),
            (Killer::Process, Confidence::Certain)
        );
        assert_eq!(
            case("memhog", KillMethod::OomKiller, "/a"),
            (Killer::KernelOom, Confidence::Certain)
        );
    }

    #[test]
    fn reads_xattrs_up_to_the_root() {
        // user.* xattrs need a file system that takes them (ext4, xfs, btrfs, tmpfs since
        // 6.6): the first of these that does. (The kills integration test reads trusted.*
        // ones on the real cgroupfs.)
        let roots = ["/var/tmp", "/dev/shm", "/tmp"].map(tempfile::tempdir_in);
        let name = CString::new("user.oomd_kill").unwrap();
        let root = roots
            .iter()
            .flatten()
            .find(|root| {
                let parent = root.path().join("a");
                fs::create_dir_all(parent.join("b")).unwrap();
                let parent = CString::new(parent.as_os_str().as_bytes()).unwrap();
                // SAFETY: NUL-terminated strings and a buffer with its length.
                let rc = unsafe {
                    libc::setxattr(parent.as_ptr(), name.as_ptr(), b"3".as_ptr().cast(), 1, 0)
                };
                rc == 0
            })
            .expect("a file system taking user xattrs among /var/tmp, /dev/shm and /tmp");
        let seen = oomd_xattrs(&root.path().join("a/b"), root.path());
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert_eq!(seen[0].name, "user.oomd_kill");
        assert_eq!(seen[0].value, "3");
        assert_eq!(seen[0].cgroup, "/a");
    }
}
