//! Where events and summaries go: people (lines, tables, histograms) and machines (JSON Lines).
mod human;
mod json;
pub mod prometheus;

pub use human::HumanSink;
pub use json::JsonSink;

use anyhow::Result;
use serde::Serialize;

use crate::{
    decode::Event, faults::FaultRow, latency::LatencyRow, memcg::MemcgPages,
    reclaim::KswapdActivity, stats::SummaryRow,
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
    /// kswapd across the machine in the period, whatever the filter; `None`: it slept.
    pub kswapd: Option<KswapdActivity>,
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

/// Passes everything on except interval summaries: for the sinks of a run whose intervals were
/// forced by another sink (`serve`'s metrics, `soak`'s samples), not asked for.
pub struct WithoutIntervals(pub Box<dyn Sink>);

impl Sink for WithoutIntervals {
    fn event(&mut self, event: &Event) -> Result<()> {
        self.0.event(event)
    }

    fn summary(&mut self, summary: &Summary) -> Result<()> {
        if summary.scope == "interval" {
            return Ok(());
        }
        self.0.summary(summary)
    }

    fn finish(&mut self, run: &RunSummary) -> Result<()> {
        self.0.finish(run)
    }
}

/// Wraps each sink in [`WithoutIntervals`].
pub fn hide_intervals(sinks: &mut [Box<dyn Sink>]) {
    for sink in sinks.iter_mut() {
        let inner = std::mem::replace(sink, Box::new(NoSink));
        *sink = Box::new(WithoutIntervals(inner));
    }
}

/// A placeholder while a sink is being wrapped.
struct NoSink;

impl Sink for NoSink {
    fn event(&mut self, _: &Event) -> Result<()> {
        Ok(())
    }

    fn summary(&mut self, _: &Summary) -> Result<()> {
        Ok(())
    }

    fn finish(&mut self, _: &RunSummary) -> Result<()> {
        Ok(())
    }
}
