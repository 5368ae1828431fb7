//! signal/signal_generate: every SIGKILL sent to a watched task, with its sender.
use memstall_common::names::program;

use crate::kernel::{
    KernelInfo,
    attach::{Hook, HookStatus, attach_btf_or_raw},
};

pub fn attach(ebpf: &mut aya::Ebpf, kernel: &KernelInfo, btf: &aya::Btf) -> HookStatus {
    let attached = if let Err(why) = &kernel.layout {
        // The program reads the target's task_struct: without the layout it knows nobody.
        Err(format!("kernel layout: {why}"))
    } else {
        attach_btf_or_raw(
            ebpf,
            program::SIGNAL_GENERATE,
            "signal_generate",
            btf,
            kernel.force_tracepoints,
        )
        .map_err(|e| format!("{e:#}"))
    };
    match attached {
        Ok((via, note)) => HookStatus {
            hook: Hook::Kills,
            attached: Ok(format!("{via} signal/signal_generate")),
            notes: note.into_iter().collect(),
        },
        Err(why) => HookStatus {
            hook: Hook::Kills,
            attached: Err(why),
            notes: Vec::new(),
        },
    }
}
