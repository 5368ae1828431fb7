//! Stalls that are sleeps, seen from the scheduler: a task PSI marks as in a memory stall
//! (`in_memstall`) going to sleep outside any reclaim or compaction window is waiting for a
//! refaulting page (in I/O wait: thrashing) or serving the memory.high penalty; a task that
//! balance_dirty_pages told to pause sleeps off its dirtied pages. Each window closes when the
//! task runs again. Inside a reclaim, the sleep's start is kept: a throttle began there.
use aya_ebpf::helpers::bpf_probe_read_kernel;
use memstall_common::{DIRTY_PAUSE_ARG_DTC, DIRTY_PAUSE_ARG_THRESH, InFlight, StallKind};

use crate::{
    filter::{current_watched, task_watched},
    stall::{Args, Stall, TASKS, TaskState, current_tid, emit, hook, insert_task, now},
    task::{layout, read, task_info},
};

/// PF_KTHREAD: kswapd and kworkers stall on behalf of others, not as a workload.
const PF_KTHREAD: u32 = 0x0020_0000;

/// Reads one bit of a task_struct bitfield at `bit` bits from its start.
#[inline(always)]
fn task_bit(task: u64, bit: u32) -> bool {
    // SAFETY: bpf_probe_read_kernel validates the address and fails instead of faulting.
    let byte: u8 =
        unsafe { bpf_probe_read_kernel((task + u64::from(bit / 8)) as *const u8) }.unwrap_or(0);
    byte & (1 << (bit % 8)) != 0
}

/// sched_switch(preempt, prev, next, prev_state), in prev's context.
fn sched_switch<C: Args>(ctx: &C) {
    let layout = layout();
    if layout.valid == 0 {
        return;
    }
    // This runs at every context switch: the clock is read only for a switch that ends or
    // starts a stall, not for the many that do neither.
    let (prev, next) = (ctx.u64_arg(1), ctx.u64_arg(2));
    // The switch-in: `next` runs again, its sleep (if it was a stall) is over.
    let next_tid: u32 = read(next, layout.task_pid).unwrap_or(0);
    if let Some(state) = TASKS.get_ptr_mut(&next_tid) {
        // SAFETY: the value stays valid for the program's run.
        let (kind, start) = unsafe { ((*state).sleep_kind, (*state).sleep_start) };
        if let Some(kind) = StallKind::from_u32(kind) {
            // SAFETY: as above.
            unsafe { (*state).sleep_kind = 0 };
            let stall = Stall {
                kind,
                start_ns: start,
                end_ns: now(),
                nr_reclaimed: 0,
                reason: 0,
                detail: 0,
            };
            let flight = InFlight::new(start, 0, -1, -1);
            emit(ctx, &stall, task_info(&layout, next), &flight, false);
        }
    }
    // The switch-out: only a real sleep (not a preemption) with PSI's memstall mark counts.
    let prev_state = ctx.u64_arg(3) as u32;
    if prev_state == 0
        || layout.task_in_memstall_bit == u32::MAX
        || !task_bit(prev, layout.task_in_memstall_bit)
    {
        return;
    }
    let prev_tid: u32 = read(prev, layout.task_pid).unwrap_or(0);
    match TASKS.get_ptr_mut(&prev_tid) {
        // Inside a reclaim or compaction: the start of a throttle, not a stall of its own.
        // SAFETY: the value stays valid for the program's run.
        Some(state) if unsafe { (*state).open } != 0 => unsafe { (*state).last_sleep = now() },
        Some(state) => {
            if let Some(kind) = sleep_kind(&layout, prev) {
                // SAFETY: as above.
                unsafe {
                    (*state).sleep_kind = kind as u32;
                    (*state).sleep_start = now();
                }
            }
        }
        None => {
            if let Some(kind) = sleep_kind(&layout, prev) {
                let state = TaskState {
                    sleep_kind: kind as u32,
                    sleep_start: now(),
                    ..TaskState::default()
                };
                insert_task(prev_tid, &state);
            }
        }
    }
}

/// What a memstall sleep outside any window is, for a watched user task.
#[inline(always)]
fn sleep_kind(layout: &memstall_common::KernelLayout, task: u64) -> Option<StallKind> {
    let flags: u32 = read(task, layout.task_flags).unwrap_or(PF_KTHREAD);
    if flags & PF_KTHREAD != 0 || !task_watched(layout, task) {
        return None;
    }
    let in_iowait =
        layout.task_in_iowait_bit != u32::MAX && task_bit(task, layout.task_in_iowait_bit);
    Some(if in_iowait {
        StallKind::Refault
    } else {
        StallKind::HighThrottle
    })
}

/// balance_dirty_pages(..., pause, start_time): with `pause` > 0 the task sleeps now (also
/// when the tracepoint fires without a sleep, pause is 0 or less). One program per argument
/// layout (memstall_common::DIRTY_PAUSE_ARG_*), the loader attaches the kernel's: the verifier
/// reads a context only at a constant offset.
fn balance_dirty_pages_dtc<C: Args>(ctx: &C) {
    dirty_pause(ctx.u64_arg(DIRTY_PAUSE_ARG_DTC as usize) as i64);
}

fn balance_dirty_pages_thresh<C: Args>(ctx: &C) {
    dirty_pause(ctx.u64_arg(DIRTY_PAUSE_ARG_THRESH as usize) as i64);
}

#[inline(always)]
fn dirty_pause(pause: i64) {
    let t = now();
    if pause <= 0 || !current_watched(&layout()) {
        return;
    }
    let tid = current_tid();
    match TASKS.get_ptr_mut(&tid) {
        // SAFETY: the value stays valid for the program's run.
        Some(state) => unsafe {
            (*state).sleep_kind = StallKind::DirtyThrottle as u32;
            (*state).sleep_start = t;
        },
        None => {
            let state = TaskState {
                sleep_kind: StallKind::DirtyThrottle as u32,
                sleep_start: t,
                ..TaskState::default()
            };
            insert_task(tid, &state);
        }
    }
}

hook!(
    sched_switch_btf,
    sched_switch_raw,
    "sched_switch",
    sched_switch
);
hook!(
    balance_dirty_pages_btf,
    balance_dirty_pages_raw,
    "balance_dirty_pages",
    balance_dirty_pages_dtc
);
hook!(
    balance_dirty_pages_thresh_btf,
    balance_dirty_pages_thresh_raw,
    "balance_dirty_pages",
    balance_dirty_pages_thresh
);
