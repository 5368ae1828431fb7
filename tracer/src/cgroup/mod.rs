//! Memory cgroups: where the memory hierarchy is mounted (v1 or v2), the path of a memcg id, and
//! which cgroups the user asked to watch.
mod filter;
pub mod memory;
mod proc;
mod resolver;
mod target;

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, bail};

pub use filter::CgroupFilter;
pub use proc::memcg_of_pid;
#[cfg(feature = "fuzz")]
pub use proc::{memcg_from_proc_cgroup, task_is_exiting};
pub use resolver::CgroupResolver;
pub use target::{Resolver, Target, cgroup_mounts};

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
        // \NNN is one byte: \000 to \377 (anything above is not an escape the kernel writes).
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)))
            .and_then(|d| {
                let value = d.iter().fold(0u16, |v, b| v * 8 + u16::from(b - b'0'));
                u8::try_from(value).ok()
            });
        match (bytes[i], octal) {
            (b'\\', Some(byte)) => {
                out.push(byte);
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
        // Found by the proc_files fuzz target: not a byte, so not an escape.
        assert_eq!(unescape_mountinfo("/a\\777"), PathBuf::from("/a\\777"));
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
}
