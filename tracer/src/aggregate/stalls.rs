//! Per (cgroup, stall kind) latency histograms: HDR for percentiles, log2 buckets for display.
use std::collections::{BTreeMap, HashMap};

use hdrhistogram::Histogram;
use memstall_common::StallKind;
use serde::Serialize;

/// Up to 60 s at 3 significant digits, in nanoseconds. The lowest discernible value is 1 ns so
/// the 3 digits hold from the first microsecond on (a lowest of 1 µs would count in 512 ns
/// units, 50 % error at 1 µs). u32 counts (4 billion stalls of one latency before a bucket
/// saturates) keep it at about 110 KiB per histogram.
const LOWEST_NS: u64 = 1;
const HIGHEST_NS: u64 = 60_000_000_000;
const SIGNIFICANT_DIGITS: u8 = 3;

#[derive(Clone, Debug)]
pub struct StallStats {
    histogram: Histogram<u32>,
    total_ns: u64,
    pages_reclaimed: u64,
    pages_scanned: u64,
    retries: u64,
}

impl Default for StallStats {
    fn default() -> Self {
        Self {
            histogram: Histogram::new_with_bounds(LOWEST_NS, HIGHEST_NS, SIGNIFICANT_DIGITS)
                .expect("constant bounds are valid"),
            total_ns: 0,
            pages_reclaimed: 0,
            pages_scanned: 0,
            retries: 0,
        }
    }
}

impl StallStats {
    pub fn record(&mut self, latency_ns: u64, pages_reclaimed: u64, pages_scanned: u64) {
        // Stalls past 60 s land in the top bucket; the exact total is kept separately.
        self.histogram.saturating_record(latency_ns.max(1));
        self.total_ns = self.total_ns.saturating_add(latency_ns);
        // Page counts come from the kernel's records: never trusted not to overflow.
        self.pages_reclaimed = self.pages_reclaimed.saturating_add(pages_reclaimed);
        self.pages_scanned = self.pages_scanned.saturating_add(pages_scanned);
    }

    pub fn merge(&mut self, other: &StallStats) {
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.histogram.add(&other.histogram);
        self.total_ns = self.total_ns.saturating_add(other.total_ns);
        self.pages_reclaimed = self.pages_reclaimed.saturating_add(other.pages_reclaimed);
        self.pages_scanned = self.pages_scanned.saturating_add(other.pages_scanned);
        self.retries = self.retries.saturating_add(other.retries);
    }

    pub fn count(&self) -> u64 {
        self.histogram.len()
    }

    pub fn quantile_ns(&self, q: f64) -> u64 {
        self.histogram.value_at_quantile(q)
    }

    /// Counts per power-of-two microsecond range, like bcc's histograms: bucket k holds
    /// latencies in [2^k, 2^(k+1)) µs, bucket 0 also everything under 1 µs.
    pub fn log2_buckets(&self) -> Vec<Bucket> {
        let mut counts: BTreeMap<u32, u64> = BTreeMap::new();
        for value in self.histogram.iter_recorded() {
            let us = self.histogram.lowest_equivalent(value.value_iterated_to()) / 1_000;
            let k = if us <= 1 { 0 } else { us.ilog2() };
            *counts.entry(k).or_default() += u64::from(value.count_at_value());
        }
        let Some(&last) = counts.keys().last() else {
            return Vec::new();
        };
        (0..=last)
            .map(|k| Bucket {
                low_us: if k == 0 { 0 } else { 1 << k },
                high_us: (1u64 << (k + 1)) - 1,
                count: counts.get(&k).copied().unwrap_or(0),
            })
            .collect()
    }

    pub fn row(&self, cgroup: &str, kind: StallKind) -> SummaryRow {
        SummaryRow {
            cgroup: cgroup.to_owned(),
            kind: kind.name(),
            count: self.count(),
            total_ns: self.total_ns,
            p50_ns: self.quantile_ns(0.5),
            p90_ns: self.quantile_ns(0.9),
            p99_ns: self.quantile_ns(0.99),
            p999_ns: self.quantile_ns(0.999),
            max_ns: self.histogram.max(),
            pages_reclaimed: self.pages_reclaimed,
            pages_scanned: self.pages_scanned,
            retries: self.retries,
            buckets: self.log2_buckets(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Bucket {
    pub low_us: u64,
    pub high_us: u64,
    pub count: u64,
}

/// One line of the summary table; JSON `type: "summary"`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SummaryRow {
    pub cgroup: String,
    /// The stall event `type`: `direct_reclaim`, `memcg_reclaim`, ...
    pub kind: &'static str,
    pub count: u64,
    pub total_ns: u64,
    pub p50_ns: u64,
    pub p90_ns: u64,
    pub p99_ns: u64,
    pub p999_ns: u64,
    pub max_ns: u64,
    /// Pages the reclaim calls reported as reclaimed, and pages their LRU passes scanned.
    pub pages_reclaimed: u64,
    pub pages_scanned: u64,
    /// Reclaims the kernel started over inside these stalls (delay accounting counts each
    /// restart as a reclaim: `count + retries` is its freepages count).
    #[serde(skip_serializing_if = "is_zero")]
    pub retries: u64,
    pub buckets: Vec<Bucket>,
}

/// Stall statistics per (memcg id, kind) for the whole run and for the current interval; ids
/// become paths only when rows are made (the hot path never allocates a name).
#[derive(Default)]
pub struct StallAggregator {
    total: HashMap<(u64, StallKind), StallStats>,
    interval: HashMap<(u64, StallKind), StallStats>,
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if passes a reference
fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The id removed cgroups' statistics fold into (see [`StallAggregator::fold_removed`]).
const REMOVED_ID: u64 = u64::MAX;
/// Its row's name.
pub const REMOVED_NAME: &str = "(removed cgroups)";
/// Histograms (about 110 KiB each) kept before removed cgroups' fold into one per kind.
pub const MAX_HISTOGRAMS: usize = 128;

impl StallAggregator {
    pub fn record(
        &mut self,
        memcg_id: u64,
        kind: StallKind,
        latency_ns: u64,
        reclaimed: u64,
        scanned: u64,
    ) {
        self.interval
            .entry((memcg_id, kind))
            .or_default()
            .record(latency_ns, reclaimed, scanned);
    }

    /// Histograms held, interval and totals.
    pub fn histograms(&self) -> usize {
        self.total.len() + self.interval.len()
    }

    /// Folds the statistics of cgroups `is_live` says are gone into one `(removed cgroups)`
    /// entry per kind, so memory follows the live cgroups, not every cgroup that ever stalled.
    /// Returns how many entries went.
    pub fn fold_removed(&mut self, is_live: impl Fn(u64) -> bool) -> usize {
        let mut folded = 0;
        for map in [&mut self.total, &mut self.interval] {
            let gone: Vec<(u64, StallKind)> = map
                .keys()
                .filter(|(id, _)| *id != REMOVED_ID && !is_live(*id))
                .copied()
                .collect();
            for key in gone {
                if let Some(stats) = map.remove(&key) {
                    map.entry((REMOVED_ID, key.1)).or_default().merge(&stats);
                    folded += 1;
                }
            }
        }
        folded
    }

    /// Restarts inside a stall just recorded.
    pub fn record_retries(&mut self, memcg_id: u64, kind: StallKind, retries: u32) {
        let stats = self.interval.entry((memcg_id, kind)).or_default();
        stats.retries = stats.retries.saturating_add(u64::from(retries));
    }

    /// Rows of the interval that just ended (folded into the run's totals), most total stall
    /// time first.
    pub fn end_interval(&mut self, name: &mut impl FnMut(u64) -> String) -> Vec<SummaryRow> {
        let interval = std::mem::take(&mut self.interval);
        for (key, stats) in &interval {
            self.total.entry(*key).or_default().merge(stats);
        }
        rows(&interval, name, |_| true)
    }

    /// Rows for the whole run so far, most total stall time first.
    pub fn totals(&mut self, name: &mut impl FnMut(u64) -> String) -> Vec<SummaryRow> {
        self.end_interval(name);
        rows(&self.total, name, |_| true)
    }

    /// Rows for the whole run so far of the cgroups `keep` accepts, without closing the
    /// interval (for a watched cgroup that disappeared).
    pub fn totals_where(
        &self,
        name: &mut impl FnMut(u64) -> String,
        keep: impl Fn(&str) -> bool,
    ) -> Vec<SummaryRow> {
        let mut merged: HashMap<(u64, StallKind), StallStats> = HashMap::new();
        for map in [&self.total, &self.interval] {
            for (key, stats) in map {
                merged.entry(*key).or_default().merge(stats);
            }
        }
        rows(&merged, name, keep)
    }
}

fn rows(
    map: &HashMap<(u64, StallKind), StallStats>,
    name: &mut impl FnMut(u64) -> String,
    keep: impl Fn(&str) -> bool,
) -> Vec<SummaryRow> {
    // Two ids can share a name ("?" for the unnamed): merge them under it.
    let mut by_name: BTreeMap<(String, StallKind), StallStats> = BTreeMap::new();
    for ((id, kind), stats) in map {
        let path = if *id == REMOVED_ID {
            REMOVED_NAME.to_owned()
        } else {
            name(*id)
        };
        if keep(&path) {
            by_name.entry((path, *kind)).or_default().merge(stats);
        }
    }
    let mut rows: Vec<SummaryRow> = by_name
        .iter()
        .map(|((cgroup, kind), stats)| stats.row(cgroup, *kind))
        .collect();
    rows.sort_by(|a, b| {
        b.total_ns
            .cmp(&a.total_ns)
            .then_with(|| a.cgroup.cmp(&b.cgroup))
    });
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_hold_three_digits() {
        let mut stats = StallStats::default();
        for us in 1..=1000u64 {
            stats.record(us * 1_000, 1, 2);
        }
        assert_eq!(stats.count(), 1000);
        let within = |got: u64, want: u64| got.abs_diff(want) * 1000 <= want;
        assert!(
            within(stats.quantile_ns(0.5), 500_000),
            "{}",
            stats.quantile_ns(0.5)
        );
        assert!(
            within(stats.quantile_ns(0.99), 990_000),
            "{}",
            stats.quantile_ns(0.99)
        );
        let row = stats.row("/a", StallKind::MemcgReclaim);
        assert_eq!(row.total_ns, 500_500_000);
        assert!(within(row.max_ns, 1_000_000));
        assert_eq!((row.pages_reclaimed, row.pages_scanned), (1000, 2000));
    }

    #[test]
    fn merging_equals_recording_everything_once() {
        let (mut a, mut b, mut all) = (
            StallStats::default(),
            StallStats::default(),
            StallStats::default(),
        );
        for ns in [1_500, 40_000, 3_000_000] {
            a.record(ns, 0, 0);
            all.record(ns, 0, 0);
        }
        for ns in [900, 70_000_000_000, 250_000] {
            b.record(ns, 0, 0);
            all.record(ns, 0, 0);
        }
        a.merge(&b);
        assert_eq!(
            a.row("/", StallKind::DirectReclaim),
            all.row("/", StallKind::DirectReclaim)
        );
        assert_eq!(a.count(), 6);
        assert!(
            a.row("/", StallKind::DirectReclaim).max_ns >= HIGHEST_NS,
            "saturated, not lost"
        );
    }

    #[test]
    fn log2_buckets_like_bcc() {
        let mut stats = StallStats::default();
        for ns in [500, 1_000, 2_500, 3_900, 9_000, 9_500] {
            stats.record(ns, 0, 0);
        }
        let buckets = stats.log2_buckets();
        let got: Vec<(u64, u64, u64)> = buckets
            .iter()
            .map(|b| (b.low_us, b.high_us, b.count))
            .collect();
        assert_eq!(got, vec![(0, 1, 2), (2, 3, 2), (4, 7, 0), (8, 15, 2)]);
        assert!(StallStats::default().log2_buckets().is_empty());
    }

    #[test]
    fn aggregator_keeps_intervals_and_totals_apart() {
        let mut agg = StallAggregator::default();
        let mut name = |id: u64| {
            if id == 1 {
                "/a".to_owned()
            } else {
                "/b".to_owned()
            }
        };
        agg.record(1, StallKind::MemcgReclaim, 1_000_000, 10, 20);
        agg.record(2, StallKind::MemcgReclaim, 5_000_000, 0, 0);
        let first = agg.end_interval(&mut name);
        assert_eq!(
            first.iter().map(|r| r.cgroup.as_str()).collect::<Vec<_>>(),
            ["/b", "/a"]
        );
        agg.record(1, StallKind::MemcgReclaim, 1_000_000, 10, 20);
        assert_eq!(agg.end_interval(&mut name).len(), 1);
        agg.record(1, StallKind::MemcgReclaim, 1_000_000, 10, 20);
        let only_a = agg.totals_where(&mut name, |c| c == "/a");
        assert_eq!((only_a.len(), only_a[0].count), (1, 3));
        let totals = agg.totals(&mut name);
        let a = totals.iter().find(|r| r.cgroup == "/a").unwrap();
        assert_eq!((a.count, a.pages_reclaimed), (3, 30));
    }

    #[test]
    fn removed_cgroups_fold_into_one_row_per_kind() {
        let mut agg = StallAggregator::default();
        for id in 1..=10 {
            agg.record(id, StallKind::MemcgReclaim, 1_000, 1, 1);
        }
        agg.end_interval(&mut |id| format!("/cg{id}"));
        agg.record(3, StallKind::MemcgReclaim, 2_000, 1, 1);
        assert_eq!(agg.histograms(), 11);
        // Only 1 and 2 are still there.
        assert_eq!(agg.fold_removed(|id| id <= 2), 9);
        assert_eq!(
            agg.histograms(),
            4,
            "/cg1, /cg2 and (removed cgroups) in totals and interval"
        );
        let rows = agg.totals(&mut |id| format!("/cg{id}"));
        let removed = rows.iter().find(|r| r.cgroup == REMOVED_NAME).unwrap();
        assert_eq!((removed.count, removed.total_ns), (9, 8 * 1_000 + 2_000));
        assert_eq!(
            rows.iter().map(|r| r.count).sum::<u64>(),
            11,
            "nothing lost"
        );
    }
}
