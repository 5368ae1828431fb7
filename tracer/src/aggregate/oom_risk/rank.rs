//! The kernel's pick if the cgroup hit its limit now: oom_badness() over its processes.
use std::fs;

use crate::{
    cgroup::memory::CgroupMemory,
    enrich::{oom_score, snapshot::task_from_status},
};

/// A candidate of the cgroup's OOM kill now.
#[derive(Clone, Debug, PartialEq)]
pub struct Ranked {
    pub pid: u32,
    pub comm: String,
    pub points: i64,
    /// anon + swap: what killing it frees.
    pub freeable_kb: u64,
    pub shmem_kb: u64,
}

/// The cgroup's processes as the OOM killer would rank them, highest first.
pub fn rank(memory: &CgroupMemory, totalpages: u64, page_size: u64) -> Vec<Ranked> {
    let page_kb = (page_size / 1024).max(1);
    let mut ranked: Vec<Ranked> = memory
        .pids()
        .into_iter()
        .take(4096)
        .filter_map(|pid| {
            let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
            let adj: i32 = fs::read_to_string(format!("/proc/{pid}/oom_score_adj"))
                .ok()?
                .trim()
                .parse()
                .ok()?;
            let task = task_from_status(pid, &status, adj, page_size)?;
            let points = oom_score::badness(
                task.rss_pages,
                task.swapents,
                task.pgtables_bytes,
                adj,
                totalpages,
                page_size,
            )?;
            Some(Ranked {
                pid,
                comm: task.name,
                points,
                freeable_kb: (task.rss_anon_pages.unwrap_or(0) + task.swapents) * page_kb,
                shmem_kb: task.rss_shmem_pages.unwrap_or(0) * page_kb,
            })
        })
        .collect();
    // The kernel keeps the later of equal scores; /proc order is close enough to its scan.
    ranked.sort_by_key(|r| std::cmp::Reverse(r.points));
    ranked
}
