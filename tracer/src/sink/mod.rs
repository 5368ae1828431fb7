//! Where events go: people (one line each) and machines (JSON Lines).
mod human;
mod json;

pub use human::HumanSink;
pub use json::JsonSink;

use anyhow::Result;
use serde::Serialize;

use crate::decode::Event;

/// The end of a run: what was seen and what was lost.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RunSummary {
    pub time_ns: u64,
    pub duration_ns: u64,
    /// Events reported (after `--cgroup` filtering).
    pub events: u64,
    /// Events the kernel could not queue because the ring buffer was full.
    pub dropped: u64,
    /// Records that could not be decoded.
    pub malformed: u64,
    /// `hook: how` for every hook, e.g. `oom_kill: tp_btf oom/mark_victim`.
    pub hooks: Vec<String>,
}

pub trait Sink {
    fn event(&mut self, event: &Event) -> Result<()>;
    /// Called once at the end; must flush everything.
    fn finish(&mut self, summary: &RunSummary) -> Result<()>;
}
