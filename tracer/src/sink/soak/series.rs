//! Bounded time series for long soak runs, the least-squares trend of memory usage, and the
//! memory samples themselves (cgroupfs or /proc/meminfo).
use std::{fs, path::Path};

use crate::cgroup::CgroupVersion;

/// Most points a series keeps, however long the run.
pub const MAX_POINTS: usize = 2000;

/// How neighbouring points combine when a series is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Merge {
    /// Weighted by how many samples each point holds (memory, rates).
    Mean,
    /// The worst of them (latency percentiles, stall time): a spike never averages away.
    Max,
}

#[derive(Clone, Copy, Debug, PartialEq)]
struct Point {
    t: f64,
    v: f64,
    /// Samples merged into this point.
    n: u64,
}

impl Point {
    fn absorb(&mut self, other: Point, merge: Merge) {
        let n = self.n + other.n;
        self.t = (self.t * self.n as f64 + other.t * other.n as f64) / n as f64;
        self.v = match merge {
            Merge::Mean => (self.v * self.n as f64 + other.v * other.n as f64) / n as f64,
            Merge::Max => self.v.max(other.v),
        };
        self.n = n;
    }
}

/// `(seconds, value)` points, at most `cap` of them: when full, neighbours merge pairwise and
/// later samples are merged `stride` at a time, so the series always spans the whole run at an
/// even resolution.
#[derive(Clone, Debug)]
pub struct Series {
    points: Vec<Point>,
    pending: Option<Point>,
    stride: u64,
    cap: usize,
    merge: Merge,
}

impl Series {
    pub fn new(merge: Merge) -> Self {
        Self::with_cap(MAX_POINTS, merge)
    }

    pub fn with_cap(cap: usize, merge: Merge) -> Self {
        Self {
            points: Vec::new(),
            pending: None,
            stride: 1,
            cap: cap.max(2),
            merge,
        }
    }

    /// Adds a sample; non-finite ones are dropped.
    pub fn push(&mut self, t: f64, v: f64) {
        if !t.is_finite() || !v.is_finite() {
            return;
        }
        let sample = Point { t, v, n: 1 };
        let pending = match &mut self.pending {
            Some(pending) => {
                pending.absorb(sample, self.merge);
                *pending
            }
            None => sample,
        };
        if pending.n < self.stride {
            self.pending = Some(pending);
            return;
        }
        self.pending = None;
        self.points.push(pending);
        if self.points.len() >= self.cap {
            let merged: Vec<Point> = self
                .points
                .chunks(2)
                .map(|pair| {
                    let mut point = pair[0];
                    if let Some(&next) = pair.get(1) {
                        point.absorb(next, self.merge);
                    }
                    point
                })
                .collect();
            self.points = merged;
            self.stride *= 2;
        }
    }

    /// The points, the partly merged last one included.
    pub fn points(&self) -> Vec<(f64, f64)> {
        self.points
            .iter()
            .chain(self.pending.as_ref())
            .map(|p| (p.t, p.v))
            .collect()
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.points.len() + usize::from(self.pending.is_some())
    }

    /// The largest value, if any.
    #[cfg(test)]
    pub fn max(&self) -> Option<f64> {
        self.points().into_iter().map(|(_, v)| v).reduce(f64::max)
    }
}

/// Ordinary least-squares fit of value against time, accumulated online (Welford's
/// co-moments: exact over every sample, O(1) memory, no cancellation on large values).
#[derive(Clone, Debug, Default)]
pub struct Trend {
    n: u64,
    mean_t: f64,
    mean_v: f64,
    /// Σ (t - mean_t)(v - mean_v) and Σ (t - mean_t)².
    co: f64,
    m2_t: f64,
}

impl Trend {
    pub fn add(&mut self, t: f64, v: f64) {
        if !t.is_finite() || !v.is_finite() {
            return;
        }
        self.n += 1;
        let dt = t - self.mean_t;
        self.mean_t += dt / self.n as f64;
        self.mean_v += (v - self.mean_v) / self.n as f64;
        self.co += dt * (v - self.mean_v);
        self.m2_t += dt * (t - self.mean_t);
    }

    pub fn samples(&self) -> u64 {
        self.n
    }

    /// Value units per second; `None` under two samples or with no spread in time.
    pub fn slope(&self) -> Option<f64> {
        (self.n >= 2 && self.m2_t > 1e-12).then(|| self.co / self.m2_t)
    }

    /// The fitted value at `t`.
    pub fn at(&self, t: f64) -> Option<f64> {
        Some(self.mean_v + self.slope()? * (t - self.mean_t))
    }
}

/// One reading of a cgroup's (or the machine's) memory, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemorySample {
    /// v1 memory.usage_in_bytes, v2 memory.current (page cache included).
    pub usage: u64,
    /// usage − inactive_file: what the workload actively uses.
    pub working_set: u64,
}

/// Where a watched memory figure is read from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MemorySource {
    /// A cgroup directory (the v1 root too: it has usage_in_bytes and hierarchical totals).
    Cgroup {
        dir: std::path::PathBuf,
        version: CgroupVersion,
    },
    /// The v2 root, which has no memory.current: its memory.stat, else /proc/meminfo.
    V2Root { dir: std::path::PathBuf },
}

impl MemorySource {
    pub fn read(&self) -> Option<MemorySample> {
        match self {
            Self::Cgroup { dir, version } => cgroup_sample(dir, *version),
            Self::V2Root { dir } => v2_root_sample(dir)
                .or_else(|| meminfo_sample(&fs::read_to_string("/proc/meminfo").ok()?)),
        }
    }
}

/// `key value` from memory.stat-like text.
fn stat_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok())?
    })
}

pub fn cgroup_sample(dir: &Path, version: CgroupVersion) -> Option<MemorySample> {
    let (usage_file, inactive_keys): (&str, &[&str]) = match version {
        // v1: the hierarchical total first, the cgroup's own as a fallback.
        CgroupVersion::V1 => (
            "memory.usage_in_bytes",
            &["total_inactive_file", "inactive_file"],
        ),
        CgroupVersion::V2 => ("memory.current", &["inactive_file"]),
    };
    let usage: u64 = fs::read_to_string(dir.join(usage_file))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let stat = fs::read_to_string(dir.join("memory.stat")).unwrap_or_default();
    let inactive = inactive_keys
        .iter()
        .find_map(|key| stat_value(&stat, key))
        .unwrap_or(0);
    Some(MemorySample {
        usage,
        working_set: usage.saturating_sub(inactive),
    })
}

/// The v2 root's hierarchy-wide charge from its memory.stat: anon + file + kernel + sock.
pub fn v2_root_sample(dir: &Path) -> Option<MemorySample> {
    let stat = fs::read_to_string(dir.join("memory.stat")).ok()?;
    let get = |key| stat_value(&stat, key);
    let usage = get("anon")?
        .saturating_add(get("file")?)
        .saturating_add(get("kernel")?)
        .saturating_add(get("sock").unwrap_or(0));
    let inactive = get("inactive_file").unwrap_or(0);
    Some(MemorySample {
        usage,
        working_set: usage.saturating_sub(inactive),
    })
}

/// The machine: MemTotal − MemFree as usage, less Inactive(file) as working set.
pub fn meminfo_sample(text: &str) -> Option<MemorySample> {
    let kb = |key: &str| -> Option<u64> {
        text.lines().find_map(|line| {
            let rest = line.strip_prefix(key)?.strip_prefix(':')?;
            rest.split_whitespace().next()?.parse::<u64>().ok()
        })
    };
    let usage = kb("MemTotal")?
        .saturating_sub(kb("MemFree")?)
        .saturating_mul(1024);
    let inactive = kb("Inactive(file)").unwrap_or(0).saturating_mul(1024);
    Some(MemorySample {
        usage,
        working_set: usage.saturating_sub(inactive),
    })
}
