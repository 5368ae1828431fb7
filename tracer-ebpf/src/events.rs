//! The ring buffer every rare, slow event goes through, and the count of events it dropped.
use aya_ebpf::{
    helpers::{bpf_get_smp_processor_id, bpf_ktime_get_boot_ns},
    macros::map,
    maps::{PerCpuArray, RingBuf},
};
use memstall_common::{DROP_SLOTS, EventHeader, EventKind, StallKind};

/// Rare events only (OOM kills, reclaim outliers): 4 MiB holds tens of thousands.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(4 * 1024 * 1024, 0);

/// Events lost because EVENTS was full, per CPU, one slot per EventKind.
#[map]
pub static DROPS: PerCpuArray<u64> = PerCpuArray::with_max_entries(DROP_SLOTS, 0);

pub fn header(kind: EventKind) -> EventHeader {
    // SAFETY: both helpers take no arguments and are allowed in every tracing program type.
    let (cpu, boot_ns) = unsafe { (bpf_get_smp_processor_id(), bpf_ktime_get_boot_ns()) };
    EventHeader {
        kind: kind as u32,
        cpu,
        boot_ns,
    }
}

pub fn count_drop(kind: EventKind) {
    count_drop_in(kind.drop_slot());
}

pub fn count_stall_drop(kind: StallKind) {
    count_drop_in(kind.drop_slot());
}

fn count_drop_in(slot: u32) {
    if let Some(counter) = DROPS.get_ptr_mut(slot) {
        // SAFETY: a per-CPU slot is only touched by programs on this CPU, which do not nest
        // for the same tracepoint.
        unsafe { *counter += 1 };
    }
}
