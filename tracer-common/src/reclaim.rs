//! Reclaim stalls (vmscan begin/end pairs, kswapd runs, throttling).
use crate::{EventHeader, TaskInfo};

/// What a task (or kswapd) was doing while it stalled; [`StallEvent::stall_kind`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StallKind {
    /// Global direct reclaim: the allocating task reclaims because free memory is under the
    /// min watermark (vmscan direct_reclaim_begin/end).
    DirectReclaim = 1,
    /// Charge over memory.max / memory.limit_in_bytes or memory.high: the task reclaims its
    /// own cgroup (vmscan memcg_reclaim_begin/end).
    MemcgReclaim = 2,
    /// cgroup v1 soft-limit reclaim, inside global reclaim.
    SoftlimitReclaim = 3,
    /// Node-local reclaim (vm.zone_reclaim_mode).
    NodeReclaim = 4,
    /// kswapd awake on a node, from wake to sleep (asynchronous: nobody blocks on it).
    KswapdWake = 5,
    /// A reclaimer put to sleep by reclaim throttling (vmscan mm_vmscan_throttled), inside a
    /// reclaim.
    Throttled = 6,
    /// Direct compaction: the allocation defragments memory itself (try_to_compact_pages).
    Compaction = 7,
    /// Waiting for a page that was evicted and is read back while the workload still uses it
    /// (a workingset refault: thrashing).
    Refault = 8,
    /// Reading a page back from swap (swap_read_folio).
    Swapin = 9,
    /// Paused in balance_dirty_pages: the task dirtied page cache faster than it is written back.
    DirtyThrottle = 10,
    /// The memory.high penalty sleep on the way back to user space (after its reclaim).
    HighThrottle = 11,
    /// A slab shrinker inside a reclaim (mm_shrink_slab_start/end).
    ShrinkSlab = 12,
}

impl StallKind {
    pub const ALL: [StallKind; 12] = [
        Self::DirectReclaim,
        Self::MemcgReclaim,
        Self::SoftlimitReclaim,
        Self::NodeReclaim,
        Self::KswapdWake,
        Self::Throttled,
        Self::Compaction,
        Self::Refault,
        Self::Swapin,
        Self::DirtyThrottle,
        Self::HighThrottle,
        Self::ShrinkSlab,
    ];

    pub const fn from_u32(value: u32) -> Option<Self> {
        match value {
            1 => Some(Self::DirectReclaim),
            2 => Some(Self::MemcgReclaim),
            3 => Some(Self::SoftlimitReclaim),
            4 => Some(Self::NodeReclaim),
            5 => Some(Self::KswapdWake),
            6 => Some(Self::Throttled),
            7 => Some(Self::Compaction),
            8 => Some(Self::Refault),
            9 => Some(Self::Swapin),
            10 => Some(Self::DirtyThrottle),
            11 => Some(Self::HighThrottle),
            12 => Some(Self::ShrinkSlab),
            _ => None,
        }
    }

    /// Bit of this kind in a task's set of open windows.
    pub const fn bit(self) -> u32 {
        1 << self as u32
    }

    /// A task waits here (everything but kswapd's own runs, which nobody waits for).
    pub const fn is_task_stall(self) -> bool {
        !matches!(self, Self::KswapdWake)
    }

    /// Slot of this kind's lost stalls in the drop counter.
    pub const fn drop_slot(self) -> u32 {
        crate::STALL_DROP_SLOTS + self as u32
    }

    /// The JSON `type`/`kind` name: a contract with scripts.
    pub const fn name(self) -> &'static str {
        match self {
            Self::DirectReclaim => "direct_reclaim",
            Self::MemcgReclaim => "memcg_reclaim",
            Self::SoftlimitReclaim => "softlimit_reclaim",
            Self::NodeReclaim => "node_reclaim",
            Self::KswapdWake => "kswapd_wake",
            Self::Throttled => "throttled",
            Self::Compaction => "compaction",
            Self::Refault => "refault",
            Self::Swapin => "swapin",
            Self::DirtyThrottle => "dirty_throttle",
            Self::HighThrottle => "high_throttle",
            Self::ShrinkSlab => "shrink_slab",
        }
    }
}

/// One finished stall. Every stall is sent (they are slow, so rare next to faults); userspace
/// builds the histograms and picks the outliers.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct StallEvent {
    pub header: EventHeader,
    /// The stalled task (kswapd itself for KswapdWake).
    pub task: TaskInfo,
    pub stall_kind: u32,
    /// Allocation order asked for (kswapd: the order it was woken for); -1 when unknown.
    pub order: i32,
    pub latency_ns: u64,
    pub gfp_flags: u64,
    /// Pages the reclaim call reported as reclaimed (its end tracepoint).
    pub nr_reclaimed: u64,
    /// Pages scanned and reclaimed by the inactive-LRU passes inside this stall.
    pub pass_scanned: u64,
    pub pass_reclaimed: u64,
    pub passes: u32,
    /// NUMA node (node reclaim, kswapd, throttling), else -1.
    pub nid: i32,
    /// Throttling reason (VMSCAN_THROTTLE_*), else 0.
    pub reason: u32,
    /// Stack ids in the STACKS map, or negative when not captured (below the threshold).
    pub kernel_stack_id: i32,
    pub user_stack_id: i32,
    /// Reclaim passes the kernel started over inside this call (do_try_to_free_pages's
    /// `goto retry`, seen as the scan priority jumping back up): delay accounting counts each
    /// as a reclaim of its own.
    pub retries: u32,
    /// CLOCK_BOOTTIME of the stall's first and last instant: nested stalls of one task (a
    /// throttle inside a reclaim) are told apart by these.
    pub start_ns: u64,
    pub end_ns: u64,
    /// ShrinkSlab: the shrinker's scan_objects function (symbolized by userspace). Compaction:
    /// try_to_compact_pages's result (enum compact_result). Else 0.
    pub detail: u64,
}

/// A reclaim stall in progress (eBPF side), or a node's kswapd run (read by userspace too).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct InFlight {
    pub start_ns: u64,
    pub gfp_flags: u64,
    pub order: i32,
    pub nid: i32,
    pub scanned: u64,
    pub reclaimed: u64,
    pub passes: u32,
    /// kswapd runs: whether the run goes to the ring buffer (kswapd's cgroup is watched).
    pub report: u32,
    /// Restarts of the reclaim (see [`StallEvent::retries`]) and the last pass's priority.
    pub retries: u32,
    pub last_priority: i32,
}

impl InFlight {
    /// A stall starting at `start_ns`, no LRU passes yet.
    pub fn new(start_ns: u64, gfp_flags: u64, order: i32, nid: i32) -> Self {
        Self {
            start_ns,
            gfp_flags,
            order,
            nid,
            scanned: 0,
            reclaimed: 0,
            passes: 0,
            report: 1,
            retries: 0,
            last_priority: i32::MAX,
        }
    }
}

/// kswapd across the machine since load, whatever the cgroup filter: the context of a
/// watched cgroup's stalls (kswapd itself runs in the root cgroup).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct KswapdTotals {
    /// Wake-to-sleep runs that ended.
    pub runs: u64,
    /// Runs that began.
    pub wakes: u64,
    pub awake_ns: u64,
    pub pages_scanned: u64,
    pub pages_reclaimed: u64,
}

/// try_to_compact_pages()'s parameter count: its fexit program finds the return value in the
/// slot after them. The verifier reads a context only at a constant offset, so the count is
/// fixed at build time and the loader leaves compaction out on a kernel whose BTF differs.
pub const COMPACT_PARAMS: usize = 6;

/// Where balance_dirty_pages' tracepoint passes `pause`: 8 arguments on 6.12 (`wb, dtc,
/// dirty_ratelimit, task_ratelimit, dirtied, period, pause, start_time`), 12 on 6.1 (`wb,
/// thresh, bg_thresh, dirty, bdi_thresh, bdi_dirty, dirty_ratelimit, task_ratelimit, dirtied,
/// period, pause, start_time`). A program for each (names::program::BALANCE_DIRTY_PAGES and
/// `_THRESH`); the loader attaches the one for the tracepoint's parameter count in BTF.
pub const DIRTY_PAUSE_ARG_DTC: u32 = 6;
pub const DIRTY_PAUSE_ARG_THRESH: u32 = 10;
pub const DIRTY_PARAMS_DTC: u32 = 8;
pub const DIRTY_PARAMS_THRESH: u32 = 12;
