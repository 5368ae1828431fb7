//! What the live view shows, folded from summaries and events: per cgroup stall time,
//! stalls and p99 per kind, fault rates, kills and the standing OOM risk.
use std::collections::BTreeMap;

use crate::{
    aggregate::Summary,
    clock::format_unix_ns,
    event::{Event, Labels, RiskReason},
    term::escape,
};

/// Bucket index k holds latencies in [2^k, 2^(k+1)) µs, as the summary rows' log2 buckets.
pub(super) const BUCKETS: usize = 40;

#[derive(Clone, Debug, Default)]
pub(super) struct KindStats {
    pub(super) count: u64,
    pub(super) total_ns: u64,
    pub(super) buckets: Vec<u64>,
}

impl KindStats {
    /// Upper bound of the bucket holding quantile `q`, in ns.
    pub(super) fn quantile_ns(&self, q: f64) -> u64 {
        let target = ((self.count as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (k, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= target {
                return ((1u64 << (k + 1)) - 1) * 1_000;
            }
        }
        0
    }
}

#[derive(Clone, Debug, Default)]
pub(super) struct CgroupRow {
    /// `namespace/pod/container` of a pod's cgroup, shown instead of its path.
    pub(super) workload: Option<String>,
    pub(super) kinds: BTreeMap<&'static str, KindStats>,
    /// Time its tasks stalled, nested stalls once (the pressure rows' `stall_ns`).
    pub(super) stall_ns: u64,
    pub(super) faults_per_s: f64,
    pub(super) major_per_s: f64,
    pub(super) oom_kills: u64,
    /// SIGKILLs by anyone but the kernel's OOM killer.
    pub(super) kills: u64,
    /// The standing OOM risk warning, in a few words.
    pub(super) risk: Option<String>,
}

impl CgroupRow {
    pub(super) fn stalls(&self) -> u64 {
        self.kinds.values().map(|k| k.count).sum()
    }
    pub(super) fn worst_p99(&self) -> u64 {
        self.kinds
            .values()
            .map(|k| k.quantile_ns(0.99))
            .max()
            .unwrap_or(0)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SortKey {
    StallTime,
    Stalls,
    P99,
    Faults,
    Name,
}

#[derive(Debug, Default)]
pub(super) struct State {
    pub(super) rows: BTreeMap<String, CgroupRow>,
    pub(super) last_oom: Option<String>,
    pub(super) last_kill: Option<String>,
    /// The machine's kswapd in the last interval: is the node short of memory right now?
    pub(super) kswapd_awake_pct: f64,
    pub(super) intervals: u64,
}

impl State {
    pub(super) fn fold(&mut self, summary: &Summary) {
        self.intervals += 1;
        self.kswapd_awake_pct = summary
            .kswapd
            .as_ref()
            .map_or(0.0, |k| k.awake_pct(summary.period_ns));
        for row in &summary.rows {
            let stats = self
                .rows
                .entry(row.cgroup.clone())
                .or_default()
                .kinds
                .entry(row.kind)
                .or_default();
            stats.count += row.count;
            stats.total_ns += row.total_ns;
            stats.buckets.resize(BUCKETS, 0);
            for (k, bucket) in row.buckets.iter().enumerate().take(BUCKETS) {
                stats.buckets[k] += bucket.count;
            }
        }
        for pressure in &summary.pressure {
            let row = self.rows.entry(pressure.cgroup.clone()).or_default();
            row.stall_ns = row.stall_ns.saturating_add(pressure.stall_ns);
        }
        for row in self.rows.values_mut() {
            (row.faults_per_s, row.major_per_s) = (0.0, 0.0);
        }
        for f in &summary.faults {
            let row = self.rows.entry(f.cgroup.clone()).or_default();
            (row.faults_per_s, row.major_per_s) = (f.minor_per_s + f.major_per_s, f.major_per_s);
        }
        for (cgroup, labels) in &summary.labels {
            if let Some(row) = self.rows.get_mut(cgroup) {
                row.workload = labels.workload();
            }
        }
    }

    pub(super) fn event(&mut self, event: &Event) {
        match event {
            Event::OomKill(kill) => {
                let cgroup = kill.victim_cgroup.clone().unwrap_or_else(|| "?".into());
                let workload = kill.victim_labels.as_ref().and_then(Labels::workload);
                self.last_oom = Some(format!(
                    "{} {} pid {} in {}",
                    format_unix_ns(kill.time_ns),
                    escape(&kill.victim_comm),
                    kill.victim_pid,
                    escape(workload.as_deref().unwrap_or(&cgroup))
                ));
                let row = self.rows.entry(cgroup).or_default();
                row.oom_kills += 1;
                row.workload = row.workload.take().or(workload);
            }
            Event::Kill(kill) => {
                let cgroup = kill.cgroup.clone().unwrap_or_else(|| "?".into());
                self.last_kill = Some(format!(
                    "{} {} pid {} in {} by {} ({})",
                    format_unix_ns(kill.time_ns),
                    escape(&kill.comm),
                    kill.tgid,
                    escape(&cgroup),
                    kill.killer.name(),
                    escape(&kill.sender_process)
                ));
                self.rows.entry(cgroup).or_default().kills += 1;
            }
            Event::OomRisk(risk) => {
                self.rows.entry(risk.cgroup.clone()).or_default().risk =
                    match (risk.reason, risk.eta_s) {
                        (RiskReason::Cleared, _) => None,
                        (_, Some(eta)) => Some(format!("OOM in {eta:.0} s")),
                        (_, None) => Some(format!("{} kB left", risk.headroom_kb)),
                    };
            }
            Event::Stall(_) => {}
        }
    }

    pub(super) fn sorted(&self, key: SortKey) -> Vec<(&String, &CgroupRow)> {
        let mut rows: Vec<_> = self.rows.iter().collect();
        rows.sort_by(|(an, a), (bn, b)| {
            match key {
                SortKey::StallTime => b.stall_ns.cmp(&a.stall_ns),
                SortKey::Stalls => b.stalls().cmp(&a.stalls()),
                SortKey::P99 => b.worst_p99().cmp(&a.worst_p99()),
                SortKey::Faults => b.faults_per_s.total_cmp(&a.faults_per_s),
                SortKey::Name => an.cmp(bn),
            }
            .then_with(|| an.cmp(bn))
        });
        rows
    }
}
