//! For people: one line per event, a table and bcc-style log2 histograms per summary.
mod lines;
mod pressure;

use std::io::Write;

use anyhow::{Context as _, Result};

pub use lines::EventLine;

use crate::{
    aggregate::{Summary, SummaryRow},
    event::Event,
    pipeline::{RunSummary, Sink},
    sink::Ms,
    term::escape,
};

/// One readable line per event; a table and bcc-style histograms per summary.
pub struct HumanSink<W: Write> {
    out: W,
}

impl<W: Write> HumanSink<W> {
    pub fn new(out: W) -> Self {
        Self { out }
    }
}

const BAR_WIDTH: u64 = 40;

/// bcc-style log2 histogram of one row.
pub fn write_histogram(out: &mut impl Write, row: &SummaryRow) -> std::io::Result<()> {
    writeln!(out, "\n{} {} latency:", escape(&row.cgroup), row.kind)?;
    writeln!(out, "{:>22} : {:<8} distribution", "usecs", "count")?;
    let peak = row
        .buckets
        .iter()
        .map(|b| b.count)
        .max()
        .unwrap_or(0)
        .max(1);
    for bucket in &row.buckets {
        let stars = (bucket.count * BAR_WIDTH).div_ceil(peak) as usize;
        writeln!(
            out,
            "{:>10} -> {:<9}: {:<8} |{:<width$}|",
            bucket.low_us,
            bucket.high_us,
            bucket.count,
            "*".repeat(stars),
            width = BAR_WIDTH as usize
        )?;
    }
    Ok(())
}

pub fn write_table(out: &mut impl Write, summary: &Summary) -> std::io::Result<()> {
    writeln!(
        out,
        "\n--- memstall {} summary ({:.1} s) ---",
        summary.scope.name(),
        summary.period_ns as f64 / 1e9
    )?;
    if let Some(dropped) = summary.dropped.filter(|&d| d > 0) {
        writeln!(
            out,
            "INCOMPLETE: the kernel dropped {dropped} event(s) since start (ring buffer full); counts and histograms below miss them"
        )?;
    }
    if summary.rows.is_empty() {
        writeln!(out, "no reclaim stalls")?;
    } else {
        writeln!(
            out,
            "{:<40} {:<18} {:>8} {:>11} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
            "CGROUP", "KIND", "COUNT", "TOTAL", "P50", "P90", "P99", "MAX", "RECLAIMED", "SCANNED"
        )?;
        for row in &summary.rows {
            writeln!(
                out,
                "{:<40} {:<18} {:>8} {:>11} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
                escape(&row.cgroup),
                row.kind,
                row.count,
                Ms(row.total_ns).to_string(),
                Ms(row.p50_ns).to_string(),
                Ms(row.p90_ns).to_string(),
                Ms(row.p99_ns).to_string(),
                Ms(row.max_ns).to_string(),
                row.pages_reclaimed,
                row.pages_scanned,
            )?;
        }
    }
    if !summary.memcg_pages.is_empty() {
        writeln!(
            out,
            "{:<40} {:>14} {:>14} {:>14} {:>14} {:>10}",
            "CGROUP (LRU PAGES)",
            "SCANNED DIRECT",
            "RECLAIMED",
            "SCANNED KSWAPD",
            "RECLAIMED",
            "EFFICIENCY"
        )?;
        for row in &summary.memcg_pages {
            let efficiency = row
                .efficiency
                .map_or("-".to_owned(), |e| format!("{:.0} %", e * 100.0));
            writeln!(
                out,
                "{:<40} {:>14} {:>14} {:>14} {:>14} {:>10}",
                escape(&row.cgroup),
                row.scanned_direct,
                row.reclaimed_direct,
                row.scanned_kswapd,
                row.reclaimed_kswapd,
                efficiency
            )?;
        }
    }
    if !summary.latency.is_empty() {
        writeln!(
            out,
            "{:<40} {:<11} {:>10} {:>10} {:>10} {:>10} {:>8}",
            "CGROUP (LATENCY)", "KIND", "COUNT", "P50", "P99", "MAX", "FAILED"
        )?;
        for row in &summary.latency {
            writeln!(
                out,
                "{:<40} {:<11} {:>10} {:>10} {:>10} {:>10} {:>8}",
                escape(&row.cgroup),
                row.kind,
                row.count,
                format!("<{}", Ms(row.p50_ns + 1)),
                format!("<{}", Ms(row.p99_ns + 1)),
                format!("<{}", Ms(row.max_ns + 1)),
                row.failed
            )?;
        }
    }
    pressure::write_pressure(out, summary)?;
    if !summary.faults.is_empty() {
        writeln!(
            out,
            "{:<40} {:>12} {:>10} {:>12} {:>10}",
            "CGROUP (FAULTS)", "MINOR", "MAJOR", "MINOR/S", "MAJOR/S"
        )?;
        for row in summary.faults.iter().take(20) {
            writeln!(
                out,
                "{:<40} {:>12} {:>10} {:>12.0} {:>10.1}",
                escape(&row.cgroup),
                row.minor,
                row.major,
                row.minor_per_s,
                row.major_per_s
            )?;
        }
    }
    if let Some(kswapd) = &summary.kswapd {
        let awake_pct = kswapd.awake_pct(summary.period_ns);
        writeln!(
            out,
            "kswapd (whole machine): awake {} ({awake_pct:.1} % of the period), {} wakes, {} runs ended, reclaimed {} of {} pages scanned",
            Ms(kswapd.awake_ns),
            kswapd.wakes,
            kswapd.runs,
            kswapd.pages_reclaimed,
            kswapd.pages_scanned
        )?;
    }
    if !summary.kswapd_wakeups.is_empty() {
        let wakeups: Vec<String> = summary
            .kswapd_wakeups
            .iter()
            .map(|(cgroup, n)| format!("{} {n}", escape(cgroup)))
            .collect();
        writeln!(
            out,
            "kswapd wake-up requests by cgroup: {}",
            wakeups.join(", ")
        )?;
    }
    Ok(())
}

impl<W: Write> Sink for HumanSink<W> {
    fn event(&mut self, event: &Event) -> Result<()> {
        writeln!(self.out, "{}", EventLine(event)).context("writing to stdout")?;
        // Someone is watching: an outlier must show up now, not at the next buffer flush.
        self.out.flush().context("writing to stdout")
    }

    fn summary(&mut self, summary: &Summary) -> Result<()> {
        write_table(&mut self.out, summary).context("writing to stdout")?;
        for row in &summary.rows {
            write_histogram(&mut self.out, row).context("writing to stdout")?;
        }
        self.out.flush().context("writing to stdout")
    }

    fn finish(&mut self, run: &RunSummary) -> Result<()> {
        // Only a tracing run has a ring buffer (and hooks).
        if !run.hooks.is_empty() {
            write!(
                self.out,
                "ring buffer: {} event(s) dropped by the kernel",
                run.dropped
            )
            .context("writing to stdout")?;
            let by_kind: Vec<String> = run
                .dropped_stalls
                .iter()
                .map(|(kind, lost)| format!("{kind} {lost}"))
                .collect();
            if !by_kind.is_empty() {
                write!(self.out, " (stalls: {})", by_kind.join(", "))
                    .context("writing to stdout")?;
            }
            writeln!(self.out).context("writing to stdout")?;
            let seen: Vec<String> = run
                .diagnostics
                .iter()
                .filter(|(_, count)| **count > 0)
                .map(|(kind, count)| format!("{kind} {count}"))
                .collect();
            if !seen.is_empty() {
                let lost: Vec<String> = run
                    .lost_windows
                    .iter()
                    .map(|(kind, lost)| format!("{kind} {lost}"))
                    .collect();
                let lost = if lost.is_empty() {
                    String::new()
                } else {
                    format!("; stalls lost: {}", lost.join(", "))
                };
                writeln!(
                    self.out,
                    "kernel diagnostics: {}{lost} (--bpf-log shows them as they happen)",
                    seen.join(", ")
                )
                .context("writing to stdout")?;
            }
        }
        self.out.flush().context("writing to stdout")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::{KswapdActivity, MemcgPages, StallStats};
    use memstall_common::StallKind;

    /// What other users can choose: a comm that clears the screen and retitles the window, a
    /// cgroup name with ESC, quotes, backslashes and markup, C1 CSI and a bidi override.
    const COMM: &str = "\x1b[2J\x1b]0;pwn\x07";
    const CGROUP: &str = "/x\x1b[31m\"q\\<b>\u{9b}1m\u{202e}";
    const COMM_SHOWN: &str = "\\x1b[2J\\x1b]0;pwn\\x07";
    const CGROUP_SHOWN: &str = "/x\\x1b[31m\"q\\<b>\\u{9b}1m\\u{202e}";

    fn assert_terminal_safe(text: &str) {
        for (i, c) in text.chars().enumerate() {
            assert!(
                c == '\n' || crate::term::is_terminal_safe(&c.to_string()),
                "raw {c:?} at char {i} in {text:?}"
            );
        }
    }

    #[test]
    fn names_other_users_chose_reach_the_terminal_escaped() {
        use crate::event::{Candidate, Event, Explanation, OomKill, Stall};
        let stall = Stall {
            kind: StallKind::MemcgReclaim,
            time_ns: 0,
            latency_ns: 1,
            memcg_id: 0,
            cgroup: Some(CGROUP.into()),
            pid: 1,
            tgid: 1,
            comm: COMM.into(),
            pages: 0,
            pages_scanned: 0,
            passes: 0,
            retries: 0,
            order: None,
            gfp_flags: 0,
            nid: None,
            reason: None,
            shrinker: None,
            kernel_stack: vec!["evil\x1b[Kframe".into()],
            user_stack: vec!["sym\nforged line".into()],
            labels: None,
        };
        let mut kill = OomKill {
            comm: COMM.into(),
            cgroup: Some(CGROUP.into()),
            victim_comm: COMM.into(),
            victim_cgroup: Some(CGROUP.into()),
            pid: 1,
            victim_pid: 2,
            explanation: Explanation {
                constraint: Some("memcg".into()),
                oom_cgroup: Some(CGROUP.into()),
                scoreboard: vec![Candidate {
                    comm: COMM.into(),
                    ..Default::default()
                }],
                ..Default::default()
            },
            ..Default::default()
        };
        kill.explanation.diagnosis.culprit = format!("{CGROUP} holds it");
        let mut stats = StallStats::default();
        stats.record(5_000, 1, 1);
        let summary = Summary {
            scope: crate::aggregate::Scope::Total,
            rows: vec![stats.row(CGROUP, StallKind::MemcgReclaim)],
            kswapd_wakeups: vec![(CGROUP.into(), 1)],
            memcg_pages: vec![MemcgPages::new(CGROUP.into(), [1; 6])],
            faults: vec![crate::aggregate::FaultRow {
                cgroup: CGROUP.into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let mut sink = HumanSink::new(Vec::new());
        sink.event(&Event::Stall(stall)).unwrap();
        sink.event(&Event::OomKill(Box::new(kill))).unwrap();
        sink.summary(&summary).unwrap();
        let text = String::from_utf8(sink.out).unwrap();
        assert_terminal_safe(&text);
        assert!(text.contains(COMM_SHOWN), "{text}");
        assert!(text.contains(CGROUP_SHOWN), "{text}");
        assert!(text.contains("    [user] sym\\x0aforged line\n"), "{text}");
        assert!(!text.contains("\nforged"), "a name forged a line: {text}");
    }

    #[test]
    fn table_and_histogram_render() {
        let mut stats = StallStats::default();
        for ns in [3_000, 5_000, 6_000, 40_000] {
            stats.record(ns, 8, 16);
        }
        let summary = Summary {
            scope: crate::aggregate::Scope::Total,
            period_ns: 2_000_000_000,
            rows: vec![stats.row("/svc", StallKind::MemcgReclaim)],
            kswapd_wakeups: vec![("/svc".into(), 7)],
            kswapd: Some(KswapdActivity {
                runs: 3,
                wakes: 2,
                awake_ns: 500_000_000,
                pages_scanned: 2_000,
                pages_reclaimed: 1_500,
            }),
            ..Default::default()
        };
        let mut sink = HumanSink::new(Vec::new());
        sink.summary(&summary).unwrap();
        let text = String::from_utf8(sink.out).unwrap();
        assert!(
            text.contains("--- memstall total summary (2.0 s) ---"),
            "{text}"
        );
        assert!(text.contains("/svc"), "{text}");
        assert!(text.contains("memcg_reclaim"), "{text}");
        assert!(
            text.contains("kswapd wake-up requests by cgroup: /svc 7"),
            "{text}"
        );
        assert!(
            text.contains("kswapd (whole machine): awake 500 ms (25.0 % of the period), 2 wakes, 3 runs ended, reclaimed 1500 of 2000 pages scanned"),
            "{text}"
        );
        assert!(
            text.contains(
                "         4 -> 7        : 2        |****************************************|"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "        32 -> 63       : 1        |********************                    |"
            ),
            "{text}"
        );
    }

    #[test]
    fn run_end_names_kernel_diagnostics_only_when_seen() {
        let mut run = RunSummary {
            hooks: vec!["memcg_reclaim: tp_btf vmscan".into()],
            diagnostics: [("end_without_begin", 0), ("in_flight_full", 0)].into(),
            ..Default::default()
        };
        let mut sink = HumanSink::new(Vec::new());
        sink.finish(&run).unwrap();
        let text = String::from_utf8(sink.out).unwrap();
        assert!(!text.contains("diagnostics"), "{text}");
        run.diagnostics.insert("end_without_begin", 4);
        run.lost_windows.insert("memcg_reclaim", 4);
        let mut sink = HumanSink::new(Vec::new());
        sink.finish(&run).unwrap();
        let text = String::from_utf8(sink.out).unwrap();
        assert!(
            text.contains("kernel diagnostics: end_without_begin 4; stalls lost: memcg_reclaim 4"),
            "{text}"
        );
    }
}
