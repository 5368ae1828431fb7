//! memcg ids to hierarchy paths.
use std::{
    collections::HashMap,
    fs,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

/// Maps memcg ids (kernfs ids, which are the directories' inode numbers) to hierarchy paths.
/// Entries outlive their cgroup so late events of a removed cgroup still get a name.
pub struct CgroupResolver {
    root: PathBuf,
    by_id: HashMap<u64, String>,
    /// Ids a rescan did not find, and when: they rescan again only after RESCAN_INTERVAL, so a
    /// storm of events from an unknown id does not become a storm of directory walks.
    missed: HashMap<u64, Instant>,
}

const RESCAN_INTERVAL: Duration = Duration::from_millis(500);

impl CgroupResolver {
    pub fn new(root: &Path) -> Self {
        let mut resolver = Self {
            root: root.to_path_buf(),
            by_id: HashMap::new(),
            missed: HashMap::new(),
        };
        resolver.scan();
        resolver
    }

    fn scan(&mut self) {
        let mut stack = vec![(self.root.clone(), String::from("/"))];
        while let Some((dir, path)) = stack.pop() {
            let Ok(meta) = fs::metadata(&dir) else {
                continue;
            };
            self.by_id.insert(meta.ino(), path.clone());
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
                self.missed.insert(id, Instant::now());
            }
        }
        self.by_id.get(&id).cloned()
    }

    /// The path of memcg `id` for display: `?` when it cannot be named.
    pub fn name(&mut self, id: u64) -> String {
        self.path(id).unwrap_or_else(|| "?".into())
    }

    /// Records a path learnt elsewhere (e.g. from /proc) so later lookups of `id` hit.
    pub fn remember(&mut self, id: u64, path: &str) {
        self.by_id.entry(id).or_insert_with(|| path.to_owned());
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
}
