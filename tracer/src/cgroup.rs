//! Memory cgroups: where the memory hierarchy is mounted (v1 or v2), the path of a memcg id, and
//! which cgroups the user asked to watch.
use std::{
    collections::HashMap,
    fs,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CgroupVersion {
    V1,
    V2,
}

/// The mount that holds the memory controller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryHierarchy {
    pub root: PathBuf,
    pub version: CgroupVersion,
}

impl MemoryHierarchy {
    pub fn detect() -> Result<Self> {
        let mountinfo =
            fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
        Self::from_mountinfo(&mountinfo, |root| {
            fs::read_to_string(root.join("cgroup.controllers"))
                .is_ok_and(|controllers| controllers.split_whitespace().any(|c| c == "memory"))
        })
        .context("no cgroup hierarchy with the memory controller is mounted")
    }

    /// Picks the v1 `memory` mount, else a cgroup2 mount whose root offers the memory
    /// controller (`has_memory` reads its cgroup.controllers).
    pub fn from_mountinfo(mountinfo: &str, has_memory: impl Fn(&Path) -> bool) -> Option<Self> {
        let mut v2 = None;
        for line in mountinfo.lines() {
            // "36 35 0:30 / /sys/fs/cgroup/memory rw,relatime shared:1 - cgroup cgroup rw,memory"
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let mount_point = left.split(' ').nth(4).map(unescape_mountinfo);
            let mut right = right.split(' ');
            let (fstype, _source, options) = (right.next(), right.next(), right.next());
            let Some(mount_point) = mount_point else {
                continue;
            };
            match fstype {
                Some("cgroup") if options.is_some_and(|o| o.split(',').any(|o| o == "memory")) => {
                    return Some(Self {
                        root: mount_point,
                        version: CgroupVersion::V1,
                    });
                }
                Some("cgroup2") if v2.is_none() && has_memory(&mount_point) => {
                    v2 = Some(Self {
                        root: mount_point,
                        version: CgroupVersion::V2,
                    });
                }
                _ => {}
            }
        }
        v2
    }

    /// The hierarchy-relative path (`/a/b`, `/` for the root) of an absolute cgroupfs path.
    pub fn relative(&self, absolute: &Path) -> Result<String> {
        let canonical = absolute
            .canonicalize()
            .with_context(|| format!("cgroup {} does not exist", absolute.display()))?;
        if !canonical.is_dir() {
            bail!("{} is not a cgroup directory", absolute.display());
        }
        let Ok(rest) = canonical.strip_prefix(&self.root) else {
            bail!(
                "{} is not in the memory cgroup hierarchy (mounted at {}, cgroup {})",
                absolute.display(),
                self.root.display(),
                self.version_name()
            );
        };
        Ok(format!("/{}", rest.display()))
    }

    pub fn version_name(&self) -> &'static str {
        match self.version {
            CgroupVersion::V1 => "v1",
            CgroupVersion::V2 => "v2",
        }
    }
}

/// mountinfo escapes space, tab, newline and backslash as octal.
pub(crate) fn unescape_mountinfo(field: &str) -> PathBuf {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match (bytes[i], octal) {
            (b'\\', Some(d)) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    use std::os::unix::ffi::OsStringExt as _;
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

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

/// The memory-cgroup path of a live process, from /proc/PID/cgroup.
pub fn memcg_of_pid(pid: u32, version: CgroupVersion) -> Option<String> {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let path = memcg_from_proc_cgroup(&text, version)?;
    // cgroup v1 shows every exiting task (an OOM victim, say) in "/". PF_EXITING never clears,
    // so a task not exiting now was not exiting when its cgroup file was read.
    if version == CgroupVersion::V1 && path == "/" {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        if task_is_exiting(&stat)? {
            return None;
        }
    }
    Some(path)
}

/// PF_EXITING in the flags field of /proc/PID/stat.
fn task_is_exiting(stat: &str) -> Option<bool> {
    const PF_EXITING: u64 = 0x4;
    // comm may hold spaces and parentheses: fields resume after the last ')'.
    let after_comm = &stat[stat.rfind(')')? + 1..];
    let flags: u64 = after_comm.split_whitespace().nth(6)?.parse().ok()?;
    Some(flags & PF_EXITING != 0)
}

pub fn memcg_from_proc_cgroup(text: &str, version: CgroupVersion) -> Option<String> {
    text.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (id, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let wanted = match version {
            CgroupVersion::V1 => controllers.split(',').any(|c| c == "memory"),
            CgroupVersion::V2 => id == "0" && controllers.is_empty(),
        };
        // v2 keeps a zombie in its cgroup and marks one removed since.
        wanted.then(|| path.trim_end_matches(" (deleted)").to_owned())
    })
}

/// The cgroups the user asked to watch, each with its descendants. Empty watches everything.
#[derive(Clone, Debug, Default)]
pub struct CgroupFilter {
    prefixes: Vec<String>,
    /// Only the cgroups themselves (`--no-descendants`).
    exact: bool,
}

impl CgroupFilter {
    pub fn new(prefixes: Vec<String>) -> Self {
        Self {
            prefixes,
            exact: false,
        }
    }

    pub fn exact(prefixes: Vec<String>) -> Self {
        Self {
            prefixes,
            exact: true,
        }
    }

    /// Stops watching `path` (a removed cgroup); false when nothing is left to watch.
    pub fn forget(&mut self, path: &str) -> bool {
        self.prefixes.retain(|p| p != path);
        !self.prefixes.is_empty()
    }

    pub fn is_everything(&self) -> bool {
        self.prefixes.is_empty()
    }

    pub fn matches(&self, path: &str) -> bool {
        self.is_everything()
            || self
                .prefixes
                .iter()
                .any(|prefix| path == prefix || (!self.exact && is_within(path, prefix)))
    }
}

/// Whether hierarchy path `path` is `ancestor` or below it (everything is below `/`).
pub fn is_within(path: &str, ancestor: &str) -> bool {
    ancestor == "/"
        || path == ancestor
        || path
            .strip_prefix(ancestor)
            .is_some_and(|rest| rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
25 30 0:23 / /sys rw,nosuid shared:7 - sysfs sysfs rw
33 25 0:28 / /sys/fs/cgroup ro shared:9 - tmpfs tmpfs ro,mode=755
34 33 0:29 / /sys/fs/cgroup/unified rw shared:10 - cgroup2 cgroup2 rw,nsdelegate
39 33 0:34 / /sys/fs/cgroup/memory rw shared:15 - cgroup cgroup rw,memory
40 33 0:35 / /sys/fs/cgroup/cpu\\040set rw shared:16 - cgroup cgroup rw,cpuset
";

    const PURE_V2: &str = "\
25 30 0:23 / /sys rw,nosuid shared:7 - sysfs sysfs rw
33 25 0:28 / /sys/fs/cgroup rw shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";

    #[test]
    fn finds_v1_memory_in_hybrid_layout() {
        let h = MemoryHierarchy::from_mountinfo(HYBRID, |_| false).unwrap();
        assert_eq!(
            h,
            MemoryHierarchy {
                root: "/sys/fs/cgroup/memory".into(),
                version: CgroupVersion::V1
            }
        );
    }

    #[test]
    fn finds_v2_when_it_has_memory() {
        let h = MemoryHierarchy::from_mountinfo(PURE_V2, |_| true).unwrap();
        assert_eq!(
            h,
            MemoryHierarchy {
                root: "/sys/fs/cgroup".into(),
                version: CgroupVersion::V2
            }
        );
        assert_eq!(MemoryHierarchy::from_mountinfo(PURE_V2, |_| false), None);
    }

    #[test]
    fn unescapes_mount_points() {
        assert_eq!(
            unescape_mountinfo("/a\\040b\\134c"),
            PathBuf::from("/a b\\c")
        );
        assert_eq!(
            unescape_mountinfo("/trailing\\04"),
            PathBuf::from("/trailing\\04")
        );
    }

    #[test]
    fn reads_memcg_from_proc_cgroup() {
        let v1 = "12:pids:/x\n4:memory:/svc/a\n0::/user.slice\n";
        assert_eq!(
            memcg_from_proc_cgroup(v1, CgroupVersion::V1).as_deref(),
            Some("/svc/a")
        );
        assert_eq!(
            memcg_from_proc_cgroup(v1, CgroupVersion::V2).as_deref(),
            Some("/user.slice")
        );
        let combined = "7:cpu,memory,blkio:/combo\n";
        assert_eq!(
            memcg_from_proc_cgroup(combined, CgroupVersion::V1).as_deref(),
            Some("/combo")
        );
        assert_eq!(memcg_from_proc_cgroup("garbage", CgroupVersion::V1), None);
        assert_eq!(
            memcg_from_proc_cgroup("0::/gone (deleted)\n", CgroupVersion::V2).as_deref(),
            Some("/gone")
        );
    }

    #[test]
    fn filter_keeps_descendants_only() {
        let filter = CgroupFilter::new(vec!["/a/b".into()]);
        assert!(filter.matches("/a/b"));
        assert!(filter.matches("/a/b/c"));
        assert!(!filter.matches("/a/bc"));
        assert!(!filter.matches("/a"));
        assert!(CgroupFilter::default().matches("/anything"));
        assert!(CgroupFilter::new(vec!["/".into()]).matches("/x"));
        let exact = CgroupFilter::exact(vec!["/a/b".into()]);
        assert!(exact.matches("/a/b") && !exact.matches("/a/b/c"));
        let mut two = CgroupFilter::new(vec!["/a".into(), "/b".into()]);
        assert!(two.forget("/a"));
        assert!(!two.matches("/a/x") && two.matches("/b/x"));
        assert!(!two.forget("/b"));
    }

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

    #[test]
    fn relative_paths_stay_inside_the_hierarchy() {
        let root = tempfile::tempdir().unwrap();
        fs::create_dir_all(root.path().join("a/b")).unwrap();
        fs::write(root.path().join("a/memory.max"), "max").unwrap();
        let h = MemoryHierarchy {
            root: root.path().canonicalize().unwrap(),
            version: CgroupVersion::V2,
        };
        assert_eq!(h.relative(&root.path().join("a/b")).unwrap(), "/a/b");
        assert_eq!(h.relative(root.path()).unwrap(), "/");
        assert!(h.relative(&root.path().join("missing")).is_err());
        assert!(h.relative(&root.path().join("a/memory.max")).is_err());
        assert!(h.relative(Path::new("/tmp")).is_err());
    }

    #[test]
    fn reads_pf_exiting_from_proc_stat() {
        let running = "42 (a) b) c) S 1 42 42 0 -1 4194560 100 0 0 0";
        assert_eq!(task_is_exiting(running), Some(false));
        let exiting = "42 (memhog) R 1 42 42 0 -1 4194564 100 0 0 0";
        assert_eq!(task_is_exiting(exiting), Some(true));
        assert_eq!(task_is_exiting("42 (x"), None);
    }
}
