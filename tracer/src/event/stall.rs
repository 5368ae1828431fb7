//! A finished stall: a task blocked in reclaim, kswapd's run, or a throttling sleep.
use memstall_common::StallKind;
use serde::Serialize;

use super::Labels;

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Stall {
    /// Serialised as the event's `type`.
    #[serde(skip)]
    pub kind: StallKind,
    pub time_ns: u64,
    pub latency_ns: u64,
    /// The stalled task's memory cgroup id (kernfs id), named into `cgroup` by enrichment.
    #[serde(skip)]
    pub memcg_id: u64,
    /// Memory cgroup of the stalled task.
    pub cgroup: Option<String>,
    pub pid: u32,
    pub tgid: u32,
    pub comm: String,
    /// Pages reclaimed, as the reclaim call reported them (kswapd: by its LRU passes).
    pub pages: u64,
    /// Pages scanned by the inactive-LRU passes inside the stall, and how many passes.
    pub pages_scanned: u64,
    pub passes: u32,
    /// Times the kernel started this reclaim over (each one a reclaim to delay accounting).
    #[serde(skip_serializing_if = "is_zero")]
    pub retries: u32,
    /// Allocation order (kswapd: the order it was woken for); absent where unknown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order: Option<i32>,
    pub gfp_flags: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nid: Option<i32>,
    /// Why a throttled reclaimer slept.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<ThrottleReason>,
    /// shrink_slab: the shrinker (its scan_objects function).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shrinker: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub kernel_stack: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub user_stack: Vec<String>,
    /// Kubernetes / container / unit names of `cgroup` (filled in by enrichment).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub labels: Option<Labels>,
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if passes a reference
fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Why reclaim throttling put a task to sleep (the kernel's VMSCAN_THROTTLE_*).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ThrottleReason {
    Writeback,
    Isolated,
    Noprogress,
    Congested,
    Unknown,
}

impl ThrottleReason {
    pub fn from_kernel(reason: u32) -> Self {
        match reason {
            0 => Self::Writeback,
            1 => Self::Isolated,
            2 => Self::Noprogress,
            3 => Self::Congested,
            _ => Self::Unknown,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Writeback => "writeback",
            Self::Isolated => "isolated",
            Self::Noprogress => "noprogress",
            Self::Congested => "congested",
            Self::Unknown => "unknown",
        }
    }
}
