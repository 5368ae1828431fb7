//! Everything between the ring buffer and the sinks: decode → enrich → filter → aggregate →
//! sinks. Stalls under the threshold take a fast path: they only feed histograms keyed by
//! memcg id, and ids become paths when a summary is written. The [`Sink`] trait is the
//! pipeline's: sinks implement what it produces.
use std::{
    collections::{BTreeMap, HashMap},
    time::Instant,
};

use anyhow::Result;
use memstall_common::{KswapdTotals, RawEvent, StallEvent, StallKind};
use serde::Serialize;

use crate::{
    aggregate::{
        KswapdActivity, PressureAggregator, PressureRow, Scope, StallAggregator, Summary,
        SummaryRow,
        counters::{CounterSources, PeriodCounters},
        pressure,
        psi::PsiReader,
        stalls::{MAX_HISTOGRAMS, REMOVED_NAME},
    },
    cgroup::{CgroupFilter, is_within},
    clock::BootClock,
    decode::DecodeContext,
    enrich::Enricher,
    event::Event,
    kernel::KernelCounters,
    ringbuf::Consumer,
};

/// Where events and summaries go: people (lines, tables, the live view) and machines (JSON
/// Lines, Prometheus, the soak report).
pub trait Sink {
    fn event(&mut self, event: &Event) -> Result<()>;
    fn summary(&mut self, summary: &Summary) -> Result<()>;
    /// Called once at the end; must flush everything.
    fn finish(&mut self, run: &RunSummary) -> Result<()>;
}

/// The end of a run: what was seen and what was lost.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RunSummary {
    pub time_ns: u64,
    pub duration_ns: u64,
    /// Records read from the kernel's ring buffer, before any userspace filtering.
    pub records: u64,
    /// Events reported (after `--cgroup` filtering and the outlier threshold).
    pub events: u64,
    /// Stalls recorded into histograms (after `--cgroup` filtering).
    pub stalls: u64,
    /// Events the kernel could not queue because the ring buffer was full ...
    pub dropped: u64,
    /// ... of which stalls, by kind (the histograms miss them).
    pub dropped_stalls: BTreeMap<&'static str, u64>,
    /// Records that could not be decoded.
    pub malformed: u64,
    /// `hook: how` for every hook, e.g. `oom_kill: tp_btf oom/mark_victim`.
    pub hooks: Vec<String>,
}

/// Kept apart from I/O so it can be driven from tests and benchmarks.
pub struct Pipeline {
    decoder: DecodeContext,
    enricher: Enricher,
    filter: CgroupFilter,
    /// `--cgroup` decisions per memcg id (the kernel filters first; this catches the classic
    /// OOM hook and keeps the two in step).
    watched_ids: HashMap<u64, bool>,
    sinks: Vec<Box<dyn Sink>>,
    /// Stalls at least this long are reported one by one; all go into the histograms.
    threshold_ns: u64,
    stalls: StallAggregator,
    pressure: PressureAggregator,
    psi: PsiReader,
    /// Histogram count at which removed cgroups are folded next.
    fold_at: usize,
    counters: PeriodCounters,
    run: RunSummary,
    started: Instant,
    period_started: Instant,
}

impl Pipeline {
    pub fn new(
        decoder: DecodeContext,
        enricher: Enricher,
        filter: CgroupFilter,
        sinks: Vec<Box<dyn Sink>>,
        threshold_ns: u64,
    ) -> Self {
        let mut psi = PsiReader::new(enricher.cgroups.root(), enricher.version());
        psi.baseline(&pressure_cgroups(&filter));
        Self {
            decoder,
            enricher,
            psi,
            pressure: PressureAggregator::default(),
            filter,
            watched_ids: HashMap::new(),
            sinks,
            threshold_ns,
            stalls: StallAggregator::default(),
            fold_at: MAX_HISTOGRAMS,
            counters: PeriodCounters::default(),
            run: RunSummary::default(),
            started: Instant::now(),
            period_started: Instant::now(),
        }
    }

    /// Reads per-cgroup counters from `sources`, from now on.
    pub fn count_from(&mut self, sources: CounterSources) {
        let (filter, cgroups) = (&self.filter, &mut self.enricher.cgroups);
        self.counters
            .start(sources, &KernelCounters::default(), filter, &mut |id| {
                cgroups.name(id)
            });
    }

    fn watched(&self, cgroups: &[&str]) -> bool {
        self.filter.is_everything() || cgroups.iter().any(|c| self.filter.matches(c))
    }

    fn watched_id(&mut self, memcg_id: u64) -> bool {
        if self.filter.is_everything() {
            return true;
        }
        if let Some(&known) = self.watched_ids.get(&memcg_id) {
            return known;
        }
        let path = self.enricher.cgroups.path(memcg_id);
        let watched = path.as_deref().is_some_and(|p| self.filter.matches(p));
        if path.is_some() {
            self.watched_ids.insert(memcg_id, watched);
        }
        watched
    }

    /// Feeds one stall into the histograms and the recent window; false if unwatched.
    fn aggregate(&mut self, raw: &StallEvent) -> bool {
        let Some(kind) = StallKind::from_u32(raw.stall_kind) else {
            return false;
        };
        let memcg_id = raw.task.memcg_id;
        if !self.watched_id(memcg_id) {
            return false;
        }
        self.stalls.record(
            memcg_id,
            kind,
            raw.latency_ns,
            raw.nr_reclaimed,
            raw.pass_scanned,
        );
        if raw.retries > 0 {
            self.stalls.record_retries(memcg_id, kind, raw.retries);
        }
        self.pressure.record(
            raw.task.pid,
            memcg_id,
            kind,
            (raw.start_ns, raw.end_ns),
            raw.detail,
        );
        self.enricher.saw_stall(
            raw.header.boot_ns,
            memcg_id,
            raw.latency_ns,
            raw.nr_reclaimed,
            raw.pass_scanned,
        );
        self.run.stalls += 1;
        if self.stalls.histograms() + self.pressure.cgroups() > self.fold_at {
            self.fold_removed();
        }
        true
    }

    /// Bounds memory under cgroup churn: removed cgroups' histograms fold into one per kind.
    /// The next fold waits for a quarter more histograms, so live cgroups past the bound do
    /// not rescan the hierarchy at every stall.
    fn fold_removed(&mut self) {
        let cgroups = &mut self.enricher.cgroups;
        cgroups.scan();
        self.stalls.fold_removed(|id| cgroups.is_live(id));
        self.pressure.fold_removed(|id| cgroups.is_live(id));
        self.watched_ids.retain(|id, _| cgroups.is_live(*id));
        // Counted as the trigger counts: pressure rows too, or a hierarchy whose live
        // cgroups' rows pass a quarter of the histograms would rescan at every stall.
        let held = self.stalls.histograms() + self.pressure.cgroups();
        self.fold_at = MAX_HISTOGRAMS.max(held + held / 4);
    }

    pub fn record(&mut self, bytes: &[u8]) -> Result<()> {
        self.run.records += 1;
        match RawEvent::decode(bytes) {
            Err(err) => {
                self.run.malformed += 1;
                log::warn!("skipping ring-buffer record: {err}");
                return Ok(());
            }
            Ok(RawEvent::Stall(raw)) => {
                if !self.aggregate(&raw) || raw.latency_ns < self.threshold_ns {
                    return Ok(());
                }
            }
            Ok(RawEvent::OomKill(_) | RawEvent::OomContext(_)) => {}
        }
        // An outlier or an OOM kill: decode in full, name, enrich and report it.
        let Ok(Some(mut event)) = self.decoder.decode(bytes) else {
            return Ok(());
        };
        self.enricher.enrich(&mut event);
        if !self.watched(&event.cgroups()) {
            return Ok(());
        }
        self.run.events += 1;
        for sink in &mut self.sinks {
            sink.event(&event)?;
        }
        Ok(())
    }

    /// Wake-up requests per cgroup path since `baseline` (absent ids count from zero).
    fn wakeup_rows(
        &mut self,
        totals: &[(u64, u64)],
        baseline: &HashMap<u64, u64>,
    ) -> Vec<(String, u64)> {
        let mut by_path: HashMap<String, u64> = HashMap::new();
        for &(memcg, total) in totals {
            let delta = total.saturating_sub(baseline.get(&memcg).copied().unwrap_or(0));
            let path = self.enricher.cgroups.name(memcg);
            if delta > 0 && self.watched(&[&path]) {
                *by_path.entry(path).or_default() += delta;
            }
        }
        let mut rows: Vec<_> = by_path.into_iter().collect();
        rows.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        rows
    }

    /// The interval's stall rows (closing it), or the run's totals.
    fn stall_rows(&mut self, scope: Scope) -> Vec<SummaryRow> {
        let cgroups = &mut self.enricher.cgroups;
        let mut name = |id: u64| cgroups.name(id);
        match scope {
            Scope::Interval => self.stalls.end_interval(&mut name),
            _ => self.stalls.totals(&mut name),
        }
    }

    fn emit_summary(&mut self, summary: &Summary) -> Result<()> {
        for sink in &mut self.sinks {
            sink.summary(summary)?;
        }
        Ok(())
    }

    /// A summary of `scope` ending now, with the kernel's counters `now`.
    fn summary(&mut self, scope: Scope, now: &KernelCounters) -> Summary {
        let since = match scope {
            Scope::Interval => self.period_started,
            _ => self.started,
        };
        let period_ns = since.elapsed().as_nanos() as u64;
        let (kswapd_before, wakeups_before) = match scope {
            Scope::Interval => (
                self.counters.kernel_seen.kswapd,
                self.counters.wakeups_seen(),
            ),
            _ => (KswapdTotals::default(), HashMap::new()),
        };
        let (filter, cgroups) = (&self.filter, &mut self.enricher.cgroups);
        let period = self
            .counters
            .period(scope, now, period_ns, filter, &mut |id| cgroups.name(id));
        Summary {
            scope,
            time_ns: now_unix_ns(),
            period_ns,
            rows: self.stall_rows(scope),
            kswapd_wakeups: self.wakeup_rows(&now.kswapd_wakeups, &wakeups_before),
            kswapd: KswapdActivity::between(&now.kswapd, &kswapd_before),
            memcg_pages: period.memcg_pages,
            faults: period.faults,
            latency: period.latency,
            pressure: self.pressure_rows(scope),
            dropped: now.dropped.as_ref().map(|d| d.total),
        }
    }

    /// The period's pressure per cgroup, named, with PSI beside it; the watched cgroups (the
    /// machine, when everything is watched) also when they did not stall, for their PSI.
    fn pressure_rows(&mut self, scope: Scope) -> Vec<PressureRow> {
        let measured = match scope {
            Scope::Interval => self.pressure.end_interval(),
            _ => self.pressure.totals(),
        };
        let mut rows: Vec<PressureRow> = measured
            .into_iter()
            .map(|(id, mut row)| {
                row.cgroup = if pressure::is_removed(id) {
                    REMOVED_NAME.to_owned()
                } else {
                    self.enricher.cgroups.name(id)
                };
                row.shrinkers = std::mem::take(&mut row.shrinkers)
                    .into_iter()
                    .map(|(address, ns)| (self.shrinker_name(&address), ns))
                    .collect();
                row
            })
            .collect();
        for cgroup in pressure_cgroups(&self.filter) {
            if !rows.iter().any(|r| r.cgroup == cgroup) {
                rows.push(PressureRow {
                    cgroup,
                    ..PressureRow::default()
                });
            }
        }
        for row in &mut rows {
            (row.psi_some_ns, row.psi_full_ns, row.psi_source) =
                self.psi.delta(&row.cgroup, scope != Scope::Interval);
        }
        rows.retain(|r| r.stall_ns > 0 || r.psi_some_ns.is_some_and(|ns| ns > 0));
        rows.sort_by(|a, b| {
            b.stall_ns
                .cmp(&a.stall_ns)
                .then_with(|| a.cgroup.cmp(&b.cgroup))
        });
        rows
    }

    /// A shrinker's scan_objects function by name (`super_cache_scan`).
    fn shrinker_name(&mut self, address: &str) -> String {
        let Some(ip) = address
            .strip_prefix("0x")
            .and_then(|hex| u64::from_str_radix(hex, 16).ok())
            .filter(|ip| *ip != 0)
        else {
            return "?".to_owned();
        };
        let symbol = self.decoder.symbolizer.kernel_symbol(ip);
        symbol
            .strip_suffix("+0x0")
            .map_or(symbol.clone(), str::to_owned)
    }

    /// The run's totals, then the `run_end` record; flushes every sink.
    pub fn finish(mut self, counters: KernelCounters, hooks: Vec<String>) -> Result<RunSummary> {
        let drops = counters.dropped.clone().unwrap_or_default();
        let summary = Summary {
            dropped: Some(drops.total),
            ..self.summary(Scope::Total, &counters)
        };
        self.emit_summary(&summary)?;
        self.run.time_ns = now_unix_ns();
        self.run.duration_ns = self.started.elapsed().as_nanos() as u64;
        self.run.dropped = drops.total;
        self.run.dropped_stalls = drops
            .stalls
            .iter()
            .map(|(kind, lost)| (kind.name(), *lost))
            .collect();
        self.run.hooks = hooks;
        for sink in &mut self.sinks {
            sink.finish(&self.run)?;
        }
        Ok(self.run)
    }
}

impl Consumer for Pipeline {
    fn record(&mut self, bytes: &[u8]) -> Result<()> {
        Pipeline::record(self, bytes)
    }

    /// Ends an `--interval` period: its rows go to the sinks, then fold into the totals.
    fn interval(&mut self, counters: KernelCounters) -> Result<()> {
        let summary = self.summary(Scope::Interval, &counters);
        self.counters.kernel_seen = counters;
        self.period_started = Instant::now();
        self.emit_summary(&summary)
    }

    /// A watched cgroup was removed: its final summary, then stop watching it.
    fn cgroup_removed(&mut self, relative: &str) -> Result<bool> {
        let cgroups = &mut self.enricher.cgroups;
        let mut name = |id: u64| cgroups.name(id);
        let rows = self
            .stalls
            .totals_where(&mut name, |path| is_within(path, relative));
        let summary = Summary {
            scope: Scope::Removed,
            time_ns: now_unix_ns(),
            period_ns: self.started.elapsed().as_nanos() as u64,
            rows,
            ..Default::default()
        };
        self.emit_summary(&summary)?;
        Ok(self.filter.forget(relative))
    }
}

/// The cgroups whose PSI is always shown: the watched ones, or the machine's.
fn pressure_cgroups(filter: &CgroupFilter) -> Vec<String> {
    if filter.is_everything() {
        vec!["/".to_owned()]
    } else {
        filter.paths().to_vec()
    }
}

fn now_unix_ns() -> u64 {
    BootClock::new().unix_ns(BootClock::now_boot_ns())
}
