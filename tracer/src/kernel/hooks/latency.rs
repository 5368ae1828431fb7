//! fentry/fexit pairs timing memcg charges and page faults (`--latency`), where the kernel
//! allows trampolines.
use memstall_common::names::program;

use crate::kernel::attach::{Hook, HookStatus, attach_fentry, attach_fexit};

/// Attaches the pairs; on kernels that refuse trampolines both are unavailable.
pub fn attach(ebpf: &mut aya::Ebpf, btf: &aya::Btf) -> Vec<HookStatus> {
    [
        (
            Hook::ChargeLatency,
            (program::CHARGE_ENTER, program::CHARGE_EXIT),
            "__mem_cgroup_charge",
        ),
        (
            Hook::FaultLatency,
            (program::FAULT_ENTER, program::FAULT_EXIT),
            "handle_mm_fault",
        ),
    ]
    .into_iter()
    .map(|(hook, (enter, exit), function)| {
        let attached = attach_fentry(ebpf, enter, function, btf)
            .and_then(|()| attach_fexit(ebpf, exit, function, btf))
            .map(|()| format!("fentry/fexit {function}"))
            .map_err(|e| format!("{e:#}"));
        HookStatus {
            hook,
            attached,
            notes: Vec::new(),
        }
    })
    .collect()
}
