//! `memstall soak`: trace for `--duration`, sample the watched cgroups' memory at every
//! interval, then hold the run against thresholds (OOM kills, p99 per stall kind, stall time
//! per minute, memory growth per hour) and write a JSON and an HTML report. A breach is exit
//! code 3, each one named on stderr.
//!
//! The [`SoakSink`] sees OOM kills as events and everything else in interval summaries; the
//! [`Soak`] handle stays with the caller and reads the verdict the sink leaves at `finish`.
mod checks;
mod output;
mod record;
pub mod report;
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

pub use checks::{Check, Limits, Measured, MinuteWindow, P99Limit, evaluate, num};
use record::MAX_MARKS;
pub use record::{OomMark, Record, Watched};
pub use series::{MemorySource, Merge, Series, Trend};

use crate::{
    aggregate::{Scope, Summary},
    cgroup::{CgroupVersion, MemoryHierarchy, Target},
    error::UserError,
    event::{Event, RiskReason},
    pipeline::{RunSummary, Sink},
    sink::{self, file},
    term,
};

/// How often memory is sampled and intervals close when `--interval` is not given.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);

/// What a soak run is held against and where it reports (from `memstall soak`'s flags).
#[derive(Clone, Debug)]
pub struct SoakConfig {
    pub limits: Limits,
    /// The HTML report (charts as inline SVG, self-contained).
    pub report: PathBuf,
    /// The JSON report (verdict, checks, totals, series).
    pub report_json: PathBuf,
    /// `--interval`, if given.
    pub interval: Option<Duration>,
}

const MIB: f64 = (1u64 << 20) as f64;

/// The run's checks, left by the sink at `finish`.
type SharedChecks = Arc<Mutex<Option<Vec<Check>>>>;

/// The report files, opened when the run starts.
pub struct Reports {
    pub html: fs::File,
    pub json: fs::File,
}

pub struct SoakSink {
    record: Record,
    files: Reports,
    checks: SharedChecks,
}

impl Sink for SoakSink {
    fn event(&mut self, event: &Event) -> Result<()> {
        if let Event::OomRisk(risk) = event
            && risk.reason != RiskReason::Cleared
        {
            self.record.oom_risks += 1;
            self.record.last_risk = Some(format!(
                "{}: {} kB left{}",
                risk.cgroup,
                risk.headroom_kb,
                risk.eta_s
                    .map(|eta| format!(", limit in {eta:.0} s"))
                    .unwrap_or_default()
            ));
        }
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
            Scope::Interval => {
                self.record.start(summary);
                self.record.interval(summary);
            }
            Scope::Total => {
                self.record.start(summary);
                self.record.total(summary);
            }
            Scope::Removed => {}
        }
        Ok(())
    }

    fn finish(&mut self, run: &RunSummary) -> Result<()> {
        self.record.run = Some(run.clone());
        let checks = evaluate(&self.record.limits, &self.record.measured());
        output::write(&self.record, &checks, &mut self.files)?;
        *self
            .checks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(checks);
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
    pub fn open(
        config: SoakConfig,
        hierarchy: &MemoryHierarchy,
        targets: &[Target],
    ) -> Result<Self> {
        if config.report == config.report_json {
            return Err(UserError::input("--report and --report-json must differ").into());
        }
        // Created (safely) now: a bad path fails before anything is loaded, and the files
        // written at the end are the ones checked here.
        let files = Reports {
            html: file::create("--report", &config.report)?,
            json: file::create("--report-json", &config.report_json)?,
        };
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
        if targets.is_empty() && config.limits.max_growth_mib_per_hour.is_some() {
            term::say(format_args!(
                "note: soak: without --cgroup, memory growth is the whole hierarchy's"
            ));
        }
        let record = Record {
            limits: config.limits.clone(),
            html: config.report.clone(),
            json: config.report_json.clone(),
            interval: config.interval.unwrap_or(DEFAULT_INTERVAL),
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
            oom_risks: 0,
            last_risk: None,
            totals: Vec::new(),
            run: None,
        };
        let checks = SharedChecks::default();
        Ok(Self {
            sink: Some(SoakSink {
                record,
                files,
                checks: checks.clone(),
            }),
            checks,
            html: config.report,
            json: config.report_json,
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
            sink::hide_intervals(sinks, true);
        }
        if let Some(soak) = self.sink.take() {
            sinks.push(Box::new(soak));
        }
        interval.unwrap_or(DEFAULT_INTERVAL)
    }

    /// One stderr line per breach, then exit code 3; or a line saying all checks hold.
    pub fn verdict(&self) -> Result<()> {
        let checks = self
            .checks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
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
