//! SIGKILLs sent to watched tasks: signal/signal_generate fires in the sender's context at the
//! end of every send, with its outcome. User space names the killer; the kernel OOM killer's
//! own SIGKILL is paired there with the oom/mark_victim that follows it.
use memstall_common::{
    EventKind, KillEvent, SIGKILL, SIGNAL_DELIVERED, SIGNAL_LOSE_INFO, TASK_COMM_LEN, signal_origin,
};

use crate::{
    events::{EVENTS, count_drop, header},
    filter::task_watched,
    stall::{Args, hook},
    task::{current_info, layout, memcg_usage_kb, pages_to_kb, read, task_info},
};

/// siginfo.si_code's offset (after si_signo and si_errno).
const SI_CODE_OFFSET: u32 = 8;

/// signal_generate(sig, info, task, group, result).
fn signal_generate<C: Args>(ctx: &C) {
    if ctx.u64_arg(0) as u32 != SIGKILL {
        return;
    }
    // A SIGKILL to a task already dying is ignored or already pending: not a new kill.
    let result = ctx.u64_arg(4) as u32;
    if result != SIGNAL_DELIVERED && result != SIGNAL_LOSE_INFO {
        return;
    }
    let layout = layout();
    let task = ctx.u64_arg(2);
    if !task_watched(&layout, task) {
        return;
    }
    let info = ctx.u64_arg(1);
    let (origin, si_code) = match info {
        0 => (signal_origin::NOINFO, 0),
        1 => (signal_origin::PRIV, 0),
        _ => (
            signal_origin::SIGINFO,
            read::<i32>(info, SI_CODE_OFFSET).unwrap_or(0),
        ),
    };
    // SAFETY: bpf_get_current_task takes no arguments.
    let current = unsafe { aya_ebpf::helpers::generated::bpf_get_current_task() };
    let leader: u64 = read(current, layout.task_group_leader).unwrap_or(0);
    let mm: u64 = read(task, layout.task_mm).unwrap_or(0);
    let counter = |offset: u32| pages_to_kb(&layout, read::<i64>(mm, offset).unwrap_or(0));
    let event = KillEvent {
        header: header(EventKind::Kill),
        target: task_info(&layout, task),
        sender: current_info(&layout),
        sender_leader_comm: read::<[u8; TASK_COMM_LEN]>(leader, layout.task_comm)
            .unwrap_or([0; TASK_COMM_LEN]),
        signal: SIGKILL,
        result,
        origin,
        si_code,
        group: ctx.u64_arg(3) as u32,
        _pad: 0,
        target_memcg_usage_kb: memcg_usage_kb(&layout, task),
        anon_rss_kb: counter(layout.mm_anon_pages),
        file_rss_kb: counter(layout.mm_file_pages),
        shmem_rss_kb: counter(layout.mm_shmem_pages),
        swap_entries: read::<i64>(mm, layout.mm_swap_entries).unwrap_or(0).max(0) as u64,
    };
    match EVENTS.reserve::<KillEvent>(0) {
        Some(mut entry) => {
            entry.write(event);
            entry.submit(0);
        }
        None => count_drop(EventKind::Kill),
    }
}

hook!(
    signal_generate_btf,
    signal_generate_raw,
    "signal_generate",
    signal_generate
);
