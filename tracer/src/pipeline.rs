//! Everything between the ring buffer and the sinks: decode → filter → enrich → aggregate →
//! sinks. Stalls under the threshold take a fast path: they only feed histograms keyed by
//! memcg id, and ids become paths when a summary is written.
use std::{collections::HashMap, path::PathBuf, time::Instant};

use anyhow::Result;
use tracer_common::{MEMCG_SLOTS, RawEvent, StallEvent, StallKind};

use crate::{
    cgroup::CgroupFilter,
    cgroup::CgroupVersion,
    clock::BootClock,
    decode::{DecodeContext, Event},
    faults::{self, CgroupCounters},
    k8s::{self, Labeler},
    latency::{self, LatencyCounters, LatencyRow},
    loader::KernelCounters,
    memcg::MemcgPages,
    recent_stalls::RecentStalls,
    reclaim::KswapdActivity,
    sink::{RunSummary, Sink, Summary},
    stats::{StallAggregator, SummaryRow},
};

/// Everything between the ring buffer and the sinks, kept apart from I/O so it can be driven
/// from tests and benchmarks.
pub struct Pipeline {
    decoder: DecodeContext,
    filter: CgroupFilter,
    sinks: Vec<Box<dyn Sink>>,
    /// Stalls at least this long are reported one by one; all go into the histograms.
    threshold_ns: u64,
    stalls: StallAggregator,
    run: RunSummary,
    started: Instant,
    period_started: Instant,
    /// Kernel counter totals at the last interval, for per-interval deltas.
    counters_seen: KernelCounters,
    /// For the reclaim effort before an OOM kill.
    recent: RecentStalls,
    /// Userspace `--cgroup` decisions per memcg id (the kernel filters first; this catches
    /// the classic OOM hook and keeps the two in step).
    watched_ids: HashMap<u64, bool>,
    labeler: Labeler,
    sources: CounterSources,
    /// Per-cgroup counters at start and at the last interval.
    counters_start: CgroupCounters,
    counters_at_interval: CgroupCounters,
    /// Kernel latency histograms at start and at the last interval.
    latency_start: LatencyCounters,
    latency_at_interval: LatencyCounters,
}

/// Where per-cgroup LRU page and fault counters come from (see faults.rs for the trade-off).
#[derive(Clone, Debug, Default)]
pub struct CounterSources {
    /// memory.stat each summary: of the watched cgroups (hierarchical), or of every cgroup.
    pub memory_stat: Option<MemoryStatScope>,
    /// LRU pages scanned/reclaimed from the kernel hook instead (v1 memory.stat lacks them).
    pub kernel_lru: bool,
    /// Faults from the kernel hook instead.
    pub kernel_faults: bool,
    /// Report faults at all (`--faults off` still reads memory.stat for LRU pages on v2).
    pub report_faults: bool,
}

#[derive(Clone, Debug)]
pub struct MemoryStatScope {
    pub root: PathBuf,
    pub version: CgroupVersion,
    /// Empty: every cgroup.
    pub watched: Vec<String>,
}

/// Whether `cgroup` is `domain` or below it (`None`: the whole machine).
fn within(cgroup: &str, domain: Option<&str>) -> bool {
    domain.is_none_or(|domain| crate::cgroup::is_within(cgroup, domain))
}

impl Pipeline {
    pub fn new(
        decoder: DecodeContext,
        filter: CgroupFilter,
        sinks: Vec<Box<dyn Sink>>,
        threshold_ns: u64,
    ) -> Self {
        Self {
            decoder,
            filter,
            sinks,
            threshold_ns,
            stalls: StallAggregator::default(),
            run: RunSummary::default(),
            started: Instant::now(),
            period_started: Instant::now(),
            counters_seen: KernelCounters::default(),
            recent: RecentStalls::default(),
            watched_ids: HashMap::new(),
            labeler: Labeler::new(k8s::KUBELET_PODS),
            sources: CounterSources::default(),
            counters_start: CgroupCounters::new(),
            counters_at_interval: CgroupCounters::new(),
            latency_start: LatencyCounters::new(),
            latency_at_interval: LatencyCounters::new(),
        }
    }

    /// Reads per-cgroup counters from `sources`, from now on.
    pub fn count_from(&mut self, sources: CounterSources) {
        self.sources = sources;
        self.counters_start = self.cgroup_counters(&KernelCounters::default());
        self.counters_at_interval = self.counters_start.clone();
    }

    fn cgroup_counters(&mut self, kernel: &KernelCounters) -> CgroupCounters {
        let mut totals = match &self.sources.memory_stat {
            Some(MemoryStatScope {
                root,
                version,
                watched,
            }) if watched.is_empty() => faults::all_totals(root, *version),
            Some(MemoryStatScope {
                root,
                version,
                watched,
            }) => faults::watched_totals(root, *version, watched),
            None => CgroupCounters::new(),
        };
        let from_kernel = [
            (self.sources.kernel_lru, 0..4),
            (self.sources.kernel_faults, 4..MEMCG_SLOTS),
        ];
        if from_kernel.iter().any(|(on, _)| *on) {
            let kernel = faults::kernel_totals(&kernel.memcg_pages, &mut self.decoder.cgroups);
            for (_, slots) in from_kernel.into_iter().filter(|(on, _)| *on) {
                totals.values_mut().for_each(|v| v[slots.clone()].fill(0));
                for (path, counts) in &kernel {
                    let entry = totals.entry(path.clone()).or_default();
                    entry[slots.clone()].copy_from_slice(&counts[slots.clone()]);
                }
            }
        }
        let scoped = self
            .sources
            .memory_stat
            .as_ref()
            .is_some_and(|m| !m.watched.is_empty());
        if scoped && !self.sources.kernel_lru && !self.sources.kernel_faults {
            return totals;
        }
        totals
            .into_iter()
            .filter(|(path, _)| self.watched(&[path]))
            .collect()
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
        let path = self.decoder.cgroups.path(memcg_id);
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
        self.recent.push(
            raw.header.boot_ns,
            memcg_id,
            raw.latency_ns,
            raw.nr_reclaimed,
            raw.pass_scanned,
        );
        self.run.stalls += 1;
        true
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
        if !self.watched(&event.cgroups()) {
            return Ok(());
        }
        let labeler = &mut self.labeler;
        let mut label = |cgroup: &Option<String>| cgroup.as_deref().and_then(|c| labeler.labels(c));
        match &mut event {
            Event::OomKill(kill) => {
                kill.labels = label(&kill.cgroup);
                kill.victim_labels = label(&kill.victim_cgroup);
                // Stalls in the OOM domain (no domain: anywhere).
                let domain = kill.explanation.oom_cgroup.as_deref();
                let cgroups = &mut self.decoder.cgroups;
                kill.reclaim_before = Some(self.recent.effort(BootClock::now_boot_ns(), |id| {
                    within(&cgroups.name(id), domain)
                }));
            }
            Event::Stall(stall) => stall.labels = label(&stall.cgroup),
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
            let path = self.decoder.cgroups.name(memcg);
            if delta > 0 && self.watched(&[&path]) {
                *by_path.entry(path).or_default() += delta;
            }
        }
        let mut rows: Vec<_> = by_path.into_iter().collect();
        rows.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        rows
    }

    /// The interval's stall rows (closing it), or the run's totals.
    fn stall_rows(&mut self, totals: bool) -> Vec<SummaryRow> {
        let decoder = &mut self.decoder;
        let mut name = |id: u64| decoder.cgroups.name(id);
        if totals {
            self.stalls.totals(&mut name)
        } else {
            self.stalls.end_interval(&mut name)
        }
    }

    fn emit_summary(&mut self, summary: Summary) -> Result<()> {
        for sink in &mut self.sinks {
            sink.summary(&summary)?;
        }
        Ok(())
    }

    fn fault_rows(
        &self,
        now: &CgroupCounters,
        since_start: bool,
        period_ns: u64,
    ) -> Vec<faults::FaultRow> {
        if !self.sources.report_faults {
            return Vec::new();
        }
        let before = if since_start {
            &self.counters_start
        } else {
            &self.counters_at_interval
        };
        faults::rows(now, before, period_ns)
    }

    fn latency_rows(&mut self, now: &LatencyCounters, since_start: bool) -> Vec<LatencyRow> {
        let before = if since_start {
            &self.latency_start
        } else {
            &self.latency_at_interval
        };
        let decoder = &mut self.decoder;
        let filter = &self.filter;
        let mut name = |id: u64| decoder.cgroups.name(id);
        latency::rows(now, before, &mut name)
            .into_iter()
            .filter(|row| filter.matches(&row.cgroup))
            .collect()
    }

    /// Per-cgroup LRU page counts since `before`, most scanned first.
    fn memcg_rows(now: &CgroupCounters, before: &CgroupCounters) -> Vec<MemcgPages> {
        let mut rows: Vec<MemcgPages> = now
            .iter()
            .filter_map(|(path, counts)| {
                let base = before.get(path).copied().unwrap_or_default();
                let mut delta = [0; MEMCG_SLOTS];
                delta
                    .iter_mut()
                    .zip(counts.iter().zip(base))
                    .for_each(|(d, (n, b))| *d = n.saturating_sub(b));
                MemcgPages::reclaimed_any(&delta).then(|| MemcgPages::new(path.clone(), delta))
            })
            .collect();
        rows.sort_by(|a, b| {
            (b.scanned_direct + b.scanned_kswapd)
                .cmp(&(a.scanned_direct + a.scanned_kswapd))
                .then_with(|| a.cgroup.cmp(&b.cgroup))
        });
        rows
    }

    /// A watched cgroup was removed: its final summary, then stop watching it. Returns
    /// whether any watched cgroup is left.
    pub fn cgroup_removed(&mut self, relative: &str) -> Result<bool> {
        let decoder = &mut self.decoder;
        let mut name = |id: u64| decoder.cgroups.name(id);
        let rows = self
            .stalls
            .totals_where(&mut name, |path| within(path, Some(relative)));
        let summary = Summary {
            scope: "removed",
            time_ns: now_unix_ns(),
            period_ns: self.started.elapsed().as_nanos() as u64,
            rows,
            ..Default::default()
        };
        self.emit_summary(summary)?;
        Ok(self.filter.forget(relative))
    }

    /// Ends an `--interval` period: its rows go to the sinks, then fold into the totals.
    pub fn interval(&mut self, counters: KernelCounters) -> Result<()> {
        let seen = std::mem::replace(&mut self.counters_seen, counters.clone());
        let wakeups_before: HashMap<u64, u64> = seen.kswapd_wakeups.iter().copied().collect();
        let period_ns = self.period_started.elapsed().as_nanos() as u64;
        let now = self.cgroup_counters(&counters);
        let summary = Summary {
            scope: "interval",
            time_ns: now_unix_ns(),
            period_ns,
            rows: self.stall_rows(false),
            kswapd_wakeups: self.wakeup_rows(&counters.kswapd_wakeups, &wakeups_before),
            kswapd: KswapdActivity::between(&counters.kswapd, &seen.kswapd),
            memcg_pages: Self::memcg_rows(&now, &self.counters_at_interval),
            faults: self.fault_rows(&now, false, period_ns),
            latency: self.latency_rows(&counters.latency, false),
            dropped: counters.dropped,
        };
        self.counters_at_interval = now;
        self.latency_at_interval = counters.latency.clone();
        self.period_started = Instant::now();
        self.emit_summary(summary)
    }

    /// The run's totals, then the `run_end` record; flushes every sink.
    pub fn finish(
        mut self,
        counters: KernelCounters,
        dropped: u64,
        hooks: Vec<String>,
    ) -> Result<RunSummary> {
        let period_ns = self.started.elapsed().as_nanos() as u64;
        let now = self.cgroup_counters(&counters);
        let summary = Summary {
            scope: "total",
            time_ns: now_unix_ns(),
            period_ns,
            rows: self.stall_rows(true),
            kswapd_wakeups: self.wakeup_rows(&counters.kswapd_wakeups, &HashMap::new()),
            kswapd: KswapdActivity::between(&counters.kswapd, &Default::default()),
            memcg_pages: Self::memcg_rows(&now, &self.counters_start),
            faults: self.fault_rows(&now, true, period_ns),
            latency: self.latency_rows(&counters.latency, true),
            dropped: Some(dropped),
        };
        self.emit_summary(summary)?;
        self.run.time_ns = now_unix_ns();
        self.run.duration_ns = self.started.elapsed().as_nanos() as u64;
        self.run.dropped = dropped;
        self.run.hooks = hooks;
        for sink in &mut self.sinks {
            sink.finish(&self.run)?;
        }
        Ok(self.run)
    }
}

fn now_unix_ns() -> u64 {
    BootClock::new().unix_ns(BootClock::now_boot_ns())
}
