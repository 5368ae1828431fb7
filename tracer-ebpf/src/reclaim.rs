//! Reclaim stalls: vmscan begin/end pairs timed per task, kswapd wake→sleep per node,
//! throttling and slab shrinkers inside a reclaim, and the inactive-LRU passes (pages scanned
//! vs reclaimed) inside each of them.
//!
//! Every hook exists twice: tp_btf (preferred) and raw_tp (no BTF needed to load); both see the
//! tracepoint's TP_PROTO arguments, so they share one body.
use aya_ebpf::{
    bindings::{BPF_F_NO_PREALLOC, BPF_NOEXIST},
    macros::map,
    maps::{LruHashMap, PerCpuArray, PerCpuHashMap},
};
use memstall_common::{InFlight, KswapdTotals, StallKind};

use crate::{
    filter::current_watched,
    stall::{self, Args, Stall, TASKS, begin, current_tid, emit, end, hook, in_flight, now},
    task::{current_info, layout, read},
};

/// kswapd per node: when it woke, for what order, and its passes since. Userspace reads the
/// runs in progress too.
#[map]
pub static KSWAPD: LruHashMap<u32, InFlight> = LruHashMap::with_max_entries(1024, 0);

/// Every kswapd run, watched or not; one slot.
#[map]
pub static KSWAPD_TOTALS: PerCpuArray<KswapdTotals> = PerCpuArray::with_max_entries(1, 0);

/// kswapd wake-up requests (mm_vmscan_wakeup_kswapd) per memcg id of the requesting task.
#[map]
pub static KSWAPD_WAKEUPS: PerCpuHashMap<u64, u64> =
    PerCpuHashMap::with_max_entries(16384, BPF_F_NO_PREALLOC);

/// The kinds that are a reclaim: a throttle or a shrinker inside one is part of its time.
const RECLAIMS: u32 = StallKind::DirectReclaim.bit()
    | StallKind::MemcgReclaim.bit()
    | StallKind::NodeReclaim.bit()
    | StallKind::SoftlimitReclaim.bit();

/// Longest a throttled sleep runs past its timeout before the tracepoint fires (wake-up and
/// run-queue delay): a recorded sleep start older than that belongs to something else.
const THROTTLE_SLACK_NS: u64 = 20_000_000;

/// The innermost reclaim window of the current task, if one is open.
fn open_reclaim() -> Option<*mut InFlight> {
    const INNERMOST_FIRST: [StallKind; 4] = [
        StallKind::SoftlimitReclaim,
        StallKind::DirectReclaim,
        StallKind::MemcgReclaim,
        StallKind::NodeReclaim,
    ];
    INNERMOST_FIRST.into_iter().find_map(in_flight)
}

/// Inside one reclaim the scan priority only falls, pass after pass; a rise is the kernel
/// starting the reclaim over (each restart is a reclaim of its own to delay accounting).
fn saw_priority(flight: *mut InFlight, priority: i32) {
    // SAFETY: a map value, valid for the program's run.
    unsafe {
        if priority > (*flight).last_priority {
            (*flight).retries += 1;
        }
        (*flight).last_priority = priority;
    }
}

/// Adds an inactive-LRU pass to the innermost stall of the current task, or to its node's
/// kswapd run.
fn shrink_inactive(nid: u32, scanned: u64, reclaimed: u64, priority: i32) {
    if let Some(flight) = open_reclaim() {
        // SAFETY: the map value stays valid for the program's run.
        unsafe {
            (*flight).scanned += scanned;
            (*flight).reclaimed += reclaimed;
            (*flight).passes += 1;
        }
        saw_priority(flight, priority);
        return;
    }
    if let Some(run) = KSWAPD.get_ptr_mut(nid) {
        // SAFETY: as above; kswapd of a node runs on one CPU at a time.
        unsafe {
            (*run).scanned += scanned;
            (*run).reclaimed += reclaimed;
            (*run).passes += 1;
        }
    }
}

fn direct_begin<C: Args>(ctx: &C) {
    begin(
        StallKind::DirectReclaim,
        ctx.u64_arg(0) as i32,
        ctx.u64_arg(1),
        -1,
    );
}
fn direct_end<C: Args>(ctx: &C) {
    end(ctx, StallKind::DirectReclaim, ctx.u64_arg(0), 0);
}
fn memcg_begin<C: Args>(ctx: &C) {
    begin(
        StallKind::MemcgReclaim,
        ctx.u64_arg(0) as i32,
        ctx.u64_arg(1),
        -1,
    );
}
fn memcg_end<C: Args>(ctx: &C) {
    end(ctx, StallKind::MemcgReclaim, ctx.u64_arg(0), 0);
}
fn softlimit_begin<C: Args>(ctx: &C) {
    begin(
        StallKind::SoftlimitReclaim,
        ctx.u64_arg(0) as i32,
        ctx.u64_arg(1),
        -1,
    );
}
fn softlimit_end<C: Args>(ctx: &C) {
    end(ctx, StallKind::SoftlimitReclaim, ctx.u64_arg(0), 0);
}
fn node_begin<C: Args>(ctx: &C) {
    begin(
        StallKind::NodeReclaim,
        ctx.u64_arg(1) as i32,
        ctx.u64_arg(2),
        ctx.u64_arg(0) as i32,
    );
}
fn node_end<C: Args>(ctx: &C) {
    end(ctx, StallKind::NodeReclaim, ctx.u64_arg(0), 0);
}

/// kswapd_wake(nid, zid, order), in kswapd's own context. It fires at every balancing pass,
/// kswapd_sleep only when kswapd really sleeps: a run is the first wake to the sleep.
fn kswapd_wake<C: Args>(ctx: &C) {
    let nid = ctx.u64_arg(0) as u32;
    let mut run = InFlight::new(now(), 0, ctx.u64_arg(2) as i32, nid as i32);
    run.report = current_watched(&layout()) as u32;
    if KSWAPD.insert(nid, run, BPF_NOEXIST as u64).is_err() {
        return;
    }
    if let Some(totals) = KSWAPD_TOTALS.get_ptr_mut(0) {
        // SAFETY: this CPU's slot, valid for the program's run.
        unsafe { (*totals).wakes += 1 };
    }
}

/// kswapd_sleep(nid): the node's kswapd run is over.
fn kswapd_sleep<C: Args>(ctx: &C) {
    let nid = ctx.u64_arg(0) as u32;
    // SAFETY: copied out before removal.
    let Some(run) = (unsafe { KSWAPD.get(&nid) }).copied() else {
        return;
    };
    let _ = KSWAPD.remove(&nid);
    let end_ns = now();
    let latency = end_ns.saturating_sub(run.start_ns);
    if let Some(totals) = KSWAPD_TOTALS.get_ptr_mut(0) {
        // SAFETY: this CPU's slot, valid for the program's run.
        unsafe {
            (*totals).runs += 1;
            (*totals).awake_ns += latency;
            (*totals).pages_scanned += run.scanned;
            (*totals).pages_reclaimed += run.reclaimed;
        }
    }
    if run.report == 0 {
        return;
    }
    let stall = Stall {
        kind: StallKind::KswapdWake,
        start_ns: run.start_ns,
        end_ns,
        nr_reclaimed: run.reclaimed,
        reason: 0,
        detail: 0,
    };
    emit(ctx, &stall, current_info(&layout()), &run, true);
}

/// wakeup_kswapd(nid, zid, order, gfp): an allocation found its zone under the low watermark.
fn wakeup_kswapd<C: Args>(_ctx: &C) {
    if !current_watched(&layout()) {
        return;
    }
    let memcg = current_info(&layout()).memcg_id;
    match KSWAPD_WAKEUPS.get_ptr_mut(memcg) {
        // SAFETY: per-CPU value, only this CPU writes it.
        Some(count) => unsafe { *count += 1 },
        None => {
            let _ = KSWAPD_WAKEUPS.insert(memcg, 1, 0);
        }
    }
}

/// throttled(nid, usec_timeout, usec_delayed, reason): fires once, after the sleep, in the
/// sleeper. The sleep began at the task's last switch-out inside its reclaim (recorded by the
/// sched_switch hook); the kernel's own `usec_delayed` is rounded to jiffies and stands in only
/// where that hook is missing.
fn throttled<C: Args>(ctx: &C) {
    let end_ns = now();
    if !current_watched(&layout()) {
        return;
    }
    let timeout_ns = u64::from(ctx.u64_arg(1) as u32) * 1000;
    let delayed_ns = u64::from(ctx.u64_arg(2) as u32) * 1000;
    // SAFETY: read by value.
    let slept_at = unsafe { TASKS.get(&current_tid()) }.map_or(0, |s| s.last_sleep);
    let earliest = end_ns.saturating_sub(timeout_ns + THROTTLE_SLACK_NS);
    let start_ns = if slept_at >= earliest && slept_at <= end_ns {
        slept_at
    } else {
        // Jiffy-rounded: never let it reach back before the reclaim it is part of.
        // SAFETY: read by value.
        let window = open_reclaim().map_or(0, |f| unsafe { (*f).start_ns });
        end_ns.saturating_sub(delayed_ns).max(window)
    };
    let stall = Stall {
        kind: StallKind::Throttled,
        start_ns,
        end_ns,
        nr_reclaimed: 0,
        reason: ctx.u64_arg(3) as u32,
        detail: 0,
    };
    let flight = InFlight::new(start_ns, 0, -1, ctx.u64_arg(0) as i32);
    emit(ctx, &stall, current_info(&layout()), &flight, true);
}

/// mm_shrink_slab_start(shrinker, sc, nr_objects, cache_items, delta, total_scan, priority):
/// a shrinker runs; a stall of its own only inside a task's reclaim (kswapd's are not).
fn shrink_slab_start<C: Args>(ctx: &C) {
    if stall::open_windows(current_tid()) & RECLAIMS != 0 {
        if let Some(flight) = open_reclaim() {
            saw_priority(flight, ctx.u64_arg(6) as i32);
        }
        begin(StallKind::ShrinkSlab, -1, 0, -1);
    }
}

/// lru_shrink_active(nid, nr_taken, nr_active, nr_deactivated, nr_referenced, priority, file):
/// only its priority matters (a pass that deactivates without reclaiming still scans).
fn lru_shrink_active<C: Args>(ctx: &C) {
    if let Some(flight) = open_reclaim() {
        saw_priority(flight, ctx.u64_arg(5) as i32);
    }
}

/// mm_shrink_slab_end(shrinker, nid, freed, unused, new_scan, total_scan): the shrinker is
/// named by its scan_objects function.
fn shrink_slab_end<C: Args>(ctx: &C) {
    let layout = layout();
    let scan_objects: u64 = if layout.shrinker_scan_objects == u32::MAX {
        0
    } else {
        read(ctx.u64_arg(0), layout.shrinker_scan_objects).unwrap_or(0)
    };
    let freed = ctx.u64_arg(2) as i32;
    end(
        ctx,
        StallKind::ShrinkSlab,
        u64::try_from(freed).unwrap_or(0),
        scan_objects,
    );
}

/// lru_shrink_inactive(nid, nr_scanned, nr_reclaimed, stat, priority, file).
fn lru_shrink_inactive<C: Args>(ctx: &C) {
    shrink_inactive(
        ctx.u64_arg(0) as u32,
        ctx.u64_arg(1),
        ctx.u64_arg(2),
        ctx.u64_arg(4) as i32,
    );
}

hook!(
    direct_reclaim_begin_btf,
    direct_reclaim_begin_raw,
    "mm_vmscan_direct_reclaim_begin",
    direct_begin
);
hook!(
    direct_reclaim_end_btf,
    direct_reclaim_end_raw,
    "mm_vmscan_direct_reclaim_end",
    direct_end
);
hook!(
    memcg_reclaim_begin_btf,
    memcg_reclaim_begin_raw,
    "mm_vmscan_memcg_reclaim_begin",
    memcg_begin
);
hook!(
    memcg_reclaim_end_btf,
    memcg_reclaim_end_raw,
    "mm_vmscan_memcg_reclaim_end",
    memcg_end
);
hook!(
    softlimit_reclaim_begin_btf,
    softlimit_reclaim_begin_raw,
    "mm_vmscan_memcg_softlimit_reclaim_begin",
    softlimit_begin
);
hook!(
    softlimit_reclaim_end_btf,
    softlimit_reclaim_end_raw,
    "mm_vmscan_memcg_softlimit_reclaim_end",
    softlimit_end
);
hook!(
    node_reclaim_begin_btf,
    node_reclaim_begin_raw,
    "mm_vmscan_node_reclaim_begin",
    node_begin
);
hook!(
    node_reclaim_end_btf,
    node_reclaim_end_raw,
    "mm_vmscan_node_reclaim_end",
    node_end
);
hook!(
    kswapd_wake_btf,
    kswapd_wake_raw,
    "mm_vmscan_kswapd_wake",
    kswapd_wake
);
hook!(
    kswapd_sleep_btf,
    kswapd_sleep_raw,
    "mm_vmscan_kswapd_sleep",
    kswapd_sleep
);
hook!(
    wakeup_kswapd_btf,
    wakeup_kswapd_raw,
    "mm_vmscan_wakeup_kswapd",
    wakeup_kswapd
);
hook!(
    throttled_btf,
    throttled_raw,
    "mm_vmscan_throttled",
    throttled
);
hook!(
    shrink_slab_start_btf,
    shrink_slab_start_raw,
    "mm_shrink_slab_start",
    shrink_slab_start
);
hook!(
    shrink_slab_end_btf,
    shrink_slab_end_raw,
    "mm_shrink_slab_end",
    shrink_slab_end
);
hook!(
    lru_shrink_active_btf,
    lru_shrink_active_raw,
    "mm_vmscan_lru_shrink_active",
    lru_shrink_active
);
hook!(
    lru_shrink_inactive_btf,
    lru_shrink_inactive_raw,
    "mm_vmscan_lru_shrink_inactive",
    lru_shrink_inactive
);
