//! `--cgroup SPEC`: which memory cgroup the user means. Accepts an absolute cgroupfs path (the
//! memory hierarchy's, or the same cgroup under another cgroup mount), a path relative to the
//! memory hierarchy root (`/kubepods/burstable/pod…`), or a systemd unit or slice name.
use std::{
    fs,
    os::unix::fs::MetadataExt as _,
    path::{Component, Path, PathBuf},
};

use crate::cgroup::{CgroupVersion, MemoryHierarchy};

/// A watched memory cgroup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// What the user typed.
    pub spec: String,
    /// Its directory in the memory hierarchy.
    pub dir: PathBuf,
    /// Hierarchy-relative path, as events report it (`/a/b`).
    pub relative: String,
    /// memcg id: the directory's inode (kernfs id).
    pub id: u64,
}

/// Where the memory hierarchy is, and the other cgroup mounts a path may come from.
pub struct Resolver<'a> {
    pub hierarchy: &'a MemoryHierarchy,
    pub other_mounts: Vec<PathBuf>,
}

const UNIT_SUFFIXES: &[&str] = &[".service", ".slice", ".scope", ".socket", ".mount", ".swap"];

/// cgroup mount points from /proc/self/mountinfo (v1 controllers and cgroup2).
pub fn cgroup_mounts(mountinfo: &str) -> Vec<PathBuf> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let fstype = right.split(' ').next()?;
            let mount = left.split(' ').nth(4)?;
            (fstype == "cgroup" || fstype == "cgroup2")
                .then(|| crate::cgroup::unescape_mountinfo(mount))
        })
        .collect()
}

impl Resolver<'_> {
    fn target(&self, spec: &str, dir: PathBuf) -> Result<Target, String> {
        let meta = fs::metadata(&dir).map_err(|e| format!("{spec}: {}: {e}", dir.display()))?;
        if !meta.is_dir() {
            return Err(format!(
                "{spec}: {} is not a cgroup directory",
                dir.display()
            ));
        }
        let rest = dir
            .strip_prefix(&self.hierarchy.root)
            .map_err(|_| format!("{spec}: not in the memory hierarchy"))?;
        let relative = format!("/{}", rest.display());
        if self.hierarchy.version == CgroupVersion::V2
            && relative != "/"
            && !dir.join("memory.current").exists()
        {
            let parent = dir.parent().unwrap_or(&dir);
            return Err(format!(
                "{spec}: cgroup {relative} has no memory controller (enable it with `echo +memory > {}/cgroup.subtree_control`)",
                parent.display()
            ));
        }
        Ok(Target {
            spec: spec.to_owned(),
            dir,
            relative,
            id: meta.ino(),
        })
    }

    /// A path relative to the hierarchy root, if that cgroup exists.
    fn under_root(&self, relative: &Path) -> Option<PathBuf> {
        let dir = self
            .hierarchy
            .root
            .join(relative.strip_prefix("/").unwrap_or(relative));
        dir.is_dir().then_some(dir)
    }

    /// Every cgroup directory called `name`, breadth first.
    fn find_named(&self, name: &str) -> Vec<PathBuf> {
        let mut found = Vec::new();
        let mut queue = std::collections::VecDeque::from([self.hierarchy.root.clone()]);
        while let Some(dir) = queue.pop_front() {
            for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    if entry.file_name() == name {
                        found.push(entry.path());
                    }
                    queue.push_back(entry.path());
                }
            }
        }
        found
    }

    /// systemd nests slices by their dashes: a-b.slice lives in a.slice/a-b.slice.
    fn slice_path(name: &str) -> Option<PathBuf> {
        let stem = name.strip_suffix(".slice")?;
        let mut path = PathBuf::from("/");
        let mut prefix = String::new();
        for part in stem.split('-') {
            if !prefix.is_empty() {
                prefix.push('-');
            }
            prefix.push_str(part);
            path.push(format!("{prefix}.slice"));
        }
        Some(path)
    }

    pub fn resolve(&self, spec: &str) -> Result<Target, String> {
        if spec.is_empty() {
            return Err("--cgroup: empty path".into());
        }
        let path = Path::new(spec);
        if path.components().any(|c| c == Component::ParentDir) {
            return Err(format!(
                "{spec}: '..' is not allowed: give the cgroup's own path"
            ));
        }
        if path.is_absolute() && path.exists() {
            let canonical = path.canonicalize().map_err(|e| format!("{spec}: {e}"))?;
            if canonical.starts_with(&self.hierarchy.root) {
                return self.target(spec, canonical);
            }
            // The same cgroup seen through another controller's mount (hybrid hosts).
            if let Some(mount) = self.other_mounts.iter().find(|m| canonical.starts_with(m)) {
                let relative = canonical.strip_prefix(mount).unwrap_or(Path::new(""));
                return match self.under_root(relative) {
                    Some(dir) => self.target(spec, dir),
                    None => Err(format!(
                        "{spec}: this cgroup has no memory controller (the memory hierarchy is at {}, where /{} does not exist)",
                        self.hierarchy.root.display(),
                        relative.display()
                    )),
                };
            }
            return Err(format!(
                "{spec}: not a cgroup (not under a cgroup filesystem)"
            ));
        }
        if path.is_absolute() || spec.contains('/') {
            return match self.under_root(path) {
                Some(dir) => self.target(spec, dir),
                None => Err(format!(
                    "{spec}: no such cgroup (looked for it as a path and under {})",
                    self.hierarchy.root.display()
                )),
            };
        }
        // A bare name: a systemd unit or slice, or any cgroup directory with that name.
        if let Some(dir) = Self::slice_path(spec).and_then(|p| self.under_root(&p)) {
            return self.target(spec, dir);
        }
        match self.find_named(spec).as_slice() {
            [dir] => self.target(spec, dir.clone()),
            [] if UNIT_SUFFIXES.iter().any(|s| spec.ends_with(s)) => Err(format!(
                "{spec}: no cgroup for this unit under {} (is it running?)",
                self.hierarchy.root.display()
            )),
            [] => Err(format!(
                "{spec}: no such cgroup under {}",
                self.hierarchy.root.display()
            )),
            many => {
                let listed: Vec<String> = many.iter().map(|d| d.display().to_string()).collect();
                Err(format!(
                    "{spec}: ambiguous, matches {}; give the full path",
                    listed.join(", ")
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Tree {
        _tmp: tempfile::TempDir,
        root: PathBuf,
        other: PathBuf,
        outside: PathBuf,
    }

    /// memory/ is the memory hierarchy, cpu/ another controller's mount, plain/ no cgroupfs.
    fn tree(version: CgroupVersion) -> Tree {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().canonicalize().unwrap();
        let root = base.join("memory");
        for dir in [
            "kubepods/burstable/pod1234-ab/cri-containerd-0a1b",
            "system.slice/nginx.service",
            "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod5678.slice",
            "odd name:with,chars\\and ünïcode",
            "twice/x",
            "again/x",
        ] {
            fs::create_dir_all(root.join(dir)).unwrap();
        }
        fs::create_dir_all(base.join("cpu/system.slice/nginx.service")).unwrap();
        fs::create_dir_all(base.join("cpu/only-cpu")).unwrap();
        fs::create_dir_all(base.join("plain/dir")).unwrap();
        fs::write(root.join("system.slice/memory.stat"), "").unwrap();
        if version == CgroupVersion::V2 {
            for dir in [
                "kubepods",
                "kubepods/burstable",
                "system.slice",
                "system.slice/nginx.service",
            ] {
                fs::write(root.join(dir).join("memory.current"), "0").unwrap();
            }
        }
        Tree {
            _tmp: tmp,
            root,
            other: base.join("cpu"),
            outside: base.join("plain"),
        }
    }

    fn resolve(tree: &Tree, version: CgroupVersion, spec: &str) -> Result<String, String> {
        let hierarchy = MemoryHierarchy {
            root: tree.root.clone(),
            version,
        };
        let resolver = Resolver {
            hierarchy: &hierarchy,
            other_mounts: vec![tree.other.clone()],
        };
        resolver.resolve(spec).map(|t| t.relative)
    }

    #[test]
    fn every_path_form_resolves() {
        let t = tree(CgroupVersion::V1);
        let v1 = |spec: &str| resolve(&t, CgroupVersion::V1, spec);
        let abs = t
            .root
            .join("kubepods/burstable/pod1234-ab/cri-containerd-0a1b");
        assert_eq!(
            v1(abs.to_str().unwrap()).unwrap(),
            "/kubepods/burstable/pod1234-ab/cri-containerd-0a1b"
        );
        assert_eq!(v1(t.root.to_str().unwrap()).unwrap(), "/");
        assert_eq!(v1("/kubepods/burstable").unwrap(), "/kubepods/burstable");
        assert_eq!(v1("kubepods/burstable/").unwrap(), "/kubepods/burstable");
        assert_eq!(v1("nginx.service").unwrap(), "/system.slice/nginx.service");
        assert_eq!(
            v1("kubepods-burstable-pod5678.slice").unwrap(),
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod5678.slice"
        );
        assert_eq!(v1("system.slice").unwrap(), "/system.slice");
        let other = t.other.join("system.slice/nginx.service");
        assert_eq!(
            v1(other.to_str().unwrap()).unwrap(),
            "/system.slice/nginx.service"
        );
        let odd = "/odd name:with,chars\\and ünïcode";
        assert_eq!(v1(odd).unwrap(), odd);
        assert_eq!(v1(t.root.join(&odd[1..]).to_str().unwrap()).unwrap(), odd);
    }

    #[test]
    fn bad_input_gets_a_reason() {
        let t = tree(CgroupVersion::V1);
        let err = |spec: &str| resolve(&t, CgroupVersion::V1, spec).unwrap_err();
        assert!(err("/no/such/cgroup").contains("no such cgroup"));
        assert!(err("missing.service").contains("is it running?"));
        assert!(err("x").contains("ambiguous"));
        assert!(err("../etc").contains("'..' is not allowed"));
        assert!(err("/kubepods/../..").contains("'..' is not allowed"));
        assert!(
            err(t.root.join("system.slice/memory.stat").to_str().unwrap())
                .contains("not a cgroup directory")
        );
        assert!(err(t.outside.join("dir").to_str().unwrap()).contains("not a cgroup"));
        assert!(err(t.other.join("only-cpu").to_str().unwrap()).contains("no memory controller"));
        assert!(err("").contains("empty"));
    }

    #[test]
    fn v2_cgroups_need_the_memory_controller() {
        let t = tree(CgroupVersion::V2);
        assert_eq!(
            resolve(&t, CgroupVersion::V2, "nginx.service").unwrap(),
            "/system.slice/nginx.service"
        );
        let err = resolve(&t, CgroupVersion::V2, "/kubepods/burstable/pod1234-ab").unwrap_err();
        assert!(
            err.contains("has no memory controller") && err.contains("+memory"),
            "{err}"
        );
        assert_eq!(
            resolve(&t, CgroupVersion::V2, t.root.to_str().unwrap()).unwrap(),
            "/"
        );
    }

    #[test]
    fn mounts_from_mountinfo() {
        let info = "34 33 0:29 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n\
                    39 33 0:34 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n\
                    25 30 0:23 / /sys rw - sysfs sysfs rw\n";
        assert_eq!(
            cgroup_mounts(info),
            [
                PathBuf::from("/sys/fs/cgroup/unified"),
                PathBuf::from("/sys/fs/cgroup/memory")
            ]
        );
    }
}
