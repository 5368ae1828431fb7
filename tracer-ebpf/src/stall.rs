//! What every stall hook shares: windows in progress per task, the per-task state that tells
//! nested and sleeping stalls apart, and the one way a finished stall reaches the ring buffer.
//!
//! Timestamps hug the stall: a window's begin time is taken last (after the filter walk and
//! the map writes) and its end time first, so the tracer's own work stays outside it.
use aya_ebpf::{
    EbpfContext, Global,
    bindings::BPF_F_USER_STACK,
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_boot_ns},
    macros::map,
    maps::{LruHashMap, StackTrace},
    programs::tracing::StackIdContext,
    programs::{BtfTracePointContext, FEntryContext, FExitContext, RawTracePointContext},
};
use memstall_common::{Diagnostic, EventKind, InFlight, StallEvent, StallKind, TaskInfo};

use crate::{
    diag,
    events::{EVENTS, count_stall_drop, header},
    filter::current_watched,
    task::{current_info, layout},
};

/// Stalls at least this long (ns) carry kernel and user stacks; set by the loader (--threshold).
#[unsafe(no_mangle)]
static STACK_THRESHOLD_NS: Global<u64> = Global::new(u64::MAX);

#[map]
pub static STACKS: StackTrace = StackTrace::with_max_entries(4096, 0);

/// (tid << 8 | kind) → stall in progress. LRU so a task killed mid-stall cannot leak a slot.
#[map]
pub static IN_FLIGHT: LruHashMap<u64, InFlight> = LruHashMap::with_max_entries(16384, 0);

/// A task's stall state between events.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct TaskState {
    /// Explicit windows open now, one [`StallKind::bit`] each.
    pub open: u32,
    /// A sleep that is a stall of its own (refault, memory.high penalty, dirty throttling),
    /// closed when the task runs again; 0 for none.
    pub sleep_kind: u32,
    pub sleep_start: u64,
    /// When the task last went to sleep inside an explicit window: where a throttle began.
    pub last_sleep: u64,
}

/// tid → state; a task seen stalling once keeps a slot until the LRU needs it.
#[map]
pub static TASKS: LruHashMap<u32, TaskState> = LruHashMap::with_max_entries(16384, 0);

/// What every program flavour gives: its arguments as u64 and a context for stacks.
pub trait Args: EbpfContext + StackIdContext {
    fn u64_arg(&self, n: usize) -> u64;
}

macro_rules! args {
    ($($ty:ty),*) => {$(
        impl Args for $ty {
            fn u64_arg(&self, n: usize) -> u64 {
                self.arg(n)
            }
        }
    )*};
}
args!(
    BtfTracePointContext,
    RawTracePointContext,
    FEntryContext,
    FExitContext
);

pub fn now() -> u64 {
    // SAFETY: no arguments, allowed in tracing programs.
    unsafe { bpf_ktime_get_boot_ns() }
}

pub fn current_tid() -> u32 {
    bpf_get_current_pid_tgid() as u32
}

fn key(tid: u32, kind: StallKind) -> u64 {
    (tid as u64) << 8 | kind as u64
}

/// Sets or clears `kind`'s bit among the current task's open windows. A new window forgets
/// the last sleep: a throttle inside it must have slept inside it.
fn mark_open(tid: u32, kind: StallKind, open: bool) {
    match TASKS.get_ptr_mut(&tid) {
        // SAFETY: the value stays valid for the program's run.
        Some(state) => unsafe {
            if open {
                (*state).open |= kind.bit();
                (*state).last_sleep = 0;
            } else {
                (*state).open &= !kind.bit();
            }
        },
        None if open => {
            let state = TaskState {
                open: kind.bit(),
                ..TaskState::default()
            };
            insert_task(tid, &state);
        }
        None => {}
    }
}

/// Stores a task's first state; a refusal is a diagnostic.
pub fn insert_task(tid: u32, state: &TaskState) {
    if TASKS.insert(&tid, state, 0).is_err() {
        diag::report(Diagnostic::TasksFull, 0);
    }
}

/// The current task's open windows (0 when it has none, or no state yet).
pub fn open_windows(tid: u32) -> u32 {
    // SAFETY: read by value.
    unsafe { TASKS.get(&tid) }.map_or(0, |s| s.open)
}

/// Opens a window of `kind` for the current task, if its cgroup is watched.
pub fn begin(kind: StallKind, order: i32, gfp_flags: u64, nid: i32) {
    if !current_watched(&layout()) {
        return;
    }
    let tid = current_tid();
    let key = key(tid, kind);
    if IN_FLIGHT
        .insert(&key, &InFlight::new(0, gfp_flags, order, nid), 0)
        .is_err()
    {
        diag::window_lost(Diagnostic::InFlightFull, kind);
        return;
    }
    mark_open(tid, kind, true);
    if let Some(flight) = IN_FLIGHT.get_ptr_mut(&key) {
        // SAFETY: the value stays valid for the program's run. Taken last: see the module docs.
        unsafe { (*flight).start_ns = now() };
    }
}

/// Closes the current task's window of `kind` (if one is open) and reports it.
pub fn end<C: Args>(ctx: &C, kind: StallKind, nr_reclaimed: u64, detail: u64) {
    let end_ns = now();
    let tid = current_tid();
    let key = key(tid, kind);
    // SAFETY: copied out before the entry is removed.
    let Some(flight) = (unsafe { IN_FLIGHT.get(&key) }).copied() else {
        // No entry: the task's cgroup is not watched, or the window began before the
        // programs attached, or, with its bit still open, its entry was evicted.
        if open_windows(tid) & kind.bit() != 0 {
            mark_open(tid, kind, false);
            diag::window_lost(Diagnostic::EndWithoutBegin, kind);
        }
        return;
    };
    let _ = IN_FLIGHT.remove(&key);
    mark_open(tid, kind, false);
    let stall = Stall {
        kind,
        start_ns: flight.start_ns,
        end_ns,
        nr_reclaimed,
        reason: 0,
        detail,
    };
    emit(ctx, &stall, current_info(&layout()), &flight, true);
}

/// Closes the current task's window of `kind` without reporting it.
pub fn discard(kind: StallKind) {
    let tid = current_tid();
    let _ = IN_FLIGHT.remove(&key(tid, kind));
    mark_open(tid, kind, false);
}

/// The in-progress window of `kind` of the current task, to add to it.
pub fn in_flight(kind: StallKind) -> Option<*mut InFlight> {
    IN_FLIGHT.get_ptr_mut(&key(current_tid(), kind))
}

/// A finished stall's own figures (the window's are in its [`InFlight`]).
pub struct Stall {
    pub kind: StallKind,
    pub start_ns: u64,
    pub end_ns: u64,
    pub nr_reclaimed: u64,
    pub reason: u32,
    pub detail: u64,
}

/// Sends a finished stall. `current_is_task`: the stalled task is the one running (stacks are
/// only taken then; a sleep closed at another task's switch-in has none).
pub fn emit<C: Args>(
    ctx: &C,
    stall: &Stall,
    task: TaskInfo,
    flight: &InFlight,
    current_is_task: bool,
) {
    let latency_ns = stall.end_ns.saturating_sub(stall.start_ns);
    let (kernel_stack_id, user_stack_id) =
        if current_is_task && latency_ns >= STACK_THRESHOLD_NS.load() {
            (stack_id(ctx, 0), stack_id(ctx, u64::from(BPF_F_USER_STACK)))
        } else {
            (-1, -1)
        };
    let event = StallEvent {
        header: header(EventKind::Stall),
        task,
        stall_kind: stall.kind as u32,
        order: flight.order,
        latency_ns,
        gfp_flags: flight.gfp_flags,
        nr_reclaimed: stall.nr_reclaimed,
        pass_scanned: flight.scanned,
        pass_reclaimed: flight.reclaimed,
        passes: flight.passes,
        nid: flight.nid,
        reason: stall.reason,
        kernel_stack_id,
        user_stack_id,
        retries: flight.retries,
        start_ns: stall.start_ns,
        end_ns: stall.end_ns,
        detail: stall.detail,
    };
    match EVENTS.reserve::<StallEvent>(0) {
        Some(mut entry) => {
            entry.write(event);
            entry.submit(0);
        }
        None => count_stall_drop(stall.kind),
    }
}

/// The current stack's id in STACKS, or -1. A task without that stack (a kernel thread's
/// user stack: -EFAULT) and a bucket holding another stack (-EEXIST) are expected; any
/// other error is a diagnostic.
fn stack_id<C: Args>(ctx: &C, flags: u64) -> i32 {
    const EFAULT: i32 = 14;
    const EEXIST: i32 = 17;
    match ctx.get_stackid(&STACKS, flags) {
        Ok(id) => id as i32,
        Err(err) => {
            if err != -EFAULT && err != -EEXIST {
                diag::report(Diagnostic::StackIdFailed, err as u64);
            }
            -1
        }
    }
}

/// One tp_btf and one raw_tp program per tracepoint, named `<name>_btf` and `<name>_raw`,
/// sharing one body.
macro_rules! hook {
    ($btf:ident, $raw:ident, $tracepoint:literal, $body:ident) => {
        #[aya_ebpf::macros::btf_tracepoint(function = $tracepoint)]
        pub fn $btf(ctx: aya_ebpf::programs::BtfTracePointContext) -> i32 {
            $body(&ctx);
            0
        }

        #[aya_ebpf::macros::raw_tracepoint(tracepoint = $tracepoint)]
        pub fn $raw(ctx: aya_ebpf::programs::RawTracePointContext) -> i32 {
            $body(&ctx);
            0
        }
    };
}
pub(crate) use hook;
