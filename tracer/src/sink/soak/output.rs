//! The soak run's reports: JSON for machines (verdict, checks, totals, series) and HTML with
//! charts for people (rendered by report.rs).
use std::{collections::BTreeMap, fs, path::Path};

use anyhow::{Context as _, Result};
use serde::Serialize;

use super::report::{self, Chart, Line, Report, Stroke, Table};
use super::{Check, MIB, OomMark, Record, Reports, num};
use crate::pipeline::RunSummary;

#[derive(Serialize)]
struct Memory<'a> {
    cgroup: &'a str,
    samples: u64,
    unreadable: u64,
    first_usage_bytes: Option<u64>,
    last_usage_bytes: Option<u64>,
    last_working_set_bytes: Option<u64>,
    peak_usage_bytes: u64,
    growth_mib_per_hour: Option<f64>,
    /// `[seconds since start, bytes]`, at most 2000 points (neighbours averaged).
    usage: Vec<(f64, f64)>,
    working_set: Vec<(f64, f64)>,
}

#[derive(Serialize)]
struct Percentiles {
    p50_ms: Vec<(f64, f64)>,
    p99_ms: Vec<(f64, f64)>,
}

#[derive(Serialize)]
struct StallTotal<'a> {
    cgroup: &'a str,
    kind: &'a str,
    count: u64,
    total_ns: u64,
    p50_ns: u64,
    p90_ns: u64,
    p99_ns: u64,
    p999_ns: u64,
    max_ns: u64,
}

#[derive(Serialize)]
struct JsonReport<'a> {
    /// `pass` or `breach`.
    verdict: &'static str,
    breaches: Vec<&'a str>,
    checks: &'a [Check],
    hierarchy: &'static str,
    start_ns: Option<u64>,
    interval_ns: u64,
    intervals: u64,
    oom_kills: u64,
    oom_kill_marks: &'a [OomMark],
    stalls: Vec<StallTotal<'a>>,
    worst_stall_per_minute_ms: Option<f64>,
    memory: Vec<Memory<'a>>,
    stall_percentiles: BTreeMap<&'a str, Percentiles>,
    stall_per_minute_ms: Vec<(f64, f64)>,
    minor_faults_per_s: Vec<(f64, f64)>,
    major_faults_per_s: Vec<(f64, f64)>,
    run: Option<&'a RunSummary>,
}

/// Writes a whole report into the file opened at the start (emptied first: a report is
/// written once, but never leave an old tail behind).
fn write_file(file: &mut fs::File, path: &Path, flag: &str, text: &str) -> Result<()> {
    use std::io::{Seek as _, Write as _};
    file.set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| file.write_all(text.as_bytes()))
        .and_then(|()| file.flush())
        .with_context(|| format!("cannot write {flag} {}", path.display()))
}

pub fn write(record: &Record, checks: &[Check], files: &mut Reports) -> Result<()> {
    let breaches: Vec<&str> = checks
        .iter()
        .filter(|c| !c.ok)
        .map(|c| c.detail.as_str())
        .collect();
    let json = JsonReport {
        verdict: if breaches.is_empty() {
            "pass"
        } else {
            "breach"
        },
        breaches,
        checks,
        hierarchy: record.hierarchy,
        start_ns: record.t0_ns,
        interval_ns: record.interval.as_nanos() as u64,
        intervals: record.intervals,
        oom_kills: record.oom_kills,
        oom_kill_marks: &record.marks,
        stalls: record
            .totals
            .iter()
            .map(|r| StallTotal {
                cgroup: &r.cgroup,
                kind: r.kind,
                count: r.count,
                total_ns: r.total_ns,
                p50_ns: r.p50_ns,
                p90_ns: r.p90_ns,
                p99_ns: r.p99_ns,
                p999_ns: r.p999_ns,
                max_ns: r.max_ns,
            })
            .collect(),
        worst_stall_per_minute_ms: record.worst_minute.map(|w| w.1),
        memory: record
            .watched
            .iter()
            .map(|w| Memory {
                cgroup: &w.label,
                samples: w.trend.samples(),
                unreadable: w.unreadable,
                first_usage_bytes: w.first.map(|s| s.usage),
                last_usage_bytes: w.last.map(|s| s.usage),
                last_working_set_bytes: w.last.map(|s| s.working_set),
                peak_usage_bytes: w.peak_usage,
                growth_mib_per_hour: w.trend.slope().map(|s| s * 3600.0 / MIB),
                usage: w.usage.points(),
                working_set: w.working_set.points(),
            })
            .collect(),
        stall_percentiles: record
            .kinds
            .iter()
            .map(|(kind, s)| {
                let p = Percentiles {
                    p50_ms: s.p50.points(),
                    p99_ms: s.p99.points(),
                };
                (*kind, p)
            })
            .collect(),
        stall_per_minute_ms: record.stall_per_minute.points(),
        minor_faults_per_s: record.minor_per_s.points(),
        major_faults_per_s: record.major_per_s.points(),
        run: record.run.as_ref(),
    };
    let mut text = serde_json::to_string_pretty(&json).context("encoding the soak report")?;
    text.push('\n');
    write_file(&mut files.json, &record.json, "--report-json", &text)?;
    write_file(
        &mut files.html,
        &record.html,
        "--report",
        &report::html(&html_report(record, checks)),
    )
}

fn mib(points: Vec<(f64, f64)>) -> Vec<(f64, f64)> {
    points.into_iter().map(|(t, v)| (t, v / MIB)).collect()
}

fn html_report(record: &Record, checks: &[Check]) -> Report {
    let secs = |ns: u64| ns.saturating_sub(record.t0_ns.unwrap_or(ns)) as f64 / 1e9;
    let span = record
        .run
        .as_ref()
        .map_or(0.0, |r| r.duration_ns as f64 / 1e9);
    let marks: Vec<f64> = record.marks.iter().map(|m| secs(m.time_ns)).collect();
    let breached = checks.iter().filter(|c| !c.ok).count();
    let limits = &record.limits;

    let mut memory = Chart {
        title: "Memory usage and working set".into(),
        y_label: "MiB".into(),
        marks: marks.clone(),
        empty: "memory could not be read".into(),
        ..Default::default()
    };
    for (color, w) in record.watched.iter().enumerate() {
        memory.lines.push(Line {
            name: format!("{} usage", w.label),
            points: mib(w.usage.points()),
            color,
            stroke: Stroke::Solid,
        });
        memory.lines.push(Line {
            name: format!("{} working set", w.label),
            points: mib(w.working_set.points()),
            color,
            stroke: Stroke::Dashed,
        });
        let ends = w.usage.points();
        if let (Some(slope), Some(a), Some(b)) = (w.trend.slope(), ends.first(), ends.last()) {
            let fit = |t: f64| w.trend.at(t).unwrap_or(0.0) / MIB;
            memory.lines.push(Line {
                name: format!("{} trend {} MiB/h", w.label, num(slope * 3600.0 / MIB)),
                points: vec![(a.0, fit(a.0)), (b.0, fit(b.0))],
                color,
                stroke: Stroke::Trend,
            });
        }
    }
    let mut latency = Chart {
        title: "Stall latency per interval (worst cgroup)".into(),
        y_label: "ms (log)".into(),
        log_y: true,
        marks: marks.clone(),
        empty: "no stalls in the watched cgroups".into(),
        ..Default::default()
    };
    for (color, (kind, s)) in record.kinds.iter().enumerate() {
        for (name, series, stroke) in [
            ("p50", &s.p50, Stroke::Dashed),
            ("p99", &s.p99, Stroke::Solid),
        ] {
            latency.lines.push(Line {
                name: format!("{kind} {name}"),
                points: series.points(),
                color,
                stroke,
            });
        }
    }
    latency.limits = limits
        .max_p99
        .iter()
        .map(|l| (format!("{} p99 {} ms", l.kind, num(l.ms)), l.ms))
        .collect();
    let stall_minute = Chart {
        title: "Stall time per minute (last minute of intervals, scaled)".into(),
        y_label: "ms per minute".into(),
        lines: vec![Line {
            name: "stall time".into(),
            points: record.stall_per_minute.points(),
            ..Default::default()
        }],
        limits: limits
            .max_stall_per_minute_ms
            .map(|ms| (format!("{} ms", num(ms)), ms))
            .into_iter()
            .collect(),
        marks: marks.clone(),
        zero: true,
        empty: "no interval ended".into(),
        ..Default::default()
    };
    let faults = Chart {
        title: "Page faults per second".into(),
        y_label: "faults/s".into(),
        lines: vec![
            Line {
                name: "minor".into(),
                points: record.minor_per_s.points(),
                ..Default::default()
            },
            Line {
                name: "major".into(),
                points: record.major_per_s.points(),
                color: 1,
                stroke: Stroke::Solid,
            },
        ],
        marks,
        zero: true,
        empty: "no fault counts (--faults off?)".into(),
        ..Default::default()
    };

    let checks_table = Table {
        caption: "Checks".into(),
        head: ["check", "limit", "measured", "result"]
            .map(String::from)
            .to_vec(),
        rows: checks
            .iter()
            .map(|c| {
                let name = match &c.subject {
                    Some(s) => format!("{} {s}", c.check),
                    None => c.check.to_owned(),
                };
                let value = c
                    .value
                    .map_or("–".into(), |v| format!("{} {}", num(v), c.unit));
                let result = if c.ok { "ok" } else { "BREACH" };
                vec![
                    name,
                    format!("{} {}", num(c.limit), c.unit),
                    value,
                    format!("{result}: {}", c.detail),
                ]
            })
            .collect(),
    };
    let ms = |ns: u64| num(ns as f64 / 1e6);
    let stalls = Table {
        caption: "Stalls over the run".into(),
        head: [
            "cgroup", "kind", "count", "total ms", "p50 ms", "p99 ms", "max ms",
        ]
        .map(String::from)
        .to_vec(),
        rows: record
            .totals
            .iter()
            .map(|r| {
                vec![
                    r.cgroup.clone(),
                    r.kind.into(),
                    r.count.to_string(),
                    ms(r.total_ns),
                    ms(r.p50_ns),
                    ms(r.p99_ns),
                    ms(r.max_ns),
                ]
            })
            .collect(),
    };
    let kills = Table {
        caption: format!("OOM kills ({})", record.oom_kills),
        head: ["at s", "victim", "victim cgroup", "triggered in"]
            .map(String::from)
            .to_vec(),
        rows: record
            .marks
            .iter()
            .map(|m| {
                vec![
                    num(secs(m.time_ns)),
                    format!("{} pid {}", m.victim_comm, m.victim_pid),
                    m.victim_cgroup.clone().unwrap_or_else(|| "?".into()),
                    m.cgroup.clone().unwrap_or_else(|| "?".into()),
                ]
            })
            .collect(),
    };
    let watched: Vec<&str> = record.watched.iter().map(|w| w.label.as_str()).collect();
    let mut facts = vec![
        ("cgroups".to_owned(), watched.join(", ")),
        (
            "memory hierarchy".to_owned(),
            format!("cgroup {}", record.hierarchy),
        ),
        ("duration".to_owned(), format!("{} s", num(span))),
        (
            "interval".to_owned(),
            format!(
                "{} s ({} closed)",
                num(record.interval.as_secs_f64()),
                record.intervals
            ),
        ),
        ("OOM kills".to_owned(), record.oom_kills.to_string()),
    ];
    if let Some(run) = &record.run {
        facts.push((
            "stalls recorded".into(),
            format!("{} ({} dropped by the kernel)", run.stalls, run.dropped),
        ));
    }
    Report {
        title: "memstall soak report".into(),
        ok: breached == 0,
        banner: if breached == 0 {
            format!("PASS: all {} check(s) hold", checks.len())
        } else {
            format!("BREACH: {breached} of {} check(s) breached", checks.len())
        },
        facts,
        tables_before: vec![checks_table],
        charts: vec![memory, latency, stall_minute, faults],
        tables_after: vec![stalls, kills],
        span_secs: span,
    }
}
