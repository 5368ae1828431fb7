//! The vmscan hooks: tp_btf where it loads, raw_tp where it does not, one status per group.
use memstall_common::names::program as p;

use crate::kernel::{
    KernelInfo,
    attach::{Hook, HookStatus, attach_btf_or_raw},
};

/// Hook groups: the hook and its (program base name, tracepoint) pairs.
const HOOKS: &[(Hook, &[(&str, &str)])] = &[
    (
        Hook::DirectReclaim,
        &[
            (p::DIRECT_RECLAIM_BEGIN, "mm_vmscan_direct_reclaim_begin"),
            (p::DIRECT_RECLAIM_END, "mm_vmscan_direct_reclaim_end"),
        ],
    ),
    (
        Hook::MemcgReclaim,
        &[
            (p::MEMCG_RECLAIM_BEGIN, "mm_vmscan_memcg_reclaim_begin"),
            (p::MEMCG_RECLAIM_END, "mm_vmscan_memcg_reclaim_end"),
        ],
    ),
    (
        Hook::SoftlimitReclaim,
        &[
            (
                p::SOFTLIMIT_RECLAIM_BEGIN,
                "mm_vmscan_memcg_softlimit_reclaim_begin",
            ),
            (
                p::SOFTLIMIT_RECLAIM_END,
                "mm_vmscan_memcg_softlimit_reclaim_end",
            ),
        ],
    ),
    (
        Hook::NodeReclaim,
        &[
            (p::NODE_RECLAIM_BEGIN, "mm_vmscan_node_reclaim_begin"),
            (p::NODE_RECLAIM_END, "mm_vmscan_node_reclaim_end"),
        ],
    ),
    (
        Hook::Kswapd,
        &[
            (p::KSWAPD_WAKE, "mm_vmscan_kswapd_wake"),
            (p::KSWAPD_SLEEP, "mm_vmscan_kswapd_sleep"),
            (p::WAKEUP_KSWAPD, "mm_vmscan_wakeup_kswapd"),
        ],
    ),
    (Hook::Throttled, &[(p::THROTTLED, "mm_vmscan_throttled")]),
    (
        Hook::ReclaimPasses,
        &[
            (p::LRU_SHRINK_INACTIVE, "mm_vmscan_lru_shrink_inactive"),
            (p::LRU_SHRINK_ACTIVE, "mm_vmscan_lru_shrink_active"),
        ],
    ),
    (
        Hook::ShrinkSlab,
        &[
            (p::SHRINK_SLAB_START, "mm_shrink_slab_start"),
            (p::SHRINK_SLAB_END, "mm_shrink_slab_end"),
        ],
    ),
];

/// Attaches every vmscan hook, tp_btf first and raw_tp where tp_btf fails; one status per group.
pub fn attach(ebpf: &mut aya::Ebpf, kernel: &KernelInfo, btf: &aya::Btf) -> Vec<HookStatus> {
    HOOKS
        .iter()
        .map(|&(hook, programs)| {
            let mut vias = Vec::new();
            let mut notes = Vec::new();
            let mut failure = None;
            for (base, tracepoint) in programs {
                match attach_btf_or_raw(ebpf, base, tracepoint, btf, kernel.force_tracepoints) {
                    Ok((via, note)) => {
                        vias.push(via);
                        notes.extend(note);
                    }
                    Err(e) => failure = Some(format!("{e:#}")),
                }
            }
            vias.dedup();
            HookStatus {
                hook,
                attached: match failure {
                    Some(why) => Err(why),
                    None => Ok(format!(
                        "{} vmscan ({} tracepoints)",
                        vias.join("+"),
                        programs.len()
                    )),
                },
                notes,
            }
        })
        .collect()
}
