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
mod tests {
    use super::*;
    use crate::{
        faults::FaultRow, memcg::MemcgPages, oom::OomKill, postmortem::Explanation,
        stats::StallStats,
    };
    use tracer_common::StallKind;

    #[test]
    fn log2_buckets_map_to_exact_bounds() {
        assert_eq!(BOUNDS_US[0], 2);
        assert_eq!(BOUNDS_US[25], 1 << 26);
        // bcc bucket 0 is [0, 1] µs, bucket k [2^k, 2^(k+1) - 1] µs: le = high_us + 1.
        assert_eq!(bucket_index(1), 0);
        assert_eq!(bucket_index(3), 1);
        assert_eq!(bucket_index(7), 2);
        assert_eq!(bucket_index((1 << 26) - 1), 25);
        // Past the last bound (cannot happen with 60 s stalls): +Inf, never lost.
        assert_eq!(bucket_index((1 << 27) - 1), BOUNDS_US.len());
        assert_eq!(bucket_index(u64::MAX), BOUNDS_US.len());
        // Not a power of two: rounded up to the next bound, still a true `le`.
        assert_eq!(bucket_index(4), 2);
        // Every row bucket of a real histogram lands on its own bound.
        let mut stats = StallStats::default();
        for ns in [500, 1_999, 2_000, 3_999, 70_000, 5_000_000, 60_000_000_000] {
            stats.record(ns, 0, 0);
        }
        for bucket in stats.log2_buckets() {
            let i = bucket_index(bucket.high_us);
            assert_eq!(BOUNDS_US[i], bucket.high_us + 1, "{bucket:?}");
        }
    }

    fn row(latencies_ns: &[u64]) -> SummaryRow {
        let mut stats = StallStats::default();
        for &ns in latencies_ns {
            stats.record(ns, 1, 2);
        }
        stats.row("/svc", StallKind::MemcgReclaim)
    }

    fn interval(rows: Vec<SummaryRow>) -> Summary {
        Summary {
            scope: "interval",
            rows,
            ..Default::default()
        }
    }

    fn sample<'a>(text: &'a str, series: &str) -> Option<&'a str> {
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
    }

    #[test]
    fn intervals_fold_into_cumulative_histograms() {
        let mut metrics = Metrics::new();
        metrics.summary(&interval(vec![row(&[1_500, 3_000, 3_500])]));
        metrics.summary(&interval(vec![row(&[10_000_000, 100])]));
        // Totals and removed-cgroup rows repeat what intervals carry: ignored.
        for scope in ["total", "removed"] {
            metrics.summary(&Summary {
                scope,
                ..interval(vec![row(&[5_000; 4])])
            });
        }
        let text = metrics.render();
        let series = |suffix: &str, le: Option<&str>| {
            let labels = match le {
                Some(le) => format!("{{le=\"{le}\",cgroup=\"/svc\",kind=\"memcg_reclaim\"}}"),
                None => "{cgroup=\"/svc\",kind=\"memcg_reclaim\"}".to_owned(),
            };
            sample(&text, &format!("memstall_stall_seconds_{suffix}{labels}"))
                .unwrap_or_else(|| panic!("{suffix} {le:?} in\n{text}"))
                .to_owned()
        };
        assert_eq!(series("count", None), "5");
        let sum: f64 = series("sum", None).parse().unwrap();
        assert!((sum - 0.010_008_1).abs() < 1e-12, "{sum}");
        // Cumulative: 1.5 µs and 100 ns ≤ 2 µs; 3 and 3.5 µs ≤ 4 µs; 10 ms ≤ 16.384 ms.
        let le = |us: u64| BOUNDS_US.iter().position(|&b| b == us).unwrap();
        let bucket = |us: u64| {
            let value = BOUNDS_US[le(us)] as f64 / 1e6;
            let line = text
                .lines()
                .filter(|l| l.starts_with("memstall_stall_seconds_bucket{"))
                .find(|l| {
                    l.split("le=\"")
                        .nth(1)
                        .and_then(|rest| rest.split('"').next())
                        .and_then(|v| v.parse::<f64>().ok())
                        == Some(value)
                })
                .unwrap_or_else(|| panic!("le {us} µs in\n{text}"));
            line.rsplit(' ').next().unwrap().parse::<u64>().unwrap()
        };
        assert_eq!(bucket(2), 2);
        assert_eq!(bucket(4), 4);
        assert_eq!(bucket(8192), 4);
        assert_eq!(bucket(16384), 5);
        assert_eq!(bucket(1 << 26), 5);
        assert_eq!(series("bucket", Some("+Inf")), "5");
        assert!(
            text.contains("# TYPE memstall_stall_seconds histogram"),
            "{text}"
        );
        assert!(
            text.contains("# UNIT memstall_stall_seconds seconds"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn counters_oom_kills_drops_and_hooks_render() {
        let mut metrics = Metrics::new();
        let counters = Summary {
            faults: vec![FaultRow {
                cgroup: "/svc".into(),
                minor: 7,
                major: 1,
                ..Default::default()
            }],
            memcg_pages: vec![MemcgPages::new("/svc".into(), [10, 5, 4, 3, 0, 0])],
            kswapd_wakeups: vec![("/svc".into(), 2)],
            dropped: Some(3),
            ..interval(Vec::new())
        };
        metrics.summary(&counters);
        metrics.summary(&Summary {
            dropped: Some(5),
            ..counters
        });
        let kill = OomKill {
            time_ns: 1_700_000_000_500_000_000,
            cgroup: Some("/svc/trigger".into()),
            pid: 10,
            tgid: 10,
            comm: "alloc".into(),
            victim_pid: 11,
            victim_tgid: 11,
            victim_comm: "hog".into(),
            victim_cgroup: Some("/svc/a".into()),
            victim_uid: Some(0),
            anon_rss_kb: 0,
            file_rss_kb: 0,
            shmem_rss_kb: 0,
            pgtables_kb: 0,
            total_vm_kb: 0,
            swap_entries: None,
            oom_score_adj: 0,
            source: "tp_btf",
            explanation: Explanation {
                constraint: Some("memcg".into()),
                oom_cgroup: Some("/svc".into()),
                ..Default::default()
            },
            reclaim_before: None,
            labels: None,
            victim_labels: None,
        };
        metrics.event(&Event::OomKill(Box::new(kill.clone())));
        metrics.event(&Event::OomKill(Box::new(kill)));
        metrics.hooks(&[
            HookStatus {
                hook: "oom_kill",
                attached: Ok("tp_btf oom/mark_victim".into()),
                notes: Vec::new(),
            },
            HookStatus {
                hook: "node_reclaim",
                attached: Err("no such tracepoint".into()),
                notes: Vec::new(),
            },
        ]);
        let mut sink = PrometheusSink::new(Arc::new(Mutex::new(metrics)));
        sink.finish(&RunSummary {
            dropped: 6,
            ..Default::default()
        })
        .unwrap();
        let text = locked(&sink.metrics).render();
        for (series, value) in [
            (
                r#"memstall_page_faults_total{cgroup="/svc",kind="minor"}"#,
                "14",
            ),
            (
                r#"memstall_page_faults_total{cgroup="/svc",kind="major"}"#,
                "2",
            ),
            (
                r#"memstall_lru_pages_scanned_total{cgroup="/svc",reclaimer="direct"}"#,
                "20",
            ),
            (
                r#"memstall_lru_pages_reclaimed_total{cgroup="/svc",reclaimer="direct"}"#,
                "10",
            ),
            (
                r#"memstall_lru_pages_scanned_total{cgroup="/svc",reclaimer="kswapd"}"#,
                "8",
            ),
            (
                r#"memstall_lru_pages_reclaimed_total{cgroup="/svc",reclaimer="kswapd"}"#,
                "6",
            ),
            (r#"memstall_kswapd_wakeups_total{cgroup="/svc"}"#, "4"),
            (
                r#"memstall_oom_kills_total{cgroup="/svc/a",constraint="memcg"}"#,
                "2",
            ),
            (
                r#"memstall_last_oom_kill_timestamp_seconds{cgroup="/svc/a"}"#,
                "1700000000.5",
            ),
            ("memstall_ring_buffer_dropped_events_total", "6"),
            (r#"memstall_hook_up{hook="oom_kill"}"#, "1"),
            (r#"memstall_hook_up{hook="node_reclaim"}"#, "0"),
        ] {
            assert_eq!(sample(&text, series), Some(value), "{series} in\n{text}");
        }
        // No per-process labels.
        assert!(!text.contains("hog") && !text.contains("pid"), "{text}");
        assert!(text.contains("# TYPE memstall_oom_kills counter"), "{text}");
    }
}
