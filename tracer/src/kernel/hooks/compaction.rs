//! Direct compaction and swap-in: fentry/fexit windows (no tracepoint marks their end), where
//! the kernel allows trampolines.
use memstall_common::names::program;

use crate::kernel::{
    KernelInfo,
    attach::{Hook, HookStatus, attach_fentry, attach_fexit},
};

fn window(
    ebpf: &mut aya::Ebpf,
    btf: &aya::Btf,
    hook: Hook,
    (enter, exit): (&str, &str),
    function: Result<&str, String>,
    without: &str,
) -> HookStatus {
    let attached = match function {
        Err(why) => Err(why),
        Ok(function) => attach_fentry(ebpf, enter, function, btf)
            .and_then(|()| attach_fexit(ebpf, exit, function, btf))
            .map(|()| format!("fentry/fexit {function}"))
            .map_err(|e| format!("{e:#}")),
    };
    HookStatus {
        hook,
        attached: attached.map_err(|why| format!("{why}; {without}")),
        notes: Vec::new(),
    }
}

pub fn attach(ebpf: &mut aya::Ebpf, kernel: &KernelInfo, btf: &aya::Btf) -> Vec<HookStatus> {
    vec![
        window(
            ebpf,
            btf,
            Hook::Compaction,
            (program::COMPACT_ENTER, program::COMPACT_EXIT),
            kernel.compaction_function.clone(),
            "no tracepoint marks the end of direct compaction: its stalls are not reported",
        ),
        window(
            ebpf,
            btf,
            Hook::Swapin,
            (program::SWAPIN_ENTER, program::SWAPIN_EXIT),
            kernel
                .swapin_function
                .ok_or_else(|| "no swap-in read function in BTF".to_owned()),
            "no tracepoint marks a swap-in: its stalls are not reported",
        ),
    ]
}
