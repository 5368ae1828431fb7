//! Memory pressure by cause, per cgroup: the time its tasks stalled, nested stalls counted
//! once. A throttle inside a reclaim, a shrinker inside a reclaim: the instant goes to the
//! innermost cause, so the causes add up to the total, which is the union of each task's
//! stalls. Windows of one task arrive innermost first (an inner stall ends before the one
//! around it), so each window claims the windows of its task that lie inside it.
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use memstall_common::StallKind;
use serde::Serialize;

/// A stall's (start, end), boot ns.
type Window = (u64, u64);

/// Windows kept per task for a later, enclosing window to claim.
const KEPT_PER_TASK: usize = 64;
/// A kept window older than this has no enclosing window coming (stalls last seconds at most).
const KEPT_NS: u64 = 30_000_000_000;
/// Tasks with kept windows; past this, the oldest task state goes.
const MAX_TASKS: usize = 8192;
/// The id removed cgroups fold into, as in the stall histograms.
const REMOVED_ID: u64 = u64::MAX;

const CAUSES: usize = StallKind::ALL.len() + 1;

/// One cgroup's pressure over a period.
#[derive(Clone, Debug, Default)]
struct CgroupPressure {
    stall_ns: u64,
    /// Exclusive time per kind, indexed by the kind's number.
    by_cause: [u64; CAUSES],
    tasks: HashSet<u32>,
    /// Time inside each shrinker (its scan_objects address).
    shrinkers: HashMap<u64, u64>,
}

impl CgroupPressure {
    fn merge(&mut self, other: &Self) {
        self.stall_ns = self.stall_ns.saturating_add(other.stall_ns);
        for (sum, part) in self.by_cause.iter_mut().zip(other.by_cause) {
            *sum = sum.saturating_add(part);
        }
        self.tasks.extend(&other.tasks);
        for (shrinker, ns) in &other.shrinkers {
            let sum = self.shrinkers.entry(*shrinker).or_default();
            *sum = sum.saturating_add(*ns);
        }
    }
}

/// A period's pressure of one cgroup, as the sinks get it (JSON `type: "pressure"`).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct PressureRow {
    pub cgroup: String,
    /// Time any of its tasks stalled, summed over tasks, nested stalls once.
    pub stall_ns: u64,
    /// `stall_ns` by innermost cause (stall kind name → ns); the values add up to it.
    pub by_cause: BTreeMap<&'static str, u64>,
    /// Tasks that stalled.
    pub tasks: u64,
    /// Slab shrinkers inside reclaim: symbol → ns (part of `by_cause.shrink_slab`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub shrinkers: BTreeMap<String, u64>,
    /// The kernel's PSI for the cgroup over the period (`some`: at least one task stalled,
    /// `full`: all non-idle tasks), weighted by CPU time: beside `stall_ns`, not equal to it.
    /// `null` where the kernel exposes none for this cgroup.
    pub psi_some_ns: Option<u64>,
    pub psi_full_ns: Option<u64>,
    /// Where PSI came from: `memory.pressure`, `/proc/pressure/memory`, or null.
    pub psi_source: Option<&'static str>,
}

#[derive(Default)]
pub struct PressureAggregator {
    /// Recent windows per task, in arrival order: (start, end).
    kept: HashMap<u32, VecDeque<(u64, u64)>>,
    interval: HashMap<u64, CgroupPressure>,
    total: HashMap<u64, CgroupPressure>,
}

/// Length of the union of `windows` (sorted by start here).
fn union_ns(windows: &mut [Window]) -> u64 {
    windows.sort_unstable();
    let mut covered = 0u64;
    let mut reach = 0u64;
    for &mut (start, end) in windows {
        let start = start.max(reach);
        if end > start {
            covered = covered.saturating_add(end - start);
            reach = end;
        }
        reach = reach.max(end);
    }
    covered
}

impl PressureAggregator {
    /// One finished stall of task `tid` in memcg `memcg_id`. `detail` names the shrinker of a
    /// shrink_slab window.
    pub fn record(
        &mut self,
        tid: u32,
        memcg_id: u64,
        kind: StallKind,
        (start_ns, end_ns): (u64, u64),
        detail: u64,
    ) {
        if !kind.is_task_stall() || end_ns < start_ns {
            return;
        }
        if self.kept.len() > MAX_TASKS {
            self.kept
                .retain(|_, windows| windows.back().is_some_and(|w| w.1 + KEPT_NS >= end_ns));
            if self.kept.len() > MAX_TASKS {
                self.kept.clear();
            }
        }
        let kept = self.kept.entry(tid).or_default();
        // Windows of this task that overlap this one are inside it (nesting), or stick out of
        // it by measurement error: either way only their overlap is this window's, and the
        // task's total stays the union of its windows.
        // In place, on the stack: this runs for every stall record.
        let mut inner: [Window; KEPT_PER_TASK] = [(0, 0); KEPT_PER_TASK];
        let mut overlapping = 0;
        kept.retain(|&(s, e)| {
            if s < end_ns && e > start_ns {
                if let Some(slot) = inner.get_mut(overlapping) {
                    *slot = (s.max(start_ns), e.min(end_ns));
                    overlapping += 1;
                }
                false
            } else {
                e.saturating_add(KEPT_NS) >= end_ns
            }
        });
        kept.push_back((start_ns, end_ns));
        while kept.len() > KEPT_PER_TASK {
            kept.pop_front();
        }
        let exclusive = (end_ns - start_ns).saturating_sub(union_ns(&mut inner[..overlapping]));
        let cgroup = self.interval.entry(memcg_id).or_default();
        cgroup.stall_ns = cgroup.stall_ns.saturating_add(exclusive);
        let cause = &mut cgroup.by_cause[kind as usize];
        *cause = cause.saturating_add(exclusive);
        cgroup.tasks.insert(tid);
        if kind == StallKind::ShrinkSlab {
            let sum = cgroup.shrinkers.entry(detail).or_default();
            *sum = sum.saturating_add(exclusive);
        }
    }

    /// The cgroups with pressure in the interval that just ended (folded into the totals).
    pub fn end_interval(&mut self) -> Vec<(u64, PressureRow)> {
        let interval = std::mem::take(&mut self.interval);
        for (id, pressure) in &interval {
            self.total.entry(*id).or_default().merge(pressure);
        }
        rows(&interval)
    }

    /// The run so far, per cgroup.
    pub fn totals(&mut self) -> Vec<(u64, PressureRow)> {
        self.end_interval();
        rows(&self.total)
    }

    /// Folds cgroups `is_live` says are gone into one entry (see StallAggregator).
    pub fn fold_removed(&mut self, is_live: impl Fn(u64) -> bool) {
        for map in [&mut self.total, &mut self.interval] {
            let gone: Vec<u64> = map
                .keys()
                .filter(|id| **id != REMOVED_ID && !is_live(**id))
                .copied()
                .collect();
            for id in gone {
                if let Some(pressure) = map.remove(&id) {
                    map.entry(REMOVED_ID).or_default().merge(&pressure);
                }
            }
        }
    }

    pub fn cgroups(&self) -> usize {
        self.total.len() + self.interval.len()
    }
}

/// Rows by memcg id, unnamed: the caller names cgroups, shrinkers and adds PSI.
fn rows(map: &HashMap<u64, CgroupPressure>) -> Vec<(u64, PressureRow)> {
    map.iter()
        .map(|(id, p)| {
            let row = PressureRow {
                stall_ns: p.stall_ns,
                by_cause: StallKind::ALL
                    .into_iter()
                    .filter(|k| p.by_cause[*k as usize] > 0)
                    .map(|k| (k.name(), p.by_cause[k as usize]))
                    .collect(),
                tasks: p.tasks.len() as u64,
                // Named by the caller, who has the kernel symbols.
                shrinkers: p
                    .shrinkers
                    .iter()
                    .map(|(address, ns)| (format!("{address:#x}"), *ns))
                    .collect(),
                ..PressureRow::default()
            };
            (*id, row)
        })
        .collect()
}

/// Whether `id` is the folded removed-cgroups entry.
pub fn is_removed(id: u64) -> bool {
    id == REMOVED_ID
}

#[cfg(test)]
mod tests {
    use super::*;

    fn by(rows: &[(u64, PressureRow)], id: u64) -> PressureRow {
        rows.iter().find(|(i, _)| *i == id).unwrap().1.clone()
    }

    #[test]
    fn nested_time_counts_once_and_goes_to_the_innermost_cause() {
        let mut agg = PressureAggregator::default();
        // A reclaim 100..200 with a throttle 120..150 and a shrinker 160..170 inside.
        agg.record(1, 9, StallKind::Throttled, (120, 150), 0);
        agg.record(1, 9, StallKind::ShrinkSlab, (160, 170), 0xabc);
        agg.record(1, 9, StallKind::MemcgReclaim, (100, 200), 0);
        // Then a refault sleep on its own, and another task's reclaim.
        agg.record(1, 9, StallKind::Refault, (300, 340), 0);
        agg.record(2, 9, StallKind::MemcgReclaim, (100, 200), 0);
        // kswapd's runs are nobody's stall.
        agg.record(3, 9, StallKind::KswapdWake, (0, 1_000), 0);
        let row = by(&agg.end_interval(), 9);
        assert_eq!(row.stall_ns, 100 + 40 + 100);
        assert_eq!(row.by_cause["memcg_reclaim"], 60 + 100);
        assert_eq!(row.by_cause["throttled"], 30);
        assert_eq!(row.by_cause["shrink_slab"], 10);
        assert_eq!(row.by_cause["refault"], 40);
        assert_eq!(row.by_cause.values().sum::<u64>(), row.stall_ns);
        assert_eq!(row.tasks, 2);
        assert_eq!(row.shrinkers["0xabc"], 10);
    }

    #[test]
    fn a_window_claims_only_what_lies_inside_it() {
        let mut agg = PressureAggregator::default();
        agg.record(1, 9, StallKind::MemcgReclaim, (10, 20), 0);
        agg.record(1, 9, StallKind::MemcgReclaim, (30, 40), 0);
        // A later, disjoint window claims nothing; one around both claims both.
        agg.record(1, 9, StallKind::DirtyThrottle, (50, 60), 0);
        agg.record(1, 9, StallKind::HighThrottle, (5, 45), 0);
        let row = by(&agg.totals(), 9);
        assert_eq!(row.stall_ns, 10 + 10 + 10 + (40 - 20));
        assert_eq!(row.by_cause["high_throttle"], 20);
    }

    #[test]
    fn intervals_fold_into_totals_and_removed_cgroups_fold_together() {
        let mut agg = PressureAggregator::default();
        agg.record(1, 7, StallKind::DirectReclaim, (0, 10), 0);
        assert_eq!(agg.end_interval().len(), 1);
        agg.record(1, 8, StallKind::DirectReclaim, (20, 25), 0);
        agg.fold_removed(|id| id == 8);
        let totals = agg.totals();
        assert_eq!(by(&totals, 8).stall_ns, 5);
        assert!(totals.iter().any(|(id, _)| is_removed(*id)));
        assert_eq!(totals.iter().map(|(_, r)| r.stall_ns).sum::<u64>(), 15);
    }
}
