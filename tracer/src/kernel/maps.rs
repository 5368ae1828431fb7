//! Typed reads of the maps the programs keep aggregates in, summed over CPUs.
use std::collections::HashMap;

use anyhow::{Result, anyhow};
use aya::{
    Ebpf,
    maps::{HashMap as BpfHashMap, Map, MapData, PerCpuArray, PerCpuHashMap, StackTraceMap},
};
use memstall_common::{
    DIAGNOSTIC_SLOTS, DROP_SLOTS, Diagnostic, InFlight, KswapdTotals, LatencyKey, LatencyValue,
    MEMCG_SLOTS, MemcgCounterKey, StallKind, lost_window_slot, names::map,
};

use crate::clock::BootClock;

/// Per-memcg counter totals, indexed by [`memstall_common::MemcgSlot`].
pub type MemcgCounters = HashMap<u64, [u64; MEMCG_SLOTS]>;

/// Charge/fault latency totals since load per (memcg id, kind, bucket).
pub type LatencyCounters = HashMap<LatencyKey, LatencyValue>;

/// Per-CPU values summed; the kernel's counters are not trusted not to overflow.
fn sum<'a>(values: impl Iterator<Item = &'a u64>) -> u64 {
    values.fold(0, |total, v| total.saturating_add(*v))
}

fn named<'a>(ebpf: &'a Ebpf, name: &str) -> Result<&'a Map> {
    ebpf.map(name).ok_or_else(|| anyhow!("map {name} missing"))
}

/// kswapd wake-up requests per memcg id of the requester.
pub fn kswapd_wakeups(ebpf: &Ebpf) -> Result<Vec<(u64, u64)>> {
    let wakeups = PerCpuHashMap::<_, u64, u64>::try_from(named(ebpf, map::KSWAPD_WAKEUPS)?)?;
    let mut counts = Vec::new();
    for entry in &wakeups {
        let (memcg, per_cpu) = entry?;
        counts.push((memcg, sum(per_cpu.iter())));
    }
    Ok(counts)
}

/// kswapd since load, with the runs still in progress counted up to now: a node that stays
/// awake across summaries shows in each of them.
pub fn kswapd_totals(ebpf: &Ebpf) -> Result<KswapdTotals> {
    let per_cpu =
        PerCpuArray::<_, KswapdTotals>::try_from(named(ebpf, map::KSWAPD_TOTALS)?)?.get(&0, 0)?;
    let mut totals = KswapdTotals::default();
    for cpu in per_cpu.iter() {
        totals.runs = totals.runs.saturating_add(cpu.runs);
        totals.wakes = totals.wakes.saturating_add(cpu.wakes);
        totals.awake_ns = totals.awake_ns.saturating_add(cpu.awake_ns);
        totals.pages_scanned = totals.pages_scanned.saturating_add(cpu.pages_scanned);
        totals.pages_reclaimed = totals.pages_reclaimed.saturating_add(cpu.pages_reclaimed);
    }
    let awake: Vec<InFlight> = BpfHashMap::<_, u32, InFlight>::try_from(named(ebpf, map::KSWAPD)?)?
        .iter()
        .filter_map(|entry| entry.ok().map(|(_, run)| run))
        .collect();
    // Read after the runs, so none of them starts after `now`.
    let now = BootClock::now_boot_ns();
    for run in awake {
        totals.awake_ns = totals
            .awake_ns
            .saturating_add(now.saturating_sub(run.start_ns));
        totals.pages_scanned = totals.pages_scanned.saturating_add(run.scanned);
        totals.pages_reclaimed = totals.pages_reclaimed.saturating_add(run.reclaimed);
    }
    Ok(totals)
}

/// Events the kernel could not queue because the ring buffer was full, since load.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Drops {
    /// Every kind, summed over CPUs.
    pub total: u64,
    /// Lost stalls by kind (the kinds that lost any).
    pub stalls: Vec<(StallKind, u64)>,
}

pub fn drops(ebpf: &Ebpf) -> Result<Drops> {
    let slots = PerCpuArray::<_, u64>::try_from(named(ebpf, map::DROPS)?)?;
    let mut drops = Drops::default();
    for (slot, per_cpu) in (0..DROP_SLOTS).zip(slots.iter()) {
        let lost = sum(per_cpu?.iter());
        drops.total = drops.total.saturating_add(lost);
        if let Some(kind) = StallKind::ALL.into_iter().find(|k| k.drop_slot() == slot)
            && lost > 0
        {
            drops.stalls.push((kind, lost));
        }
    }
    Ok(drops)
}

/// Unexpected states the programs counted since load.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Diagnostics {
    /// Every kind, in [`Diagnostic::ALL`] order, zeros included.
    pub counts: Vec<(Diagnostic, u64)>,
    /// Stall windows lost (evicted or refused in IN_FLIGHT), by stall kind (the kinds that
    /// lost any): the histograms miss them.
    pub lost_windows: Vec<(StallKind, u64)>,
}

pub fn diagnostics(ebpf: &Ebpf) -> Result<Diagnostics> {
    let slots = PerCpuArray::<_, u64>::try_from(named(ebpf, map::DIAGNOSTICS)?)?;
    let mut totals = vec![0; DIAGNOSTIC_SLOTS as usize];
    for (total, per_cpu) in totals.iter_mut().zip(slots.iter()) {
        *total = sum(per_cpu?.iter());
    }
    let at = |slot: u32| totals.get(slot as usize).copied().unwrap_or(0);
    Ok(Diagnostics {
        counts: Diagnostic::ALL.map(|kind| (kind, at(kind.slot()))).to_vec(),
        lost_windows: StallKind::ALL
            .into_iter()
            .map(|kind| (kind, at(lost_window_slot(kind as u32))))
            .filter(|(_, lost)| *lost > 0)
            .collect(),
    })
}

pub fn memcg_counters(ebpf: &Ebpf) -> Result<MemcgCounters> {
    let counters =
        PerCpuHashMap::<_, MemcgCounterKey, u64>::try_from(named(ebpf, map::MEMCG_COUNTERS)?)?;
    let mut totals = MemcgCounters::new();
    for entry in &counters {
        let (key, per_cpu) = entry?;
        if let Some(slot) = totals
            .entry(key.memcg_id)
            .or_default()
            .get_mut(key.slot as usize)
        {
            *slot = slot.saturating_add(sum(per_cpu.iter()));
        }
    }
    Ok(totals)
}

pub fn latency_counters(ebpf: &Ebpf) -> Result<LatencyCounters> {
    let latency =
        PerCpuHashMap::<_, LatencyKey, LatencyValue>::try_from(named(ebpf, map::LATENCY)?)?;
    let mut totals = LatencyCounters::new();
    for entry in &latency {
        let (key, per_cpu) = entry?;
        let total = totals.entry(key).or_default();
        for value in per_cpu.iter() {
            total.count = total.count.saturating_add(value.count);
            total.sum_ns = total.sum_ns.saturating_add(value.sum_ns);
            total.failed = total.failed.saturating_add(value.failed);
        }
    }
    Ok(totals)
}

/// Takes a map out of the object, for the one owner that reads it from then on.
fn take(ebpf: &mut Ebpf, name: &str) -> Result<Map> {
    ebpf.take_map(name)
        .ok_or_else(|| anyhow!("map {name} missing"))
}

/// The STACKS map, for the decoder.
pub fn take_stacks(ebpf: &mut Ebpf) -> Result<StackTraceMap<MapData>> {
    Ok(StackTraceMap::try_from(take(ebpf, map::STACKS)?)?)
}

/// The EVENTS ring buffer, for the event loop.
pub fn take_events(ebpf: &mut Ebpf) -> Result<aya::maps::RingBuf<MapData>> {
    Ok(aya::maps::RingBuf::try_from(take(ebpf, map::EVENTS)?)?)
}

/// Fills the in-kernel cgroup filter.
pub fn watch(ebpf: &mut Ebpf, ids: &[u64]) -> Result<()> {
    let slot = ebpf
        .map_mut(map::WATCHED)
        .ok_or_else(|| anyhow!("map {} missing", map::WATCHED))?;
    let mut watched = BpfHashMap::<_, u64, u8>::try_from(slot)?;
    for id in ids {
        watched.insert(id, 1, 0)?;
    }
    Ok(())
}
