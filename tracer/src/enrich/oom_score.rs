//! Why the OOM killer picked its victim: the kernel's badness points, the candidate scoreboard
//! and what the OOM domain's memory was made of.
use std::collections::BTreeMap;

use super::kmsg::OomTask;
use crate::event::{Breakdown, Candidate, Diagnosis};

/// oom_score_adj that exempts a task from the OOM killer.
pub const OOM_SCORE_ADJ_MIN: i32 = -1000;

/// The kernel's oom_badness(): rss + swap entries + page tables (pages), plus
/// `adj * (totalpages / 1000)` — the division comes first, as in mm/oom_kill.c. `None` for an
/// exempt task (adj -1000).
pub fn badness(
    rss_pages: u64,
    swapents: u64,
    pgtables_bytes: u64,
    adj: i32,
    totalpages: u64,
    page_size: u64,
) -> Option<i64> {
    if adj == OOM_SCORE_ADJ_MIN {
        return None;
    }
    // Figures from the kernel log: saturate rather than trust them to be sane.
    let pages = rss_pages
        .saturating_add(swapents)
        .saturating_add(pgtables_bytes / page_size.max(1));
    let points = i64::try_from(pages).unwrap_or(i64::MAX);
    let per_adj = i64::try_from(totalpages / 1000).unwrap_or(i64::MAX);
    Some(points.saturating_add(i64::from(adj).saturating_mul(per_adj)))
}

/// /proc/PID/oom_score's scale: (1000 + badness * 1000 / totalpages) * 2 / 3, here against the
/// OOM domain's totalpages.
pub fn normalized(points: i64, totalpages: u64) -> i64 {
    let total = i64::try_from(totalpages.max(1)).unwrap_or(i64::MAX);
    1000_i64
        .saturating_add(points.saturating_mul(1000) / total)
        .saturating_mul(2)
        / 3
}

/// Candidates from the kernel's task table, ranked as the OOM killer ranks them.
pub fn scoreboard(
    tasks: &[OomTask],
    totalpages: u64,
    page_size: u64,
    victim_pid: u32,
) -> Vec<Candidate> {
    let kb = |pages: u64| pages.saturating_mul(page_size) / 1024;
    let mut candidates: Vec<Candidate> = tasks
        .iter()
        .map(|t| {
            let points = badness(
                t.rss_pages,
                t.swapents,
                t.pgtables_bytes,
                t.oom_score_adj,
                totalpages,
                page_size,
            );
            Candidate {
                pid: t.pid,
                comm: t.name.clone(),
                points,
                exempt: points.is_none(),
                oom_score_adj: t.oom_score_adj,
                rss_kb: kb(t.rss_pages),
                anon_kb: t.rss_anon_pages.map(kb),
                file_kb: t.rss_file_pages.map(kb),
                shmem_kb: t.rss_shmem_pages.map(kb),
                swap_kb: kb(t.swapents),
                pgtables_kb: t.pgtables_bytes / 1024,
                victim: t.pid == victim_pid || t.tgid == victim_pid,
            }
        })
        .collect();
    rank(&mut candidates);
    candidates
}

/// Highest points first; exempt tasks last.
pub fn rank(candidates: &mut [Candidate]) {
    candidates.sort_by(|a, b| {
        b.points
            .unwrap_or(i64::MIN)
            .cmp(&a.points.unwrap_or(i64::MIN))
            .then(a.pid.cmp(&b.pid))
    });
}

/// memory.stat items (v1 or v2, values in bytes) → v2-named kB breakdown. v1's `rss` becomes
/// `anon`, `cache` becomes `file`, `mapped_file` becomes `file_mapped`.
pub fn breakdown_from_memory_stat(stat: &BTreeMap<String, u64>) -> Breakdown {
    const V2_NAMES: &[(&str, &[&str])] = &[
        ("anon", &["anon", "rss"]),
        ("file", &["file", "cache"]),
        ("shmem", &["shmem"]),
        ("file_mapped", &["file_mapped", "mapped_file"]),
        ("file_dirty", &["file_dirty", "dirty"]),
        ("file_writeback", &["file_writeback", "writeback"]),
        ("active_anon", &["active_anon"]),
        ("inactive_anon", &["inactive_anon"]),
        ("active_file", &["active_file"]),
        ("inactive_file", &["inactive_file"]),
        ("unevictable", &["unevictable"]),
        ("kernel", &["kernel"]),
        ("slab", &["slab"]),
        ("slab_reclaimable", &["slab_reclaimable"]),
        ("sock", &["sock"]),
        ("swap", &["swap"]),
    ];
    V2_NAMES
        .iter()
        .filter_map(|(name, sources)| {
            sources
                .iter()
                .find_map(|s| stat.get(*s))
                .map(|bytes| (name.to_string(), bytes / 1024))
        })
        .collect()
}

pub fn diagnose(breakdown: &Breakdown, usage_kb: u64, swap_available: bool) -> Diagnosis {
    let get = |k: &str| breakdown.get(k).copied().unwrap_or(0);
    let (anon, file, shmem) = (get("anon"), get("file"), get("shmem"));
    // shmem/tmpfs pages sit in the page cache ("file") but only swap can move them.
    let page_cache = file.saturating_sub(shmem);
    let kernel = get("kernel").max(get("slab"));
    let total = usage_kb
        .max(anon.saturating_add(file).saturating_add(kernel))
        .max(1);
    let swappable = if swap_available {
        anon.saturating_add(shmem)
    } else {
        0
    };
    let reclaimable = page_cache
        .saturating_add(get("slab_reclaimable"))
        .saturating_add(swappable);
    let pct = |part: u64| part.saturating_mul(100) / total;
    let swap_note = if swap_available {
        ""
    } else {
        "; no swap, so anonymous and shmem pages cannot be reclaimed at all"
    };
    let culprit = if pct(shmem) >= 50 {
        format!(
            "{} % of the memory is shmem/tmpfs/SysV shm, which reclaim cannot free without swap{swap_note}",
            pct(shmem)
        )
    } else if pct(anon) >= 50 {
        format!(
            "{} % of the memory is anonymous (heap, stacks, private mappings){swap_note}: only killing frees it",
            pct(anon)
        )
    } else if pct(page_cache) >= 50 {
        format!(
            "{} % of the memory is page cache, yet reclaim could not free it in time (dirty {} kB, writeback {} kB, mapped {} kB)",
            pct(page_cache),
            get("file_dirty"),
            get("file_writeback"),
            get("file_mapped")
        )
    } else if pct(kernel) >= 30 {
        format!(
            "{} % of the memory is kernel memory (slab, page tables, sockets)",
            pct(kernel)
        )
    } else {
        format!(
            "anon {} %, page cache {} %, shmem {} %, kernel {} %{swap_note}",
            pct(anon),
            pct(page_cache),
            pct(shmem),
            pct(kernel)
        )
    };
    Diagnosis {
        reclaimable_kb: reclaimable.min(total),
        unreclaimable_kb: total.saturating_sub(reclaimable),
        culprit,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(pid: u32, rss: u64, adj: i32) -> OomTask {
        OomTask {
            pid,
            tgid: pid,
            rss_pages: rss,
            pgtables_bytes: 114688,
            oom_score_adj: adj,
            name: format!("t{pid}"),
            ..Default::default()
        }
    }

    #[test]
    fn badness_follows_the_kernel_formula() {
        // The kernel's own table: rss 9022 pages, 112 kB page tables, adj 0 → 9022 + 28.
        assert_eq!(badness(9022, 0, 114688, 0, 8192, 4096), Some(9050));
        // adj scales by totalpages / 1000 with integer division first: 8192 / 1000 = 8.
        assert_eq!(badness(1000, 0, 0, 500, 8192, 4096), Some(1000 + 500 * 8));
        // Found by the kmsg fuzz target: absurd figures from a log saturate, never panic.
        assert_eq!(
            badness(u64::MAX, u64::MAX, 0, 1000, u64::MAX, 4096),
            Some(i64::MAX)
        );
        assert!(normalized(i64::MAX, 1) > 0);
        assert_eq!(badness(1000, 10, 0, -500, 8192, 4096), Some(1010 - 4000));
        assert_eq!(badness(1000, 0, 0, OOM_SCORE_ADJ_MIN, 8192, 4096), None);
        assert_eq!(normalized(8192, 8192), 1333);
        assert_eq!(normalized(0, 8192), 666);
    }

    #[test]
    fn scoreboard_ranks_like_the_oom_killer() {
        // The larger task at adj 0 loses to the smaller one at +500 in a 32 MiB cgroup.
        let tasks = [
            task(1, 5000, 0),
            task(2, 2000, 500),
            task(3, 9000, OOM_SCORE_ADJ_MIN),
        ];
        let board = scoreboard(&tasks, 8192, 4096, 2);
        let order: Vec<u32> = board.iter().map(|c| c.pid).collect();
        assert_eq!(order, [2, 1, 3]);
        assert!(board[0].victim && !board[1].victim);
        assert_eq!(board[0].points, Some(2000 + 28 + 4000));
        assert!(board[2].exempt && board[2].points.is_none());
        assert_eq!(board[1].rss_kb, 20000);
    }

    #[test]
    fn v1_stats_map_to_v2_names() {
        let stat = BTreeMap::from([
            ("rss".to_string(), 33484800),
            ("cache".to_string(), 4096),
            ("mapped_file".to_string(), 0),
            ("shmem".to_string(), 0),
            ("hierarchical_memory_limit".to_string(), 33554432),
        ]);
        let b = breakdown_from_memory_stat(&stat);
        assert_eq!(b["anon"], 32700);
        assert_eq!(b["file"], 4);
        assert_eq!(b["file_mapped"], 0);
        assert!(!b.contains_key("hierarchical_memory_limit"));
    }

    #[test]
    fn names_the_culprit() {
        let shm = Breakdown::from([
            ("anon".into(), 6000),
            ("file".into(), 26000),
            ("shmem".into(), 25600),
        ]);
        let d = diagnose(&shm, 32768, false);
        assert!(
            d.culprit.starts_with("78 % of the memory is shmem/tmpfs"),
            "{}",
            d.culprit
        );
        assert!(d.culprit.contains("no swap"), "{}", d.culprit);
        assert_eq!(d.reclaimable_kb, 400);
        let anon = Breakdown::from([("anon".into(), 32000), ("file".into(), 100)]);
        assert!(
            diagnose(&anon, 32768, false)
                .culprit
                .starts_with("97 % of the memory is anonymous")
        );
        let cache = Breakdown::from([
            ("anon".into(), 1000),
            ("file".into(), 30000),
            ("file_dirty".into(), 29000),
        ]);
        assert!(
            diagnose(&cache, 32768, true)
                .culprit
                .contains("dirty 29000 kB")
        );
    }
}
