//! OOM kills: oom/mark_victim fires in the context of the task whose allocation invoked the OOM
//! killer, once per chosen victim.
use aya_ebpf::{
    Global,
    bindings::BPF_F_USER_STACK,
    macros::{btf_tracepoint, fentry, map, tracepoint},
    maps::Array,
    programs::{BtfTracePointContext, FEntryContext, TracePointContext, tracing::StackIdContext},
};
use memstall_common::{
    EventKind, MarkVictimFormat, OomContextEvent, OomControlLayout, OomKillEvent, TASK_COMM_LEN,
    oom_source,
};

use crate::{
    events::{EVENTS, count_drop, header},
    filter::{current_watched, task_watched},
    stall::STACKS,
    task::{css_id, current_info, layout, memcg_usage_kb, pages_to_kb, read, task_info},
};

/// The classic record's field offsets; a map rather than a global because the loader only
/// reads them (mounting tracefs if it must) once the tp_btf program has failed.
#[map]
static MARK_VICTIM_FORMAT: Array<MarkVictimFormat> = Array::with_max_entries(1, 0);

fn emit(event: &OomKillEvent) {
    match EVENTS.reserve::<OomKillEvent>(0) {
        Some(mut entry) => {
            entry.write(*event);
            entry.submit(0);
        }
        None => count_drop(EventKind::OomKill),
    }
}

/// Kernel and user stacks of the current task: mark_victim runs in the context of the task
/// whose allocation invoked the OOM killer.
fn trigger_stacks(ctx: &impl StackIdContext) -> (i32, i32) {
    (
        ctx.get_stackid(&STACKS, 0).map_or(-1, |id| id as i32),
        ctx.get_stackid(&STACKS, BPF_F_USER_STACK as u64)
            .map_or(-1, |id| id as i32),
    )
}

/// tp_btf: the first argument is the victim's task_struct (kernels since 6.8; the loader checks
/// the prototype in BTF and uses the classic tracepoint otherwise).
#[btf_tracepoint(function = "mark_victim")]
pub fn oom_mark_victim_btf(ctx: BtfTracePointContext) -> i32 {
    let layout = layout();
    let victim: u64 = ctx.arg(0);
    if !task_watched(&layout, victim) && !current_watched(&layout) {
        return 0;
    }
    let mm: u64 = read(victim, layout.task_mm).unwrap_or(0);
    let signal: u64 = read(victim, layout.task_signal).unwrap_or(0);
    let cred: u64 = read(victim, layout.task_real_cred).unwrap_or(0);
    let counter = |offset: u32| pages_to_kb(&layout, read::<i64>(mm, offset).unwrap_or(0));
    let (kernel_stack, user_stack) = trigger_stacks(&ctx);
    let event = OomKillEvent {
        header: header(EventKind::OomKill),
        trigger: current_info(&layout),
        victim: task_info(&layout, victim),
        victim_uid: read(cred, layout.cred_uid).unwrap_or(u32::MAX),
        oom_score_adj: read::<i16>(signal, layout.signal_oom_score_adj).unwrap_or(0) as i32,
        total_vm_kb: read::<u64>(mm, layout.mm_total_vm).unwrap_or(0) << layout.page_kb_shift,
        anon_rss_kb: counter(layout.mm_anon_pages),
        file_rss_kb: counter(layout.mm_file_pages),
        shmem_rss_kb: counter(layout.mm_shmem_pages),
        swap_entries: read::<i64>(mm, layout.mm_swap_entries).unwrap_or(0).max(0) as u64,
        pgtables_kb: read::<i64>(mm, layout.mm_pgtables_bytes)
            .unwrap_or(0)
            .max(0) as u64
            >> 10,
        source: oom_source::BTF_TASK,
        trigger_kernel_stack_id: kernel_stack,
        trigger_user_stack_id: user_stack,
        _pad: 0,
        victim_memcg_usage_kb: memcg_usage_kb(&layout, victim),
    };
    emit(&event);
    0
}

/// Classic tracepoint: the record already holds the victim's figures in kB; the victim's memcg
/// is not in it (the loader looks it up from /proc while the victim is still exiting).
#[tracepoint(category = "oom", name = "mark_victim")]
pub fn oom_mark_victim_tp(ctx: TracePointContext) -> i32 {
    let Some(format) = MARK_VICTIM_FORMAT.get(0) else {
        return 0;
    };
    let field = |bit: u32, offset: u32| -> u64 {
        if format.present & bit == 0 {
            return 0;
        }
        // SAFETY: the offset comes from this kernel's format file for this tracepoint.
        unsafe { ctx.read_at::<u64>(offset as usize).unwrap_or(0) }
    };
    let small = |bit: u32, offset: u32| -> u32 {
        if format.present & bit == 0 {
            return 0;
        }
        // SAFETY: as above.
        unsafe { ctx.read_at::<u32>(offset as usize).unwrap_or(0) }
    };
    let mut victim = memstall_common::TaskInfo {
        pid: small(MarkVictimFormat::PID, format.pid),
        ..Default::default()
    };
    victim.tgid = victim.pid;
    if format.present & MarkVictimFormat::COMM != 0 {
        let loc = small(MarkVictimFormat::COMM, format.comm_data_loc);
        // SAFETY: the data_loc offset points inside this record.
        victim.comm = unsafe { ctx.read_at::<[u8; TASK_COMM_LEN]>((loc & 0xffff) as usize) }
            .unwrap_or([0; TASK_COMM_LEN]);
    }
    let adj = small(MarkVictimFormat::OOM_SCORE_ADJ, format.oom_score_adj) as u16 as i16;
    let (kernel_stack, user_stack) = trigger_stacks(&ctx);
    let event = OomKillEvent {
        header: header(EventKind::OomKill),
        trigger: current_info(&layout()),
        victim,
        victim_uid: if format.present & MarkVictimFormat::UID != 0 {
            small(MarkVictimFormat::UID, format.uid)
        } else {
            u32::MAX
        },
        oom_score_adj: adj as i32,
        total_vm_kb: field(MarkVictimFormat::TOTAL_VM, format.total_vm),
        anon_rss_kb: field(MarkVictimFormat::ANON_RSS, format.anon_rss),
        file_rss_kb: field(MarkVictimFormat::FILE_RSS, format.file_rss),
        shmem_rss_kb: field(MarkVictimFormat::SHMEM_RSS, format.shmem_rss),
        swap_entries: 0,
        pgtables_kb: field(MarkVictimFormat::PGTABLES, format.pgtables),
        source: oom_source::TRACEPOINT,
        trigger_kernel_stack_id: kernel_stack,
        trigger_user_stack_id: user_stack,
        _pad: 0,
        victim_memcg_usage_kb: 0,
    };
    emit(&event);
    0
}

// SAFETY: all-zero means "not resolved"; the hook then does nothing.
#[unsafe(no_mangle)]
static OOM_CONTROL_LAYOUT: Global<OomControlLayout> = Global::new(unsafe { core::mem::zeroed() });

/// fentry on oom_kill_process(oc, message): the kill's own oom_control, before the victim is
/// marked (where kernels allow trampolines).
#[fentry(function = "oom_kill_process")]
pub fn oom_kill_process_entry(ctx: FEntryContext) -> i32 {
    let oc_layout = OOM_CONTROL_LAYOUT.load();
    let layout = layout();
    if oc_layout.valid == 0 {
        return 0;
    }
    let oc: u64 = ctx.arg(0);
    let chosen: u64 = read(oc, oc_layout.chosen).unwrap_or(0);
    let memcg: u64 = read(oc, oc_layout.memcg).unwrap_or(0);
    let event = OomContextEvent {
        header: header(EventKind::OomContext),
        victim_pid: read(chosen, layout.task_pid).unwrap_or(0),
        constraint: read(oc, oc_layout.constraint).unwrap_or(0),
        memcg_id: if memcg == 0 {
            0
        } else {
            css_id(&layout, memcg + layout.memcg_css as u64)
        },
        totalpages: read(oc, oc_layout.totalpages).unwrap_or(0),
        chosen_points: read(oc, oc_layout.chosen_points).unwrap_or(0),
    };
    match EVENTS.reserve::<OomContextEvent>(0) {
        Some(mut entry) => {
            entry.write(event);
            entry.submit(0);
        }
        None => count_drop(EventKind::OomContext),
    }
    0
}
