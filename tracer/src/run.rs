//! The event loop: kernel ring buffer → decode → filter → aggregate → sinks, until a signal
//! or the deadline.
use std::{
    collections::{HashMap, VecDeque},
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow};
use aya::maps::{MapData, RingBuf};
use tokio::{
    io::{Interest, unix::AsyncFd},
    signal::unix::{SignalKind, signal},
};
use tracer_common::MEMCG_SLOTS;

use crate::{
    cgroup::CgroupFilter,
    cgroup::CgroupVersion,
    clock::BootClock,
    decode::{DecodeContext, Event},
    faults::{self, FaultTotals},
    k8s::{self, Labeler},
    loader::{KernelCounters, Tracer},
    memcg::{self, MemcgCounters, MemcgPages},
    oom::ReclaimBefore,
    reclaim::Stall,
    sink::{RunSummary, Sink, Summary},
    stats::StallAggregator,
    target::Target,
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
    /// Stalls of the last RECENT_WINDOW, for the reclaim effort before an OOM kill.
    recent: VecDeque<RecentStall>,
    labeler: Labeler,
    fault_counting: FaultCounting,
    /// Fault totals at start and at the last interval.
    faults_start: FaultTotals,
    faults_seen: FaultTotals,
}

/// Where fault counts come from (see faults.rs for the trade-off).
#[derive(Clone, Debug, Default)]
pub enum FaultCounting {
    #[default]
    Off,
    /// memory.stat of `watched` (hierarchical) or, when empty, of every cgroup (own faults).
    MemoryStat {
        root: PathBuf,
        version: CgroupVersion,
        watched: Vec<String>,
    },
    /// The kernel's per-memcg counters.
    Ebpf,
}

struct RecentStall {
    time_ns: u64,
    cgroup: String,
    latency_ns: u64,
    pages: u64,
    scanned: u64,
}

const RECENT_WINDOW_NS: u64 = 10_000_000_000;
const RECENT_MAX: usize = 100_000;

/// Whether `cgroup` is `domain` or below it (`None`: the whole machine).
fn within(cgroup: &str, domain: Option<&str>) -> bool {
    match domain {
        None | Some("/") => true,
        Some(domain) => {
            cgroup == domain
                || cgroup
                    .strip_prefix(domain)
                    .is_some_and(|rest| rest.starts_with('/'))
        }
    }
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
            recent: VecDeque::new(),
            labeler: Labeler::new(k8s::KUBELET_PODS),
            fault_counting: FaultCounting::Off,
            faults_start: FaultTotals::new(),
            faults_seen: FaultTotals::new(),
        }
    }

    /// Counts faults from `counting`, from now on.
    pub fn count_faults(&mut self, counting: FaultCounting) {
        self.fault_counting = counting;
        self.faults_start = self.fault_totals(&KernelCounters::default());
        self.faults_seen = self.faults_start.clone();
    }

    fn fault_totals(&mut self, counters: &KernelCounters) -> FaultTotals {
        let totals = match &self.fault_counting {
            FaultCounting::Off => return FaultTotals::new(),
            FaultCounting::MemoryStat {
                root,
                version,
                watched,
            } if watched.is_empty() => faults::all_totals(root, *version),
            FaultCounting::MemoryStat {
                root,
                version,
                watched,
            } => {
                return faults::watched_totals(root, *version, watched);
            }
            FaultCounting::Ebpf => {
                faults::ebpf_totals(&counters.memcg_pages, &mut self.decoder.cgroups)
            }
        };
        totals
            .into_iter()
            .filter(|(path, _)| self.watched(&[path]))
            .collect()
    }

    fn watched(&self, cgroups: &[&str]) -> bool {
        self.filter.is_everything() || cgroups.iter().any(|c| self.filter.matches(c))
    }

    pub fn record(&mut self, bytes: &[u8]) -> Result<()> {
        self.run.records += 1;
        let event = match self.decoder.decode(bytes) {
            Ok(Some(event)) => event,
            Ok(None) => return Ok(()),
            Err(err) => {
                self.run.malformed += 1;
                log::warn!("skipping ring-buffer record: {err}");
                return Ok(());
            }
        };
        if !self.watched(&event.cgroups()) {
            return Ok(());
        }
        let mut event = event;
        let labeler = &mut self.labeler;
        let mut label = |cgroup: &Option<String>| cgroup.as_deref().and_then(|c| labeler.labels(c));
        match &mut event {
            Event::OomKill(kill) => {
                kill.labels = label(&kill.cgroup);
                kill.victim_labels = label(&kill.victim_cgroup);
                kill.reclaim_before =
                    Some(self.reclaim_before(kill.time_ns, kill.explanation.oom_cgroup.as_deref()));
            }
            Event::Stall(stall) => stall.labels = label(&stall.cgroup),
        }
        if let Event::Stall(stall) = &event {
            let cgroup = stall.cgroup.as_deref().unwrap_or("?");
            self.remember(stall);
            self.stalls.record(
                cgroup,
                stall.kind,
                stall.latency_ns,
                stall.pages,
                stall.pages_scanned,
            );
            self.run.stalls += 1;
            if stall.latency_ns < self.threshold_ns {
                return Ok(());
            }
        }
        self.run.events += 1;
        for sink in &mut self.sinks {
            sink.event(&event)?;
        }
        Ok(())
    }

    fn remember(&mut self, stall: &Stall) {
        while self
            .recent
            .front()
            .is_some_and(|r| r.time_ns + RECENT_WINDOW_NS < stall.time_ns)
            || self.recent.len() >= RECENT_MAX
        {
            self.recent.pop_front();
        }
        self.recent.push_back(RecentStall {
            time_ns: stall.time_ns,
            cgroup: stall.cgroup.clone().unwrap_or_default(),
            latency_ns: stall.latency_ns,
            pages: stall.pages,
            scanned: stall.pages_scanned,
        });
    }

    /// Stalls in the OOM domain during the RECENT_WINDOW before `time_ns`.
    fn reclaim_before(&self, time_ns: u64, domain: Option<&str>) -> ReclaimBefore {
        let mut before = ReclaimBefore {
            window_ns: RECENT_WINDOW_NS,
            ..Default::default()
        };
        for r in &self.recent {
            if r.time_ns + RECENT_WINDOW_NS >= time_ns
                && r.time_ns <= time_ns
                && within(&r.cgroup, domain)
            {
                before.stalls += 1;
                before.stall_ns += r.latency_ns;
                before.pages_reclaimed += r.pages;
                before.pages_scanned += r.scanned;
            }
        }
        before
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
            let path = self
                .decoder
                .cgroups
                .path(memcg)
                .unwrap_or_else(|| "?".into());
            if delta > 0 && self.watched(&[&path]) {
                *by_path.entry(path).or_default() += delta;
            }
        }
        let mut rows: Vec<_> = by_path.into_iter().collect();
        rows.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        rows
    }

    fn emit_summary(&mut self, summary: Summary) -> Result<()> {
        for sink in &mut self.sinks {
            sink.summary(&summary)?;
        }
        Ok(())
    }

    /// Per-cgroup LRU page counts since `before`, watched cgroups only, most scanned first.
    fn memcg_rows(&mut self, now: &MemcgCounters, before: &MemcgCounters) -> Vec<MemcgPages> {
        let mut by_path: HashMap<String, [u64; MEMCG_SLOTS]> = HashMap::new();
        for (memcg, counts) in memcg::delta(now, before) {
            if !MemcgPages::reclaimed_any(&counts) {
                continue;
            }
            let path = self
                .decoder
                .cgroups
                .path(memcg)
                .unwrap_or_else(|| "?".into());
            if self.watched(&[&path]) {
                let sum = by_path.entry(path).or_default();
                for (total, count) in sum.iter_mut().zip(counts) {
                    *total += count;
                }
            }
        }
        let mut rows: Vec<MemcgPages> = by_path
            .into_iter()
            .map(|(path, counts)| MemcgPages::new(path, counts))
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
        let within = |c: &str| within(c, Some(relative));
        let summary = Summary {
            scope: "removed",
            time_ns: now_unix_ns(),
            period_ns: self.started.elapsed().as_nanos() as u64,
            rows: self.stalls.totals_where(within),
            ..Default::default()
        };
        self.emit_summary(summary)?;
        Ok(self.filter.forget(relative))
    }

    /// Ends an `--interval` period: its rows go to the sinks, then fold into the totals.
    pub fn interval(&mut self, counters: KernelCounters) -> Result<()> {
        let seen = std::mem::replace(&mut self.counters_seen, counters.clone());
        let wakeups_before: HashMap<u64, u64> = seen.kswapd_wakeups.iter().copied().collect();
        let summary = Summary {
            scope: "interval",
            time_ns: now_unix_ns(),
            period_ns: self.period_started.elapsed().as_nanos() as u64,
            rows: self.stalls.end_interval(),
            kswapd_wakeups: self.wakeup_rows(&counters.kswapd_wakeups, &wakeups_before),
            memcg_pages: self.memcg_rows(&counters.memcg_pages, &seen.memcg_pages),
            faults: Vec::new(),
        };
        let faults_now = self.fault_totals(&counters);
        let summary = Summary {
            faults: faults::rows(&faults_now, &self.faults_seen, summary.period_ns),
            ..summary
        };
        self.faults_seen = faults_now;
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
        let summary = Summary {
            scope: "total",
            time_ns: now_unix_ns(),
            period_ns: self.started.elapsed().as_nanos() as u64,
            rows: self.stalls.totals(),
            kswapd_wakeups: self.wakeup_rows(&counters.kswapd_wakeups, &HashMap::new()),
            memcg_pages: self.memcg_rows(&counters.memcg_pages, &MemcgCounters::new()),
            faults: Vec::new(),
        };
        let faults_now = self.fault_totals(&counters);
        let summary = Summary {
            faults: faults::rows(&faults_now, &self.faults_start, summary.period_ns),
            ..summary
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

fn drain(ring: &mut RingBuf<MapData>, pipeline: &mut Pipeline) -> Result<()> {
    while let Some(item) = ring.next() {
        pipeline.record(&item)?;
    }
    Ok(())
}

/// Runs until SIGINT/SIGTERM or `duration`, printing a summary every `interval`, then drains
/// what is left and flushes every sink. `on_ready` is called once events can flow.
pub async fn run(
    mut tracer: Tracer,
    mut pipeline: Pipeline,
    mut targets: Vec<Target>,
    duration: Option<Duration>,
    interval: Option<Duration>,
    on_ready: impl FnOnce(),
) -> Result<RunSummary> {
    let map = tracer
        .ebpf
        .take_map("EVENTS")
        .ok_or_else(|| anyhow!("map EVENTS missing"))?;
    let ring = RingBuf::try_from(map).context("opening the EVENTS ring buffer")?;
    // SAFETY: the RingBuf owns its map's fd, which stays open and the same until it is dropped.
    let mut ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
        .map_err(|err| anyhow!("polling the EVENTS ring buffer: {}", err.into_parts().1))?;
    let mut sigint = signal(SignalKind::interrupt()).context("handling SIGINT")?;
    let mut sigterm = signal(SignalKind::terminate()).context("handling SIGTERM")?;
    let deadline = tokio::time::sleep(duration.unwrap_or(Duration::MAX / 4));
    tokio::pin!(deadline);
    let period = interval.unwrap_or(Duration::MAX / 4);
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    let mut presence = tokio::time::interval(Duration::from_secs(1));
    on_ready();

    loop {
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard.context("waiting for events")?;
                drain(guard.get_inner_mut(), &mut pipeline)?;
                guard.clear_ready();
            }
            _ = ticks.tick(), if interval.is_some() => {
                drain(ring.get_mut(), &mut pipeline)?;
                pipeline.interval(tracer.counters())?;
            }
            _ = presence.tick(), if !targets.is_empty() => {
                let (gone, present): (Vec<Target>, Vec<Target>) = targets.into_iter().partition(|t| !t.dir.exists());
                targets = present;
                let mut any_left = true;
                for target in gone {
                    eprintln!("memstall: cgroup {} was removed; its final summary follows", target.relative);
                    drain(ring.get_mut(), &mut pipeline)?;
                    any_left = pipeline.cgroup_removed(&target.relative)?;
                }
                if !any_left {
                    eprintln!("memstall: no watched cgroup is left; stopping");
                    break;
                }
            }
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            _ = &mut deadline, if duration.is_some() => break,
        }
    }
    drain(ring.get_mut(), &mut pipeline)?;

    let dropped = tracer.dropped().unwrap_or_else(|err| {
        log::warn!("reading the drop counter: {err:#}");
        0
    });
    let hooks = tracer.hooks.iter().map(ToString::to_string).collect();
    pipeline.finish(tracer.counters(), dropped, hooks)
}
