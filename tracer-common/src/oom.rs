//! OOM kills: oom/mark_victim records, and the kill's oom_control where fentry is allowed.
use crate::{EventHeader, TaskInfo};

/// Where the victim's figures came from.
pub mod oom_source {
    /// tp_btf on oom/mark_victim: read from the victim's task_struct.
    pub const BTF_TASK: u32 = 1;
    /// Classic tracepoint oom/mark_victim: the tracepoint's own record.
    pub const TRACEPOINT: u32 = 2;
}

/// oom/mark_victim: the OOM killer chose `victim`; `trigger` is the task whose allocation
/// invoked the killer (the current task when the tracepoint fires).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct OomKillEvent {
    pub header: EventHeader,
    pub trigger: TaskInfo,
    pub victim: TaskInfo,
    pub victim_uid: u32,
    pub oom_score_adj: i32,
    pub total_vm_kb: u64,
    pub anon_rss_kb: u64,
    pub file_rss_kb: u64,
    pub shmem_rss_kb: u64,
    pub swap_entries: u64,
    pub pgtables_kb: u64,
    /// One of [`oom_source`].
    pub source: u32,
    /// Stacks of the trigger (the task whose allocation invoked the OOM killer), -1 if none.
    pub trigger_kernel_stack_id: i32,
    pub trigger_user_stack_id: i32,
    pub _pad: u32,
    /// The victim's memory cgroup usage when it was chosen, in kB (0 where unread).
    pub victim_memcg_usage_kb: u64,
}

/// fentry on oom_kill_process(): the kernel's own oom_control for the kill, which makes the
/// victim's score exact instead of reconstructed. Arrives just before the OomKillEvent.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct OomContextEvent {
    pub header: EventHeader,
    /// pid (thread id) of oc->chosen.
    pub victim_pid: u32,
    /// enum oom_constraint: 0 none, 1 cpuset, 2 memory policy, 3 memcg.
    pub constraint: u32,
    /// oc->memcg's id (0 for a global OOM).
    pub memcg_id: u64,
    pub totalpages: u64,
    pub chosen_points: i64,
}

/// Offsets in struct oom_control, for the fentry hook (from BTF; `valid` 0 when unresolved).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct OomControlLayout {
    pub valid: u32,
    pub memcg: u32,
    pub totalpages: u32,
    pub chosen: u32,
    pub chosen_points: u32,
    pub constraint: u32,
}

/// Field offsets inside the classic oom/mark_victim tracepoint record, read from its format file.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct MarkVictimFormat {
    pub pid: u32,
    /// `__data_loc char[] comm`: a u32 whose low half is the offset and high half the length.
    pub comm_data_loc: u32,
    pub total_vm: u32,
    pub anon_rss: u32,
    pub file_rss: u32,
    pub shmem_rss: u32,
    pub uid: u32,
    pub pgtables: u32,
    pub oom_score_adj: u32,
    /// Bit i set when field i above is present in this kernel's record.
    pub present: u32,
}

impl MarkVictimFormat {
    pub const PID: u32 = 1 << 0;
    pub const COMM: u32 = 1 << 1;
    pub const TOTAL_VM: u32 = 1 << 2;
    pub const ANON_RSS: u32 = 1 << 3;
    pub const FILE_RSS: u32 = 1 << 4;
    pub const SHMEM_RSS: u32 = 1 << 5;
    pub const UID: u32 = 1 << 6;
    pub const PGTABLES: u32 = 1 << 7;
    pub const OOM_SCORE_ADJ: u32 = 1 << 8;
}
