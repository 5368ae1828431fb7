//! Reclaim stalls: vmscan begin/end pairs timed per task, kswapd wake→sleep per node,
//! throttling, and the inactive-LRU passes (pages scanned vs reclaimed) inside each of them.
//!
//! Every hook exists twice: tp_btf (preferred) and raw_tp (no BTF needed to load); both see the
//! tracepoint's TP_PROTO arguments, so they share one body.
use aya_ebpf::{
    EbpfContext, Global,
    bindings::{BPF_F_NO_PREALLOC, BPF_F_USER_STACK, BPF_NOEXIST},
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_boot_ns},
    macros::{btf_tracepoint, map, raw_tracepoint},
    maps::{LruHashMap, PerCpuArray, PerCpuHashMap, StackTrace},
    programs::{BtfTracePointContext, RawTracePointContext, tracing::StackIdContext},
};
use memstall_common::{EventKind, InFlight, KswapdTotals, StallEvent, StallKind, TaskInfo};

use crate::{
    events::{EVENTS, count_stall_drop, header},
    filter::current_watched,
    task::{current_info, layout},
};

/// Stalls at least this long (ns) carry kernel and user stacks; set by the loader (--threshold).
#[unsafe(no_mangle)]
static STACK_THRESHOLD_NS: Global<u64> = Global::new(u64::MAX);

#[map]
static STACKS: StackTrace = StackTrace::with_max_entries(4096, 0);

/// (tid << 8 | kind) → stall in progress. LRU so a task killed mid-reclaim cannot leak a slot.
#[map]
static IN_FLIGHT: LruHashMap<u64, InFlight> = LruHashMap::with_max_entries(16384, 0);

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

/// What both program flavours give: the tracepoint's arguments and a context for stacks.
trait Args: EbpfContext + StackIdContext {
    fn u64_arg(&self, n: usize) -> u64;
}

impl Args for BtfTracePointContext {
    fn u64_arg(&self, n: usize) -> u64 {
        self.arg(n)
    }
}

impl Args for RawTracePointContext {
    fn u64_arg(&self, n: usize) -> u64 {
        self.arg(n)
    }
}

fn now() -> u64 {
    // SAFETY: no arguments, allowed in tracing programs.
    unsafe { bpf_ktime_get_boot_ns() }
}

fn key(kind: StallKind) -> u64 {
    (bpf_get_current_pid_tgid() & 0xffff_ffff) << 8 | kind as u64
}

fn begin(kind: StallKind, order: i32, gfp_flags: u64, nid: i32) {
    if !current_watched(&layout()) {
        return;
    }
    let _ = IN_FLIGHT.insert(key(kind), InFlight::new(now(), gfp_flags, order, nid), 0);
}

fn emit<C: Args>(
    ctx: &C,
    kind: StallKind,
    task: TaskInfo,
    flight: &InFlight,
    latency_ns: u64,
    nr_reclaimed: u64,
    reason: u32,
) {
    let (kernel_stack_id, user_stack_id) = if latency_ns >= STACK_THRESHOLD_NS.load() {
        (
            ctx.get_stackid(&STACKS, 0).map_or(-1, |id| id as i32),
            ctx.get_stackid(&STACKS, BPF_F_USER_STACK as u64)
                .map_or(-1, |id| id as i32),
        )
    } else {
        (-1, -1)
    };
    let event = StallEvent {
        header: header(EventKind::Stall),
        task,
        stall_kind: kind as u32,
        order: flight.order,
        latency_ns,
        gfp_flags: flight.gfp_flags,
        nr_reclaimed,
        pass_scanned: flight.scanned,
        pass_reclaimed: flight.reclaimed,
        passes: flight.passes,
        nid: flight.nid,
        reason,
        kernel_stack_id,
        user_stack_id,
        _reserved: 0,
    };
    match EVENTS.reserve::<StallEvent>(0) {
        Some(mut entry) => {
            entry.write(event);
            entry.submit(0);
        }
        None => count_stall_drop(kind),
    }
}

fn end<C: Args>(ctx: &C, kind: StallKind, nr_reclaimed: u64) {
    let key = key(kind);
    // SAFETY: the value is copied out before the entry is removed.
    let Some(flight) = (unsafe { IN_FLIGHT.get(&key) }).copied() else {
        return;
    };
    let _ = IN_FLIGHT.remove(&key);
    let latency = now().saturating_sub(flight.start_ns);
    emit(
        ctx,
        kind,
        current_info(&layout()),
        &flight,
        latency,
        nr_reclaimed,
        0,
    );
}

/// Adds an inactive-LRU pass to the innermost stall of the current task, or to its node's
/// kswapd run.
fn shrink_inactive(nid: u32, scanned: u64, reclaimed: u64) {
    const INNERMOST_FIRST: [StallKind; 4] = [
        StallKind::SoftlimitReclaim,
        StallKind::DirectReclaim,
        StallKind::MemcgReclaim,
        StallKind::NodeReclaim,
    ];
    for kind in INNERMOST_FIRST {
        if let Some(flight) = IN_FLIGHT.get_ptr_mut(key(kind)) {
            // SAFETY: the map value stays valid for the program's run.
            unsafe {
                (*flight).scanned += scanned;
                (*flight).reclaimed += reclaimed;
                (*flight).passes += 1;
            }
            return;
        }
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
    end(ctx, StallKind::DirectReclaim, ctx.u64_arg(0));
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
    end(ctx, StallKind::MemcgReclaim, ctx.u64_arg(0));
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
    end(ctx, StallKind::SoftlimitReclaim, ctx.u64_arg(0));
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
    end(ctx, StallKind::NodeReclaim, ctx.u64_arg(0));
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
    let latency = now().saturating_sub(run.start_ns);
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
    emit(
        ctx,
        StallKind::KswapdWake,
        current_info(&layout()),
        &run,
        latency,
        run.reclaimed,
        0,
    );
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

/// throttled(nid, usec_timeout, usec_delayed, reason): fires after the sleep, in the sleeper.
fn throttled<C: Args>(ctx: &C) {
    if !current_watched(&layout()) {
        return;
    }
    let delayed_us = ctx.u64_arg(2) as u32 as u64;
    let run = InFlight::new(0, 0, -1, ctx.u64_arg(0) as i32);
    emit(
        ctx,
        StallKind::Throttled,
        current_info(&layout()),
        &run,
        delayed_us * 1000,
        0,
        ctx.u64_arg(3) as u32,
    );
}

/// lru_shrink_inactive(nid, nr_scanned, nr_reclaimed, stat, priority, file).
fn lru_shrink_inactive<C: Args>(ctx: &C) {
    shrink_inactive(ctx.u64_arg(0) as u32, ctx.u64_arg(1), ctx.u64_arg(2));
}

/// One tp_btf and one raw_tp program per tracepoint, named `<name>_btf` and `<name>_raw`.
macro_rules! hook {
    ($btf:ident, $raw:ident, $tracepoint:literal, $body:ident) => {
        #[btf_tracepoint(function = $tracepoint)]
        pub fn $btf(ctx: BtfTracePointContext) -> i32 {
            $body(&ctx);
            0
        }

        #[raw_tracepoint(tracepoint = $tracepoint)]
        pub fn $raw(ctx: RawTracePointContext) -> i32 {
            $body(&ctx);
            0
        }
    };
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
    lru_shrink_inactive_btf,
    lru_shrink_inactive_raw,
    "mm_vmscan_lru_shrink_inactive",
    lru_shrink_inactive
);
