//! `memstall soak`: trace for `--duration`, sample the watched cgroups' memory at every
//! interval, then hold the run against thresholds (OOM kills, p99 per stall kind, stall time
//! per minute, memory growth per hour) and write a JSON and an HTML report. A breach is exit
//! code 3, each one named on stderr.
//!
//! The [`SoakSink`] sees OOM kills as events and everything else in interval summaries; the
//! [`Soak`] handle stays with the caller and reads the verdict the sink leaves at `finish`.
mod checks;
mod output;
mod series;
#[cfg(test)]
mod tests;

use std::{
    collections::BTreeMap,
    fs,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::Result;
use checks::stall_ns;
use serde::Serialize;

pub use checks::{
    Check, Limits, Measured, MinuteWindow, P99Limit, evaluate, num, parse_limit, parse_p99_limit,
};
pub use series::{MAX_POINTS, MemorySample, MemorySource, Merge, Series, Trend};

use crate::{
    app::UserError,
    cgroup::{CgroupVersion, MemoryHierarchy},
    cli::SoakArgs,
    decode::Event,
    sink::{self, RunSummary, Sink, Summary},
    stats::SummaryRow,
    target::Target,
    term,
};

/// How often memory is sampled and intervals close when `--interval` is not given.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
/// OOM kills kept for the report's marks and table (all are counted).
const MAX_MARKS: usize = 1000;
const MIB: f64 = (1u64 << 20) as f64;

/// A watched cgroup's (or the hierarchy's) memory over the run.
pub struct Watched {
    pub label: String,
    source: MemorySource,
    initial: Option<MemorySample>,
    pub usage: Series,
    pub working_set: Series,
    pub trend: Trend,
    pub first: Option<MemorySample>,
    pub last: Option<MemorySample>,
    pub peak_usage: u64,
    pub unreadable: u64,
}

/// An OOM kill as the report marks it.
#[derive(Clone, Debug, Serialize)]
pub struct OomMark {
    pub time_ns: u64,
    pub victim_pid: u32,
    pub victim_comm: String,
    pub victim_cgroup: Option<String>,
    pub cgroup: Option<String>,
}

/// Per-kind interval percentiles (the worst cgroup's), in ms.
pub struct KindSeries {
    pub p50: Series,
    pub p99: Series,
}

/// Everything the sink gathered; read by output.rs.
pub struct Record {
    pub limits: Limits,
    pub html: PathBuf,
    pub json: PathBuf,
    pub interval: Duration,
    pub hierarchy: &'static str,
    /// Unix ns of the run's start, known from the first summary.
    pub t0_ns: Option<u64>,
    pub watched: Vec<Watched>,
    pub kinds: BTreeMap<&'static str, KindSeries>,
    pub stall_per_minute: Series,
    window: MinuteWindow,
    pub worst_minute: Option<(f64, f64)>,
    interval_stall_ns: u64,
    interval_period_ns: u64,
    pub intervals: u64,
    pub minor_per_s: Series,
    pub major_per_s: Series,
    pub oom_kills: u64,
    pub marks: Vec<OomMark>,
    pub totals: Vec<SummaryRow>,
    pub run: Option<RunSummary>,
}

impl Record {
    fn secs(&self, time_ns: u64) -> f64 {
        time_ns.saturating_sub(self.t0_ns.unwrap_or(time_ns)) as f64 / 1e9
    }

    fn sample_memory(&mut self, t: f64) {
        for w in &mut self.watched {
            let Some(sample) = w.source.read() else {
                w.unreadable += 1;
                continue;
            };
            w.usage.push(t, sample.usage as f64);
            w.working_set.push(t, sample.working_set as f64);
            w.trend.add(t, sample.usage as f64);
            w.first.get_or_insert(sample);
            w.last = Some(sample);
            w.peak_usage = w.peak_usage.max(sample.usage);
        }
    }

    fn start(&mut self, summary: &Summary) {
        if self.t0_ns.is_some() {
            return;
        }
        self.t0_ns = Some(summary.time_ns.saturating_sub(summary.period_ns));
        // The reading taken before loading stands for the start.
        for w in &mut self.watched {
            if let Some(sample) = w.initial.take() {
                w.usage.push(0.0, sample.usage as f64);
                w.working_set.push(0.0, sample.working_set as f64);
                w.trend.add(0.0, sample.usage as f64);
                w.first = Some(sample);
                w.peak_usage = sample.usage;
            }
        }
    }

    fn minute(&mut self, t: f64, period_ns: u64, stall: u64) {
        if let Some(ms) = self.window.add(period_ns, stall) {
            self.stall_per_minute.push(t, ms);
            if self.worst_minute.is_none_or(|(_, worst)| ms > worst) {
                self.worst_minute = Some((t, ms));
            }
        }
    }

    fn interval(&mut self, summary: &Summary) {
        let t = self.secs(summary.time_ns);
        self.intervals += 1;
        let mut worst: BTreeMap<&'static str, (u64, u64)> = BTreeMap::new();
        for row in summary.rows.iter().filter(|r| r.count > 0) {
            let entry = worst.entry(row.kind).or_default();
            *entry = (entry.0.max(row.p50_ns), entry.1.max(row.p99_ns));
        }
        for (kind, (p50, p99)) in worst {
            let series = self.kinds.entry(kind).or_insert_with(|| KindSeries {
                p50: Series::new(Merge::Max),
                p99: Series::new(Merge::Max),
            });
            series.p50.push(t, p50 as f64 / 1e6);
            series.p99.push(t, p99 as f64 / 1e6);
        }
        let stall = stall_ns(&summary.rows);
        self.interval_stall_ns = self.interval_stall_ns.saturating_add(stall);
        self.interval_period_ns = self.interval_period_ns.saturating_add(summary.period_ns);
        self.minute(t, summary.period_ns, stall);
        let (minor, major) = summary.faults.iter().fold((0.0, 0.0), |(a, b), row| {
            (a + row.minor_per_s, b + row.major_per_s)
        });
        self.minor_per_s.push(t, minor);
        self.major_per_s.push(t, major);
        self.sample_memory(t);
    }

    fn total(&mut self, summary: &Summary) {
        let t = self.secs(summary.time_ns);
        // The tail after the last interval counts toward the stall windows too.
        let tail_period = summary.period_ns.saturating_sub(self.interval_period_ns);
        let tail_stall = stall_ns(&summary.rows).saturating_sub(self.interval_stall_ns);
        if tail_period > 0 {
            self.minute(t, tail_period, tail_stall);
        }
        self.totals = summary
            .rows
            .iter()
            .map(|row| SummaryRow {
                buckets: Vec::new(),
                ..row.clone()
            })
            .collect();
        self.sample_memory(t);
    }

    pub fn measured(&self) -> Measured {
        let growth = self
            .watched
            .iter()
            .map(|w| {
                let slope = w
                    .trend
                    .slope()
                    .map(|bytes_per_s| bytes_per_s * 3600.0 / MIB);
                let detail = match (w.first, w.last, slope) {
                    (Some(first), Some(last), Some(_)) => format!(
                        "usage {} -> {} MiB, {} sample(s)",
                        num(first.usage as f64 / MIB),
                        num(last.usage as f64 / MIB),
                        w.trend.samples()
                    ),
                    _ => format!(
                        "{} readable sample(s), {} unreadable",
                        w.trend.samples(),
                        w.unreadable
                    ),
                };
                (w.label.clone(), slope, detail)
            })
            .collect();
        let last_kill = self.marks.last().map(|m| {
            format!(
                "{} pid {} in {}",
                m.victim_comm,
                m.victim_pid,
                m.victim_cgroup.as_deref().unwrap_or("?")
            )
        });
        Measured {
            oom_kills: self.oom_kills,
            last_kill,
            totals: self.totals.clone(),
            worst_minute: self.worst_minute,
            growth,
        }
    }
}

/// The run's checks, left by the sink at `finish`.
type SharedChecks = Arc<Mutex<Option<Vec<Check>>>>;

pub struct SoakSink {
    record: Record,
    checks: SharedChecks,
}

impl Sink for SoakSink {
    fn event(&mut self, event: &Event) -> Result<()> {
        if let Event::OomKill(kill) = event {
            let record = &mut self.record;
            record.oom_kills += 1;
            if record.marks.len() < MAX_MARKS {
                record.marks.push(OomMark {
                    time_ns: kill.time_ns,
                    victim_pid: kill.victim_pid,
                    victim_comm: kill.victim_comm.clone(),
                    victim_cgroup: kill.victim_cgroup.clone(),
                    cgroup: kill.cgroup.clone(),
                });
            }
        }
        Ok(())
    }

    fn summary(&mut self, summary: &Summary) -> Result<()> {
        match summary.scope {
            "interval" => {
                self.record.start(summary);
                self.record.interval(summary);
            }
            "total" => {
                self.record.start(summary);
                self.record.total(summary);
            }
            _ => {}
        }
        Ok(())
    }

    fn finish(&mut self, run: &RunSummary) -> Result<()> {
        self.record.run = Some(run.clone());
        let checks = evaluate(&self.record.limits, &self.record.measured());
        output::write(&self.record, &checks)?;
        *self.checks.lock().unwrap_or_else(|p| p.into_inner()) = Some(checks);
        Ok(())
    }
}

/// The caller's side of a soak run: attaches the sink, then reads the verdict.
pub struct Soak {
    sink: Option<SoakSink>,
    checks: SharedChecks,
    html: PathBuf,
    json: PathBuf,
}

impl Soak {
    /// Checks the flags and creates both report files (bad input: exit 2), and reads the
    /// watched cgroups' memory once, standing for the start.
    pub fn open(args: &SoakArgs, hierarchy: &MemoryHierarchy, targets: &[Target]) -> Result<Self> {
        if args.trace.duration.is_none() {
            return Err(UserError::input("soak needs --duration SECS").into());
        }
        if args.report == args.report_json {
            return Err(UserError::input("--report and --report-json must differ").into());
        }
        for (flag, path) in [
            ("--report", &args.report),
            ("--report-json", &args.report_json),
        ] {
            fs::File::create(path).map_err(|err| {
                UserError::input(format!("cannot write {flag} {}: {err}", path.display()))
            })?;
        }
        let watched: Vec<(String, MemorySource)> = if targets.is_empty() {
            let source = match hierarchy.version {
                CgroupVersion::V1 => MemorySource::Cgroup {
                    dir: hierarchy.root.clone(),
                    version: CgroupVersion::V1,
                },
                CgroupVersion::V2 => MemorySource::V2Root {
                    dir: hierarchy.root.clone(),
                },
            };
            vec![("/".to_owned(), source)]
        } else {
            targets
                .iter()
                .map(|t| {
                    let dir = t.dir.clone();
                    let version = hierarchy.version;
                    (t.relative.clone(), MemorySource::Cgroup { dir, version })
                })
                .collect()
        };
        if targets.is_empty() && args.max_growth_per_hour.is_some() {
            term::say(format_args!(
                "note: soak: without --cgroup, memory growth is the whole hierarchy's"
            ));
        }
        let record = Record {
            limits: Limits {
                max_oom_kills: args.max_oom_kills,
                max_p99: args.max_p99.clone(),
                max_stall_per_minute_ms: args.max_stall_per_minute,
                max_growth_mib_per_hour: args.max_growth_per_hour,
            },
            html: args.report.clone(),
            json: args.report_json.clone(),
            interval: args.trace.interval.unwrap_or(DEFAULT_INTERVAL),
            hierarchy: hierarchy.version_name(),
            t0_ns: None,
            watched: watched
                .into_iter()
                .map(|(label, source)| Watched {
                    label,
                    initial: source.read(),
                    source,
                    usage: Series::new(Merge::Mean),
                    working_set: Series::new(Merge::Mean),
                    trend: Trend::default(),
                    first: None,
                    last: None,
                    peak_usage: 0,
                    unreadable: 0,
                })
                .collect(),
            kinds: BTreeMap::new(),
            stall_per_minute: Series::new(Merge::Max),
            window: MinuteWindow::default(),
            worst_minute: None,
            interval_stall_ns: 0,
            interval_period_ns: 0,
            intervals: 0,
            minor_per_s: Series::new(Merge::Mean),
            major_per_s: Series::new(Merge::Mean),
            oom_kills: 0,
            marks: Vec::new(),
            totals: Vec::new(),
            run: None,
        };
        let checks = SharedChecks::default();
        Ok(Self {
            sink: Some(SoakSink {
                record,
                checks: checks.clone(),
            }),
            checks,
            html: args.report.clone(),
            json: args.report_json.clone(),
        })
    }

    /// Adds the soak sink (last, so the others flush first) and returns the interval to run
    /// with: `--interval`, else [`DEFAULT_INTERVAL`], which the other sinks then do not see.
    pub fn attach(
        &mut self,
        sinks: &mut Vec<Box<dyn Sink>>,
        interval: Option<Duration>,
    ) -> Duration {
        if interval.is_none() {
            sink::hide_intervals(sinks);
        }
        if let Some(soak) = self.sink.take() {
            sinks.push(Box::new(soak));
        }
        interval.unwrap_or(DEFAULT_INTERVAL)
    }

    /// One stderr line per breach, then exit code 3; or a line saying all checks hold.
    pub fn verdict(&self) -> Result<()> {
        let checks = self.checks.lock().unwrap_or_else(|p| p.into_inner()).take();
        let Some(checks) = checks else {
            anyhow::bail!("soak: the run ended without a verdict");
        };
        let reports = format!("report {}, {}", self.html.display(), self.json.display());
        let breaches: Vec<&Check> = checks.iter().filter(|c| !c.ok).collect();
        for check in checks.iter().filter(|c| c.ok && c.value.is_none()) {
            term::say(format_args!("soak: note: {}", check.detail));
        }
        if breaches.is_empty() {
            term::say(format_args!(
                "soak: pass: all {} check(s) hold; {reports}",
                checks.len()
            ));
            return Ok(());
        }
        for check in &breaches {
            term::say(format_args!("soak: breach: {}", check.detail));
        }
        Err(UserError::breach(format!(
            "soak: {} of {} check(s) breached; {reports}",
            breaches.len(),
            checks.len()
        ))
        .into())
    }
}
