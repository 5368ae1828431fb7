//! A memory cgroup's own figures from cgroupfs: usage, limit, memory.stat, limit hits and
//! swap room. Files are small and read whole; anything unreadable is `None`, never an error:
//! a cgroup can go away between two reads.
use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
};

use super::CgroupVersion;

/// v1 reports "no limit" as PAGE_COUNTER_MAX pages; anything this high is unlimited.
const UNLIMITED: u64 = 1 << 60;

/// One memory cgroup directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CgroupMemory {
    pub dir: PathBuf,
    pub version: CgroupVersion,
}

fn read_u64(path: &Path) -> Option<u64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// `key value` lines (memory.stat, memory.events) as a map.
pub fn keyed(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_owned(), v.trim().parse().ok()?))
        })
        .collect()
}

/// v1 prints local and `total_` (hierarchical) items; the cgroup's figures include its
/// children's.
pub fn hierarchical(stats: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    let totals: BTreeMap<String, u64> = stats
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix("total_")?.to_owned(), *v)))
        .collect();
    if totals.is_empty() {
        stats.clone()
    } else {
        totals
    }
}

impl CgroupMemory {
    pub fn new(root: &Path, relative: &str, version: CgroupVersion) -> Self {
        Self {
            dir: root.join(relative.trim_start_matches('/')),
            version,
        }
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Bytes charged (page cache included).
    pub fn usage(&self) -> Option<u64> {
        read_u64(&self.file(match self.version {
            CgroupVersion::V1 => "memory.usage_in_bytes",
            CgroupVersion::V2 => "memory.current",
        }))
    }

    /// The cgroup's own hard limit in bytes; `None` when it has none.
    pub fn limit(&self) -> Option<u64> {
        let text = fs::read_to_string(self.file(match self.version {
            CgroupVersion::V1 => "memory.limit_in_bytes",
            CgroupVersion::V2 => "memory.max",
        }))
        .ok()?;
        text.trim().parse().ok().filter(|&limit| limit < UNLIMITED)
    }

    /// memory.stat with hierarchical figures (v1's `total_` items, v2's own).
    pub fn stat(&self) -> BTreeMap<String, u64> {
        hierarchical(&keyed(
            &fs::read_to_string(self.file("memory.stat")).unwrap_or_default(),
        ))
    }

    /// Times the limit was hit so far: v2 memory.events `max`, v1 memory.failcnt.
    pub fn limit_hits(&self) -> Option<u64> {
        match self.version {
            CgroupVersion::V1 => read_u64(&self.file("memory.failcnt")),
            CgroupVersion::V2 => keyed(&fs::read_to_string(self.file("memory.events")).ok()?)
                .get("max")
                .copied(),
        }
    }

    /// Bytes of anon memory reclaim could still push to swap: the cgroup's swap allowance
    /// left, bounded by the machine's free swap (0 without swap).
    pub fn swap_room(&self) -> u64 {
        let machine = machine_free_swap();
        if machine == 0 {
            return 0;
        }
        let allowance = match self.version {
            CgroupVersion::V1 => {
                let limit = read_u64(&self.file("memory.memsw.limit_in_bytes"));
                let usage = read_u64(&self.file("memory.memsw.usage_in_bytes"));
                match (limit, usage) {
                    (Some(limit), Some(usage)) if limit < UNLIMITED => limit.saturating_sub(usage),
                    _ => u64::MAX,
                }
            }
            CgroupVersion::V2 => {
                let max = fs::read_to_string(self.file("memory.swap.max")).unwrap_or_default();
                let current = read_u64(&self.file("memory.swap.current")).unwrap_or(0);
                max.trim()
                    .parse::<u64>()
                    .map_or(u64::MAX, |max| max.saturating_sub(current))
            }
        };
        allowance.min(machine)
    }

    /// Processes in the cgroup and its descendants.
    pub fn pids(&self) -> Vec<u32> {
        pids_in(&self.dir)
    }
}

/// Deep enough for any real hierarchy; a bound so a hostile tree cannot exhaust the stack.
const MAX_DEPTH: usize = 64;

/// Processes in cgroup directory `dir` and its descendants.
pub fn pids_in(dir: &Path) -> Vec<u32> {
    pids_below(dir, 0)
}

fn pids_below(dir: &Path, depth: usize) -> Vec<u32> {
    let mut pids: Vec<u32> = fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    if depth < MAX_DEPTH {
        for child in fs::read_dir(dir).into_iter().flatten().flatten() {
            if child.file_type().is_ok_and(|t| t.is_dir()) {
                pids.extend(pids_below(&child.path(), depth + 1));
            }
        }
    }
    pids
}

/// SwapFree from /proc/meminfo, in bytes.
fn machine_free_swap() -> u64 {
    fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("SwapFree:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or(0)
        .saturating_mul(1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_versions() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| fs::write(dir.path().join(name), text).unwrap();
        write("memory.usage_in_bytes", "1048576\n");
        write("memory.limit_in_bytes", "9223372036854771712\n");
        write("memory.failcnt", "7\n");
        write("memory.stat", "inactive_file 1\ntotal_inactive_file 4096\n");
        let v1 = CgroupMemory {
            dir: dir.path().to_path_buf(),
            version: CgroupVersion::V1,
        };
        assert_eq!(v1.usage(), Some(1 << 20));
        assert_eq!(v1.limit(), None, "PAGE_COUNTER_MAX is no limit");
        assert_eq!(v1.limit_hits(), Some(7));
        assert_eq!(v1.stat().get("inactive_file"), Some(&4096));
        write("memory.current", "2048\n");
        write("memory.max", "max\n");
        write("memory.events", "low 0\nhigh 2\nmax 9\noom 1\n");
        let v2 = CgroupMemory {
            dir: dir.path().to_path_buf(),
            version: CgroupVersion::V2,
        };
        assert_eq!(v2.limit(), None);
        write("memory.max", "67108864\n");
        assert_eq!(v2.limit(), Some(64 << 20));
        assert_eq!(v2.usage(), Some(2048));
        assert_eq!(v2.limit_hits(), Some(9));
        let gone = CgroupMemory {
            dir: dir.path().join("gone"),
            version: CgroupVersion::V2,
        };
        assert_eq!(
            (gone.usage(), gone.limit(), gone.limit_hits()),
            (None, None, None)
        );
        assert!(gone.pids().is_empty());
    }
}
