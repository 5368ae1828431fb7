//! An OOM kill as the kernel's oom/mark_victim reported it, with the post-mortem that explains
//! it: scope, scores, scoreboard, memory breakdown and the reclaim effort before it.
use std::collections::BTreeMap;

use serde::Serialize;

use super::{Freed, Killer, Labels};

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct OomKill {
    pub time_ns: u64,
    /// Memory cgroup ids (kernfs ids) of the trigger and the victim, named into `cgroup` and
    /// `victim_cgroup` by enrichment; 0 where the record has none.
    #[serde(skip)]
    pub memcg_id: u64,
    #[serde(skip)]
    pub victim_memcg_id: u64,
    /// Memory cgroup of the task that triggered the kill (`null` when it could not be read).
    pub cgroup: Option<String>,
    pub pid: u32,
    pub tgid: u32,
    pub comm: String,
    pub victim_pid: u32,
    pub victim_tgid: u32,
    pub victim_comm: String,
    pub victim_cgroup: Option<String>,
    pub victim_uid: Option<u32>,
    pub anon_rss_kb: u64,
    pub file_rss_kb: u64,
    pub shmem_rss_kb: u64,
    pub pgtables_kb: u64,
    pub total_vm_kb: u64,
    /// Swapped-out pages of the victim (`null` when the hook cannot see them).
    pub swap_entries: Option<u64>,
    pub oom_score_adj: i32,
    /// Which hook produced the record: `tp_btf`, `tracepoint` or `kernel_log`.
    pub source: KillSource,
    /// Always `kernel_oom`: the same key as a `kill` record's, for whoever counts kills.
    pub killer: Killer,
    /// Where the trigger (`pid`) was when its allocation invoked the OOM killer.
    pub trigger_kernel_stack: Vec<String>,
    pub trigger_user_stack: Vec<String>,
    /// The victim's memory cgroup usage when it was chosen (kB; 0 where unread).
    #[serde(skip)]
    pub victim_usage_kb: u64,
    #[serde(flatten)]
    pub freed: Freed,
    /// The kernel's own oom_control for the kill, where fentry on oom_kill_process gave it.
    #[serde(skip)]
    pub oom_control: Option<OomControl>,
    /// Scope, scores, scoreboard and memory breakdown (see enrich/postmortem.rs).
    #[serde(flatten)]
    pub explanation: Explanation,
    /// Reclaim effort in the OOM domain just before the kill (filled in by enrichment).
    pub reclaim_before: Option<ReclaimBefore>,
    /// Kubernetes / container / unit names of `cgroup` and `victim_cgroup` (enrichment).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub labels: Option<Labels>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub victim_labels: Option<Labels>,
}

/// Stalls and pages in the OOM domain over the seconds before a kill.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ReclaimBefore {
    pub window_ns: u64,
    pub stalls: u64,
    pub stall_ns: u64,
    pub pages_scanned: u64,
    pub pages_reclaimed: u64,
}

impl OomKill {
    pub fn cgroups(&self) -> impl Iterator<Item = &str> {
        [self.victim_cgroup.as_deref(), self.cgroup.as_deref()]
            .into_iter()
            .flatten()
    }
}

/// The kernel's oom_control as oom_kill_process() saw it: exact scope and score.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OomControl {
    /// enum oom_constraint: 0 none, 1 cpuset, 2 memory policy, 3 memcg.
    pub constraint: u32,
    /// The OOM domain's memcg id (0 for a global OOM).
    pub memcg_id: u64,
    pub totalpages: u64,
    pub chosen_points: i64,
}

impl OomControl {
    pub fn constraint_name(&self) -> &'static str {
        match self.constraint {
            0 => "global",
            1 => "cpuset",
            2 => "mempolicy",
            3 => "memcg",
            _ => "unknown",
        }
    }
}

/// Which hook (or log) produced an OOM kill record.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KillSource {
    /// tp_btf on oom/mark_victim: figures read from the victim's task_struct.
    #[default]
    TpBtf,
    /// The classic tracepoint's record.
    Tracepoint,
    /// The kernel log only (`memstall oom`).
    KernelLog,
}

/// Where an explanation's figures come from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReportSource {
    /// The kernel's own OOM report in /dev/kmsg (exact).
    #[default]
    KernelLog,
    /// cgroupfs and /proc read after the fact.
    Snapshot,
}

impl ReportSource {
    pub fn name(self) -> &'static str {
        match self {
            Self::KernelLog => "kernel_log",
            Self::Snapshot => "snapshot",
        }
    }
}

/// What the post-mortem adds to an OOM kill record.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Explanation {
    /// `memcg`, `global`, `cpuset` or `mempolicy`.
    pub constraint: Option<String>,
    /// The cgroup whose limit was hit (memcg OOM), relative to the hierarchy root.
    pub oom_cgroup: Option<String>,
    /// The victim's badness points and their /proc/PID/oom_score-style value in the domain.
    pub points: Option<i64>,
    pub oom_score: Option<i64>,
    /// Pages the kernel scored against: the domain's limit (+ swap) or RAM + swap.
    pub totalpages: Option<u64>,
    pub limit_kb: Option<u64>,
    pub usage_kb: Option<u64>,
    pub breakdown: Breakdown,
    #[serde(flatten)]
    pub diagnosis: Diagnosis,
    pub scoreboard: Vec<Candidate>,
    /// `kernel_log` (exact) or `snapshot` (read after the fact).
    pub report: ReportSource,
    /// The victim's memcg as the kernel's report names it (`task_memcg=`).
    #[serde(skip)]
    pub victim_cgroup: Option<String>,
    /// True when constraint, totalpages and points are the kernel's own oom_control (fentry
    /// on oom_kill_process), not reconstructed.
    pub exact: bool,
}

/// One candidate of the OOM domain, as the kernel's task table (or our snapshot) showed it.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Candidate {
    pub pid: u32,
    pub comm: String,
    /// Badness points; `null` for a task exempt by oom_score_adj -1000.
    pub points: Option<i64>,
    pub exempt: bool,
    pub oom_score_adj: i32,
    pub rss_kb: u64,
    pub anon_kb: Option<u64>,
    pub file_kb: Option<u64>,
    pub shmem_kb: Option<u64>,
    pub swap_kb: u64,
    pub pgtables_kb: u64,
    /// The task the kernel killed.
    pub victim: bool,
}

/// The OOM domain's memory at the kill, in kB, named after memory.stat (v2) items.
pub type Breakdown = BTreeMap<String, u64>;

/// What reclaim could and could not free, and the culprit in plain words when it is clear.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Diagnosis {
    /// Page cache reclaim can drop (file minus shmem), plus anon when swap has room.
    pub reclaimable_kb: u64,
    pub unreclaimable_kb: u64,
    pub culprit: String,
}
