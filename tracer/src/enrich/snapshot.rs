//! What /proc and cgroupfs say after the fact, for a kill whose kernel report was not read:
//! the task table as close to the kernel's as /proc allows, and the machine's memory.
use std::fs;

use super::kmsg::OomTask;
use crate::event::Breakdown;

pub fn meminfo_kb(key: &str) -> u64 {
    let text = fs::read_to_string("/proc/meminfo").unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// The whole machine's memory, for global OOMs (values from /proc/meminfo, kB).
pub fn global_breakdown() -> Breakdown {
    let get = meminfo_kb;
    Breakdown::from([
        ("anon".into(), get("AnonPages")),
        ("file".into(), get("Cached")),
        ("shmem".into(), get("Shmem")),
        ("file_mapped".into(), get("Mapped")),
        ("file_dirty".into(), get("Dirty")),
        ("file_writeback".into(), get("Writeback")),
        ("active_file".into(), get("Active(file)")),
        ("inactive_file".into(), get("Inactive(file)")),
        (
            "kernel".into(),
            get("Slab") + get("KernelStack") + get("PageTables"),
        ),
        ("slab".into(), get("Slab")),
        ("slab_reclaimable".into(), get("SReclaimable")),
        (
            "swap".into(),
            get("SwapTotal").saturating_sub(get("SwapFree")),
        ),
    ])
}

/// A task-table row from /proc, as close to the kernel's as /proc allows.
pub fn snapshot_tasks(pids: impl Iterator<Item = u32>, page_size: u64) -> Vec<OomTask> {
    pids.filter_map(|pid| {
        let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let adj = fs::read_to_string(format!("/proc/{pid}/oom_score_adj"))
            .ok()
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(0);
        task_from_status(pid, &status, adj, page_size)
    })
    .collect()
}

/// A task-table row from /proc/PID/status text; `None` for a kernel thread (no mm: never an
/// OOM candidate).
pub fn task_from_status(pid: u32, status: &str, adj: i32, page_size: u64) -> Option<OomTask> {
    let page_kb = (page_size / 1024).max(1);
    let kb = |key: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
            .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    let name = status
        .lines()
        .find_map(|l| l.strip_prefix("Name:"))
        .unwrap_or("")
        .trim()
        .to_owned();
    if kb("VmSize") == 0 {
        return None;
    }
    Some(OomTask {
        pid,
        tgid: pid,
        uid: 0,
        total_vm_pages: kb("VmSize") / page_kb,
        rss_pages: kb("VmRSS") / page_kb,
        rss_anon_pages: Some(kb("RssAnon") / page_kb),
        rss_file_pages: Some(kb("RssFile") / page_kb),
        rss_shmem_pages: Some(kb("RssShmem") / page_kb),
        pgtables_bytes: kb("VmPTE").saturating_mul(1024),
        swapents: kb("VmSwap") / page_kb,
        oom_score_adj: adj,
        name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_reads_this_process() {
        let tasks = snapshot_tasks(std::iter::once(std::process::id()), 4096);
        assert_eq!(tasks.len(), 1);
        assert!(tasks[0].rss_pages > 0);
        assert!(snapshot_tasks(std::iter::once(u32::MAX), 4096).is_empty());
    }
}
