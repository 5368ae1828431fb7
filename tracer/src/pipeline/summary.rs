//! Summaries: the period's stall rows, pressure with PSI beside it, kswapd and the kernel's
//! counters, named and labelled, handed to every sink.
use std::collections::HashMap;

use anyhow::Result;
use memstall_common::KswapdTotals;

use super::{Pipeline, now_unix_ns, pressure_cgroups};
use crate::{
    aggregate::{
        KswapdActivity, PressureRow, Scope, Summary, SummaryRow, pressure, stalls::REMOVED_NAME,
    },
    kernel::KernelCounters,
};

impl Pipeline {
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

    /// Names the summary's container cgroups, then hands it to every sink.
    pub(super) fn emit_summary(&mut self, summary: &mut Summary) -> Result<()> {
        let cgroups: Vec<String> = summary.cgroups().map(str::to_owned).collect();
        for cgroup in cgroups {
            if summary.labels.contains_key(&cgroup) {
                continue;
            }
            if let Some(labels) = self.enricher.labels(&cgroup) {
                summary.labels.insert(cgroup, labels);
            }
        }
        for sink in &mut self.sinks {
            sink.summary(summary)?;
        }
        Ok(())
    }

    /// A summary of `scope` ending now, with the kernel's counters `now`.
    pub(super) fn summary(&mut self, scope: Scope, now: &KernelCounters) -> Summary {
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
            labels: HashMap::new(),
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
}
