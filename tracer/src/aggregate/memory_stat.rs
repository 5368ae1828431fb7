//! memory.stat read per cgroup (or the kernel hook's counters named by path), indexed by
//! [`MemcgSlot`]: LRU pages scanned/reclaimed and page faults.
use std::{collections::HashMap, fs, path::Path};

use memstall_common::{MEMCG_SLOTS, MemcgSlot};

use crate::{cgroup::CgroupVersion, kernel::maps::MemcgCounters};

/// Per-cgroup counters by path, indexed by [`MemcgSlot`] (LRU pages scanned/reclaimed, faults).
pub type CgroupCounters = HashMap<String, [u64; MEMCG_SLOTS]>;

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
    parse_counters(
        &fs::read_to_string(dir.join("memory.stat")).ok()?,
        hierarchical,
        version,
    )
}

/// The counters in memory.stat text; `None` when it has no `pgfault` (not a memcg's stat).
pub fn parse_counters(
    text: &str,
    hierarchical: bool,
    version: CgroupVersion,
) -> Option<[u64; MEMCG_SLOTS]> {
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
                    .for_each(|(sum, c)| *sum = sum.saturating_add(c));
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

/// The kernel's per-memcg counters, by path (`name` turns memcg ids into paths).
pub fn kernel_totals(
    counters: &MemcgCounters,
    name: &mut impl FnMut(u64) -> String,
) -> CgroupCounters {
    let mut totals = CgroupCounters::new();
    for (memcg, counts) in counters {
        let path = name(*memcg);
        let entry = totals.entry(path).or_default();
        entry
            .iter_mut()
            .zip(counts)
            .for_each(|(sum, c)| *sum = sum.saturating_add(*c));
    }
    totals
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
}
