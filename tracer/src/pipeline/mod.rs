//! Everything between the ring buffer and the sinks: decode → enrich → filter → aggregate →
//! sinks. Stalls under the threshold take a fast path: they only feed histograms keyed by
//! memcg id, and ids become paths when a summary is written. The [`Sink`] trait is the
//! pipeline's: sinks implement what it produces.
use std::{
    collections::{BTreeMap, HashMap},
    time::Instant,
};

use anyhow::Result;
use memstall_common::{RawEvent, StallEvent, StallKind};
use serde::Serialize;

mod summary;

use crate::{
    aggregate::{
        PressureAggregator, Scope, StallAggregator, Summary,
        counters::{CounterSources, PeriodCounters},
        oom_risk::RiskWatch,
        psi::PsiReader,
        stalls::MAX_HISTOGRAMS,
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
    /// Unexpected states the kernel side counted, every kind (`end_without_begin`,
    /// `in_flight_full`, `tasks_full`, `task_read_failed`, `stack_id_failed`); empty when
    /// the run had no kernel side or its counters were unreadable.
    pub diagnostics: BTreeMap<&'static str, u64>,
    /// Stall windows the kernel lost (end_without_begin, in_flight_full) by stall kind (the
    /// histograms miss them).
    pub lost_windows: BTreeMap<&'static str, u64>,
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
    risk: RiskWatch,
    /// Cgroups recently handed to `risk` for stalling at their limit, and when.
    at_limit_seen: HashMap<u64, Instant>,
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
        let targets = if filter.is_everything() {
            Vec::new()
        } else {
            filter.paths().to_vec()
        };
        let risk = RiskWatch::new(enricher.cgroups.root(), enricher.version(), &targets);
        Self {
            risk,
            at_limit_seen: HashMap::new(),
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
        if matches!(kind, StallKind::MemcgReclaim | StallKind::HighThrottle) {
            self.near_limit(memcg_id);
        }
        if matches!(kind, StallKind::MemcgReclaim | StallKind::DirectReclaim) {
            // Every reclaim, not only outliers: a trigger whose reclaims all stay under the
            // threshold dies of its kill as surely, before its record is decoded.
            self.decoder.symbolizer.remember_mappings(raw.task.tgid);
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
        if self.held() > self.fold_at {
            self.fold_removed();
        }
        true
    }

    /// A cgroup reclaimed at its limit: the OOM risk watch looks at it for a while (asked at
    /// most every ten seconds per cgroup, so a reclaim storm costs a map lookup per stall).
    fn near_limit(&mut self, memcg_id: u64) {
        let now = Instant::now();
        if self
            .at_limit_seen
            .get(&memcg_id)
            .is_some_and(|at| now.duration_since(*at).as_secs() < 10)
        {
            return;
        }
        if self.at_limit_seen.len() >= 4096 {
            self.at_limit_seen.clear();
        }
        self.at_limit_seen.insert(memcg_id, now);
        let name = self.enricher.cgroups.name(memcg_id);
        self.risk.stalled_at_limit(&name);
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
        let held = self.held();
        self.fold_at = MAX_HISTOGRAMS.max(held + held / 4);
    }

    /// Per-cgroup state a fold bounds: the bound and the count it is compared with must be
    /// the same sum, or live cgroups past the bound rescan the hierarchy at every stall.
    fn held(&self) -> usize {
        self.stalls.histograms() + self.pressure.cgroups()
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
            Ok(RawEvent::OomKill(_) | RawEvent::OomContext(_) | RawEvent::Kill(_)) => {}
        }
        // An outlier or a kill: decode in full, name, enrich and report it.
        let Ok(Some(event)) = self.decoder.decode(bytes) else {
            return Ok(());
        };
        self.report(event)
    }

    /// Names and explains a decoded event and sends it on; a kill first waits for what it
    /// freed.
    fn report(&mut self, mut event: Event) -> Result<()> {
        self.enricher.enrich(&mut event);
        if !self.watched(&event.cgroups()) {
            return Ok(());
        }
        let victim_cgroup = match &event {
            Event::Kill(k) => k.cgroup.clone(),
            Event::OomKill(k) => k.victim_cgroup.clone(),
            _ => return self.emit(&event),
        };
        if let Some(cleared) = victim_cgroup.and_then(|c| self.risk.killed(&c, now_unix_ns())) {
            self.emit(&Event::OomRisk(Box::new(cleared)))?;
        }
        for done in self.enricher.hold_kill(event) {
            self.emit(&done)?;
        }
        Ok(())
    }

    fn emit(&mut self, event: &Event) -> Result<()> {
        self.run.events += 1;
        for sink in &mut self.sinks {
            sink.event(event)?;
        }
        Ok(())
    }

    /// Time-driven work: kernel kills no OOM kill claimed, kills whose aftermath is measured,
    /// OOM risk samples.
    pub fn tick(&mut self) -> Result<()> {
        for event in self.decoder.unclaimed_kills(BootClock::now_boot_ns()) {
            self.report(event)?;
        }
        for event in self.enricher.kills_due() {
            self.emit(&event)?;
        }
        for risk in self.risk.sample(now_unix_ns()) {
            self.emit(&Event::OomRisk(Box::new(risk)))?;
        }
        Ok(())
    }

    /// Reports every kill still waiting (the run ends).
    fn flush_kills(&mut self) -> Result<()> {
        for event in self.decoder.unclaimed_kills(u64::MAX) {
            self.report(event)?;
        }
        for event in self.enricher.kills_pending() {
            self.emit(&event)?;
        }
        Ok(())
    }

    /// The run's totals, then the `run_end` record; flushes every sink.
    pub fn finish(mut self, counters: KernelCounters, hooks: Vec<String>) -> Result<RunSummary> {
        self.flush_kills()?;
        let drops = counters.dropped.clone().unwrap_or_default();
        let mut summary = Summary {
            dropped: Some(drops.total),
            ..self.summary(Scope::Total, &counters)
        };
        self.emit_summary(&mut summary)?;
        self.run.time_ns = now_unix_ns();
        self.run.duration_ns = self.started.elapsed().as_nanos() as u64;
        self.run.dropped = drops.total;
        self.run.dropped_stalls = drops
            .stalls
            .iter()
            .map(|(kind, lost)| (kind.name(), *lost))
            .collect();
        let diagnostics = counters.diagnostics.unwrap_or_default();
        self.run.diagnostics = diagnostics
            .counts
            .iter()
            .map(|(kind, count)| (kind.name(), *count))
            .collect();
        self.run.lost_windows = diagnostics
            .lost_windows
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
        let mut summary = self.summary(Scope::Interval, &counters);
        self.counters.kernel_seen = counters;
        self.period_started = Instant::now();
        self.emit_summary(&mut summary)
    }

    fn tick(&mut self) -> Result<()> {
        Pipeline::tick(self)
    }

    /// A watched cgroup was removed: its final summary, then stop watching it.
    fn cgroup_removed(&mut self, relative: &str) -> Result<bool> {
        let cgroups = &mut self.enricher.cgroups;
        let mut name = |id: u64| cgroups.name(id);
        let rows = self
            .stalls
            .totals_where(&mut name, |path| is_within(path, relative));
        let mut summary = Summary {
            scope: Scope::Removed,
            time_ns: now_unix_ns(),
            period_ns: self.started.elapsed().as_nanos() as u64,
            rows,
            ..Default::default()
        };
        self.emit_summary(&mut summary)?;
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

#[cfg(test)]
mod tests;
