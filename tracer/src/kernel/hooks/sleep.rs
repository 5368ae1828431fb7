//! Stalls that are sleeps: sched_switch (refault waits and the memory.high penalty, told by
//! PSI's in_memstall mark, and the end of every such sleep) and balance_dirty_pages.
use memstall_common::names::program;

use crate::kernel::{
    KernelInfo,
    attach::{Hook, HookStatus, attach_btf_or_raw},
};

/// One status per hook: the sleeps need sched_switch and PSI's task bits; dirty throttling
/// needs sched_switch too (its sleep ends there).
pub fn attach(ebpf: &mut aya::Ebpf, kernel: &KernelInfo, btf: &aya::Btf) -> Vec<HookStatus> {
    let bits = kernel
        .layout
        .as_ref()
        .is_ok_and(|l| l.task_in_memstall_bit != u32::MAX);
    let switch = attach_btf_or_raw(
        ebpf,
        program::SCHED_SWITCH,
        "sched_switch",
        btf,
        kernel.force_tracepoints,
    );
    let switch_ok = switch.is_ok();
    let mut sleeps = status(Hook::MemstallSleeps, "sched/sched_switch", switch);
    if sleeps.is_attached() && !bits {
        sleeps.attached = Err(
            "task_struct has no in_memstall bit in this kernel's BTF (PSI); refault and memory.high penalty sleeps are not told apart".into(),
        );
    }
    let dirty = match (&kernel.dirty_program, switch_ok) {
        (_, false) => Err(anyhow::anyhow!("needs sched_switch, which did not attach")),
        (Ok(dirty_program), true) => attach_btf_or_raw(
            ebpf,
            dirty_program,
            "balance_dirty_pages",
            btf,
            kernel.force_tracepoints,
        ),
        (Err(why), true) => Err(anyhow::anyhow!("{why}")),
    };
    vec![
        sleeps,
        status(Hook::DirtyThrottle, "writeback/balance_dirty_pages", dirty),
    ]
}

fn status(
    hook: Hook,
    what: &str,
    attached: anyhow::Result<(&'static str, Option<String>)>,
) -> HookStatus {
    match attached {
        Ok((via, note)) => HookStatus {
            hook,
            attached: Ok(format!("{via} {what}")),
            notes: note.into_iter().collect(),
        },
        Err(e) => HookStatus {
            hook,
            attached: Err(format!("{e:#}")),
            notes: Vec::new(),
        },
    }
}
