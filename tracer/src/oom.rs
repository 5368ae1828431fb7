//! OOM kills, user side: the kernel's oom/mark_victim record made readable.
use std::fmt;

use serde::Serialize;
use tracer_common::{OomKillEvent, comm_str, oom_source};

use crate::{
    cgroup::memcg_of_pid, clock::format_unix_ns, decode::DecodeContext, k8s::Labels,
    postmortem::Explanation, term::escape,
};

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct OomKill {
    pub time_ns: u64,
    /// Memory cgroup of the task that triggered the kill (`null` when it could not be read).
    pub cgroup: Option<String>,
    pub pid: u32,
    pub tgid: u32,
    pub comm: String,
    pub victim_pid: u32,
    pub victim_tgid: u32,
    pub victim_comm: String,
    pub victim_cgroup: Option<String>,
    pub victim_uid: Option<u32>,
    pub anon_rss_kb: u64,
    pub file_rss_kb: u64,
    pub shmem_rss_kb: u64,
    pub pgtables_kb: u64,
    pub total_vm_kb: u64,
    /// Swapped-out pages of the victim (`null` when the hook cannot see them).
    pub swap_entries: Option<u64>,
    pub oom_score_adj: i32,
    /// Which hook produced the record: `tp_btf` or `tracepoint`.
    pub source: &'static str,
    /// Scope, scores, scoreboard and memory breakdown (see postmortem.rs).
    #[serde(flatten)]
    pub explanation: Explanation,
    /// Reclaim effort in the OOM domain just before the kill (filled in by the pipeline).
    pub reclaim_before: Option<ReclaimBefore>,
    /// Kubernetes / container / unit names of `cgroup` and `victim_cgroup` (pipeline).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub labels: Option<Labels>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub victim_labels: Option<Labels>,
}

/// Stalls and pages in the OOM domain over the seconds before a kill.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ReclaimBefore {
    pub window_ns: u64,
    pub stalls: u64,
    pub stall_ns: u64,
    pub pages_scanned: u64,
    pub pages_reclaimed: u64,
}

impl OomKill {
    pub fn decode(raw: &OomKillEvent, ctx: &mut DecodeContext) -> Self {
        let from_task = raw.source == oom_source::BTF_TASK;
        let known_cgroup = ctx.cgroups.path(raw.victim.memcg_id);
        // The classic record has no memcg: ask /proc at once, while the victim is still exiting.
        let proc_cgroup = known_cgroup
            .is_none()
            .then(|| memcg_of_pid(raw.victim.pid, ctx.version))
            .flatten();
        let context = ctx.oom_contexts.remove(&raw.victim.pid);
        let domain = context.and_then(|c| ctx.cgroups.path(c.memcg_id));
        let explanation = match ctx.postmortem.as_mut() {
            Some(postmortem) => postmortem.explain_kill(
                raw.victim.pid,
                known_cgroup.as_deref().or(proc_cgroup.as_deref()),
                context.as_ref().map(|c| (c, domain)),
            ),
            None => Explanation::default(),
        };
        // The kernel's own report beats /proc, which can only be read while the victim lives.
        let victim_cgroup = known_cgroup
            .or_else(|| explanation.victim_cgroup.clone())
            .or(proc_cgroup);
        Self {
            explanation,
            reclaim_before: None,
            labels: None,
            victim_labels: None,
            time_ns: ctx.clock.unix_ns(raw.header.boot_ns),
            cgroup: ctx.cgroups.path(raw.trigger.memcg_id),
            pid: raw.trigger.pid,
            tgid: raw.trigger.tgid,
            comm: comm_str(&raw.trigger.comm).to_string(),
            victim_pid: raw.victim.pid,
            victim_tgid: raw.victim.tgid,
            victim_comm: comm_str(&raw.victim.comm).to_string(),
            victim_cgroup,
            victim_uid: (raw.victim_uid != u32::MAX).then_some(raw.victim_uid),
            anon_rss_kb: raw.anon_rss_kb,
            file_rss_kb: raw.file_rss_kb,
            shmem_rss_kb: raw.shmem_rss_kb,
            pgtables_kb: raw.pgtables_kb,
            total_vm_kb: raw.total_vm_kb,
            swap_entries: from_task.then_some(raw.swap_entries),
            oom_score_adj: raw.oom_score_adj,
            source: if from_task { "tp_btf" } else { "tracepoint" },
        }
    }

    /// A kill known only from the kernel log (`memstall oom`): the trigger's memcg is not in
    /// it, the victim's is.
    pub fn from_report(
        report: &crate::kmsg::OomReport,
        explanation: Explanation,
        unix_ns: u64,
    ) -> Option<Self> {
        let killed = report.killed.clone().unwrap_or_default();
        let victim_pid = report
            .victim_pid
            .or(report.killed.as_ref().map(|k| k.pid))?;
        Some(Self {
            time_ns: unix_ns,
            cgroup: None,
            pid: report.trigger_pid.unwrap_or(0),
            tgid: report.trigger_pid.unwrap_or(0),
            comm: report.trigger_comm.clone(),
            victim_pid,
            victim_tgid: victim_pid,
            victim_comm: report.victim_comm.clone().unwrap_or(killed.comm),
            victim_cgroup: report.task_memcg.clone(),
            victim_uid: report.victim_uid.or(report.killed.as_ref().map(|k| k.uid)),
            anon_rss_kb: killed.anon_rss_kb,
            file_rss_kb: killed.file_rss_kb,
            shmem_rss_kb: killed.shmem_rss_kb,
            pgtables_kb: killed.pgtables_kb,
            total_vm_kb: killed.total_vm_kb,
            swap_entries: None,
            oom_score_adj: killed.oom_score_adj,
            source: "kernel_log",
            explanation,
            reclaim_before: None,
            labels: None,
            victim_labels: None,
        })
    }

    pub fn cgroups(&self) -> impl Iterator<Item = &str> {
        [self.victim_cgroup.as_deref(), self.cgroup.as_deref()]
            .into_iter()
            .flatten()
    }
}

/// kB as the kernel's OOM report gives them, with MiB alongside once they get large.
struct Kb(u64);

impl fmt::Display for Kb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 >= 10 * 1024 {
            write!(f, "{} kB ({:.1} MiB)", self.0, self.0 as f64 / 1024.0)
        } else {
            write!(f, "{} kB", self.0)
        }
    }
}

impl fmt::Display for OomKill {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unknown = "?";
        write!(
            f,
            "{} OOM KILL {} pid {} in {}: anon-rss {}, file-rss {}, shmem-rss {}, pgtables {}, oom_score_adj {}",
            format_unix_ns(self.time_ns),
            escape(&self.victim_comm),
            self.victim_pid,
            escape(self.victim_cgroup.as_deref().unwrap_or(unknown)),
            Kb(self.anon_rss_kb),
            Kb(self.file_rss_kb),
            Kb(self.shmem_rss_kb),
            Kb(self.pgtables_kb),
            self.oom_score_adj,
        )?;
        if let Some(uid) = self.victim_uid {
            write!(f, ", uid {uid}")?;
        }
        if self.pid == self.victim_pid {
            write!(f, "; triggered by its own allocation")?;
        } else {
            write!(
                f,
                "; triggered by {} pid {} in {}",
                escape(&self.comm),
                self.pid,
                escape(self.cgroup.as_deref().unwrap_or(unknown))
            )?;
        }
        let e = &self.explanation;
        if let Some(constraint) = &e.constraint {
            write!(f, "\n    scope: {constraint} OOM")?;
            if let Some(domain) = &e.oom_cgroup {
                write!(f, " in {}", escape(domain))?;
            }
            if let (Some(usage), Some(limit)) = (e.usage_kb, e.limit_kb) {
                write!(f, " (usage {usage} kB of {limit} kB)")?;
            }
            if let (Some(points), Some(total)) = (e.points, e.totalpages) {
                write!(
                    f,
                    "; victim points {points} of {total} pages, oom_score {}",
                    e.oom_score.unwrap_or(0)
                )?;
            }
            write!(f, " [{}]", e.report)?;
            write!(
                f,
                "\n    why: {}; reclaimable {} kB, unreclaimable {} kB",
                escape(&e.diagnosis.culprit),
                e.diagnosis.reclaimable_kb,
                e.diagnosis.unreclaimable_kb
            )?;
        }
        if let Some(before) = &self.reclaim_before {
            write!(
                f,
                "\n    reclaim in the last {:.0} s: {} stalls, {} ms stalled, {} pages scanned, {} reclaimed",
                before.window_ns as f64 / 1e9,
                before.stalls,
                before.stall_ns / 1_000_000,
                before.pages_scanned,
                before.pages_reclaimed
            )?;
        }
        for c in &e.scoreboard {
            let points = c.points.map_or("exempt".to_owned(), |p| p.to_string());
            write!(
                f,
                "\n    {} {:>7} {:<16} points {:>8}  adj {:>5}  rss {} kB  swap {} kB",
                if c.victim { "*" } else { " " },
                c.pid,
                escape(&c.comm),
                points,
                c.oom_score_adj,
                c.rss_kb,
                c.swap_kb
            )?;
        }
        Ok(())
    }
}

/// Attaches the OOM-kill hook: tp_btf where mark_victim passes the victim's task_struct (every
/// field straight from the task, including its memcg), else the classic tracepoint's record.
pub fn attach(
    ebpf: &mut aya::Ebpf,
    kernel: &crate::loader::KernelInfo,
) -> crate::loader::HookStatus {
    use crate::{loader, tracefs};
    let mut notes = Vec::new();
    let btf_usable = match (&kernel.layout, &kernel.mark_victim_passes_task) {
        _ if kernel.force_tracepoints => Err("--force-tracepoints".into()),
        (Err(why), _) => Err(format!("kernel layout: {why}")),
        (_, Err(e)) => Err(e.clone()),
        (_, Ok(false)) => Err("this kernel's mark_victim does not pass the victim task".into()),
        (Ok(_), Ok(true)) => Ok(()),
    };
    let btf_result = btf_usable.and_then(|()| {
        loader::attach_tp_btf(ebpf, "oom_mark_victim_btf", "mark_victim", &kernel.aya_btf)
            .map_err(|e| format!("{e:#}"))
    });
    match btf_result {
        Ok(()) => {
            return loader::HookStatus {
                hook: "oom_kill",
                attached: Ok("tp_btf oom/mark_victim".into()),
                notes,
            };
        }
        Err(why) => notes.push(format!("tp_btf not used: {why}")),
    }
    let classic = (|| -> anyhow::Result<()> {
        let tracefs = tracefs::ensure_mounted()?;
        let format = tracefs::read_mark_victim_format(&tracefs)?;
        let map = ebpf
            .map_mut("MARK_VICTIM_FORMAT")
            .ok_or_else(|| anyhow::anyhow!("map MARK_VICTIM_FORMAT missing"))?;
        aya::maps::Array::<_, tracer_common::MarkVictimFormat>::try_from(map)?.set(0, format, 0)?;
        loader::attach_tracepoint(ebpf, "oom_mark_victim_tp", "oom", "mark_victim")
    })();
    loader::HookStatus {
        hook: "oom_kill",
        attached: classic
            .map(|()| "tracepoint oom/mark_victim".into())
            .map_err(|e| format!("{e:#}")),
        notes,
    }
}

/// fentry on oom_kill_process(), for the kill's exact oom_control; trampolines are not
/// available on every kernel, and the kill is still reported without it.
pub fn attach_context(
    ebpf: &mut aya::Ebpf,
    kernel: &crate::loader::KernelInfo,
) -> crate::loader::HookStatus {
    let attached = if kernel.oom_control_layout.valid == 0 {
        Err("struct oom_control not in kernel BTF".to_owned())
    } else {
        crate::loader::attach_fentry(
            ebpf,
            "oom_kill_process_entry",
            "oom_kill_process",
            &kernel.aya_btf,
        )
        .map(|()| "fentry oom_kill_process".to_owned())
        .map_err(|e| format!("{e:#}; OOM scores are reconstructed from the kernel log"))
    };
    crate::loader::HookStatus {
        hook: "oom_context",
        attached,
        notes: Vec::new(),
    }
}
