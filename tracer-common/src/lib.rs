//! Types shared by memstall's eBPF programs and its loader.
//!
//! Every event the kernel side emits starts with an [`EventHeader`] whose `kind` is one of
//! [`EventKind`]; the payload layout is fixed by `#[repr(C)]` and has no padding, so userspace can
//! decode it from the ring buffer's bytes without trusting the kernel to have filled every byte.
#![no_std]

pub const TASK_COMM_LEN: usize = 16;

/// The one event enum: the discriminant carried in [`EventHeader::kind`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    OomKill = 1,
    Stall = 2,
    OomContext = 3,
}

impl EventKind {
    pub const fn from_u32(value: u32) -> Option<Self> {
        match value {
            1 => Some(Self::OomKill),
            2 => Some(Self::Stall),
            3 => Some(Self::OomContext),
            _ => None,
        }
    }

    /// Slot in the in-kernel drop counter.
    pub const fn drop_slot(self) -> u32 {
        self as u32 - 1
    }
}

/// Slots of the in-kernel drop counter (events lost because the ring buffer was full).
pub const DROP_SLOTS: u32 = 3;

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
    /// A reclaimer put to sleep by reclaim throttling (vmscan mm_vmscan_throttled).
    Throttled = 6,
}

impl StallKind {
    pub const ALL: [StallKind; 6] = [
        Self::DirectReclaim,
        Self::MemcgReclaim,
        Self::SoftlimitReclaim,
        Self::NodeReclaim,
        Self::KswapdWake,
        Self::Throttled,
    ];

    pub const fn from_u32(value: u32) -> Option<Self> {
        match value {
            1 => Some(Self::DirectReclaim),
            2 => Some(Self::MemcgReclaim),
            3 => Some(Self::SoftlimitReclaim),
            4 => Some(Self::NodeReclaim),
            5 => Some(Self::KswapdWake),
            6 => Some(Self::Throttled),
            _ => None,
        }
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
    pub _reserved: u32,
}

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
    pub _reserved: u32,
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

/// Latencies the fentry/fexit hooks time, per memcg, as log2 histograms kept in the kernel.
pub mod latency {
    /// __mem_cgroup_charge(): charging a page to its memcg, reclaim and retries included.
    pub const CHARGE: u32 = 0;
    /// handle_mm_fault(): the page fault as the application feels it.
    pub const FAULT: u32 = 1;
    pub const KINDS: usize = 2;
    /// Bucket b holds latencies in [2^(b-1), 2^b) ns (bucket 0: 0 ns).
    pub const BUCKETS: u32 = 40;
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct LatencyKey {
    pub memcg_id: u64,
    /// One of [`latency`]'s kinds.
    pub kind: u32,
    pub bucket: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct LatencyValue {
    pub count: u64,
    pub sum_ns: u64,
    /// Charges that failed (-ENOMEM) in this bucket; 0 for faults.
    pub failed: u64,
}

/// Kernel structure layout, resolved from the running kernel's BTF by the loader and handed to
/// the programs as a global (aya-ebpf cannot emit CO-RE relocations). Offsets are in bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct KernelLayout {
    /// 0 until the loader fills the layout in; programs then leave task-derived fields at 0.
    pub valid: u32,
    pub task_pid: u32,
    pub task_tgid: u32,
    pub task_comm: u32,
    pub task_mm: u32,
    pub task_signal: u32,
    pub task_real_cred: u32,
    pub task_cgroups: u32,
    /// Offset of `css_set.subsys[memory_cgrp_id]` (the index folded in).
    pub css_set_memory_subsys: u32,
    pub css_cgroup: u32,
    pub cgroup_kn: u32,
    pub kernfs_node_id: u32,
    pub signal_oom_score_adj: u32,
    pub cred_uid: u32,
    pub mm_total_vm: u32,
    pub mm_pgtables_bytes: u32,
    /// Offset of the counter for each MM_* item: `rss_stat[i]` plus the offset of its count.
    pub mm_file_pages: u32,
    pub mm_anon_pages: u32,
    pub mm_swap_entries: u32,
    pub mm_shmem_pages: u32,
    /// log2(page size / 1024), to turn page counts into kB.
    pub page_kb_shift: u32,
    /// Offset of `mem_cgroup.css` (a memcg's cgroup_subsys_state).
    pub memcg_css: u32,
    /// Offset of `cgroup_subsys_state.parent`.
    pub css_parent: u32,
    pub _reserved: u32,
}

/// The in-kernel cgroup filter (`--cgroup`): off, or the WATCHED memcg ids, optionally with
/// their descendants (found by walking up css->parent, so cgroups created later count too).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct FilterConfig {
    pub enabled: u32,
    pub descendants: u32,
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

/// How many ancestors the filter walks; deeper cgroups only match their nearer ancestors.
pub const FILTER_MAX_DEPTH: usize = 16;

/// Which memcg event items (`enum vm_event_item`, numbered per kernel) the memcg hook counts,
/// in [`MemcgSlot`] order; u32::MAX where the kernel lacks the item.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct MemcgItems {
    pub items: [u32; MEMCG_SLOTS],
}

pub const MEMCG_SLOTS: usize = 6;

/// Per-memcg reclaim page counters kept in the kernel (memcg/count_memcg_events).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemcgSlot {
    /// Pages scanned / reclaimed from this memcg's LRUs by direct and charge-path reclaim.
    PgscanDirect = 0,
    PgstealDirect = 1,
    /// ... and by kswapd.
    PgscanKswapd = 2,
    PgstealKswapd = 3,
    /// Page faults (all) and major faults charged to the memcg, when fault counting is on.
    Pgfault = 4,
    Pgmajfault = 5,
}

impl MemcgSlot {
    pub const ALL: [MemcgSlot; MEMCG_SLOTS] = [
        Self::PgscanDirect,
        Self::PgstealDirect,
        Self::PgscanKswapd,
        Self::PgstealKswapd,
        Self::Pgfault,
        Self::Pgmajfault,
    ];

    /// The kernel's `enum vm_event_item` name.
    pub const fn kernel_item(self) -> &'static str {
        match self {
            Self::PgscanDirect => "PGSCAN_DIRECT",
            Self::PgstealDirect => "PGSTEAL_DIRECT",
            Self::PgscanKswapd => "PGSCAN_KSWAPD",
            Self::PgstealKswapd => "PGSTEAL_KSWAPD",
            Self::Pgfault => "PGFAULT",
            Self::Pgmajfault => "PGMAJFAULT",
        }
    }
}

/// Key of the per-memcg counters: memcg id and [`MemcgSlot`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct MemcgCounterKey {
    pub memcg_id: u64,
    pub slot: u32,
    pub _pad: u32,
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

#[cfg(feature = "user")]
mod user {
    use super::*;

    unsafe impl aya::Pod for KernelLayout {}
    unsafe impl aya::Pod for MarkVictimFormat {}
    unsafe impl aya::Pod for MemcgItems {}
    unsafe impl aya::Pod for FilterConfig {}
    unsafe impl aya::Pod for OomControlLayout {}
    unsafe impl aya::Pod for LatencyKey {}
    unsafe impl aya::Pod for LatencyValue {}
    unsafe impl aya::Pod for MemcgCounterKey {}
    unsafe impl aya::Pod for KswapdTotals {}
    unsafe impl aya::Pod for InFlight {}

    /// Why a ring-buffer record could not be decoded.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum DecodeError {
        TooShort { len: usize, need: usize },
        UnknownKind(u32),
    }

    impl core::fmt::Display for DecodeError {
        fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            match self {
                Self::TooShort { len, need } => {
                    write!(f, "record of {len} bytes, expected at least {need}")
                }
                Self::UnknownKind(kind) => write!(f, "unknown event kind {kind}"),
            }
        }
    }

    /// A decoded kernel event.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum RawEvent {
        OomKill(OomKillEvent),
        Stall(StallEvent),
        OomContext(OomContextEvent),
    }

    fn read<T: bytemuck::Pod>(bytes: &[u8]) -> Result<T, DecodeError> {
        let need = core::mem::size_of::<T>();
        match bytes.get(..need) {
            Some(head) => Ok(bytemuck::pod_read_unaligned(head)),
            None => Err(DecodeError::TooShort {
                len: bytes.len(),
                need,
            }),
        }
    }

    impl RawEvent {
        /// Decodes one ring-buffer record; never panics on malformed input.
        pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
            let header: EventHeader = read(bytes)?;
            match EventKind::from_u32(header.kind) {
                Some(EventKind::OomKill) => read(bytes).map(Self::OomKill),
                Some(EventKind::Stall) => read(bytes).map(Self::Stall),
                Some(EventKind::OomContext) => read(bytes).map(Self::OomContext),
                None => Err(DecodeError::UnknownKind(header.kind)),
            }
        }
    }

    /// The text of a NUL-padded kernel `comm`.
    pub fn comm_str(comm: &[u8; TASK_COMM_LEN]) -> CommStr<'_> {
        let end = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
        CommStr(&comm[..end])
    }

    /// Borrowed comm bytes. Displays as UTF-8 with each byte that is not written `\xNN`, so a
    /// name set with prctl from arbitrary bytes keeps them visible (JSON and terminal alike).
    pub struct CommStr<'a>(&'a [u8]);

    impl core::fmt::Display for CommStr<'_> {
        fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            for chunk in self.0.utf8_chunks() {
                f.write_str(chunk.valid())?;
                for byte in chunk.invalid() {
                    write!(f, "\\x{byte:02x}")?;
                }
            }
            Ok(())
        }
    }
}

#[cfg(feature = "user")]
pub use user::{CommStr, DecodeError, RawEvent, comm_str};

#[cfg(all(test, feature = "user"))]
mod tests {
    extern crate std;
    use super::*;

    fn oom_bytes() -> ([u8; core::mem::size_of::<OomKillEvent>()], OomKillEvent) {
        let event = OomKillEvent {
            header: EventHeader {
                kind: EventKind::OomKill as u32,
                cpu: 1,
                boot_ns: 42,
            },
            victim: TaskInfo {
                pid: 7,
                tgid: 7,
                memcg_id: 99,
                comm: *b"memhog\0\0\0\0\0\0\0\0\0\0",
            },
            anon_rss_kb: 1234,
            oom_score_adj: -17,
            ..Default::default()
        };
        let mut bytes = [0u8; core::mem::size_of::<OomKillEvent>()];
        bytes.copy_from_slice(bytemuck::bytes_of(&event));
        (bytes, event)
    }

    #[test]
    fn decodes_oom_kill() {
        let (bytes, event) = oom_bytes();
        assert_eq!(RawEvent::decode(&bytes), Ok(RawEvent::OomKill(event)));
    }

    #[test]
    fn rejects_truncated_and_unknown_records() {
        let (mut bytes, _) = oom_bytes();
        assert_eq!(
            RawEvent::decode(&bytes[..20]),
            Err(DecodeError::TooShort {
                len: 20,
                need: core::mem::size_of::<OomKillEvent>()
            })
        );
        assert!(matches!(
            RawEvent::decode(&bytes[..3]),
            Err(DecodeError::TooShort { .. })
        ));
        bytes[0] = 0xee;
        assert_eq!(
            RawEvent::decode(&bytes),
            Err(DecodeError::UnknownKind(0xee))
        );
    }

    #[test]
    fn decodes_stall_and_names_kinds() {
        let event = StallEvent {
            header: EventHeader {
                kind: EventKind::Stall as u32,
                cpu: 0,
                boot_ns: 5,
            },
            stall_kind: StallKind::MemcgReclaim as u32,
            latency_ns: 1_000_000,
            ..Default::default()
        };
        assert_eq!(
            RawEvent::decode(bytemuck::bytes_of(&event)),
            Ok(RawEvent::Stall(event))
        );
        for kind in StallKind::ALL {
            assert_eq!(StallKind::from_u32(kind as u32), Some(kind));
        }
        assert_eq!(StallKind::from_u32(0), None);
        assert_eq!(StallKind::MemcgReclaim.name(), "memcg_reclaim");
    }

    #[test]
    fn comm_stops_at_nul_and_survives_bad_utf8() {
        use std::string::ToString;
        assert_eq!(comm_str(b"memhog\0garbage\0\0").to_string(), "memhog");
        assert_eq!(
            comm_str(b"\xffab\0\0\0\0\0\0\0\0\0\0\0\0\0").to_string(),
            "\\xffab"
        );
        assert_eq!(
            comm_str(b"0123456789abcdef").to_string(),
            "0123456789abcdef"
        );
    }
}
