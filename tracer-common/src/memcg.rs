//! Per-memcg counters kept in the kernel (memcg/count_memcg_events).

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
