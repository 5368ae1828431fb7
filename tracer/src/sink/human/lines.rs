//! One readable line per event (with stacks and the OOM post-mortem on the lines below it).
use std::fmt;

use memstall_common::StallKind;

use crate::{
    clock::format_unix_ns,
    event::{Event, Freed, Kill, KillMethod, Labels, OomKill, OomRisk, RiskReason, Stall},
    sink::{Kb, Ms},
    term::escape,
};

/// Displays an event as the human sink prints it.
pub struct EventLine<'a>(pub &'a Event);

impl fmt::Display for EventLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Event::Stall(s) => stall(s, f),
            Event::OomKill(kill) => oom_kill(kill, f),
            Event::Kill(kill) => signal_kill(kill, f),
            Event::OomRisk(risk) => oom_risk(risk, f),
        }
    }
}

fn stall(stall: &Stall, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    write!(
        f,
        "{} STALL {} {} {} pid {} in {}",
        format_unix_ns(stall.time_ns),
        stall.kind.name(),
        Ms(stall.latency_ns),
        escape(&stall.comm),
        stall.pid,
        escape(stall.cgroup.as_deref().unwrap_or("?")),
    )?;
    match stall.kind {
        StallKind::ShrinkSlab => write!(
            f,
            ": shrinker {} freed {} objects",
            escape(stall.shrinker.as_deref().unwrap_or("?")),
            stall.pages
        )?,
        StallKind::DirectReclaim
        | StallKind::MemcgReclaim
        | StallKind::SoftlimitReclaim
        | StallKind::NodeReclaim
        | StallKind::KswapdWake => write!(f, ": reclaimed {} pages", stall.pages)?,
        _ => {}
    }
    if stall.passes > 0 {
        write!(
            f,
            " (scanned {} in {} LRU passes)",
            stall.pages_scanned, stall.passes
        )?;
    }
    if let Some(order) = stall.order {
        write!(f, ", order {order}")?;
    }
    if let Some(nid) = stall.nid {
        write!(f, ", node {nid}")?;
    }
    if let Some(reason) = stall.reason {
        write!(f, ", reason {}", reason.name())?;
    }
    for frame in &stall.kernel_stack {
        write!(f, "\n    {}", escape(frame))?;
    }
    for frame in &stall.user_stack {
        write!(f, "\n    [user] {}", escape(frame))?;
    }
    Ok(())
}

fn oom_kill(kill: &OomKill, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    let unknown = "?";
    write!(
        f,
        "{} OOM KILL {} pid {} in {}: anon-rss {}, file-rss {}, shmem-rss {}, pgtables {}, oom_score_adj {}",
        format_unix_ns(kill.time_ns),
        escape(&kill.victim_comm),
        kill.victim_pid,
        escape(kill.victim_cgroup.as_deref().unwrap_or(unknown)),
        Kb(kill.anon_rss_kb),
        Kb(kill.file_rss_kb),
        Kb(kill.shmem_rss_kb),
        Kb(kill.pgtables_kb),
        kill.oom_score_adj,
    )?;
    if let Some(uid) = kill.victim_uid {
        write!(f, ", uid {uid}")?;
    }
    if kill.pid == kill.victim_pid {
        write!(f, "; triggered by its own allocation")?;
    } else {
        write!(
            f,
            "; triggered by {} pid {} in {}",
            escape(&kill.comm),
            kill.pid,
            escape(kill.cgroup.as_deref().unwrap_or(unknown))
        )?;
    }
    if let Some(workload) = kill.victim_labels.as_ref().and_then(Labels::workload) {
        write!(f, "\n    pod: {}", escape(&workload))?;
    }
    let e = &kill.explanation;
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
        write!(f, " [{}]", e.report.name())?;
        write!(
            f,
            "\n    why: {}; reclaimable {} kB, unreclaimable {} kB",
            escape(&e.diagnosis.culprit),
            e.diagnosis.reclaimable_kb,
            e.diagnosis.unreclaimable_kb
        )?;
    }
    if let Some(before) = &kill.reclaim_before {
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
    freed(&kill.freed, f)?;
    for frame in &kill.trigger_kernel_stack {
        write!(f, "\n    trigger: {}", escape(frame))?;
    }
    for frame in &kill.trigger_user_stack {
        write!(f, "\n    trigger: [user] {}", escape(frame))?;
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

fn freed(freed: &Freed, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    if let Some(kb) = freed.freed_kb {
        write!(f, "\n    freed {} within a second", Kb(kb))?;
    }
    if let Some(note) = &freed.freed_note {
        write!(f, ": {}", escape(note))?;
    }
    Ok(())
}

fn method(method: KillMethod) -> &'static str {
    match method {
        KillMethod::OomKiller => "with the OOM killer's victim",
        KillMethod::Kill => "kill(2)",
        KillMethod::ThreadKill => "tgkill(2)",
        KillMethod::CgroupKill => "cgroup.kill",
        KillMethod::Kernel => "by the kernel",
    }
}

fn signal_kill(kill: &Kill, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    write!(
        f,
        "{} KILL {} pid {} in {} by {} ({}): {} pid {} ({}) in {}, {}",
        format_unix_ns(kill.time_ns),
        escape(&kill.comm),
        kill.tgid,
        escape(kill.cgroup.as_deref().unwrap_or("?")),
        kill.killer.name(),
        kill.confidence.name(),
        escape(&kill.sender_process),
        kill.sender_tgid,
        escape(&kill.sender_comm),
        escape(kill.sender_cgroup.as_deref().unwrap_or("?")),
        method(kill.method),
    )?;
    write!(
        f,
        "; anon-rss {}, file-rss {}, shmem-rss {}",
        Kb(kill.anon_rss_kb),
        Kb(kill.file_rss_kb),
        Kb(kill.shmem_rss_kb)
    )?;
    if !kill.evidence.is_empty() {
        let evidence: Vec<String> = kill
            .evidence
            .iter()
            .map(|e| escape(e).to_string())
            .collect();
        write!(f, "\n    evidence: {}", evidence.join("; "))?;
    }
    freed(&kill.freed, f)
}

fn oom_risk(risk: &OomRisk, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    let time = format_unix_ns(risk.time_ns);
    let cgroup = escape(&risk.cgroup);
    if risk.reason == RiskReason::Cleared {
        return write!(f, "{time} OOM RISK over in {cgroup}");
    }
    write!(f, "{time} OOM RISK {cgroup}: ")?;
    match risk.eta_s {
        Some(eta) => write!(f, "limit in {eta:.1} s at {:.0} kB/s", risk.growth_kb_per_s)?,
        None => write!(f, "not growing")?,
    }
    write!(
        f,
        ", {} of {} left (usage {}, reclaimable {})",
        Kb(risk.headroom_kb),
        Kb(risk.limit_kb),
        Kb(risk.usage_kb),
        Kb(risk.reclaimable_kb)
    )?;
    if let (Some(pid), Some(comm), Some(points)) = (
        risk.next_victim_pid,
        &risk.next_victim_comm,
        risk.next_victim_points,
    ) {
        write!(
            f,
            "; next victim {} pid {pid} ({points} points",
            escape(comm)
        )?;
        if let (Some(freeable), Some(shmem)) =
            (risk.next_victim_freeable_kb, risk.next_victim_shmem_kb)
        {
            write!(
                f,
                ", would free {}, keeps {} shmem",
                Kb(freeable),
                Kb(shmem)
            )?;
        }
        write!(f, ")")?;
    }
    for signal in &risk.signals {
        write!(f, "\n    {}", escape(signal))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outlier_line_reads_well() {
        let stall = Stall {
            kind: StallKind::MemcgReclaim,
            time_ns: 1_700_000_000_123_000_000,
            latency_ns: 12_345_678,
            memcg_id: 7,
            cgroup: Some("/svc".into()),
            pid: 42,
            tgid: 42,
            comm: "java".into(),
            pages: 32,
            pages_scanned: 64,
            passes: 2,
            retries: 0,
            order: Some(0),
            gfp_flags: 0xcc0,
            nid: None,
            reason: None,
            shrinker: None,
            kernel_stack: vec!["try_charge_memcg+0x1a".into()],
            user_stack: vec![],
            labels: None,
        };
        assert_eq!(
            EventLine(&Event::Stall(stall)).to_string(),
            "2023-11-14T22:13:20.123Z STALL memcg_reclaim 12.3 ms java pid 42 in /svc: reclaimed 32 \
             pages (scanned 64 in 2 LRU passes), order 0\n    try_charge_memcg+0x1a"
        );
    }

    #[test]
    fn kill_and_risk_lines_read_well() {
        let kill = Kill {
            time_ns: 1_700_000_000_123_000_000,
            cgroup: Some("/svc".into()),
            comm: "postgres".into(),
            tgid: 42,
            sender_tgid: 7,
            sender_comm: "oomd".into(),
            sender_process: "oomd".into(),
            sender_cgroup: Some("/system.slice/oomd.service".into()),
            killer: crate::event::Killer::Oomd,
            confidence: crate::event::Confidence::High,
            evidence: vec!["sender named oomd".into(), "trusted.oomd_kill=1 on /svc".into()],
            shmem_rss_kb: 157_696,
            freed: Freed {
                freed_kb: Some(3072),
                freed_note: Some("killing postgres freed 3.0 MiB: its 154 MiB of shmem stay charged to the cgroup (\u{1b}[2J)".into()),
            },
            ..Kill::default()
        };
        assert_eq!(
            EventLine(&Event::Kill(Box::new(kill))).to_string(),
            "2023-11-14T22:13:20.123Z KILL postgres pid 42 in /svc by oomd (high): oomd pid 7 (oomd) \
             in /system.slice/oomd.service, kill(2); anon-rss 0 kB, file-rss 0 kB, shmem-rss 157696 kB \
             (154.0 MiB)\n    evidence: sender named oomd; trusted.oomd_kill=1 on /svc\n    freed 3072 kB \
             within a second: killing postgres freed 3.0 MiB: its 154 MiB of shmem stay charged to \
             the cgroup (\\x1b[2J)"
        );
        let risk = OomRisk {
            cgroup: "/svc".into(),
            time_ns: 1_700_000_000_123_000_000,
            eta_s: Some(5.25),
            headroom_kb: 51_200,
            reason: RiskReason::Eta,
            usage_kb: 14_336,
            limit_kb: 65_536,
            reclaimable_kb: 0,
            growth_kb_per_s: 10_240.0,
            signals: vec!["hit its limit 3 times in 10 s".into()],
            next_victim_pid: Some(9),
            next_victim_comm: Some("memhog".into()),
            next_victim_points: Some(8017),
            next_victim_freeable_kb: Some(8192),
            next_victim_shmem_kb: Some(0),
        };
        assert_eq!(
            EventLine(&Event::OomRisk(Box::new(risk))).to_string(),
            "2023-11-14T22:13:20.123Z OOM RISK /svc: limit in 5.2 s at 10240 kB/s, 51200 kB (50.0 MiB) \
             of 65536 kB (64.0 MiB) left (usage 14336 kB (14.0 MiB), reclaimable 0 kB); next victim \
             memhog pid 9 (8017 points, would free 8192 kB, keeps 0 kB shmem)\n    hit its limit 3 \
             times in 10 s"
        );
    }

    #[test]
    fn oom_kill_in_a_pod_names_it() {
        let kill = OomKill {
            victim_comm: "hog".into(),
            victim_pid: 7,
            pid: 7,
            victim_cgroup: Some("/kubepods/pod1/abc".into()),
            victim_labels: Some(Labels {
                namespace: Some("shop".into()),
                pod: Some("web-0".into()),
                container: Some("nginx\x1b[2J".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let text = EventLine(&Event::OomKill(Box::new(kill))).to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].contains("OOM KILL hog pid 7 in /kubepods/pod1/abc: "),
            "{text}"
        );
        assert_eq!(lines[1], "    pod: shop/web-0/nginx\\x1b[2J", "{text}");
    }
}
