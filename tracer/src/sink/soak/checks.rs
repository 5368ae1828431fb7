//! The soak gate's thresholds: stall time per minute windows, and holding the run's
//! measurements against them, one line per check.
use std::collections::VecDeque;

use serde::Serialize;

use crate::aggregate::{PressureRow, SummaryRow};

/// Stall time is judged over windows this long.
const MINUTE_NS: u64 = 60_000_000_000;

/// `--max-p99 KIND=MS`.
#[derive(Clone, Debug, PartialEq)]
pub struct P99Limit {
    pub kind: &'static str,
    pub ms: f64,
}

/// The thresholds of one soak run.
#[derive(Clone, Debug, Default)]
pub struct Limits {
    pub max_oom_kills: u64,
    /// `--max-oom-risk`: most OOM risk warnings allowed (unset: not checked).
    pub max_oom_risk: Option<u64>,
    pub max_p99: Vec<P99Limit>,
    pub max_stall_per_minute_ms: Option<f64>,
    pub max_growth_mib_per_hour: Option<f64>,
}

/// One threshold held against what the run measured.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Check {
    /// `max_oom_kills`, `max_oom_risk`, `max_p99`, `max_stall_per_minute`, `max_growth_per_hour`.
    pub check: &'static str,
    /// The stall kind or cgroup the check is about.
    pub subject: Option<String>,
    pub limit: f64,
    /// `null`: nothing to measure (e.g. fewer than two memory samples).
    pub value: Option<f64>,
    pub unit: &'static str,
    pub ok: bool,
    /// One line: `memcg_reclaim p99 812.3 ms > 500 ms (in /svc)`.
    pub detail: String,
}

/// What the checks are evaluated on.
#[derive(Clone, Debug, Default)]
pub struct Measured {
    pub oom_kills: u64,
    pub last_kill: Option<String>,
    pub oom_risks: u64,
    pub last_risk: Option<String>,
    /// The run's total rows, per (cgroup, kind).
    pub totals: Vec<SummaryRow>,
    /// Worst stall time per minute (ms) and when its window ended (s since start).
    pub worst_minute: Option<(f64, f64)>,
    /// Per watched cgroup: growth (MiB/h) if measurable, and the detail for the line.
    pub growth: Vec<(String, Option<f64>, String)>,
}

/// A number for a one-line message: a decimal where it matters, none where it does not.
pub fn num(value: f64) -> String {
    let digits = match value.abs() {
        v if v == 0.0 || v >= 100.0 => 1,
        v if v >= 1.0 => 2,
        v => (3.0 - v.log10().floor()).clamp(3.0, 9.0) as usize,
    };
    let text = format!("{value:.digits$}");
    let text = if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.')
    } else {
        &text
    };
    text.to_owned()
}

pub fn evaluate(limits: &Limits, measured: &Measured) -> Vec<Check> {
    let mut checks = Vec::new();
    let kills = measured.oom_kills as f64;
    let ok = measured.oom_kills <= limits.max_oom_kills;
    checks.push(Check {
        check: "max_oom_kills",
        subject: None,
        limit: limits.max_oom_kills as f64,
        value: Some(kills),
        unit: "kills",
        ok,
        detail: format!(
            "OOM kills {} {} {}{}",
            measured.oom_kills,
            if ok { "<=" } else { ">" },
            limits.max_oom_kills,
            measured
                .last_kill
                .as_ref()
                .map(|k| format!(" (last: {k})"))
                .unwrap_or_default()
        ),
    });
    if let Some(max) = limits.max_oom_risk {
        let ok = measured.oom_risks <= max;
        checks.push(Check {
            check: "max_oom_risk",
            subject: None,
            limit: max as f64,
            value: Some(measured.oom_risks as f64),
            unit: "warnings",
            ok,
            detail: format!(
                "OOM risk warnings {} {} {max}{}",
                measured.oom_risks,
                if ok { "<=" } else { ">" },
                measured
                    .last_risk
                    .as_ref()
                    .map(|r| format!(" (last: {r})"))
                    .unwrap_or_default()
            ),
        });
    }
    for limit in &limits.max_p99 {
        // Across cgroups the worst p99 bounds the merged one from above: exact with one.
        let worst = measured
            .totals
            .iter()
            .filter(|r| r.kind == limit.kind && r.count > 0)
            .max_by_key(|r| r.p99_ns);
        let value = worst.map_or(0.0, |r| r.p99_ns as f64 / 1e6);
        let ok = value <= limit.ms;
        let detail = match worst {
            Some(row) => format!(
                "{} p99 {} ms {} {} ms (in {}, {} stall(s))",
                limit.kind,
                num(value),
                if ok { "<=" } else { ">" },
                num(limit.ms),
                row.cgroup,
                row.count
            ),
            None => format!("{} p99: no stalls (limit {} ms)", limit.kind, num(limit.ms)),
        };
        checks.push(Check {
            check: "max_p99",
            subject: Some(limit.kind.to_owned()),
            limit: limit.ms,
            value: Some(value),
            unit: "ms",
            ok,
            detail,
        });
    }
    if let Some(max) = limits.max_stall_per_minute_ms {
        let (at, value) = measured.worst_minute.unwrap_or((0.0, 0.0));
        let ok = value <= max;
        checks.push(Check {
            check: "max_stall_per_minute",
            subject: None,
            limit: max,
            value: Some(value),
            unit: "ms/min",
            ok,
            detail: format!(
                "stall time {} ms per minute {} {} ms (worst window ending at {} s)",
                num(value),
                if ok { "<=" } else { ">" },
                num(max),
                num(at)
            ),
        });
    }
    if let Some(max) = limits.max_growth_mib_per_hour {
        for (cgroup, growth, detail) in &measured.growth {
            let ok = growth.is_none_or(|g| g <= max);
            let detail = match growth {
                Some(g) => format!(
                    "memory growth {} MiB/h {} {} MiB/h ({cgroup}: {detail})",
                    num(*g),
                    if ok { "<=" } else { ">" },
                    num(max)
                ),
                None => format!("memory growth of {cgroup} not measured: {detail}"),
            };
            checks.push(Check {
                check: "max_growth_per_hour",
                subject: Some(cgroup.clone()),
                limit: max,
                value: *growth,
                unit: "MiB/h",
                ok,
                detail,
            });
        }
    }
    checks
}

/// Stall time over the last minute of intervals, scaled to a minute (so the first minute and
/// intervals longer than a minute are judged at the same rate).
#[derive(Debug, Default)]
pub struct MinuteWindow {
    intervals: VecDeque<(u64, u64)>,
}

impl MinuteWindow {
    /// Adds an interval (`period_ns`, stall ns in it); returns ms of stall per minute.
    pub fn add(&mut self, period_ns: u64, stall_ns: u64) -> Option<f64> {
        self.intervals.push_back((period_ns, stall_ns));
        let span = |w: &VecDeque<(u64, u64)>| w.iter().map(|i| i.0).sum::<u64>();
        while self.intervals.len() > 1 && span(&self.intervals) > MINUTE_NS {
            self.intervals.pop_front();
        }
        let period: u64 = span(&self.intervals);
        let stall: u64 = self.intervals.iter().map(|i| i.1).sum();
        (period > 0).then(|| stall as f64 / 1e6 * MINUTE_NS as f64 / period as f64)
    }
}

/// Stall time the watched tasks waited (kswapd's wake time blocks nobody).
/// The watched cgroups' stall time in a summary: nested stalls once (a throttle inside a
/// reclaim is not added to it), kswapd's runs not at all (nobody waits for them).
pub(super) fn stall_ns(pressure: &[PressureRow]) -> u64 {
    pressure
        .iter()
        .map(|r| r.stall_ns)
        .fold(0, u64::saturating_add)
}
