//! SIGKILLs sent to watched tasks: signal/signal_generate, in the sender's context.
use crate::{EventHeader, TASK_COMM_LEN, TaskInfo};

/// What the kernel was given as the signal's siginfo: it tells the kernel's own kills from a
/// process's.
pub mod signal_origin {
    /// SEND_SIG_NOINFO: a kernel-internal `send_sig(sig, task, 0)`, as writing cgroup.kill does.
    pub const NOINFO: u32 = 0;
    /// SEND_SIG_PRIV: the kernel itself (the OOM killer, a pid namespace's teardown).
    pub const PRIV: u32 = 1;
    /// A real siginfo: kill(2), tgkill(2), pidfd_send_signal(2); `si_code` says which.
    pub const SIGINFO: u32 = 2;
}

/// signal_generate results that are a delivered kill (TRACE_SIGNAL_DELIVERED, _LOSE_INFO);
/// the others are attempts on a task already dying.
pub const SIGNAL_DELIVERED: u32 = 0;
pub const SIGNAL_LOSE_INFO: u32 = 4;

pub const SIGKILL: u32 = 9;

/// A SIGKILL the kernel queued for `target`, sent by `sender` (the current task).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct KillEvent {
    pub header: EventHeader,
    pub target: TaskInfo,
    pub sender: TaskInfo,
    /// The sender's process (thread group leader) name: a daemon's worker thread has its own.
    pub sender_leader_comm: [u8; TASK_COMM_LEN],
    pub signal: u32,
    /// signal_generate's result (see [`SIGNAL_DELIVERED`]).
    pub result: u32,
    /// One of [`signal_origin`].
    pub origin: u32,
    /// siginfo's si_code where `origin` is SIGINFO: 0 SI_USER (kill), -6 SI_TKILL (tgkill).
    pub si_code: i32,
    /// 1 when the whole thread group was signalled, 0 when one thread (tgkill, cgroup.kill).
    pub group: u32,
    pub _pad: u32,
    /// The target's memory cgroup usage when the signal was sent, in kB (0 where unread).
    pub target_memcg_usage_kb: u64,
    /// The target's memory at the signal, from its mm's counters (kB; swap in entries).
    pub anon_rss_kb: u64,
    pub file_rss_kb: u64,
    pub shmem_rss_kb: u64,
    pub swap_entries: u64,
}
