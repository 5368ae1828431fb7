//! fentry/fexit timing where the kernel allows trampolines (not on every kernel: the loader
//! degrades with a note): memcg charge latency with failed charges, and page-fault latency,
//! per memcg as log2 histograms kept in the kernel (both run on every fault).
use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::{fentry, fexit, map},
    maps::{LruHashMap, PerCpuHashMap},
    programs::{FEntryContext, FExitContext},
};
use memstall_common::{LatencyKey, LatencyValue, latency};

use crate::{
    filter::current_watched,
    task::{current_info, layout},
};

/// (tid << 1 | kind) → entry timestamp.
#[map]
static STARTED: LruHashMap<u64, u64> = LruHashMap::with_max_entries(16384, 0);

#[map]
pub static LATENCY: PerCpuHashMap<LatencyKey, LatencyValue> =
    PerCpuHashMap::with_max_entries(65536, BPF_F_NO_PREALLOC);

fn key(kind: u32) -> u64 {
    (bpf_get_current_pid_tgid() & 0xffff_ffff) << 1 | kind as u64
}

fn enter(kind: u32) {
    if !current_watched(&layout()) {
        return;
    }
    // SAFETY: no arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let _ = STARTED.insert(&key(kind), &now, 0);
}

fn leave(kind: u32, failed: bool) {
    let key = key(kind);
    // SAFETY: copied out before removal.
    let Some(start) = (unsafe { STARTED.get(&key) }).copied() else {
        return;
    };
    let _ = STARTED.remove(&key);
    // SAFETY: no arguments.
    let ns = unsafe { bpf_ktime_get_ns() }.saturating_sub(start);
    let bucket = (64 - ns.leading_zeros()).min(latency::BUCKETS - 1);
    let slot = LatencyKey {
        memcg_id: current_info(&layout()).memcg_id,
        kind,
        bucket,
    };
    match LATENCY.get_ptr_mut(&slot) {
        // SAFETY: per-CPU value, written only from this CPU.
        Some(value) => unsafe {
            (*value).count += 1;
            (*value).sum_ns += ns;
            (*value).failed += failed as u64;
        },
        None => {
            let value = LatencyValue {
                count: 1,
                sum_ns: ns,
                failed: failed as u64,
            };
            let _ = LATENCY.insert(&slot, &value, 0);
        }
    }
}

#[fentry(function = "__mem_cgroup_charge")]
pub fn charge_enter(_ctx: FEntryContext) -> i32 {
    enter(latency::CHARGE);
    0
}

/// __mem_cgroup_charge(folio, mm, gfp) returns 0 or -ENOMEM: argument 3 is the return value.
#[fexit(function = "__mem_cgroup_charge")]
pub fn charge_exit(ctx: FExitContext) -> i32 {
    let ret: i64 = ctx.arg(3);
    leave(latency::CHARGE, ret as i32 != 0);
    0
}

#[fentry(function = "handle_mm_fault")]
pub fn fault_enter(_ctx: FEntryContext) -> i32 {
    enter(latency::FAULT);
    0
}

#[fexit(function = "handle_mm_fault")]
pub fn fault_exit(_ctx: FExitContext) -> i32 {
    leave(latency::FAULT, false);
    0
}
