//! A SIGKILL and who sent it; what a kill (this or the kernel OOM killer's) freed.
use serde::Serialize;

use super::Labels;

/// Who killed a task, as far as the evidence goes: a closed set (JSON `killer`, the
/// Prometheus label).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Killer {
    /// The kernel's OOM killer.
    KernelOom,
    /// Meta's oomd.
    Oomd,
    SystemdOomd,
    /// The kubelet, or a container runtime stopping a pod's container at its request
    /// (eviction, preemption, a failed probe or deletion: the signal cannot tell them apart).
    Kubelet,
    Earlyoom,
    /// A write to the cgroup's cgroup.kill (systemd stopping a unit, runc, a person).
    CgroupKill,
    /// Any other process: kill(2), tgkill(2), pidfd_send_signal(2), or the kernel on its behalf.
    #[default]
    Process,
}

impl Killer {
    pub fn name(self) -> &'static str {
        match self {
            Self::KernelOom => "kernel_oom",
            Self::Oomd => "oomd",
            Self::SystemdOomd => "systemd_oomd",
            Self::Kubelet => "kubelet",
            Self::Earlyoom => "earlyoom",
            Self::CgroupKill => "cgroup_kill",
            Self::Process => "process",
        }
    }
}

/// How sure the `killer` is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Confidence {
    /// The kernel's own path says so (the OOM killer, a cgroup.kill write, the sending task).
    #[default]
    Certain,
    /// A name confirmed by something an unprivileged user cannot fake (a root-owned system
    /// executable, a trusted.* cgroup xattr).
    High,
    /// A name or context only: a process can call itself anything.
    Inferred,
}

impl Confidence {
    pub fn name(self) -> &'static str {
        match self {
            Self::Certain => "certain",
            Self::High => "high",
            Self::Inferred => "inferred",
        }
    }
}

/// How the signal was sent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KillMethod {
    /// The kernel OOM killer (a task sharing the victim's memory, killed with it).
    OomKiller,
    /// kill(2) or pidfd_send_signal(2) to the process.
    #[default]
    Kill,
    /// tgkill(2) to one thread (the whole process dies of a SIGKILL all the same).
    ThreadKill,
    /// The kernel's send_sig() without siginfo: a cgroup.kill write.
    CgroupKill,
    /// The kernel on its own (a pid namespace torn down after its init died, a resource limit).
    Kernel,
}

/// A SIGKILL queued for a task in a watched cgroup.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Kill {
    pub time_ns: u64,
    /// The killed task's memory cgroup (kernfs id), named into `cgroup` by enrichment.
    #[serde(skip)]
    pub memcg_id: u64,
    pub cgroup: Option<String>,
    pub pid: u32,
    pub tgid: u32,
    pub comm: String,
    #[serde(skip)]
    pub sender_memcg_id: u64,
    pub sender_pid: u32,
    pub sender_tgid: u32,
    /// The sending thread's name, and its process's (a daemon's worker thread has its own).
    pub sender_comm: String,
    pub sender_process: String,
    /// The sender's memory cgroup.
    pub sender_cgroup: Option<String>,
    /// The sender's executable, where it still ran when memstall looked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sender_exe: Option<String>,
    pub signal: u32,
    pub killer: Killer,
    pub confidence: Confidence,
    pub method: KillMethod,
    /// What the killer and confidence rest on, in plain words.
    pub evidence: Vec<String>,
    /// The victim's memory at the signal (kB) and its swapped-out pages.
    pub anon_rss_kb: u64,
    pub file_rss_kb: u64,
    pub shmem_rss_kb: u64,
    pub swap_entries: u64,
    /// The victim's memory cgroup usage at the signal (kB).
    pub usage_kb: Option<u64>,
    #[serde(flatten)]
    pub freed: Freed,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub labels: Option<Labels>,
}

/// What a kill freed: the victim's memory cgroup usage over the second after it.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Freed {
    /// Usage at the kill minus the lowest usage within a second after it (kB); `null` when
    /// the cgroup could not be read.
    pub freed_kb: Option<u64>,
    /// Plain words when the kill freed little, and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub freed_note: Option<String>,
}
