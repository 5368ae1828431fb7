//! States the programs survive but would otherwise hide: each is counted in the kernel (the
//! DIAGNOSTICS per-CPU array, summed into `run_end`) and, with `--bpf-log`, logged through
//! aya-log.

/// What went wrong, one counter slot each; [`Diagnostic::slot`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Diagnostic {
    /// A window's end found no begin although its task had one open: the in-flight entry
    /// was evicted from IN_FLIGHT (more windows open at once than it holds). The stall is lost.
    EndWithoutBegin = 0,
    /// IN_FLIGHT refused a new window; the stall is lost.
    InFlightFull = 1,
    /// TASKS refused a task's state: its sleeps and open windows go unseen.
    TasksFull = 2,
    /// bpf_probe_read_kernel failed at a BTF-resolved offset of a non-null kernel object: a
    /// field reads as 0 (a memcg id, a pid, a comm).
    TaskReadFailed = 3,
    /// bpf_get_stackid failed other than for a task without that stack or a stack-map
    /// bucket collision: the stall goes without frames.
    StackIdFailed = 4,
}

impl Diagnostic {
    pub const ALL: [Diagnostic; 5] = [
        Self::EndWithoutBegin,
        Self::InFlightFull,
        Self::TasksFull,
        Self::TaskReadFailed,
        Self::StackIdFailed,
    ];

    /// Slot of this kind's count in the DIAGNOSTICS map.
    pub const fn slot(self) -> u32 {
        self as u32
    }

    /// Whether it costs a stall window (counted per stall kind too, see [`lost_window_slot`]).
    pub const fn loses_window(self) -> bool {
        matches!(self, Self::EndWithoutBegin | Self::InFlightFull)
    }

    /// The `run_end` key: a contract with scripts.
    pub const fn name(self) -> &'static str {
        match self {
            Self::EndWithoutBegin => "end_without_begin",
            Self::InFlightFull => "in_flight_full",
            Self::TasksFull => "tasks_full",
            Self::TaskReadFailed => "task_read_failed",
            Self::StackIdFailed => "stack_id_failed",
        }
    }
}

/// Slots of the DIAGNOSTICS map: one per [`Diagnostic`], then from [`LOST_WINDOW_SLOTS`] one
/// per stall kind, counting the windows lost (so a lost stall can be reconciled with the
/// kernel's own counts, as the drop counter does for a full ring buffer).
pub const DIAGNOSTIC_SLOTS: u32 = 32;
pub const LOST_WINDOW_SLOTS: u32 = 16;

/// Slot of the windows of stall kind `stall_kind` (a `StallKind` as u32) that were lost.
pub const fn lost_window_slot(stall_kind: u32) -> u32 {
    LOST_WINDOW_SLOTS + stall_kind
}

const _: () = assert!((Diagnostic::ALL.len() as u32) <= LOST_WINDOW_SLOTS);
const _: () = {
    let mut i = 0;
    while i < crate::StallKind::ALL.len() {
        assert!(lost_window_slot(crate::StallKind::ALL[i] as u32) < DIAGNOSTIC_SLOTS);
        i += 1;
    }
};
