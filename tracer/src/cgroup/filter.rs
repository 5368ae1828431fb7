//! `--cgroup` in userspace: the kernel filters first; this names the same set by path.
use super::is_within;

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

    /// The watched cgroups (empty: everything).
    pub fn paths(&self) -> &[String] {
        &self.prefixes
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
