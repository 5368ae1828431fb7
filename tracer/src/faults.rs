//! Page faults per memory cgroup. The kernel already counts them per memcg (memory.stat
//! pgfault/pgmajfault), so reading those files each interval costs nothing per fault; the eBPF
//! counter on memcg/count_memcg_events costs every fault and only pays off where walking
//! cgroupfs does not: thousands of cgroups.
use std::{collections::HashMap, fs, path::Path};

use serde::Serialize;
use tracer_common::{MEMCG_SLOTS, MemcgSlot};

use crate::{
    cgroup::{CgroupResolver, CgroupVersion},
    memcg::MemcgCounters,
};

/// Above this many memory cgroups, `auto` counts faults in the kernel instead of reading
/// every memory.stat each interval.
pub const AUTO_EBPF_ABOVE_CGROUPS: usize = 2000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum FaultSource {
    /// memory.stat of the watched cgroups, or of every cgroup when few enough; else eBPF.
    Auto,
    /// Read memory.stat pgfault/pgmajfault each interval (no per-fault cost).
    MemoryStat,
    /// Count in the kernel on memcg/count_memcg_events (costs every fault).
    Ebpf,
    /// No fault counts.
    Off,
}

/// Per-cgroup counters by path, indexed by [`MemcgSlot`] (LRU pages scanned/reclaimed, faults).
pub type CgroupCounters = HashMap<String, [u64; MEMCG_SLOTS]>;

/// One cgroup's faults over a period.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct FaultRow {
    pub cgroup: String,
    /// Minor faults (all faults less major ones) and major faults (I/O).
    pub minor: u64,
    pub major: u64,
    pub minor_per_s: f64,
    pub major_per_s: f64,
}

/// memory.stat item names per slot: v2 has them all; v1 has no pgscan/pgsteal.
fn stat_key(slot: MemcgSlot) -> &'static str {
    match slot {
        MemcgSlot::PgscanDirect => "pgscan_direct",
        MemcgSlot::PgstealDirect => "pgsteal_direct",
        MemcgSlot::PgscanKswapd => "pgscan_kswapd",
        MemcgSlot::PgstealKswapd => "pgsteal_kswapd",
        MemcgSlot::Pgfault => "pgfault",
        MemcgSlot::Pgmajfault => "pgmajfault",
    }
}

fn stat_counters(
    dir: &Path,
    hierarchical: bool,
    version: CgroupVersion,
) -> Option<[u64; MEMCG_SLOTS]> {
    let text = fs::read_to_string(dir.join("memory.stat")).ok()?;
    // v1 keeps local and total_ (hierarchical) items; v2's are all hierarchical.
    let prefix = if hierarchical && version == CgroupVersion::V1 {
        "total_"
    } else {
        ""
    };
    let get = |key: &str| -> Option<u64> {
        let wanted = format!("{prefix}{key} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&wanted)?.trim().parse().ok())
    };
    get("pgfault")?;
    let mut values = [0; MEMCG_SLOTS];
    for slot in MemcgSlot::ALL {
        values[slot as usize] = get(stat_key(slot)).unwrap_or(0);
    }
    Some(values)
}

/// Counters of each watched cgroup, its descendants included.
pub fn watched_totals(root: &Path, version: CgroupVersion, watched: &[String]) -> CgroupCounters {
    watched
        .iter()
        .filter_map(|rel| {
            let dir = root.join(rel.trim_start_matches('/'));
            Some((rel.clone(), stat_counters(&dir, true, version)?))
        })
        .collect()
}

/// Counters of each cgroup itself (children excluded), for the whole hierarchy.
pub fn all_totals(root: &Path, version: CgroupVersion) -> CgroupCounters {
    let mut totals = CgroupCounters::new();
    let mut stack = vec![(root.to_path_buf(), "/".to_owned())];
    while let Some((dir, rel)) = stack.pop() {
        let own = stat_counters(&dir, version == CgroupVersion::V2, version);
        let mut children = [0u64; MEMCG_SLOTS];
        for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
            if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            let child_rel = if rel == "/" {
                format!("/{name}")
            } else {
                format!("{rel}/{name}")
            };
            if version == CgroupVersion::V2
                && let Some(child) = stat_counters(&entry.path(), true, version)
            {
                children
                    .iter_mut()
                    .zip(child)
                    .for_each(|(sum, c)| *sum += c);
            }
            stack.push((entry.path(), child_rel));
        }
        if let Some(mut own) = own {
            // v2 counts are recursive: what the children had is not this cgroup's own.
            own.iter_mut()
                .zip(children)
                .for_each(|(v, c)| *v = v.saturating_sub(c));
            totals.insert(rel, own);
        }
    }
    totals
}

pub fn count_cgroups(root: &Path) -> usize {
    let mut count = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        count += 1;
        for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(entry.path());
            }
        }
    }
    count
}

/// The kernel's per-memcg counters, by path.
pub fn kernel_totals(counters: &MemcgCounters, cgroups: &mut CgroupResolver) -> CgroupCounters {
    let mut totals = CgroupCounters::new();
    for (memcg, counts) in counters {
        let path = cgroups.name(*memcg);
        let entry = totals.entry(path).or_default();
        entry.iter_mut().zip(counts).for_each(|(sum, c)| *sum += c);
    }
    totals
}

/// Fault rows for `now - before`, over `period_ns`, most faults first.
pub fn rows(now: &CgroupCounters, before: &CgroupCounters, period_ns: u64) -> Vec<FaultRow> {
    let secs = (period_ns as f64 / 1e9).max(1e-9);
    let (all_slot, major_slot) = (MemcgSlot::Pgfault as usize, MemcgSlot::Pgmajfault as usize);
    let mut rows: Vec<FaultRow> = now
        .iter()
        .filter_map(|(cgroup, counts)| {
            let base = before.get(cgroup).copied().unwrap_or_default();
            let all = counts[all_slot].saturating_sub(base[all_slot]);
            let major = counts[major_slot].saturating_sub(base[major_slot]);
            (all > 0).then(|| {
                let minor = all.saturating_sub(major);
                FaultRow {
                    cgroup: cgroup.clone(),
                    minor,
                    major,
                    minor_per_s: minor as f64 / secs,
                    major_per_s: major as f64 / secs,
                }
            })
        })
        .collect();
    rows.sort_by(|a, b| {
        (b.minor + b.major)
            .cmp(&(a.minor + a.major))
            .then_with(|| a.cgroup.cmp(&b.cgroup))
    });
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_stat(dir: &Path, v1_local: (u64, u64), total: (u64, u64)) {
        fs::create_dir_all(dir).unwrap();
        fs::write(
            dir.join("memory.stat"),
            format!(
                "cache 0\npgfault {}\npgmajfault {}\ntotal_pgfault {}\ntotal_pgmajfault {}\n",
                v1_local.0, v1_local.1, total.0, total.1
            ),
        )
        .unwrap();
    }

    #[test]
    fn v1_local_and_hierarchical() {
        let root = tempfile::tempdir().unwrap();
        write_stat(root.path(), (10, 1), (110, 6));
        write_stat(&root.path().join("a"), (100, 5), (100, 5));
        let all = all_totals(root.path(), CgroupVersion::V1);
        assert_eq!(all["/"][4..], [10, 1]);
        assert_eq!(all["/a"][4..], [100, 5]);
        assert_eq!(all["/a"][..4], [0; 4], "v1 has no pgscan/pgsteal");
        let watched = watched_totals(root.path(), CgroupVersion::V1, &["/".into()]);
        assert_eq!(watched["/"][4..], [110, 6]);
    }

    #[test]
    fn v2_counts_are_recursive() {
        let root = tempfile::tempdir().unwrap();
        let v2 = |dir: &Path, all: u64, major: u64| {
            fs::create_dir_all(dir).unwrap();
            fs::write(
                dir.join("memory.stat"),
                format!("anon 0\npgfault {all}\npgmajfault {major}\npgscan_direct {major}\npgsteal_direct 1\n"),
            )
            .unwrap();
        };
        v2(&root.path().join("a"), 300, 30);
        v2(&root.path().join("a/b"), 200, 20);
        v2(&root.path().join("a/c"), 50, 0);
        let all = all_totals(root.path(), CgroupVersion::V2);
        assert_eq!(all["/a"], [10, 0, 0, 0, 50, 10]);
        assert_eq!(all["/a/b"], [20, 1, 0, 0, 200, 20]);
        assert!(!all.contains_key("/"), "the v2 root has no memory.stat");
        assert_eq!(count_cgroups(root.path()), 4);
    }

    #[test]
    fn rows_are_deltas_with_rates() {
        let f = |all: u64, major: u64| [0, 0, 0, 0, all, major];
        let before = CgroupCounters::from([("/a".into(), f(100, 10))]);
        let now = CgroupCounters::from([
            ("/a".into(), f(300, 30)),
            ("/b".into(), f(5, 0)),
            ("/c".into(), f(0, 0)),
        ]);
        let rows = rows(&now, &before, 2_000_000_000);
        assert_eq!(rows.len(), 2);
        assert_eq!(
            (rows[0].cgroup.as_str(), rows[0].minor, rows[0].major),
            ("/a", 180, 20)
        );
        assert_eq!(rows[0].minor_per_s, 90.0);
        assert_eq!(rows[1].minor, 5);
    }
}
