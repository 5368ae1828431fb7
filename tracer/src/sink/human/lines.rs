//! One readable line per event (with stacks and the OOM post-mortem on the lines below it).
use std::fmt;

use crate::{
    clock::format_unix_ns,
    event::{Event, Labels, OomKill, Stall},
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
        }
    }
}

fn stall(stall: &Stall, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    write!(
        f,
        "{} STALL {} {} {} pid {} in {}: reclaimed {} pages",
        format_unix_ns(stall.time_ns),
        stall.kind.name(),
        Ms(stall.latency_ns),
        escape(&stall.comm),
        stall.pid,
        escape(stall.cgroup.as_deref().unwrap_or("?")),
        stall.pages,
    )?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use memstall_common::StallKind;

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
            order: Some(0),
            gfp_flags: 0xcc0,
            nid: None,
            reason: None,
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
