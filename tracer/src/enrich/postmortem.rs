//! The whole story of an OOM kill: scope, the victim's score, the scoreboard and why reclaim
//! failed. Exact figures come from the kernel's own report in /dev/kmsg (printed just before
//! oom/mark_victim fires); without it, from a snapshot of cgroupfs and /proc taken at once.
use std::{
    collections::VecDeque,
    fs,
    path::{Path, PathBuf},
};

use super::{
    kmsg::{KmsgCursor, OomReport, OomReportParser, await_report},
    oom_score,
    snapshot::{global_breakdown, meminfo_kb, snapshot_tasks},
};
use crate::cgroup::memory::pids_in as cgroup_pids;
pub use crate::cgroup::memory::{hierarchical, keyed};
use crate::{
    cgroup::{CgroupVersion, MemoryHierarchy},
    event::{Explanation, OomControl, ReportSource},
};

const SCOREBOARD_LEN: usize = 10;

pub struct PostMortem {
    kmsg: Option<KmsgCursor>,
    parser: OomReportParser,
    reports: VecDeque<OomReport>,
    root: PathBuf,
    version: CgroupVersion,
    page_size: u64,
}

fn constraint_name(raw: &str) -> String {
    match raw {
        "CONSTRAINT_MEMCG" => "memcg",
        "CONSTRAINT_NONE" => "global",
        "CONSTRAINT_CPUSET" => "cpuset",
        "CONSTRAINT_MEMORY_POLICY" => "mempolicy",
        other => other,
    }
    .to_owned()
}

fn read_u64(path: &Path) -> Option<u64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

impl PostMortem {
    /// `follow`: read new kernel log records as kills happen (tracing); off when reading the
    /// log after the fact.
    pub fn new(hierarchy: &MemoryHierarchy, follow: bool) -> Self {
        let kmsg = if follow {
            KmsgCursor::at_end()
                .inspect_err(|err| {
                    log::warn!("reading /dev/kmsg: {err}; OOM scores will come from snapshots");
                })
                .ok()
        } else {
            None
        };
        // SAFETY: sysconf has no memory-safety preconditions.
        let page_size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
        Self {
            kmsg,
            parser: OomReportParser::new(),
            reports: VecDeque::new(),
            root: hierarchy.root.clone(),
            version: hierarchy.version,
            page_size,
        }
    }

    /// The kernel's report for `victim_pid`, once whole (see [`await_report`]).
    fn kernel_report(&mut self, victim_pid: u32) -> Option<OomReport> {
        let kmsg = self.kmsg.as_mut()?;
        await_report(&mut self.parser, &mut self.reports, victim_pid, || {
            kmsg.poll().unwrap_or_default()
        })
    }

    fn swap_total_pages(&self) -> u64 {
        meminfo_kb("SwapTotal") * 1024 / self.page_size
    }

    /// The explanation of a report read from the kernel log, e.g. after the fact.
    pub fn explain_report(&self, report: &OomReport, victim_pid: u32) -> Explanation {
        let memcg = report.constraint.as_deref() == Some("CONSTRAINT_MEMCG");
        let kb_to_pages = |kb: u64| kb * 1024 / self.page_size;
        let totalpages = match (memcg, report.memory_limit_kb) {
            // mem_cgroup_get_max(): the limit plus what swap may add (memsw caps it on v1).
            (true, Some(limit)) => {
                let with_swap = kb_to_pages(limit) + self.swap_total_pages();
                match (self.version, report.swap_limit_kb) {
                    (CgroupVersion::V1, Some(memsw)) => with_swap.min(kb_to_pages(memsw)),
                    (CgroupVersion::V2, Some(swap)) => {
                        kb_to_pages(limit) + kb_to_pages(swap).min(self.swap_total_pages())
                    }
                    _ => with_swap,
                }
            }
            _ => kb_to_pages(meminfo_kb("MemTotal")) + self.swap_total_pages(),
        }
        .max(1);
        let scoreboard =
            oom_score::scoreboard(&report.tasks, totalpages, self.page_size, victim_pid);
        let breakdown = if memcg {
            oom_score::breakdown_from_memory_stat(&hierarchical(&report.memcg_stats))
        } else {
            global_breakdown()
        };
        let usage_kb = if memcg {
            report.memory_usage_kb
        } else {
            Some(meminfo_kb("MemTotal") - meminfo_kb("MemAvailable"))
        };
        self.explain(Explanation {
            constraint: report.constraint.as_deref().map(constraint_name),
            oom_cgroup: if memcg {
                report.oom_memcg.clone()
            } else {
                None
            },
            totalpages: Some(totalpages),
            limit_kb: if memcg {
                report.memory_limit_kb
            } else {
                Some(meminfo_kb("MemTotal"))
            },
            usage_kb,
            breakdown,
            scoreboard,
            report: ReportSource::KernelLog,
            victim_cgroup: report.task_memcg.clone(),
            ..Default::default()
        })
    }

    /// Without the kernel's report: the nearest cgroup at its limit is the domain, else global.
    fn explain_snapshot(&self, victim_cgroup: Option<&str>, victim_pid: u32) -> Explanation {
        let (limit_file, usage_file) = match self.version {
            CgroupVersion::V1 => ("memory.limit_in_bytes", "memory.usage_in_bytes"),
            CgroupVersion::V2 => ("memory.max", "memory.current"),
        };
        let mut domain = None;
        let mut path = victim_cgroup.map(str::to_owned);
        while let Some(current) = path {
            let dir = self.root.join(current.trim_start_matches('/'));
            if let (Some(limit), Some(usage)) = (
                read_u64(&dir.join(limit_file)),
                read_u64(&dir.join(usage_file)),
            ) {
                // Within 1 MiB of the limit: the victim's memory is not freed yet.
                if usage + (1 << 20) >= limit {
                    domain = Some((current.clone(), dir, limit, usage));
                    break;
                }
            }
            path = Path::new(&current)
                .parent()
                .map(|p| p.display().to_string())
                .filter(|_| current != "/");
        }
        let Some((cgroup, dir, limit, usage)) = domain else {
            let totalpages =
                (meminfo_kb("MemTotal") * 1024 / self.page_size + self.swap_total_pages()).max(1);
            let tasks = snapshot_tasks(
                fs::read_dir("/proc")
                    .into_iter()
                    .flatten()
                    .flatten()
                    .filter_map(|e| e.file_name().to_str()?.parse().ok()),
                self.page_size,
            );
            return self.explain(Explanation {
                constraint: Some("global".into()),
                totalpages: Some(totalpages),
                limit_kb: Some(meminfo_kb("MemTotal")),
                usage_kb: Some(meminfo_kb("MemTotal") - meminfo_kb("MemAvailable")),
                breakdown: global_breakdown(),
                scoreboard: oom_score::scoreboard(&tasks, totalpages, self.page_size, victim_pid),
                report: ReportSource::Snapshot,
                ..Default::default()
            });
        };
        let totalpages = (limit / self.page_size).max(1);
        let stats = keyed(&fs::read_to_string(dir.join("memory.stat")).unwrap_or_default());
        let tasks = snapshot_tasks(cgroup_pids(&dir).into_iter(), self.page_size);
        self.explain(Explanation {
            constraint: Some("memcg".into()),
            oom_cgroup: Some(cgroup),
            totalpages: Some(totalpages),
            limit_kb: Some(limit / 1024),
            usage_kb: Some(usage / 1024),
            breakdown: oom_score::breakdown_from_memory_stat(&hierarchical(&stats)),
            scoreboard: oom_score::scoreboard(&tasks, totalpages, self.page_size, victim_pid),
            report: ReportSource::Snapshot,
            ..Default::default()
        })
    }

    /// Fills in the victim's points, the diagnosis, and trims the scoreboard.
    fn explain(&self, mut e: Explanation) -> Explanation {
        if let Some(victim) = e.scoreboard.iter().find(|c| c.victim) {
            e.points = victim.points;
            e.oom_score = victim
                .points
                .zip(e.totalpages)
                .map(|(p, t)| oom_score::normalized(p, t));
        }
        let swap_available = self.swap_total_pages() > 0;
        e.diagnosis = oom_score::diagnose(&e.breakdown, e.usage_kb.unwrap_or(0), swap_available);
        // Keep the victim even when it ranks below the cut (it never should).
        let mut kept = 0;
        e.scoreboard.retain(|c| {
            kept += 1;
            kept <= SCOREBOARD_LEN || c.victim
        });
        e
    }

    pub fn explain_kill(
        &mut self,
        victim_pid: u32,
        victim_cgroup: Option<&str>,
        context: Option<(&OomControl, Option<String>)>,
    ) -> Explanation {
        let mut e = match self.kernel_report(victim_pid) {
            Some(report) => self.explain_report(&report, victim_pid),
            None => self.explain_snapshot(victim_cgroup, victim_pid),
        };
        if let Some((oc, domain)) = context {
            // The kernel's own figures win over the reconstruction.
            e.constraint = Some(oc.constraint_name().to_owned());
            if oc.memcg_id != 0 {
                e.oom_cgroup = domain.or(e.oom_cgroup);
            }
            e.totalpages = Some(oc.totalpages);
            e.points = Some(oc.chosen_points);
            e.oom_score = Some(oom_score::normalized(oc.chosen_points, oc.totalpages));
            e.exact = true;
        }
        e
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn v1_hierarchical_stats_win() {
        let stats = BTreeMap::from([
            ("rss".into(), 1),
            ("total_rss".into(), 5),
            ("total_cache".into(), 7),
        ]);
        let h = hierarchical(&stats);
        assert_eq!((h["rss"], h["cache"]), (5, 7));
        let v2 = BTreeMap::from([("anon".into(), 3)]);
        assert_eq!(hierarchical(&v2), v2);
        assert_eq!(constraint_name("CONSTRAINT_MEMCG"), "memcg");
        assert_eq!(constraint_name("CONSTRAINT_NONE"), "global");
    }
}
