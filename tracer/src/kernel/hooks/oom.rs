//! oom/mark_victim (tp_btf with the victim's task_struct, else the classic tracepoint's record)
//! and fentry on oom_kill_process() for the kill's exact oom_control.
use anyhow::anyhow;
use aya::maps::Array;
use memstall_common::{
    MarkVictimFormat,
    names::{map, program},
};

use crate::kernel::{
    KernelInfo,
    attach::{Hook, HookStatus, attach_fentry, attach_tp_btf, attach_tracepoint},
    tracefs,
};

/// tp_btf where mark_victim passes the victim's task_struct (every field straight from the
/// task, including its memcg), else the classic tracepoint's record.
pub fn attach(ebpf: &mut aya::Ebpf, kernel: &KernelInfo, btf: &aya::Btf) -> HookStatus {
    let mut notes = Vec::new();
    let btf_usable = match (&kernel.layout, &kernel.mark_victim_passes_task) {
        _ if kernel.force_tracepoints => Err("--force-tracepoints".into()),
        (Err(why), _) => Err(format!("kernel layout: {why}")),
        (_, Err(e)) => Err(e.clone()),
        (_, Ok(false)) => Err("this kernel's mark_victim does not pass the victim task".into()),
        (Ok(_), Ok(true)) => Ok(()),
    };
    let btf_result = btf_usable.and_then(|()| {
        attach_tp_btf(ebpf, program::OOM_MARK_VICTIM_BTF, "mark_victim", btf)
            .map_err(|e| format!("{e:#}"))
    });
    match btf_result {
        Ok(()) => {
            return HookStatus {
                hook: Hook::OomKill,
                attached: Ok("tp_btf oom/mark_victim".into()),
                notes,
            };
        }
        Err(why) => notes.push(format!("tp_btf not used: {why}")),
    }
    let classic = (|| -> anyhow::Result<()> {
        let tracefs = tracefs::ensure_mounted()?;
        let format = tracefs::read_mark_victim_format(&tracefs)?;
        let slot = ebpf
            .map_mut(map::MARK_VICTIM_FORMAT)
            .ok_or_else(|| anyhow!("map {} missing", map::MARK_VICTIM_FORMAT))?;
        Array::<_, MarkVictimFormat>::try_from(slot)?.set(0, format, 0)?;
        attach_tracepoint(ebpf, program::OOM_MARK_VICTIM_TP, "oom", "mark_victim")
    })();
    HookStatus {
        hook: Hook::OomKill,
        attached: classic
            .map(|()| "tracepoint oom/mark_victim".into())
            .map_err(|e| format!("{e:#}")),
        notes,
    }
}

/// fentry on oom_kill_process(), for the kill's exact oom_control; trampolines are not
/// available on every kernel, and the kill is still reported without it.
pub fn attach_context(ebpf: &mut aya::Ebpf, kernel: &KernelInfo, btf: &aya::Btf) -> HookStatus {
    let attached = if kernel.oom_control_layout.valid == 0 {
        Err("struct oom_control not in kernel BTF".to_owned())
    } else {
        attach_fentry(
            ebpf,
            program::OOM_KILL_PROCESS_ENTRY,
            "oom_kill_process",
            btf,
        )
        .map(|()| "fentry oom_kill_process".to_owned())
        .map_err(|e| format!("{e:#}; OOM scores are reconstructed from the kernel log"))
    };
    HookStatus {
        hook: Hook::OomContext,
        attached,
        notes: Vec::new(),
    }
}
