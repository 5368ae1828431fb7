//! The ring buffer's records: a header naming the kind, then a fixed `#[repr(C)]` payload.
pub const TASK_COMM_LEN: usize = 16;

/// The one event enum: the discriminant carried in [`EventHeader::kind`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    OomKill = 1,
    Stall = 2,
    OomContext = 3,
    Kill = 4,
}

impl EventKind {
    pub const fn from_u32(value: u32) -> Option<Self> {
        match value {
            1 => Some(Self::OomKill),
            2 => Some(Self::Stall),
            3 => Some(Self::OomContext),
            4 => Some(Self::Kill),
            _ => None,
        }
    }

    /// Slot in the in-kernel drop counter (stalls count per stall kind instead, from
    /// [`STALL_DROP_SLOTS`] on).
    pub const fn drop_slot(self) -> u32 {
        self as u32 - 1
    }
}

/// Slots of the in-kernel drop counter (events lost because the ring buffer was full): one per
/// event kind, then one per stall kind from [`STALL_DROP_SLOTS`] (see `StallKind::drop_slot`),
/// so a lost stall is known by its kind and can be reconciled with the kernel's own counts.
pub const DROP_SLOTS: u32 = 32;
pub const STALL_DROP_SLOTS: u32 = 8;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct EventHeader {
    pub kind: u32,
    pub cpu: u32,
    /// CLOCK_BOOTTIME nanoseconds (bpf_ktime_get_boot_ns).
    pub boot_ns: u64,
}

/// A task as the kernel saw it when the event fired.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct TaskInfo {
    /// Thread id (the kernel's `pid`).
    pub pid: u32,
    /// Process id (the kernel's `tgid`).
    pub tgid: u32,
    /// Memory cgroup id: the kernfs id of the task's memcg directory (its inode number), or 0
    /// when it could not be read.
    pub memcg_id: u64,
    pub comm: [u8; TASK_COMM_LEN],
}
