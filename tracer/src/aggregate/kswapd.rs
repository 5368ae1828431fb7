//! kswapd across the machine over a period, whatever `--cgroup` watches.
use memstall_common::KswapdTotals;
use serde::Serialize;

/// kswapd across the whole machine over a period, whatever `--cgroup` watches: whether the
/// node was short of memory while the watched cgroups stalled.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct KswapdActivity {
    /// Wake-to-sleep runs that ended in the period (each a `kswapd_wake` stall where watched).
    pub runs: u64,
    /// Runs that began in the period.
    pub wakes: u64,
    /// Time awake in the period, runs still in progress included, summed over nodes.
    pub awake_ns: u64,
    pub pages_scanned: u64,
    pub pages_reclaimed: u64,
}

impl KswapdActivity {
    /// Percent of a period of `period_ns` kswapd was awake (over 100 with several nodes busy).
    pub fn awake_pct(&self, period_ns: u64) -> f64 {
        self.awake_ns as f64 * 100.0 / period_ns.max(1) as f64
    }

    /// The activity between two kernel totals; `None` when kswapd slept throughout.
    pub fn between(now: &KswapdTotals, before: &KswapdTotals) -> Option<Self> {
        let awake_ns = now.awake_ns.saturating_sub(before.awake_ns);
        (awake_ns > 0).then(|| Self {
            runs: now.runs.saturating_sub(before.runs),
            wakes: now.wakes.saturating_sub(before.wakes),
            awake_ns,
            pages_scanned: now.pages_scanned.saturating_sub(before.pages_scanned),
            pages_reclaimed: now.pages_reclaimed.saturating_sub(before.pages_reclaimed),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kswapd_activity_is_the_difference_of_totals() {
        let before = KswapdTotals {
            runs: 4,
            wakes: 5,
            awake_ns: 1_000,
            pages_scanned: 50,
            pages_reclaimed: 40,
        };
        let now = KswapdTotals {
            runs: 6,
            wakes: 6,
            awake_ns: 4_000,
            pages_scanned: 80,
            pages_reclaimed: 60,
        };
        assert_eq!(
            KswapdActivity::between(&now, &before),
            Some(KswapdActivity {
                runs: 2,
                wakes: 1,
                awake_ns: 3_000,
                pages_scanned: 30,
                pages_reclaimed: 20,
            })
        );
        assert_eq!(KswapdActivity::between(&now, &now), None);
    }
}
