//! Per-memcg reclaim page counters (memcg/count_memcg_events), user side.
use std::collections::HashMap;

use anyhow::{Result, anyhow};
use aya::maps::PerCpuHashMap;
use serde::Serialize;
use tracer_common::{MEMCG_SLOTS, MemcgCounterKey, MemcgSlot};

use crate::loader::{self, HookStatus, KernelInfo};

/// Totals per memcg id, indexed by [`MemcgSlot`].
pub type MemcgCounters = HashMap<u64, [u64; MEMCG_SLOTS]>;

pub fn read_counters(ebpf: &aya::Ebpf) -> Result<MemcgCounters> {
    let map = ebpf
        .map("MEMCG_COUNTERS")
        .ok_or_else(|| anyhow!("map MEMCG_COUNTERS missing"))?;
    let counters = PerCpuHashMap::<_, MemcgCounterKey, u64>::try_from(map)?;
    let mut totals = MemcgCounters::new();
    for entry in counters.iter() {
        let (key, per_cpu) = entry?;
        if let Some(slot) = totals
            .entry(key.memcg_id)
            .or_default()
            .get_mut(key.slot as usize)
        {
            *slot += per_cpu.iter().sum::<u64>();
        }
    }
    Ok(totals)
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

/// `now - before`, per memcg and slot (counters only grow; a vanished entry counts from 0).
pub fn delta(now: &MemcgCounters, before: &MemcgCounters) -> MemcgCounters {
    now.iter()
        .map(|(id, counts)| {
            let base = before.get(id).copied().unwrap_or_default();
            let mut out = [0; MEMCG_SLOTS];
            for i in 0..MEMCG_SLOTS {
                out[i] = counts[i].saturating_sub(base[i]);
            }
            (*id, out)
        })
        .filter(|(_, counts)| counts.iter().any(|&c| c > 0))
        .collect()
}

pub fn attach(ebpf: &mut aya::Ebpf, kernel: &KernelInfo) -> HookStatus {
    const TRACEPOINT: &str = "count_memcg_events";
    let mut notes = Vec::new();
    let btf = if kernel.force_tracepoints {
        Err("--force-tracepoints".to_owned())
    } else {
        loader::attach_tp_btf(ebpf, "count_memcg_events_btf", TRACEPOINT, &kernel.aya_btf)
            .map_err(|e| format!("{e:#}"))
    };
    let attached = match btf {
        Ok(()) => Ok("tp_btf memcg/count_memcg_events".to_owned()),
        Err(why) => {
            notes.push(format!("tp_btf not used: {why}"));
            loader::attach_raw_tracepoint(ebpf, "count_memcg_events_raw", TRACEPOINT)
                .map(|()| "raw_tp memcg/count_memcg_events".to_owned())
                .map_err(|e| format!("{e:#}; per-cgroup pages scanned/reclaimed are not reported"))
        }
    };
    HookStatus {
        hook: "memcg_pages",
        attached,
        notes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn efficiency_and_deltas() {
        let row = MemcgPages::new("/a".into(), [100, 25, 300, 75, 0, 0]);
        assert_eq!(row.efficiency, Some(0.25));
        assert_eq!(
            MemcgPages::new("/b".into(), [0; MEMCG_SLOTS]).efficiency,
            None
        );
        let before = MemcgCounters::from([(1, [10, 5, 0, 0, 0, 0]), (2, [1, 1, 1, 1, 0, 0])]);
        let now = MemcgCounters::from([
            (1, [15, 5, 0, 0, 9, 1]),
            (2, [1, 1, 1, 1, 0, 0]),
            (3, [0, 0, 4, 4, 0, 0]),
        ]);
        let d = delta(&now, &before);
        assert_eq!(d.len(), 2);
        assert_eq!(d[&1], [5, 0, 0, 0, 9, 1]);
        assert_eq!(d[&3], [0, 0, 4, 4, 0, 0]);
    }
}
