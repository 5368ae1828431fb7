//! An OOM kill made whole: cgroup names (from the id, the kernel's report or /proc), the
//! post-mortem explanation, and kills known only from the kernel log.
use crate::{
    cgroup::{CgroupResolver, CgroupVersion, memcg_of_pid},
    event::{Explanation, KillSource, OomKill},
};

use super::{kmsg::OomReport, postmortem::PostMortem};

/// Names the kill's cgroups and explains it. Runs as soon as the record is decoded: the classic
/// record has no memcg, and /proc can only be asked while the victim is still exiting.
pub fn explain(
    kill: &mut OomKill,
    cgroups: &mut CgroupResolver,
    version: CgroupVersion,
    postmortem: Option<&mut PostMortem>,
) {
    let known = cgroups.path(kill.victim_memcg_id);
    let from_proc = known
        .is_none()
        .then(|| memcg_of_pid(kill.victim_pid, version))
        .flatten();
    let domain = kill
        .oom_control
        .as_ref()
        .and_then(|c| cgroups.path(c.memcg_id));
    kill.explanation = match postmortem {
        Some(postmortem) => postmortem.explain_kill(
            kill.victim_pid,
            known.as_deref().or(from_proc.as_deref()),
            kill.oom_control.as_ref().map(|c| (c, domain)),
        ),
        None => Explanation::default(),
    };
    // The kernel's own report beats /proc, which can only be read while the victim lives.
    kill.victim_cgroup = known
        .or_else(|| kill.explanation.victim_cgroup.clone())
        .or(from_proc);
    kill.cgroup = cgroups.path(kill.memcg_id);
}

/// A kill known only from the kernel log (`memstall oom`): the trigger's memcg is not in it,
/// the victim's is.
pub fn from_report(report: &OomReport, explanation: Explanation, unix_ns: u64) -> Option<OomKill> {
    let killed = report.killed.clone().unwrap_or_default();
    let victim_pid = report
        .victim_pid
        .or(report.killed.as_ref().map(|k| k.pid))?;
    Some(OomKill {
        time_ns: unix_ns,
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
        source: KillSource::KernelLog,
        explanation,
        ..Default::default()
    })
}
