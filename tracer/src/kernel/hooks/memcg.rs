//! memcg/count_memcg_events: per-memcg LRU pages scanned/reclaimed (and faults, on request).
use memstall_common::names::program;

use crate::kernel::{
    KernelInfo,
    attach::{Hook, HookStatus, attach_btf_or_raw},
};

pub fn attach(ebpf: &mut aya::Ebpf, kernel: &KernelInfo, btf: &aya::Btf) -> HookStatus {
    let attached = attach_btf_or_raw(
        ebpf,
        program::COUNT_MEMCG_EVENTS,
        "count_memcg_events",
        btf,
        kernel.force_tracepoints,
    );
    let (attached, notes) = match attached {
        Ok((via, note)) => (
            Ok(format!("{via} memcg/count_memcg_events")),
            note.into_iter().collect(),
        ),
        Err(e) => (
            Err(format!(
                "{e:#}; per-cgroup pages scanned/reclaimed are not reported"
            )),
            Vec::new(),
        ),
    };
    HookStatus {
        hook: Hook::MemcgPages,
        attached,
        notes,
    }
}
