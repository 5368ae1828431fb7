//! Warnings before an OOM kill. Every quarter second each watched cgroup with a limit is read:
//! what reclaim cannot free (usage less the file LRUs, less anon that swap could take) against
//! its limit, and how fast that grows. A cgroup whose limit is under 30 s away at that pace,
//! or that has under a tenth of it left, is at risk; the warning names the task the kernel
//! would kill now, ranked as oom_badness() ranks (rss + swap + page tables + adj x
//! totalpages/1000: /proc/PID/oom_score ranks against the machine's memory and can disagree).
use std::{
    collections::{BTreeMap, VecDeque},
    path::Path,
    time::{Duration, Instant},
};

mod rank;

use crate::{
    cgroup::{CgroupVersion, memory::CgroupMemory},
    event::{OomRisk, RiskReason},
};
use rank::rank;

const SAMPLE_EVERY: Duration = Duration::from_millis(250);
/// Warn when the limit is nearer than this at the growth seen ...
const ETA_WARN_S: f64 = 30.0;
/// ... or less than this share of it is left.
const HEADROOM_WARN: f64 = 0.10;
/// Out of danger again: the ETA beyond this and more than `HEADROOM_CLEAR` left.
const ETA_CLEAR_S: f64 = 60.0;
const HEADROOM_CLEAR: f64 = 0.15;
/// The growth is the faster of a short window (a fresh ramp) and a long one.
const SHORT_WINDOW: Duration = Duration::from_secs(2);
const LONG_WINDOW: Duration = Duration::from_secs(10);
/// A slope needs this many samples in its window.
const MIN_SAMPLES: usize = 4;
/// While at risk, a warning is repeated when the next victim changes (at most this often) ...
const REPEAT_VICTIM: Duration = Duration::from_secs(1);
/// ... or when the ETA halved (at most this often).
const REPEAT_ETA: Duration = Duration::from_secs(10);
/// Across all cgroups, warnings per second.
const MAX_PER_SECOND: usize = 20;
/// A cgroup seen reclaiming at its limit is watched this long after its last such stall.
const STALL_WATCH: Duration = Duration::from_secs(60);
/// Cgroups watched because they stalled, at once (the explicit targets are always watched).
const MAX_STALL_WATCHES: usize = 256;

struct Watch {
    memory: CgroupMemory,
    /// (seconds since the watch began, kB reclaim cannot free).
    history: VecDeque<(f64, f64)>,
    started: Instant,
    /// None for `--cgroup` targets, which are watched for the whole run.
    until: Option<Instant>,
    at_risk: Option<Warned>,
    /// (when, count) of limit hits, for "hit its limit N times in 10 s".
    hits: VecDeque<(Instant, u64)>,
}

struct Warned {
    at: Instant,
    eta_s: Option<f64>,
    victim: Option<u32>,
}

/// The watched cgroups and their warnings.
pub struct RiskWatch {
    root: std::path::PathBuf,
    version: CgroupVersion,
    page_size: u64,
    watches: BTreeMap<String, Watch>,
    last_sample: Option<Instant>,
    sent_this_second: (Instant, usize),
    /// Warnings sent in the run (the soak gate's count).
    pub warnings: u64,
}

impl RiskWatch {
    /// `targets`: cgroups watched for the whole run (the `--cgroup` ones).
    pub fn new(root: &Path, version: CgroupVersion, targets: &[String]) -> Self {
        // SAFETY: sysconf has no memory-safety preconditions.
        let page_size = u64::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
            .unwrap_or(4096)
            .max(1);
        let mut watch = Self {
            root: root.to_path_buf(),
            version,
            page_size,
            watches: BTreeMap::new(),
            last_sample: None,
            sent_this_second: (Instant::now(), 0),
            warnings: 0,
        };
        for target in targets {
            watch.add(target, None);
        }
        watch
    }

    fn add(&mut self, cgroup: &str, until: Option<Instant>) {
        let memory = CgroupMemory::new(&self.root, cgroup, self.version);
        self.watches.insert(
            cgroup.to_owned(),
            Watch {
                memory,
                history: VecDeque::new(),
                started: Instant::now(),
                until,
                at_risk: None,
                hits: VecDeque::new(),
            },
        );
    }

    /// `cgroup` reclaimed at its limit (or was throttled at memory.high): watch it for a while.
    pub fn stalled_at_limit(&mut self, cgroup: &str) {
        let until = Instant::now() + STALL_WATCH;
        if let Some(watch) = self.watches.get_mut(cgroup) {
            // Targets stay watched for the whole run; a stall only extends a temporary watch.
            if watch.until.is_some() {
                watch.until = Some(until);
            }
            return;
        }
        let temporary = self.watches.values().filter(|w| w.until.is_some()).count();
        if temporary < MAX_STALL_WATCHES {
            self.add(cgroup, Some(until));
        }
    }

    /// A task in `cgroup` was killed: the trend before it says nothing about after it.
    /// Returns the `cleared` record where a warning was standing.
    pub fn killed(&mut self, cgroup: &str, time_ns: u64) -> Option<OomRisk> {
        let watch = self
            .watches
            .iter_mut()
            .find(|(path, _)| crate::cgroup::is_within(cgroup, path))
            .map(|(_, w)| w)?;
        watch.history.clear();
        let cgroup = watch
            .memory
            .dir
            .strip_prefix(&self.root)
            .ok()
            .map(|p| format!("/{}", p.display()));
        watch
            .at_risk
            .take()
            .map(|_| cleared(cgroup.unwrap_or_default(), time_ns))
    }

    /// Samples every watched cgroup when a quarter second has passed; returns the warnings.
    pub fn sample(&mut self, time_ns: u64) -> Vec<OomRisk> {
        let now = Instant::now();
        if self
            .last_sample
            .is_some_and(|last| now.duration_since(last) < SAMPLE_EVERY)
        {
            return Vec::new();
        }
        self.last_sample = Some(now);
        self.watches
            .retain(|_, w| w.until.is_none_or(|until| until > now) || w.at_risk.is_some());
        let mut out = Vec::new();
        let paths: Vec<String> = self.watches.keys().cloned().collect();
        for path in paths {
            if let Some(risk) = self.sample_one(&path, now, time_ns) {
                if risk.reason != RiskReason::Cleared && !self.may_send(now) {
                    continue;
                }
                if risk.reason != RiskReason::Cleared {
                    self.warnings += 1;
                }
                out.push(risk);
            }
        }
        out
    }

    fn may_send(&mut self, now: Instant) -> bool {
        if now.duration_since(self.sent_this_second.0) >= Duration::from_secs(1) {
            self.sent_this_second = (now, 0);
        }
        self.sent_this_second.1 += 1;
        self.sent_this_second.1 <= MAX_PER_SECOND
    }

    fn sample_one(&mut self, path: &str, now: Instant, time_ns: u64) -> Option<OomRisk> {
        let page_size = self.page_size;
        let watch = self.watches.get_mut(path)?;
        let (Some(usage), Some(limit)) = (watch.memory.usage(), watch.memory.limit()) else {
            watch.history.clear();
            return watch
                .at_risk
                .take()
                .map(|_| cleared(path.to_owned(), time_ns));
        };
        let stat = watch.memory.stat();
        let get = |key: &str| stat.get(key).copied().unwrap_or(0);
        let file = get("inactive_file").saturating_add(get("active_file"));
        let reclaimable = file.saturating_add(get("anon").min(watch.memory.swap_room()));
        let (usage_kb, limit_kb) = (usage / 1024, limit / 1024);
        let working_kb = usage.saturating_sub(reclaimable) / 1024;
        let headroom_kb = limit_kb.saturating_sub(working_kb);
        let t = now.duration_since(watch.started).as_secs_f64();
        // A fall of a tenth of the limit is a kill or a release: start the trend over.
        if watch
            .history
            .back()
            .is_some_and(|&(_, last)| last - working_kb as f64 > limit_kb as f64 * 0.1)
        {
            watch.history.clear();
        }
        watch.history.push_back((t, working_kb as f64));
        while watch
            .history
            .front()
            .is_some_and(|&(at, _)| t - at > LONG_WINDOW.as_secs_f64())
        {
            watch.history.pop_front();
        }
        if let Some(hits) = watch.memory.limit_hits() {
            watch.hits.push_back((now, hits));
            while watch
                .hits
                .front()
                .is_some_and(|&(at, _)| now.duration_since(at) > LONG_WINDOW)
            {
                watch.hits.pop_front();
            }
        }
        let growth = slope(&watch.history, t - SHORT_WINDOW.as_secs_f64())
            .into_iter()
            .chain(slope(&watch.history, t - LONG_WINDOW.as_secs_f64()))
            .fold(None, |best: Option<f64>, s| {
                Some(best.map_or(s, |b| b.max(s)))
            });
        let eta_s = growth.filter(|g| *g > 0.0).map(|g| headroom_kb as f64 / g);
        let room = headroom_kb as f64 / (limit_kb.max(1)) as f64;
        let reason = if eta_s.is_some_and(|eta| eta < ETA_WARN_S) {
            Some(RiskReason::Eta)
        } else if room < HEADROOM_WARN {
            Some(RiskReason::Headroom)
        } else {
            None
        };
        let Some(reason) = reason else {
            let safe = eta_s.is_none_or(|eta| eta > ETA_CLEAR_S) && room > HEADROOM_CLEAR;
            if safe && watch.at_risk.is_some() {
                watch.at_risk = None;
                return Some(cleared(path.to_owned(), time_ns));
            }
            return None;
        };
        let totalpages = (limit / page_size).max(1);
        let ranking = rank(&watch.memory, totalpages, page_size);
        let victim = ranking.first();
        let repeat = match &watch.at_risk {
            None => true,
            Some(last) => {
                let since = now.duration_since(last.at);
                (victim.map(|v| v.pid) != last.victim && since >= REPEAT_VICTIM)
                    || (since >= REPEAT_ETA
                        && match (eta_s, last.eta_s) {
                            (Some(eta), Some(before)) => eta < before / 2.0,
                            _ => false,
                        })
            }
        };
        if !repeat {
            return None;
        }
        watch.at_risk = Some(Warned {
            at: now,
            eta_s,
            victim: victim.map(|v| v.pid),
        });
        let mut signals = Vec::new();
        if let (Some(first), Some(last)) = (watch.hits.front(), watch.hits.back())
            && last.1 > first.1
        {
            signals.push(format!(
                "hit its limit {} times in {:.0} s",
                last.1 - first.1,
                now.duration_since(first.0).as_secs_f64().max(1.0)
            ));
        }
        let shmem = get("shmem") / 1024;
        if shmem > limit_kb / 10 {
            signals.push(format!(
                "{shmem} kB of shmem (tmpfs, SysV, shared anon) that reclaim cannot drop without swap"
            ));
        }
        Some(OomRisk {
            cgroup: path.to_owned(),
            time_ns,
            eta_s: eta_s.map(|e| (e * 10.0).round() / 10.0),
            headroom_kb,
            reason,
            usage_kb,
            limit_kb,
            reclaimable_kb: reclaimable / 1024,
            growth_kb_per_s: growth.map_or(0.0, f64::round),
            signals,
            next_victim_pid: victim.map(|v| v.pid),
            next_victim_comm: victim.map(|v| v.comm.clone()),
            next_victim_points: victim.map(|v| v.points),
            next_victim_freeable_kb: victim.map(|v| v.freeable_kb),
            next_victim_shmem_kb: victim.map(|v| v.shmem_kb),
        })
    }
}

fn cleared(cgroup: String, time_ns: u64) -> OomRisk {
    OomRisk {
        cgroup,
        time_ns,
        eta_s: None,
        headroom_kb: 0,
        reason: RiskReason::Cleared,
        usage_kb: 0,
        limit_kb: 0,
        reclaimable_kb: 0,
        growth_kb_per_s: 0.0,
        signals: Vec::new(),
        next_victim_pid: None,
        next_victim_comm: None,
        next_victim_points: None,
        next_victim_freeable_kb: None,
        next_victim_shmem_kb: None,
    }
}

/// Least-squares slope (kB/s) of the samples since `from`; `None` with too few.
fn slope(history: &VecDeque<(f64, f64)>, from: f64) -> Option<f64> {
    let points: Vec<(f64, f64)> = history
        .iter()
        .copied()
        .filter(|(t, _)| *t >= from)
        .collect();
    if points.len() < MIN_SAMPLES {
        return None;
    }
    let n = points.len() as f64;
    let (mean_t, mean_v) = points
        .iter()
        .fold((0.0, 0.0), |(a, b), (t, v)| (a + t / n, b + v / n));
    let (num, den) = points.iter().fold((0.0, 0.0), |(num, den), (t, v)| {
        (
            num + (t - mean_t) * (v - mean_v),
            den + (t - mean_t) * (t - mean_t),
        )
    });
    (den > 0.0).then(|| num / den)
}

#[cfg(test)]
mod tests;
