//! Prometheus metrics (`memstall serve`): cumulative per-cgroup counters and stall histograms,
//! fed by OOM-kill events and by interval summaries, rendered on each scrape in the
//! OpenMetrics text format (which Prometheus negotiates and parses). The HTTP side is in
//! serve.rs.
//!
//! Stalls under `--threshold` never reach sinks one by one: they only exist in the interval
//! summaries' rows, so every stall (outliers included) is counted from those rows, never from
//! events, and each interval's log2 buckets fold into fixed buckets with the same bounds.
use std::{
    fmt,
    sync::{Arc, Mutex, MutexGuard, atomic::AtomicU64},
};

use anyhow::Result;
use prometheus_client::{
    encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet, text},
    metrics::{MetricType, TypedMetric, counter::Counter, family::Family, gauge::Gauge},
    registry::{Registry, Unit},
};

use super::{RunSummary, Sink, Summary};
use crate::{decode::Event, loader::HookStatus, stats::SummaryRow};

/// Finite bucket upper bounds of `memstall_stall_seconds`, in µs: 2, 4, 8 … 2^26 (67 s). The
/// summary rows' log2 bucket k holds [2^k, 2^(k+1)) µs (k = 0 also below 1 µs), so bucket k
/// is exactly `le` = 2^(k+1) µs = high_us + 1; stalls are capped at 60 s, inside the last.
pub const BOUNDS_US: [u64; 26] = {
    let mut bounds = [0; 26];
    let mut i = 0;
    while i < bounds.len() {
        bounds[i] = 2 << i;
        i += 1;
    }
    bounds
};

/// Index of the bucket a summary-row bucket with this `high_us` folds into: the first bound
/// at or above `high_us + 1` (exact for log2 rows), or the `+Inf` slot.
pub fn bucket_index(high_us: u64) -> usize {
    let le_us = high_us.saturating_add(1);
    BOUNDS_US
        .iter()
        .position(|&bound| bound >= le_us)
        .unwrap_or(BOUNDS_US.len())
}

#[derive(Debug, Default)]
struct Cumulative {
    /// Per-bucket (not cumulative) counts; the last slot is `+Inf`.
    buckets: [u64; BOUNDS_US.len() + 1],
    count: u64,
    sum_ns: u128,
}

/// A histogram fed with already-bucketed counts and the exact sum (prometheus-client's own
/// histogram only takes single observations).
#[derive(Debug, Default)]
pub struct StallHistogram {
    state: Mutex<Cumulative>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl StallHistogram {
    /// Adds one interval's row: its buckets, count and total stall time.
    pub fn add(&self, row: &SummaryRow) {
        let mut state = lock(&self.state);
        let mut bucketed = 0u64;
        for bucket in &row.buckets {
            let slot = &mut state.buckets[bucket_index(bucket.high_us)];
            *slot = slot.saturating_add(bucket.count);
            bucketed = bucketed.saturating_add(bucket.count);
        }
        // Count and +Inf always agree, whatever a row holds.
        let unbucketed = row.count.saturating_sub(bucketed);
        let inf = &mut state.buckets[BOUNDS_US.len()];
        *inf = inf.saturating_add(unbucketed);
        state.count = state
            .count
            .saturating_add(bucketed.saturating_add(unbucketed));
        state.sum_ns = state.sum_ns.saturating_add(u128::from(row.total_ns));
    }
}

impl TypedMetric for StallHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for StallHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), fmt::Error> {
        let state = lock(&self.state);
        let buckets: Vec<(f64, u64)> = BOUNDS_US
            .iter()
            .map(|&us| us as f64 / 1e6)
            .chain([f64::INFINITY])
            .zip(state.buckets.iter().copied())
            .collect();
        encoder.encode_histogram::<NoLabelSet>(
            state.sum_ns as f64 / 1e9,
            state.count,
            &buckets,
            None,
        )
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StallLabels {
    cgroup: String,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FaultLabels {
    cgroup: String,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LruLabels {
    cgroup: String,
    reclaimer: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OomLabels {
    cgroup: String,
    constraint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CgroupLabels {
    cgroup: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HookLabels {
    hook: String,
}

/// Every metric memstall exports, cumulative since start. Labels stay low-cardinality:
/// cgroup paths and fixed words, never pids or command names.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    stalls: Family<StallLabels, StallHistogram>,
    faults: Family<FaultLabels, Counter>,
    lru_scanned: Family<LruLabels, Counter>,
    lru_reclaimed: Family<LruLabels, Counter>,
    kswapd_wakeups: Family<CgroupLabels, Counter>,
    kswapd_runs: Counter,
    kswapd_awake: Counter<f64, AtomicU64>,
    oom_kills: Family<OomLabels, Counter>,
    last_oom_kill: Family<CgroupLabels, Gauge<f64, AtomicU64>>,
    dropped: Counter,
    /// The kernel's drop total at the last update (it counts since load).
    dropped_seen: u64,
    hook_up: Family<HookLabels, Gauge>,
}

/// The metrics, shared by the sink (writer) and the HTTP server (reader).
pub type SharedMetrics = Arc<Mutex<Metrics>>;

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut metrics = Self {
            registry: Registry::default(),
            stalls: Family::default(),
            faults: Family::default(),
            lru_scanned: Family::default(),
            lru_reclaimed: Family::default(),
            kswapd_wakeups: Family::default(),
            kswapd_runs: Counter::default(),
            kswapd_awake: Counter::default(),
            oom_kills: Family::default(),
            last_oom_kill: Family::default(),
            dropped: Counter::default(),
            dropped_seen: 0,
            hook_up: Family::default(),
        };
        let registry = &mut metrics.registry;
        registry.register_with_unit(
            "memstall_stall",
            "Memory reclaim stall latency per memory cgroup and stall kind",
            Unit::Seconds,
            metrics.stalls.clone(),
        );
        registry.register(
            "memstall_page_faults",
            "Page faults per memory cgroup (kind minor or major)",
            metrics.faults.clone(),
        );
        registry.register(
            "memstall_lru_pages_scanned",
            "LRU pages scanned in each memory cgroup, by direct (charge-path) reclaim or kswapd",
            metrics.lru_scanned.clone(),
        );
        registry.register(
            "memstall_lru_pages_reclaimed",
            "LRU pages reclaimed from each memory cgroup, by direct (charge-path) reclaim or kswapd",
            metrics.lru_reclaimed.clone(),
        );
        registry.register(
            "memstall_kswapd_wakeups",
            "kswapd wake-up requests per memory cgroup of the requesting task",
            metrics.kswapd_wakeups.clone(),
        );
        registry.register(
            "memstall_kswapd_runs",
            "kswapd wake-to-sleep runs across the machine, whatever cgroup is watched",
            metrics.kswapd_runs.clone(),
        );
        registry.register_with_unit(
            "memstall_kswapd_awake",
            "Time kswapd was awake across the machine, summed over nodes",
            Unit::Seconds,
            metrics.kswapd_awake.clone(),
        );
        registry.register(
            "memstall_oom_kills",
            "OOM kills per memory cgroup of the victim (else the OOM domain) and constraint",
            metrics.oom_kills.clone(),
        );
        registry.register_with_unit(
            "memstall_last_oom_kill_timestamp",
            "Unix time of the last OOM kill per memory cgroup",
            Unit::Seconds,
            metrics.last_oom_kill.clone(),
        );
        registry.register(
            "memstall_ring_buffer_dropped_events",
            "Events the kernel could not queue because the ring buffer was full",
            metrics.dropped.clone(),
        );
        registry.register(
            "memstall_hook_up",
            "Whether each kernel hook is attached (1) or not (0)",
            metrics.hook_up.clone(),
        );
        metrics
    }

    /// Folds an interval summary in. Only `interval` summaries: `removed` rows repeat stalls
    /// an interval will carry, and `total` rows come once at the end, all already folded.
    pub fn summary(&mut self, summary: &Summary) {
        if summary.scope != "interval" {
            return;
        }
        for row in &summary.rows {
            self.stalls
                .get_or_create(&StallLabels {
                    cgroup: row.cgroup.clone(),
                    kind: row.kind,
                })
                .add(row);
        }
        for row in &summary.faults {
            for (kind, count) in [("minor", row.minor), ("major", row.major)] {
                self.faults
                    .get_or_create(&FaultLabels {
                        cgroup: row.cgroup.clone(),
                        kind,
                    })
                    .inc_by(count);
            }
        }
        for pages in &summary.memcg_pages {
            for (reclaimer, scanned, reclaimed) in [
                ("direct", pages.scanned_direct, pages.reclaimed_direct),
                ("kswapd", pages.scanned_kswapd, pages.reclaimed_kswapd),
            ] {
                let labels = LruLabels {
                    cgroup: pages.cgroup.clone(),
                    reclaimer,
                };
                self.lru_scanned.get_or_create(&labels).inc_by(scanned);
                self.lru_reclaimed.get_or_create(&labels).inc_by(reclaimed);
            }
        }
        for (cgroup, count) in &summary.kswapd_wakeups {
            self.kswapd_wakeups
                .get_or_create(&CgroupLabels {
                    cgroup: cgroup.clone(),
                })
                .inc_by(*count);
        }
        if let Some(kswapd) = &summary.kswapd {
            self.kswapd_runs.inc_by(kswapd.runs);
            self.kswapd_awake.inc_by(kswapd.awake_ns as f64 / 1e9);
        }
        if let Some(total) = summary.dropped {
            self.dropped_total(total);
        }
    }

    /// OOM kills (stalls are counted from the summaries, outliers included).
    pub fn event(&mut self, event: &Event) {
        let Event::OomKill(kill) = event else {
            return;
        };
        let cgroup = kill
            .victim_cgroup
            .clone()
            .or_else(|| kill.explanation.oom_cgroup.clone())
            .or_else(|| kill.cgroup.clone())
            .unwrap_or_else(|| "?".into());
        let constraint = kill
            .explanation
            .constraint
            .clone()
            .unwrap_or_else(|| "unknown".into());
        self.oom_kills
            .get_or_create(&OomLabels {
                cgroup: cgroup.clone(),
                constraint,
            })
            .inc();
        self.last_oom_kill
            .get_or_create(&CgroupLabels { cgroup })
            .set(kill.time_ns as f64 / 1e9);
    }

    /// The kernel's drop counter, a total since load.
    pub fn dropped_total(&mut self, total: u64) {
        self.dropped.inc_by(total.saturating_sub(self.dropped_seen));
        self.dropped_seen = self.dropped_seen.max(total);
    }

    /// How each hook attached.
    pub fn hooks(&mut self, hooks: &[HookStatus]) {
        for hook in hooks {
            self.hook_up
                .get_or_create(&HookLabels {
                    hook: hook.hook.to_owned(),
                })
                .set(i64::from(hook.attached.is_ok()));
        }
    }

    /// The OpenMetrics text exposition, `# EOF` included.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(err) = text::encode(&mut out, &self.registry) {
            // Writing to a String cannot fail; say so rather than serve half a page.
            log::warn!("encoding metrics: {err}");
            out.clear();
            out.push_str("# EOF\n");
        }
        out
    }
}

/// The sink side of the exporter: updates the shared metrics.
pub struct PrometheusSink {
    metrics: SharedMetrics,
}

impl PrometheusSink {
    pub fn new(metrics: SharedMetrics) -> Self {
        Self { metrics }
    }
}

impl Sink for PrometheusSink {
    fn event(&mut self, event: &Event) -> Result<()> {
        lock(&self.metrics).event(event);
        Ok(())
    }

    fn summary(&mut self, summary: &Summary) -> Result<()> {
        lock(&self.metrics).summary(summary);
        Ok(())
    }

    fn finish(&mut self, run: &RunSummary) -> Result<()> {
        lock(&self.metrics).dropped_total(run.dropped);
        Ok(())
    }
}

/// The content type of [`Metrics::render`].
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Locks shared metrics (a panicked writer leaves them usable).
pub fn locked(metrics: &SharedMetrics) -> MutexGuard<'_, Metrics> {
    lock(metrics)
}

#[cfg(test)]
mod tests;
