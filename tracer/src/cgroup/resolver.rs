//! memcg ids to hierarchy paths.
use std::{
    collections::{HashMap, HashSet, VecDeque},
    fs,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

/// Maps memcg ids (kernfs ids, which are the directories' inode numbers) to hierarchy paths.
/// Entries outlive their cgroup so late events of a removed cgroup still get a name, but only
/// the last [`REMOVED_KEPT`]: a host that creates and removes cgroups all day (CI runners, job
/// schedulers) must not grow memstall with it.
pub struct CgroupResolver {
    root: PathBuf,
    by_id: HashMap<u64, String>,
    /// Ids gone from the hierarchy since they were named, oldest first.
    removed: VecDeque<u64>,
    removed_set: HashSet<u64>,
    /// Ids a rescan did not find, and when: they rescan again only after RESCAN_INTERVAL, so a
    /// storm of events from an unknown id does not become a storm of directory walks.
    missed: HashMap<u64, Instant>,
}

const RESCAN_INTERVAL: Duration = Duration::from_millis(500);
/// Names of removed cgroups kept for their late events.
pub const REMOVED_KEPT: usize = 4096;
/// Unknown ids remembered (each costs a rescan at most every RESCAN_INTERVAL).
const MISSED_KEPT: usize = 4096;

impl CgroupResolver {
    pub fn new(root: &Path) -> Self {
        let mut resolver = Self {
            root: root.to_path_buf(),
            by_id: HashMap::new(),
            removed: VecDeque::new(),
            removed_set: HashSet::new(),
            missed: HashMap::new(),
        };
        resolver.scan();
        resolver
    }

    /// Walks the hierarchy: every cgroup there now is named; those named before and gone
    /// since join the removed, the oldest of which are forgotten.
    pub fn scan(&mut self) {
        let mut present = HashMap::with_capacity(self.by_id.len());
        let mut stack = vec![(self.root.clone(), String::from("/"))];
        while let Some((dir, path)) = stack.pop() {
            let Ok(meta) = fs::metadata(&dir) else {
                continue;
            };
            present.insert(meta.ino(), path.clone());
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    let name = entry.file_name().to_string_lossy().into_owned();
                    let child = if path == "/" {
                        format!("/{name}")
                    } else {
                        format!("{path}/{name}")
                    };
                    stack.push((entry.path(), child));
                }
            }
        }
        for id in self.by_id.keys() {
            if !present.contains_key(id) && self.removed_set.insert(*id) {
                self.removed.push_back(*id);
            }
        }
        // A removed id that shows up again was reused by a new cgroup.
        self.removed_set.retain(|id| !present.contains_key(id));
        self.removed.retain(|id| self.removed_set.contains(id));
        while self.removed.len() > REMOVED_KEPT {
            if let Some(old) = self.removed.pop_front() {
                self.removed_set.remove(&old);
                self.by_id.remove(&old);
            }
        }
        self.by_id.extend(present);
    }

    /// Where the memory hierarchy is mounted.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Whether memcg `id` was in the hierarchy at the last scan.
    pub fn is_live(&self, id: u64) -> bool {
        self.by_id.contains_key(&id) && !self.removed_set.contains(&id)
    }

    /// How many names are kept (live and removed), for tests of the bound.
    #[cfg(test)]
    pub fn names_kept(&self) -> usize {
        self.by_id.len()
    }

    /// The path of memcg `id`, rescanning the hierarchy when it is new to us.
    pub fn path(&mut self, id: u64) -> Option<String> {
        if id == 0 {
            return None;
        }
        if !self.by_id.contains_key(&id)
            && self
                .missed
                .get(&id)
                .is_none_or(|at| at.elapsed() >= RESCAN_INTERVAL)
        {
            self.scan();
            if !self.by_id.contains_key(&id) {
                if self.missed.len() >= MISSED_KEPT {
                    self.missed.clear();
                }
                self.missed.insert(id, Instant::now());
            }
        }
        self.by_id.get(&id).cloned()
    }

    /// The path of memcg `id` for display: `?` when it cannot be named.
    pub fn name(&mut self, id: u64) -> String {
        self.path(id).unwrap_or_else(|| "?".into())
    }

    pub fn id_of(&self, path: &str) -> Option<u64> {
        let relative = path.trim_start_matches('/');
        fs::metadata(self.root.join(relative)).ok().map(|m| m.ino())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A synthetic v2-style tree: ids are inode numbers, new directories are found on a miss,
    /// removed ones keep their name.
    #[test]
    fn resolver_follows_a_changing_tree() {
        let root = tempfile::tempdir().unwrap();
        fs::create_dir_all(root.path().join("kubepods/pod one")).unwrap();
        let mut resolver = CgroupResolver::new(root.path());
        let id = |p: &str| fs::metadata(root.path().join(p)).unwrap().ino();
        assert_eq!(resolver.path(id("")).as_deref(), Some("/"));
        assert_eq!(
            resolver.path(id("kubepods/pod one")).as_deref(),
            Some("/kubepods/pod one")
        );

        fs::create_dir(root.path().join("late")).unwrap();
        let late = id("late");
        assert_eq!(resolver.path(late).as_deref(), Some("/late"));
        fs::remove_dir(root.path().join("late")).unwrap();
        assert_eq!(resolver.path(late).as_deref(), Some("/late"));
        assert_eq!(resolver.path(0), None);
        assert_eq!(resolver.id_of("/kubepods"), Some(id("kubepods")));
    }

    /// Thousands of cgroups come and go: the live ones keep their names, removed ones only the
    /// most recent REMOVED_KEPT.
    #[test]
    fn removed_names_are_bounded() {
        let root = tempfile::tempdir().unwrap();
        let mut resolver = CgroupResolver::new(root.path());
        fs::create_dir(root.path().join("stays")).unwrap();
        let stays = fs::metadata(root.path().join("stays")).unwrap().ino();
        let mut last = 0;
        for i in 0..REMOVED_KEPT + 500 {
            let dir = root.path().join(format!("job{i}"));
            fs::create_dir(&dir).unwrap();
            last = fs::metadata(&dir).unwrap().ino();
            // (tmpfs reuses inode numbers, which cgroupfs ids never are: no name check here.)
            assert!(resolver.path(last).is_some(), "job{i}");
            fs::remove_dir(&dir).unwrap();
        }
        resolver.scan();
        let kept = resolver.names_kept();
        assert!(kept <= REMOVED_KEPT + 2, "{kept}");
        assert_eq!(resolver.path(stays).as_deref(), Some("/stays"));
        assert!(resolver.is_live(stays));
        assert!(!resolver.is_live(last));
    }
}
