//! Where events and summaries go: people (lines, tables, histograms) and machines (JSON Lines).
mod human;
mod json;
pub mod prometheus;

pub use human::HumanSink;
pub use json::JsonSink;

use anyhow::Result;
use serde::Serialize;

use crate::{
    decode::Event, faults::FaultRow, latency::LatencyRow, memcg::MemcgPages, stats::SummaryRow,
};

/// The end of a run: what was seen and what was lost.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RunSummary {
    pub time_ns: u64,
    pub duration_ns: u64,
    /// Records read from the kernel's ring buffer, before any userspace filtering.
    pub records: u64,
    /// Events reported (after `--cgroup` filtering and the outlier threshold).
    pub events: u64,
    /// Stalls recorded into histograms (after `--cgroup` filtering).
    pub stalls: u64,
    /// Events the kernel could not queue because the ring buffer was full.
    pub dropped: u64,
    /// Records that could not be decoded.
    pub malformed: u64,
    /// `hook: how` for every hook, e.g. `oom_kill: tp_btf oom/mark_victim`.
    pub hooks: Vec<String>,
}

/// Stall statistics for an interval (`--interval`) or for the whole run.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    /// `"interval"` or `"total"`.
    pub scope: &'static str,
    pub time_ns: u64,
    /// Length of the period the rows cover.
    pub period_ns: u64,
    pub rows: Vec<SummaryRow>,
    /// kswapd wake-up requests per memory cgroup of the requesting task, in the period.
    pub kswapd_wakeups: Vec<(String, u64)>,
    /// Pages scanned and reclaimed from each cgroup's LRUs in the period.
    pub memcg_pages: Vec<MemcgPages>,
    /// Page faults per cgroup in the period.
    pub faults: Vec<FaultRow>,
    /// Charge and page-fault latency per cgroup (`--latency`).
    pub latency: Vec<LatencyRow>,
    /// Events the kernel could not queue since start (ring buffer full), where known.
    pub dropped: Option<u64>,
}

pub trait Sink {
    fn event(&mut self, event: &Event) -> Result<()>;
    fn summary(&mut self, summary: &Summary) -> Result<()>;
    /// Called once at the end; must flush everything.
    fn finish(&mut self, run: &RunSummary) -> Result<()>;
}
