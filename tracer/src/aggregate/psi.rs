//! The kernel's pressure stall information (PSI) for memory, per cgroup: cumulative `some` and
//! `full` stall time, read where the kernel exposes it (a v2 cgroup's memory.pressure; the
//! whole machine's /proc/pressure/memory for the root). PSI weights each CPU's stall time by
//! its non-idle time, so it is shown beside memstall's measured stall time, never forced equal.
use std::{
    collections::HashMap,
    fs,
    path::{Path, PathBuf},
};

use crate::cgroup::CgroupVersion;

const MACHINE: &str = "/proc/pressure/memory";

/// `some` and `full` totals, in µs, from a pressure file's text.
pub fn parse(text: &str) -> Option<(u64, u64)> {
    let total = |line: &str| -> Option<u64> {
        line.split_whitespace()
            .find_map(|field| field.strip_prefix("total="))?
            .parse()
            .ok()
    };
    let mut some = None;
    let mut full = None;
    for line in text.lines() {
        if line.starts_with("some ") {
            some = total(line);
        } else if line.starts_with("full ") {
            full = total(line);
        }
    }
    Some((some?, full.unwrap_or(0)))
}

/// A cgroup's PSI file and what to call it; `None` where the kernel has none for it.
fn source(root: &Path, version: CgroupVersion, cgroup: &str) -> Option<(PathBuf, &'static str)> {
    if cgroup == "/" {
        return Path::new(MACHINE)
            .exists()
            .then(|| (PathBuf::from(MACHINE), MACHINE));
    }
    if version == CgroupVersion::V1 {
        // A v1 memory cgroup has no pressure file of its own.
        return None;
    }
    let file = root
        .join(cgroup.trim_start_matches('/'))
        .join("memory.pressure");
    file.exists().then_some((file, "memory.pressure"))
}

/// One cgroup's PSI over a period: (some ns, full ns, source).
pub type PsiDelta = (Option<u64>, Option<u64>, Option<&'static str>);

/// PSI readings per cgroup at the start and at the last interval, for per-period deltas.
pub struct PsiReader {
    root: PathBuf,
    version: CgroupVersion,
    start: HashMap<String, (u64, u64)>,
    at_interval: HashMap<String, (u64, u64)>,
}

impl PsiReader {
    pub fn new(root: &Path, version: CgroupVersion) -> Self {
        Self {
            root: root.to_path_buf(),
            version,
            start: HashMap::new(),
            at_interval: HashMap::new(),
        }
    }

    /// Reads `cgroups` now so later periods have a start.
    pub fn baseline(&mut self, cgroups: &[String]) {
        for cgroup in cgroups {
            if let Some(now) = self.read(cgroup) {
                self.start.entry(cgroup.clone()).or_insert(now.0);
                self.at_interval.entry(cgroup.clone()).or_insert(now.0);
            }
        }
    }

    fn read(&self, cgroup: &str) -> Option<((u64, u64), &'static str)> {
        let (file, name) = source(&self.root, self.version, cgroup)?;
        Some((parse(&fs::read_to_string(file).ok()?)?, name))
    }

    /// The PSI of `cgroup` over the interval ending now (`since_start`: over the run); the
    /// first time a cgroup is seen has no start, so no delta.
    pub fn delta(&mut self, cgroup: &str, since_start: bool) -> PsiDelta {
        let Some((now, name)) = self.read(cgroup) else {
            return (None, None, None);
        };
        let before = if since_start {
            self.start.get(cgroup).copied()
        } else {
            self.at_interval.insert(cgroup.to_owned(), now)
        };
        self.start.entry(cgroup.to_owned()).or_insert(now);
        match before {
            Some((some, full)) => (
                Some(now.0.saturating_sub(some).saturating_mul(1000)),
                Some(now.1.saturating_sub(full).saturating_mul(1000)),
                Some(name),
            ),
            None => (None, None, Some(name)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_totals() {
        let text = "some avg10=0.00 avg60=0.10 avg300=0.00 total=12345\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=678\n";
        assert_eq!(parse(text), Some((12345, 678)));
        assert_eq!(parse("garbage"), None);
        // Old kernels had no `full` line for memory at the root.
        assert_eq!(parse("some avg10=1 total=5\n"), Some((5, 0)));
    }

    #[test]
    fn deltas_per_period_from_a_v2_cgroup() {
        let root = tempfile::tempdir().unwrap();
        fs::create_dir(root.path().join("a")).unwrap();
        let write = |some: u64, full: u64| {
            fs::write(
                root.path().join("a/memory.pressure"),
                format!("some avg10=0 avg60=0 avg300=0 total={some}\nfull avg10=0 avg60=0 avg300=0 total={full}\n"),
            )
            .unwrap();
        };
        write(100, 10);
        let mut psi = PsiReader::new(root.path(), CgroupVersion::V2);
        psi.baseline(&["/a".into()]);
        write(350, 60);
        assert_eq!(
            psi.delta("/a", false),
            (Some(250_000), Some(50_000), Some("memory.pressure"))
        );
        write(400, 60);
        assert_eq!(psi.delta("/a", false).0, Some(50_000));
        assert_eq!(psi.delta("/a", true).0, Some(300_000));
        assert_eq!(psi.delta("/missing", false), (None, None, None));
        let v1 = PsiReader::new(root.path(), CgroupVersion::V1).delta("/a", false);
        assert_eq!(v1, (None, None, None));
    }
}
