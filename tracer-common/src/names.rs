//! Names of the object's maps, globals and programs, as userspace looks them up. The kernel
//! side declares them by identifier; a test parses the built object and checks every name here
//! is in it, so a rename on one side cannot go unnoticed until run time.

/// Maps.
pub mod map {
    pub const EVENTS: &str = "EVENTS";
    pub const DROPS: &str = "DROPS";
    pub const STACKS: &str = "STACKS";
    pub const WATCHED: &str = "WATCHED";
    pub const KSWAPD: &str = "KSWAPD";
    pub const KSWAPD_TOTALS: &str = "KSWAPD_TOTALS";
    pub const KSWAPD_WAKEUPS: &str = "KSWAPD_WAKEUPS";
    pub const MEMCG_COUNTERS: &str = "MEMCG_COUNTERS";
    pub const LATENCY: &str = "LATENCY";
    pub const MARK_VICTIM_FORMAT: &str = "MARK_VICTIM_FORMAT";
    pub const TASKS: &str = "TASKS";
    pub const IN_FLIGHT: &str = "IN_FLIGHT";
    pub const DIAGNOSTICS: &str = "DIAGNOSTICS";
    /// aya-log's ring buffer (aya-log-ebpf declares it; aya-log's EbpfLogger takes it).
    pub const AYA_LOGS: &str = "AYA_LOGS";
    pub const ALL: &[&str] = &[
        TASKS,
        IN_FLIGHT,
        DIAGNOSTICS,
        AYA_LOGS,
        EVENTS,
        DROPS,
        STACKS,
        WATCHED,
        KSWAPD,
        KSWAPD_TOTALS,
        KSWAPD_WAKEUPS,
        MEMCG_COUNTERS,
        LATENCY,
        MARK_VICTIM_FORMAT,
    ];
}

/// Globals the loader sets before load (EbpfLoader::override_global).
pub mod global {
    pub const KERNEL_LAYOUT: &str = "KERNEL_LAYOUT";
    pub const STACK_THRESHOLD_NS: &str = "STACK_THRESHOLD_NS";
    pub const MEMCG_ITEMS: &str = "MEMCG_ITEMS";
    pub const FILTER: &str = "FILTER";
    pub const OOM_CONTROL_LAYOUT: &str = "OOM_CONTROL_LAYOUT";
    pub const COMPACT_SKIPPED: &str = "COMPACT_SKIPPED";
    /// Non-zero: log diagnostics through aya-log (`--bpf-log`); 0, the object's default, keeps
    /// them to the counters.
    pub const BPF_LOG: &str = "BPF_LOG";
    pub const ALL: &[&str] = &[
        BPF_LOG,
        COMPACT_SKIPPED,
        KERNEL_LAYOUT,
        STACK_THRESHOLD_NS,
        MEMCG_ITEMS,
        FILTER,
        OOM_CONTROL_LAYOUT,
    ];
}

/// Programs. Tracepoint hooks come in pairs sharing one body: `<base>_btf` (tp_btf) and
/// `<base>_raw` (raw_tp); [`BTF_OR_RAW`] lists the bases.
pub mod program {
    pub const OOM_MARK_VICTIM_BTF: &str = "oom_mark_victim_btf";
    pub const OOM_MARK_VICTIM_TP: &str = "oom_mark_victim_tp";
    pub const OOM_KILL_PROCESS_ENTRY: &str = "oom_kill_process_entry";
    pub const CHARGE_ENTER: &str = "charge_enter";
    pub const CHARGE_EXIT: &str = "charge_exit";
    pub const FAULT_ENTER: &str = "fault_enter";
    pub const FAULT_EXIT: &str = "fault_exit";
    pub const COMPACT_ENTER: &str = "compact_enter";
    pub const COMPACT_EXIT: &str = "compact_exit";
    pub const SWAPIN_ENTER: &str = "swapin_enter";
    pub const SWAPIN_EXIT: &str = "swapin_exit";
    pub const COUNT_MEMCG_EVENTS: &str = "count_memcg_events";
    pub const DIRECT_RECLAIM_BEGIN: &str = "direct_reclaim_begin";
    pub const DIRECT_RECLAIM_END: &str = "direct_reclaim_end";
    pub const MEMCG_RECLAIM_BEGIN: &str = "memcg_reclaim_begin";
    pub const MEMCG_RECLAIM_END: &str = "memcg_reclaim_end";
    pub const SOFTLIMIT_RECLAIM_BEGIN: &str = "softlimit_reclaim_begin";
    pub const SOFTLIMIT_RECLAIM_END: &str = "softlimit_reclaim_end";
    pub const NODE_RECLAIM_BEGIN: &str = "node_reclaim_begin";
    pub const NODE_RECLAIM_END: &str = "node_reclaim_end";
    pub const KSWAPD_WAKE: &str = "kswapd_wake";
    pub const KSWAPD_SLEEP: &str = "kswapd_sleep";
    pub const WAKEUP_KSWAPD: &str = "wakeup_kswapd";
    pub const THROTTLED: &str = "throttled";
    pub const LRU_SHRINK_INACTIVE: &str = "lru_shrink_inactive";
    pub const LRU_SHRINK_ACTIVE: &str = "lru_shrink_active";
    pub const SHRINK_SLAB_START: &str = "shrink_slab_start";
    pub const SHRINK_SLAB_END: &str = "shrink_slab_end";
    pub const SCHED_SWITCH: &str = "sched_switch";
    /// balance_dirty_pages with 8 arguments (6.12); `_thresh`: with 12 (6.1).
    pub const BALANCE_DIRTY_PAGES: &str = "balance_dirty_pages";
    pub const BALANCE_DIRTY_PAGES_THRESH: &str = "balance_dirty_pages_thresh";
    pub const SIGNAL_GENERATE: &str = "signal_generate";
    /// Programs attached by their own name.
    pub const SINGLE: &[&str] = &[
        OOM_MARK_VICTIM_BTF,
        OOM_MARK_VICTIM_TP,
        OOM_KILL_PROCESS_ENTRY,
        CHARGE_ENTER,
        CHARGE_EXIT,
        FAULT_ENTER,
        FAULT_EXIT,
        COMPACT_ENTER,
        COMPACT_EXIT,
        SWAPIN_ENTER,
        SWAPIN_EXIT,
    ];
    /// Bases of tp_btf/raw_tp pairs.
    pub const BTF_OR_RAW: &[&str] = &[
        COUNT_MEMCG_EVENTS,
        DIRECT_RECLAIM_BEGIN,
        DIRECT_RECLAIM_END,
        MEMCG_RECLAIM_BEGIN,
        MEMCG_RECLAIM_END,
        SOFTLIMIT_RECLAIM_BEGIN,
        SOFTLIMIT_RECLAIM_END,
        NODE_RECLAIM_BEGIN,
        NODE_RECLAIM_END,
        KSWAPD_WAKE,
        KSWAPD_SLEEP,
        WAKEUP_KSWAPD,
        THROTTLED,
        LRU_SHRINK_INACTIVE,
        LRU_SHRINK_ACTIVE,
        SHRINK_SLAB_START,
        SHRINK_SLAB_END,
        SCHED_SWITCH,
        BALANCE_DIRTY_PAGES,
        BALANCE_DIRTY_PAGES_THRESH,
        SIGNAL_GENERATE,
    ];
}
