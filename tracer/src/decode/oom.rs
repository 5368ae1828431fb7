//! An oom/mark_victim record (and the kill's oom_control, where fentry gave one) to an
//! [`OomKill`].
use memstall_common::{OomContextEvent, OomKillEvent, comm_str, oom_source};

use super::DecodeContext;
use crate::event::{KillSource, Killer, OomControl, OomKill};

pub fn decode(
    raw: &OomKillEvent,
    context: Option<OomContextEvent>,
    ctx: &mut DecodeContext,
) -> OomKill {
    let from_task = raw.source == oom_source::BTF_TASK;
    let (trigger_kernel_stack, trigger_user_stack) = ctx.stacks(
        raw.trigger_kernel_stack_id,
        raw.trigger_user_stack_id,
        raw.trigger.tgid,
    );
    OomKill {
        time_ns: ctx.clock.unix_ns(raw.header.boot_ns),
        memcg_id: raw.trigger.memcg_id,
        victim_memcg_id: raw.victim.memcg_id,
        pid: raw.trigger.pid,
        tgid: raw.trigger.tgid,
        comm: comm_str(&raw.trigger.comm).to_string(),
        victim_pid: raw.victim.pid,
        victim_tgid: raw.victim.tgid,
        victim_comm: comm_str(&raw.victim.comm).to_string(),
        victim_uid: (raw.victim_uid != u32::MAX).then_some(raw.victim_uid),
        anon_rss_kb: raw.anon_rss_kb,
        file_rss_kb: raw.file_rss_kb,
        shmem_rss_kb: raw.shmem_rss_kb,
        pgtables_kb: raw.pgtables_kb,
        total_vm_kb: raw.total_vm_kb,
        swap_entries: from_task.then_some(raw.swap_entries),
        oom_score_adj: raw.oom_score_adj,
        source: if from_task {
            KillSource::TpBtf
        } else {
            KillSource::Tracepoint
        },
        killer: Killer::KernelOom,
        trigger_kernel_stack,
        trigger_user_stack,
        victim_usage_kb: raw.victim_memcg_usage_kb,
        oom_control: context.map(|c| OomControl {
            constraint: c.constraint,
            memcg_id: c.memcg_id,
            totalpages: c.totalpages,
            chosen_points: c.chosen_points,
        }),
        ..Default::default()
    }
}
