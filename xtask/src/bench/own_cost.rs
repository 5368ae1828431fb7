//! What memstall costs by itself: CPU per summary with many memory cgroups (the file walk of
//! memory.stat among it), and the start-up peak RSS.
use std::{
    fs,
    path::Path,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};

use super::{
    Bins,
    cleanup::{BenchCgroup, check_interrupted},
    stats::{Estimate, bootstrap_median, seed_of},
    tracers::{Running, spawn_until_ready},
};

/// One way of running memstall over many cgroups.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// No --cgroup: `--faults auto` walks memory.stat up to 2000 cgroups, counts faults in
    /// the kernel above.
    Default,
    /// No --cgroup, the walk forced (`--faults memory-stat`).
    WalkForced,
    /// `--cgroup` on the parent of the bench cgroups (filtered in the kernel; memory.stat of
    /// the watched cgroup only).
    Watched,
}

impl Scope {
    pub const ALL: [Scope; 3] = [Self::Default, Self::WalkForced, Self::Watched];

    pub fn name(self) -> &'static str {
        match self {
            Self::Default => "no --cgroup (defaults)",
            Self::WalkForced => "no --cgroup, --faults memory-stat",
            Self::Watched => "--cgroup PARENT",
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IntervalCost {
    pub cgroups: usize,
    pub scope: Scope,
    /// memstall's CPU (all threads, from schedstat) per 1 s interval, one value per interval.
    pub cpu_ms: Vec<f64>,
    pub estimate: Option<Estimate>,
    pub rss_mib: f64,
}

/// CPU nanoseconds of every thread of `pid` (exact, unlike /proc/PID/stat's ticks).
fn cpu_ns(pid: u32) -> u64 {
    let dir = format!("/proc/{pid}/task");
    fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|task| {
            fs::read_to_string(task.path().join("schedstat"))
                .ok()?
                .split_whitespace()
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

/// A /proc/PID/status value in MiB.
fn status_mib(pid: u32, key: &str) -> f64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix(key)?
                .split_whitespace()
                .next()?
                .parse::<f64>()
                .ok()
        })
        .unwrap_or(0.0)
        / 1024.0
}

fn start_memstall(bins: &Bins, args: &[&str]) -> Result<Running> {
    let mut command = Command::new(&bins.memstall);
    command.args(["--json", "-"]).args(args);
    spawn_until_ready(command, "memstall", true)
}

/// memstall's CPU in each of `samples` 1 s intervals. Summaries fall at whole seconds after
/// it starts; the readings fall half-way between them, so each window holds exactly one.
fn per_interval_cpu(bins: &Bins, args: &[&str], samples: usize) -> Result<(Vec<f64>, f64)> {
    let mut all = vec!["--interval", "1"];
    all.extend_from_slice(args);
    let tracer = start_memstall(bins, &all)?;
    let ready = Instant::now();
    let at = |secs: f64| {
        let wait = Duration::from_secs_f64(secs).saturating_sub(ready.elapsed());
        thread::sleep(wait);
    };
    at(1.5);
    let mut last = cpu_ns(tracer.pid());
    let mut cpu_ms = Vec::with_capacity(samples);
    for k in 1..=samples {
        check_interrupted()?;
        at(1.5 + k as f64);
        let now = cpu_ns(tracer.pid());
        cpu_ms.push(now.saturating_sub(last) as f64 / 1e6);
        last = now;
    }
    Ok((cpu_ms, status_mib(tracer.pid(), "VmRSS:")))
}

/// The bench's cgroups: `count` empty memory cgroups under one parent.
pub struct ManyCgroups {
    pub parent: BenchCgroup,
    pub count: usize,
}

impl ManyCgroups {
    pub fn new() -> Result<Self> {
        Ok(Self {
            parent: BenchCgroup::new("cgroups", None)?,
            count: 0,
        })
    }

    pub fn grow_to(&mut self, count: usize) -> Result<()> {
        while self.count < count {
            if self.count.is_multiple_of(1000) {
                check_interrupted()?;
            }
            let dir = self.parent.path.join(format!("c{}", self.count));
            fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
            self.count += 1;
        }
        Ok(())
    }
}

pub fn interval_costs(
    bins: &Bins,
    cgroups: &ManyCgroups,
    samples: usize,
) -> Result<Vec<IntervalCost>> {
    let parent = cgroups.parent.relative();
    let mut costs = Vec::new();
    for scope in Scope::ALL {
        eprintln!(
            "bench: interval cost, {} cgroups, {}",
            cgroups.count,
            scope.name()
        );
        let args: Vec<&str> = match scope {
            Scope::Default => vec![],
            Scope::WalkForced => vec!["--faults", "memory-stat"],
            Scope::Watched => vec!["--cgroup", &parent],
        };
        let (cpu_ms, rss_mib) = per_interval_cpu(bins, &args, samples)?;
        let label = format!("interval/{}/{scope:?}", cgroups.count);
        costs.push(IntervalCost {
            cgroups: cgroups.count,
            scope,
            estimate: bootstrap_median(&cpu_ms, seed_of(&label)),
            cpu_ms,
            rss_mib,
        });
    }
    Ok(costs)
}

/// CPU time of this thread, in ms.
pub fn thread_cpu_ms() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into a live timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &raw mut ts) };
    ts.tv_sec as f64 * 1e3 + ts.tv_nsec as f64 / 1e6
}

/// The file walk alone, as memstall does it at each summary: every memory cgroup's
/// memory.stat opened, read and closed (kernel formatting and syscalls; no parsing).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WalkCost {
    pub files: usize,
    pub cpu_ms: Vec<f64>,
    pub estimate: Option<Estimate>,
}

pub fn file_walk_cost(root: &Path, repeats: usize) -> WalkCost {
    let mut cpu_ms = Vec::new();
    let mut files = 0;
    for _ in 0..repeats {
        let began = thread_cpu_ms();
        files = 0;
        let mut stack = vec![root.to_path_buf()];
        while let Some(dir) = stack.pop() {
            if fs::read(dir.join("memory.stat")).is_ok() {
                files += 1;
            }
            for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(entry.path());
                }
            }
        }
        cpu_ms.push(thread_cpu_ms() - began);
    }
    WalkCost {
        files,
        estimate: bootstrap_median(&cpu_ms, seed_of(&format!("walk/{files}"))),
        cpu_ms,
    }
}

/// Start-up peak RSS (VmHWM once attached) and RSS a second later, over `starts` starts.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StartupRss {
    pub peak_mib: Vec<f64>,
    pub rss_mib: Vec<f64>,
    pub estimate: Option<Estimate>,
}

pub fn startup_rss(bins: &Bins, starts: usize) -> Result<StartupRss> {
    let mut peak_mib = Vec::new();
    let mut rss_mib = Vec::new();
    for _ in 0..starts {
        check_interrupted()?;
        let tracer = start_memstall(bins, &[])?;
        thread::sleep(Duration::from_secs(1));
        peak_mib.push(status_mib(tracer.pid(), "VmHWM:"));
        rss_mib.push(status_mib(tracer.pid(), "VmRSS:"));
    }
    Ok(StartupRss {
        estimate: bootstrap_median(&peak_mib, seed_of("startup_rss")),
        peak_mib,
        rss_mib,
    })
}

/// Faults in the first bench cgroup (a memhog touching 8 MiB there), then its id (the
/// directory's inode) and pgfault as memory.stat prints it: a value the iterator must find.
pub fn faults_in_first_cgroup(bins: &Bins, cgroups: &ManyCgroups) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt as _;
    let dir = cgroups.parent.path.join("c0");
    let status = Command::new(&bins.memhog)
        .arg("--cgroup")
        .arg(&dir)
        .args(["--anon-mib", "8"])
        .stdout(std::process::Stdio::null())
        .status()
        .ok()?;
    if !status.success() {
        return None;
    }
    let stat = fs::read_to_string(dir.join("memory.stat")).ok()?;
    let pgfault = stat
        .lines()
        .find_map(|l| l.strip_prefix("pgfault ")?.trim().parse().ok())?;
    Some((fs::metadata(&dir).ok()?.ino(), pgfault))
}
