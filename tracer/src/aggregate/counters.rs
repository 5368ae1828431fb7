//! Per-cgroup counters over a period: LRU pages scanned/reclaimed and page faults, as deltas
//! of memory.stat or of the kernel's own counters. The kernel already counts faults per memcg
//! (memory.stat pgfault/pgmajfault), so reading those files each interval costs nothing per
//! fault; the eBPF counter on memcg/count_memcg_events costs every fault and only pays off
//! where walking cgroupfs does not: thousands of cgroups.
use std::{collections::HashMap, path::PathBuf};

use memstall_common::{MEMCG_SLOTS, MemcgSlot};
use serde::Serialize;

use super::{LatencyRow, Scope, latency};
use crate::{
    cgroup::{CgroupFilter, CgroupVersion},
    kernel::{KernelCounters, maps::LatencyCounters},
};

pub use super::memory_stat::{CgroupCounters, count_cgroups};
use super::memory_stat::{all_totals, kernel_totals, watched_totals};

/// Above this many memory cgroups, `auto` counts faults in the kernel instead of reading
/// every memory.stat each interval.
pub const AUTO_EBPF_ABOVE_CGROUPS: usize = 2000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum FaultSource {
    /// memory.stat of the watched cgroups, or of every cgroup when few enough; else eBPF.
    Auto,
    /// Read memory.stat pgfault/pgmajfault each interval (no per-fault cost).
    MemoryStat,
    /// Count in the kernel on memcg/count_memcg_events (costs every fault).
    Ebpf,
    /// No fault counts.
    Off,
}

/// One cgroup's faults over a period.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct FaultRow {
    pub cgroup: String,
    /// Minor faults (all faults less major ones) and major faults (I/O).
    pub minor: u64,
    pub major: u64,
    pub minor_per_s: f64,
    pub major_per_s: f64,
}

/// Fault rows for `now - before`, over `period_ns`, most faults first.
pub fn fault_rows(now: &CgroupCounters, before: &CgroupCounters, period_ns: u64) -> Vec<FaultRow> {
    let secs = (period_ns as f64 / 1e9).max(1e-9);
    let (all_slot, major_slot) = (MemcgSlot::Pgfault as usize, MemcgSlot::Pgmajfault as usize);
    let mut rows: Vec<FaultRow> = now
        .iter()
        .filter_map(|(cgroup, counts)| {
            let delta = delta(counts, before.get(cgroup));
            let (all, major) = (delta[all_slot], delta[major_slot]);
            (all > 0).then(|| {
                let minor = all.saturating_sub(major);
                FaultRow {
                    cgroup: cgroup.clone(),
                    minor,
                    major,
                    minor_per_s: minor as f64 / secs,
                    major_per_s: major as f64 / secs,
                }
            })
        })
        .collect();
    rows.sort_by(|a, b| {
        (b.minor + b.major)
            .cmp(&(a.minor + a.major))
            .then_with(|| a.cgroup.cmp(&b.cgroup))
    });
    rows
}

/// Reclaim effort against one cgroup's LRUs: how much was scanned, how much came free.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct MemcgPages {
    pub cgroup: String,
    pub scanned_direct: u64,
    pub reclaimed_direct: u64,
    pub scanned_kswapd: u64,
    pub reclaimed_kswapd: u64,
    /// reclaimed / scanned over both; a cgroup scanned hard for little is heading for an OOM.
    pub efficiency: Option<f64>,
}

impl MemcgPages {
    /// Whether any reclaim counter moved (fault slots aside).
    pub fn reclaimed_any(counts: &[u64; MEMCG_SLOTS]) -> bool {
        [
            MemcgSlot::PgscanDirect,
            MemcgSlot::PgscanKswapd,
            MemcgSlot::PgstealDirect,
            MemcgSlot::PgstealKswapd,
        ]
        .iter()
        .any(|&slot| counts[slot as usize] > 0)
    }

    pub fn new(cgroup: String, counts: [u64; MEMCG_SLOTS]) -> Self {
        let get = |slot: MemcgSlot| counts[slot as usize];
        let scanned = get(MemcgSlot::PgscanDirect) + get(MemcgSlot::PgscanKswapd);
        let reclaimed = get(MemcgSlot::PgstealDirect) + get(MemcgSlot::PgstealKswapd);
        Self {
            cgroup,
            scanned_direct: get(MemcgSlot::PgscanDirect),
            reclaimed_direct: get(MemcgSlot::PgstealDirect),
            scanned_kswapd: get(MemcgSlot::PgscanKswapd),
            reclaimed_kswapd: get(MemcgSlot::PgstealKswapd),
            efficiency: (scanned > 0).then(|| reclaimed as f64 / scanned as f64),
        }
    }
}

/// `now - before` per slot (counters only grow; a cgroup new since counts from zero).
fn delta(now: &[u64; MEMCG_SLOTS], before: Option<&[u64; MEMCG_SLOTS]>) -> [u64; MEMCG_SLOTS] {
    let base = before.copied().unwrap_or_default();
    std::array::from_fn(|i| now[i].saturating_sub(base[i]))
}

/// Per-cgroup LRU page counts since `before`, most scanned first.
pub fn memcg_rows(now: &CgroupCounters, before: &CgroupCounters) -> Vec<MemcgPages> {
    let mut rows: Vec<MemcgPages> = now
        .iter()
        .filter_map(|(path, counts)| {
            let delta = delta(counts, before.get(path));
            MemcgPages::reclaimed_any(&delta).then(|| MemcgPages::new(path.clone(), delta))
        })
        .collect();
    rows.sort_by(|a, b| {
        (b.scanned_direct + b.scanned_kswapd)
            .cmp(&(a.scanned_direct + a.scanned_kswapd))
            .then_with(|| a.cgroup.cmp(&b.cgroup))
    });
    rows
}

/// Where per-cgroup LRU page and fault counters come from.
#[derive(Clone, Debug, Default)]
pub struct CounterSources {
    /// memory.stat each summary: of the watched cgroups (hierarchical), or of every cgroup.
    pub memory_stat: Option<MemoryStatScope>,
    /// LRU pages scanned/reclaimed from the kernel hook instead (v1 memory.stat lacks them).
    pub kernel_lru: bool,
    /// Faults from the kernel hook instead.
    pub kernel_faults: bool,
    /// Report faults at all (`--faults off` still reads memory.stat for LRU pages on v2).
    pub report_faults: bool,
}

#[derive(Clone, Debug)]
pub struct MemoryStatScope {
    pub root: PathBuf,
    pub version: CgroupVersion,
    /// Empty: every cgroup.
    pub watched: Vec<String>,
}

/// A period's per-cgroup counter rows.
pub struct Period {
    pub memcg_pages: Vec<MemcgPages>,
    pub faults: Vec<FaultRow>,
    pub latency: Vec<LatencyRow>,
}

/// Per-cgroup counters at the start and at the last interval, and the kernel's aggregates
/// seen at the last interval: what each period's deltas are taken against.
#[derive(Default)]
pub struct PeriodCounters {
    sources: CounterSources,
    start: CgroupCounters,
    at_interval: CgroupCounters,
    latency_start: LatencyCounters,
    latency_at_interval: LatencyCounters,
    pub kernel_seen: KernelCounters,
}

impl PeriodCounters {
    /// Reads the counters from `sources` from now on.
    pub fn start(
        &mut self,
        sources: CounterSources,
        kernel: &KernelCounters,
        filter: &CgroupFilter,
        name: &mut impl FnMut(u64) -> String,
    ) {
        self.sources = sources;
        self.start = self.read(kernel, filter, name);
        self.at_interval = self.start.clone();
    }

    /// kswapd wake-up totals per memcg id at the last interval.
    pub fn wakeups_seen(&self) -> HashMap<u64, u64> {
        self.kernel_seen.kswapd_wakeups.iter().copied().collect()
    }

    fn read(
        &self,
        kernel: &KernelCounters,
        filter: &CgroupFilter,
        name: &mut impl FnMut(u64) -> String,
    ) -> CgroupCounters {
        let mut totals = match &self.sources.memory_stat {
            Some(MemoryStatScope {
                root,
                version,
                watched,
            }) if watched.is_empty() => all_totals(root, *version),
            Some(MemoryStatScope {
                root,
                version,
                watched,
            }) => watched_totals(root, *version, watched),
            None => CgroupCounters::new(),
        };
        let from_kernel = [
            (self.sources.kernel_lru, 0..4),
            (self.sources.kernel_faults, 4..MEMCG_SLOTS),
        ];
        if from_kernel.iter().any(|(on, _)| *on) {
            let kernel = kernel_totals(&kernel.memcg_pages, name);
            for (_, slots) in from_kernel.into_iter().filter(|(on, _)| *on) {
                for counts in totals.values_mut() {
                    counts[slots.clone()].fill(0);
                }
                for (path, counts) in &kernel {
                    let entry = totals.entry(path.clone()).or_default();
                    entry[slots.clone()].copy_from_slice(&counts[slots.clone()]);
                }
            }
        }
        let scoped = self
            .sources
            .memory_stat
            .as_ref()
            .is_some_and(|m| !m.watched.is_empty());
        if scoped && !self.sources.kernel_lru && !self.sources.kernel_faults {
            return totals;
        }
        totals
            .into_iter()
            .filter(|(path, _)| filter.matches(path))
            .collect()
    }

    /// The rows of a period ending now: since the last interval, or since the start.
    pub fn period(
        &mut self,
        scope: Scope,
        kernel: &KernelCounters,
        period_ns: u64,
        filter: &CgroupFilter,
        name: &mut impl FnMut(u64) -> String,
    ) -> Period {
        let now = self.read(kernel, filter, name);
        let (before, latency_before) = match scope {
            Scope::Interval => (&self.at_interval, &self.latency_at_interval),
            _ => (&self.start, &self.latency_start),
        };
        let period = Period {
            memcg_pages: memcg_rows(&now, before),
            faults: if self.sources.report_faults {
                fault_rows(&now, before, period_ns)
            } else {
                Vec::new()
            },
            latency: latency::rows(&kernel.latency, latency_before, name)
                .into_iter()
                .filter(|row| filter.matches(&row.cgroup))
                .collect(),
        };
        if scope == Scope::Interval {
            self.at_interval = now;
            self.latency_at_interval = kernel.latency.clone();
        }
        period
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_deltas_with_rates() {
        let f = |all: u64, major: u64| [0, 0, 0, 0, all, major];
        let before = CgroupCounters::from([("/a".into(), f(100, 10))]);
        let now = CgroupCounters::from([
            ("/a".into(), f(300, 30)),
            ("/b".into(), f(5, 0)),
            ("/c".into(), f(0, 0)),
        ]);
        let rows = fault_rows(&now, &before, 2_000_000_000);
        assert_eq!(rows.len(), 2);
        assert_eq!(
            (rows[0].cgroup.as_str(), rows[0].minor, rows[0].major),
            ("/a", 180, 20)
        );
        assert_eq!(rows[0].minor_per_s, 90.0);
        assert_eq!(rows[1].minor, 5);
    }

    #[test]
    fn efficiency_and_memcg_rows() {
        let row = MemcgPages::new("/a".into(), [100, 25, 300, 75, 0, 0]);
        assert_eq!(row.efficiency, Some(0.25));
        assert_eq!(
            MemcgPages::new("/b".into(), [0; MEMCG_SLOTS]).efficiency,
            None
        );
        let before = CgroupCounters::from([
            ("/a".into(), [10, 5, 0, 0, 0, 0]),
            ("/b".into(), [1, 1, 1, 1, 0, 0]),
        ]);
        let now = CgroupCounters::from([
            ("/a".into(), [15, 5, 0, 0, 9, 1]),
            ("/b".into(), [1, 1, 1, 1, 0, 0]),
            ("/c".into(), [0, 0, 40, 4, 0, 0]),
        ]);
        let rows = memcg_rows(&now, &before);
        let got: Vec<(&str, u64, u64)> = rows
            .iter()
            .map(|r| (r.cgroup.as_str(), r.scanned_direct, r.scanned_kswapd))
            .collect();
        assert_eq!(got, [("/c", 0, 40), ("/a", 5, 0)], "no change in /b");
    }
}
