//! Per cgroup and period: stall histograms, kswapd activity, LRU pages, faults and latency,
//! made into the [`Summary`] the sinks receive at every interval and at the end.
pub mod counters;
pub mod kswapd;
pub mod latency;
pub mod memory_stat;
pub mod oom_risk;
pub mod pressure;
pub mod psi;
pub mod stalls;

use std::collections::HashMap;

use serde::Serialize;

use crate::event::Labels;

pub use counters::{FaultRow, FaultSource, MemcgPages};
pub use kswapd::KswapdActivity;
pub use latency::LatencyRow;
pub use pressure::{PressureAggregator, PressureRow};
#[cfg(test)]
pub use stalls::StallStats;
pub use stalls::{StallAggregator, SummaryRow};

/// Which period a summary covers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// One `--interval` period (also forced by `serve`, `soak` and the live view).
    Interval,
    /// The whole run, at its end.
    #[default]
    Total,
    /// The whole run of a watched cgroup that was just removed.
    Removed,
}

impl Scope {
    pub fn name(self) -> &'static str {
        match self {
            Self::Interval => "interval",
            Self::Total => "total",
            Self::Removed => "removed",
        }
    }
}

/// Stall statistics for an interval (`--interval`) or for the whole run.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    pub scope: Scope,
    pub time_ns: u64,
    /// Length of the period the rows cover.
    pub period_ns: u64,
    pub rows: Vec<SummaryRow>,
    /// kswapd wake-up requests per memory cgroup of the requesting task, in the period.
    pub kswapd_wakeups: Vec<(String, u64)>,
    /// kswapd across the machine in the period, whatever the filter; `None`: it slept.
    pub kswapd: Option<KswapdActivity>,
    /// Pages scanned and reclaimed from each cgroup's LRUs in the period.
    pub memcg_pages: Vec<MemcgPages>,
    /// Page faults per cgroup in the period.
    pub faults: Vec<FaultRow>,
    /// Charge and page-fault latency per cgroup (`--latency`).
    pub latency: Vec<LatencyRow>,
    /// Stall time per cgroup by cause, nested stalls once, with the kernel's PSI beside it.
    pub pressure: Vec<PressureRow>,
    /// Events the kernel could not queue since start (ring buffer full), where known.
    pub dropped: Option<u64>,
    /// Container and Kubernetes names of the cgroups above that have any.
    pub labels: HashMap<String, Labels>,
}

impl Summary {
    /// Every cgroup path the summary names.
    pub fn cgroups(&self) -> impl Iterator<Item = &str> {
        self.rows
            .iter()
            .map(|r| r.cgroup.as_str())
            .chain(self.kswapd_wakeups.iter().map(|(c, _)| c.as_str()))
            .chain(self.memcg_pages.iter().map(|p| p.cgroup.as_str()))
            .chain(self.faults.iter().map(|f| f.cgroup.as_str()))
            .chain(self.latency.iter().map(|l| l.cgroup.as_str()))
    }
}
