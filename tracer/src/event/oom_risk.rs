//! A warning before an OOM kill: a watched cgroup heading for its limit, and the task the
//! kernel would kill now.
use serde::Serialize;

/// Why the warning fired (or that it is over).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RiskReason {
    /// At the growth seen, what reclaim cannot free reaches the limit within the ETA bound.
    Eta,
    /// Little room is left under the limit whatever the trend.
    Headroom,
    /// The cgroup is out of danger again (or its kill happened).
    Cleared,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OomRisk {
    pub cgroup: String,
    pub time_ns: u64,
    /// Seconds until the limit at the growth seen; `null` when not growing.
    pub eta_s: Option<f64>,
    /// The limit minus what reclaim cannot free (kB).
    pub headroom_kb: u64,
    pub reason: RiskReason,
    pub usage_kb: u64,
    /// memory.max (v2) or memory.limit_in_bytes (v1).
    pub limit_kb: u64,
    /// Page cache reclaim can still drop (file LRUs; shmem is not among them), plus anon
    /// where swap has room.
    pub reclaimable_kb: u64,
    /// Growth of what reclaim cannot free, kB per second (the faster of the last 2 s and 10 s).
    pub growth_kb_per_s: f64,
    /// What else says the cgroup is in trouble: limit hits, reclaim efficiency, PSI.
    pub signals: Vec<String>,
    /// The kernel's ranking now: the task an OOM kill in this cgroup would choose.
    pub next_victim_pid: Option<u32>,
    pub next_victim_comm: Option<String>,
    pub next_victim_points: Option<i64>,
    /// What killing it would free (anon + swap) and keep charged (shmem), kB.
    pub next_victim_freeable_kb: Option<u64>,
    pub next_victim_shmem_kb: Option<u64>,
}
