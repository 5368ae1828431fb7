//! The attaching half of each hook family, one file per family like the kernel side's.
pub mod compaction;
pub mod kill;
pub mod latency;
pub mod memcg;
pub mod oom;
pub mod reclaim;
pub mod sleep;
