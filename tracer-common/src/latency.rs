//! Charge and page-fault latency per memcg (fentry/fexit), as in-kernel log2 histograms.

/// __mem_cgroup_charge(): charging a page to its memcg, reclaim and retries included.
pub const CHARGE: u32 = 0;
/// handle_mm_fault(): the page fault as the application feels it.
pub const FAULT: u32 = 1;
pub const KINDS: usize = 2;
/// Bucket b holds latencies in [2^(b-1), 2^b) ns (bucket 0: 0 ns).
pub const BUCKETS: u32 = 40;

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
