//! Unexpected states the programs survive, made visible: every one is counted (DIAGNOSTICS,
//! summed into `run_end`), and with `--bpf-log` also logged through aya-log, at most once a
//! second per kind and CPU so a storm of them cannot fill AYA_LOGS or the terminal.
//!
//! Only failure paths call in here. [`report`] is its own BPF function, not inlined: each
//! program carries the logging code once, and its call sites cost a call; with logging off
//! (the default) a report is one counter, one global load and one branch.
use aya_ebpf::{
    Global,
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_boot_ns},
    macros::map,
    maps::PerCpuArray,
};
use aya_log_ebpf::warn;
use memstall_common::{DIAGNOSTIC_SLOTS, Diagnostic, StallKind, lost_window_slot};

/// Non-zero: log through aya-log. Set by the loader only for `--bpf-log` and `doctor -v`.
#[unsafe(no_mangle)]
static BPF_LOG: Global<u32> = Global::new(0);

/// Per CPU: one count per [`Diagnostic`], then windows lost per stall kind.
#[map]
static DIAGNOSTICS: PerCpuArray<u64> = PerCpuArray::with_max_entries(DIAGNOSTIC_SLOTS, 0);

/// Per CPU and kind: when it was last logged (CLOCK_BOOTTIME ns).
#[map]
static LAST_LOGGED: PerCpuArray<u64> =
    PerCpuArray::with_max_entries(Diagnostic::ALL.len() as u32, 0);

const LOG_EVERY_NS: u64 = 1_000_000_000;

fn count(slot: u32) {
    if let Some(counter) = DIAGNOSTICS.get_ptr_mut(slot) {
        // SAFETY: this CPU's slot; a nested program on this CPU at worst loses one count.
        unsafe { *counter += 1 };
    }
}

/// A window of `stall` is lost for `why` (an evicted or refused IN_FLIGHT entry).
#[inline(always)]
pub fn window_lost(why: Diagnostic, stall: StallKind) {
    count(lost_window_slot(stall as u32));
    report(why, stall as u64);
}

/// Whether `kind` may be logged on this CPU now; if so, marks it logged.
fn due(kind: Diagnostic) -> bool {
    let Some(last) = LAST_LOGGED.get_ptr_mut(kind.slot()) else {
        return false;
    };
    // SAFETY: no arguments, allowed in tracing programs.
    let now = unsafe { bpf_ktime_get_boot_ns() };
    // SAFETY: this CPU's slot, valid for the program's run.
    unsafe {
        if *last != 0 && now.wrapping_sub(*last) < LOG_EVERY_NS {
            return false;
        }
        *last = now;
    }
    true
}

/// Counts `kind`, and logs it when the loader asked for logs. `detail`: the stall kind of a
/// lost window, the offset of a failed read, the error of bpf_get_stackid.
#[inline(never)]
pub fn report(kind: Diagnostic, detail: u64) {
    count(kind.slot());
    if BPF_LOG.load() == 0 || !due(kind) {
        return;
    }
    let tid = bpf_get_current_pid_tgid() as u32;
    // aya-log's macros take a context they do not use yet; this function has none to give.
    let ctx = &();
    match kind {
        Diagnostic::EndWithoutBegin => warn!(
            ctx,
            "end_without_begin: tid {} ended a window of stall kind {} whose IN_FLIGHT entry was evicted (more windows open at once than it holds); the stall is lost",
            tid,
            detail
        ),
        Diagnostic::InFlightFull => warn!(
            ctx,
            "in_flight_full: IN_FLIGHT refused a window of stall kind {} for tid {}; the stall is lost",
            detail,
            tid
        ),
        Diagnostic::TasksFull => warn!(
            ctx,
            "tasks_full: TASKS refused the state of tid {}; its sleeps and open windows go unseen",
            tid
        ),
        Diagnostic::TaskReadFailed => warn!(
            ctx,
            "task_read_failed: reading kernel memory at offset {} failed (tid {}); the field reads as 0",
            detail,
            tid
        ),
        Diagnostic::StackIdFailed => warn!(
            ctx,
            "stack_id_failed: bpf_get_stackid returned {} (tid {}); the stall has no frames",
            detail as i64,
            tid
        ),
    }
}
