//! What a soak run gathered: memory samples of the watched cgroups, stall percentiles and
//! time per minute, faults and OOM kills, for the checks and the reports.
use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use serde::Serialize;

use super::{
    Limits, MIB, Measured, Merge, MinuteWindow, Series, Trend,
    checks::stall_ns,
    num,
    series::{MemorySample, MemorySource},
};
use crate::{
    aggregate::{Summary, SummaryRow},
    pipeline::RunSummary,
};

/// OOM kills kept for the report's marks and table (all are counted).
pub const MAX_MARKS: usize = 1000;

/// A watched cgroup's (or the hierarchy's) memory over the run.
pub struct Watched {
    pub label: String,
    pub(super) source: MemorySource,
    pub(super) initial: Option<MemorySample>,
    pub usage: Series,
    pub working_set: Series,
    pub trend: Trend,
    pub first: Option<MemorySample>,
    pub last: Option<MemorySample>,
    pub peak_usage: u64,
    pub unreadable: u64,
}

/// An OOM kill as the report marks it.
#[derive(Clone, Debug, Serialize)]
pub struct OomMark {
    pub time_ns: u64,
    pub victim_pid: u32,
    pub victim_comm: String,
    pub victim_cgroup: Option<String>,
    pub cgroup: Option<String>,
}

/// Per-kind interval percentiles (the worst cgroup's), in ms.
pub struct KindSeries {
    pub p50: Series,
    pub p99: Series,
}

/// Everything the sink gathered; read by output.rs.
pub struct Record {
    pub limits: Limits,
    pub html: PathBuf,
    pub json: PathBuf,
    pub interval: Duration,
    pub hierarchy: &'static str,
    /// Unix ns of the run's start, known from the first summary.
    pub t0_ns: Option<u64>,
    pub watched: Vec<Watched>,
    pub kinds: BTreeMap<&'static str, KindSeries>,
    pub stall_per_minute: Series,
    pub(super) window: MinuteWindow,
    pub worst_minute: Option<(f64, f64)>,
    pub(super) interval_stall_ns: u64,
    pub(super) interval_period_ns: u64,
    pub intervals: u64,
    pub minor_per_s: Series,
    pub major_per_s: Series,
    pub oom_kills: u64,
    pub marks: Vec<OomMark>,
    /// OOM risk warnings (not their `cleared` records), and the last one in words.
    pub oom_risks: u64,
    pub last_risk: Option<String>,
    pub totals: Vec<SummaryRow>,
    pub run: Option<RunSummary>,
}

impl Record {
    fn secs(&self, time_ns: u64) -> f64 {
        time_ns.saturating_sub(self.t0_ns.unwrap_or(time_ns)) as f64 / 1e9
    }

    fn sample_memory(&mut self, t: f64) {
        for w in &mut self.watched {
            let Some(sample) = w.source.read() else {
                w.unreadable += 1;
                continue;
            };
            w.usage.push(t, sample.usage as f64);
            w.working_set.push(t, sample.working_set as f64);
            w.trend.add(t, sample.usage as f64);
            w.first.get_or_insert(sample);
            w.last = Some(sample);
            w.peak_usage = w.peak_usage.max(sample.usage);
        }
    }

    pub(super) fn start(&mut self, summary: &Summary) {
        if self.t0_ns.is_some() {
            return;
        }
        self.t0_ns = Some(summary.time_ns.saturating_sub(summary.period_ns));
        // The reading taken before loading stands for the start.
        for w in &mut self.watched {
            if let Some(sample) = w.initial.take() {
                w.usage.push(0.0, sample.usage as f64);
                w.working_set.push(0.0, sample.working_set as f64);
                w.trend.add(0.0, sample.usage as f64);
                w.first = Some(sample);
                w.peak_usage = sample.usage;
            }
        }
    }

    fn minute(&mut self, t: f64, period_ns: u64, stall: u64) {
        if let Some(ms) = self.window.add(period_ns, stall) {
            self.stall_per_minute.push(t, ms);
            if self.worst_minute.is_none_or(|(_, worst)| ms > worst) {
                self.worst_minute = Some((t, ms));
            }
        }
    }

    pub(super) fn interval(&mut self, summary: &Summary) {
        let t = self.secs(summary.time_ns);
        self.intervals += 1;
        let mut worst: BTreeMap<&'static str, (u64, u64)> = BTreeMap::new();
        for row in summary.rows.iter().filter(|r| r.count > 0) {
            let entry = worst.entry(row.kind).or_default();
            *entry = (entry.0.max(row.p50_ns), entry.1.max(row.p99_ns));
        }
        for (kind, (p50, p99)) in worst {
            let series = self.kinds.entry(kind).or_insert_with(|| KindSeries {
                p50: Series::new(Merge::Max),
                p99: Series::new(Merge::Max),
            });
            series.p50.push(t, p50 as f64 / 1e6);
            series.p99.push(t, p99 as f64 / 1e6);
        }
        let stall = stall_ns(&summary.pressure);
        self.interval_stall_ns = self.interval_stall_ns.saturating_add(stall);
        self.interval_period_ns = self.interval_period_ns.saturating_add(summary.period_ns);
        self.minute(t, summary.period_ns, stall);
        let (minor, major) = summary.faults.iter().fold((0.0, 0.0), |(a, b), row| {
            (a + row.minor_per_s, b + row.major_per_s)
        });
        self.minor_per_s.push(t, minor);
        self.major_per_s.push(t, major);
        self.sample_memory(t);
    }

    pub(super) fn total(&mut self, summary: &Summary) {
        let t = self.secs(summary.time_ns);
        // The tail after the last interval counts toward the stall windows too.
        let tail_period = summary.period_ns.saturating_sub(self.interval_period_ns);
        let tail_stall = stall_ns(&summary.pressure).saturating_sub(self.interval_stall_ns);
        if tail_period > 0 {
            self.minute(t, tail_period, tail_stall);
        }
        self.totals = summary
            .rows
            .iter()
            .map(|row| SummaryRow {
                buckets: Vec::new(),
                ..row.clone()
            })
            .collect();
        self.sample_memory(t);
    }

    pub fn measured(&self) -> Measured {
        let growth = self
            .watched
            .iter()
            .map(|w| {
                let slope = w
                    .trend
                    .slope()
                    .map(|bytes_per_s| bytes_per_s * 3600.0 / MIB);
                let detail = match (w.first, w.last, slope) {
                    (Some(first), Some(last), Some(_)) => format!(
                        "usage {} -> {} MiB, {} sample(s)",
                        num(first.usage as f64 / MIB),
                        num(last.usage as f64 / MIB),
                        w.trend.samples()
                    ),
                    _ => format!(
                        "{} readable sample(s), {} unreadable",
                        w.trend.samples(),
                        w.unreadable
                    ),
                };
                (w.label.clone(), slope, detail)
            })
            .collect();
        let last_kill = self.marks.last().map(|m| {
            format!(
                "{} pid {} in {}",
                m.victim_comm,
                m.victim_pid,
                m.victim_cgroup.as_deref().unwrap_or("?")
            )
        });
        Measured {
            oom_kills: self.oom_kills,
            last_kill,
            oom_risks: self.oom_risks,
            last_risk: self.last_risk.clone(),
            totals: self.totals.clone(),
            worst_minute: self.worst_minute,
            growth,
        }
    }
}
