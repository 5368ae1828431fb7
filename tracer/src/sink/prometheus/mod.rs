//! Prometheus metrics (`memstall serve`): cumulative per-cgroup counters and stall histograms,
//! fed by OOM-kill events and by interval summaries, rendered on each scrape in the
//! OpenMetrics text format (which Prometheus negotiates and parses). The HTTP side is in
//! http.rs.
//!
//! Stalls under `--threshold` never reach sinks one by one: they only exist in the interval
//! summaries' rows, so every stall (outliers included) is counted from those rows, never from
//! events, and each interval's log2 buckets fold into fixed buckets with the same bounds.
use std::sync::{Arc, Mutex, MutexGuard, atomic::AtomicU64};

use anyhow::Result;
use prometheus_client::{
    encoding::{EncodeLabelSet, text},
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::{Registry, Unit},
};

mod histogram;
pub mod http;
mod kills;
mod names;
mod pressure;

pub use histogram::StallHistogram;
use histogram::lock;
#[cfg(test)]
use histogram::{BOUNDS_US, bucket_index};
use names::PodNames;

use crate::{
    aggregate::{Scope, Summary},
    event::Event,
    kernel::attach::HookStatus,
    pipeline::{RunSummary, Sink},
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StallLabels {
    cgroup: String,
    kind: &'static str,
    #[prometheus(flatten)]
    names: PodNames,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FaultLabels {
    cgroup: String,
    kind: &'static str,
    #[prometheus(flatten)]
    names: PodNames,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LruLabels {
    cgroup: String,
    reclaimer: &'static str,
    #[prometheus(flatten)]
    names: PodNames,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OomLabels {
    cgroup: String,
    constraint: String,
    #[prometheus(flatten)]
    names: PodNames,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CgroupLabels {
    cgroup: String,
    #[prometheus(flatten)]
    names: PodNames,
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
    pressure: pressure::PressureMetrics,
    kills: kills::KillMetrics,
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
        let mut registry = Registry::default();
        let pressure = pressure::PressureMetrics::register(&mut registry);
        let kills = kills::KillMetrics::register(&mut registry);
        let mut metrics = Self {
            registry,
            pressure,
            kills,
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
            "Memory stall latency per memory cgroup and stall kind",
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
        if summary.scope != Scope::Interval {
            return;
        }
        self.pressure.add(&summary.pressure);
        let names = |cgroup: &String| PodNames::of(summary.labels.get(cgroup));
        for row in &summary.rows {
            self.stalls
                .get_or_create(&StallLabels {
                    cgroup: row.cgroup.clone(),
                    kind: row.kind,
                    names: names(&row.cgroup),
                })
                .add(row);
        }
        for row in &summary.faults {
            for (kind, count) in [("minor", row.minor), ("major", row.major)] {
                self.faults
                    .get_or_create(&FaultLabels {
                        cgroup: row.cgroup.clone(),
                        kind,
                        names: names(&row.cgroup),
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
                    names: names(&pages.cgroup),
                };
                self.lru_scanned.get_or_create(&labels).inc_by(scanned);
                self.lru_reclaimed.get_or_create(&labels).inc_by(reclaimed);
            }
        }
        for (cgroup, count) in &summary.kswapd_wakeups {
            self.kswapd_wakeups
                .get_or_create(&CgroupLabels {
                    cgroup: cgroup.clone(),
                    names: names(cgroup),
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

    /// Kills and OOM risk (stalls are counted from the summaries, outliers included).
    pub fn event(&mut self, event: &Event) {
        self.kills.event(event);
        let Event::OomKill(kill) = event else {
            return;
        };
        let cgroup = kill
            .victim_cgroup
            .clone()
            .or_else(|| kill.explanation.oom_cgroup.clone())
            .or_else(|| kill.cgroup.clone())
            .unwrap_or_else(|| "?".into());
        // The names of the cgroup labelled (enrichment named the victim's and the record's).
        let names = PodNames::of(if kill.victim_cgroup.as_ref() == Some(&cgroup) {
            kill.victim_labels.as_ref()
        } else if kill.cgroup.as_ref() == Some(&cgroup) {
            kill.labels.as_ref()
        } else {
            None
        });
        let constraint = kill
            .explanation
            .constraint
            .clone()
            .unwrap_or_else(|| "unknown".into());
        self.oom_kills
            .get_or_create(&OomLabels {
                cgroup: cgroup.clone(),
                constraint,
                names: names.clone(),
            })
            .inc();
        self.last_oom_kill
            .get_or_create(&CgroupLabels { cgroup, names })
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
                    hook: hook.hook.name().to_owned(),
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
