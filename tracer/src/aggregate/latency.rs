//! Charge and page-fault latency per cgroup (`--latency`): rows from the kernel's log2
//! histograms.
use std::collections::BTreeMap;

use memstall_common::{LatencyValue, latency};
use serde::Serialize;

use crate::kernel::maps::LatencyCounters;

pub fn kind_name(kind: u32) -> &'static str {
    match kind {
        latency::CHARGE => "charge",
        latency::FAULT => "page_fault",
        _ => "unknown",
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LatencyBucket {
    pub low_ns: u64,
    pub high_ns: u64,
    pub count: u64,
}

/// One cgroup's charge or fault latency over a period; JSON `type: "latency"`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LatencyRow {
    pub cgroup: String,
    /// `charge` or `page_fault`.
    pub kind: &'static str,
    pub count: u64,
    pub total_ns: u64,
    /// Failed charges (the cgroup could not make room: the step before an OOM kill).
    pub failed: u64,
    /// Upper bounds of the log2 buckets holding the quantiles.
    pub p50_ns: u64,
    pub p99_ns: u64,
    pub max_ns: u64,
    pub buckets: Vec<LatencyBucket>,
}

fn bounds(bucket: u32) -> (u64, u64) {
    if bucket == 0 {
        (0, 0)
    } else {
        (1 << (bucket - 1), (1u64 << bucket) - 1)
    }
}

/// Rows for `now - before`, by cgroup path (`name` turns memcg ids into paths).
pub fn rows(
    now: &LatencyCounters,
    before: &LatencyCounters,
    name: &mut impl FnMut(u64) -> String,
) -> Vec<LatencyRow> {
    let mut grouped: BTreeMap<(String, u32), BTreeMap<u32, LatencyValue>> = BTreeMap::new();
    for (key, value) in now {
        let base = before.get(key).copied().unwrap_or_default();
        let delta = LatencyValue {
            count: value.count.saturating_sub(base.count),
            sum_ns: value.sum_ns.saturating_sub(base.sum_ns),
            failed: value.failed.saturating_sub(base.failed),
        };
        if delta.count > 0 {
            let bucket = grouped
                .entry((name(key.memcg_id), key.kind))
                .or_default()
                .entry(key.bucket)
                .or_default();
            bucket.count = bucket.count.saturating_add(delta.count);
            bucket.sum_ns = bucket.sum_ns.saturating_add(delta.sum_ns);
            bucket.failed = bucket.failed.saturating_add(delta.failed);
        }
    }
    grouped
        .into_iter()
        .map(|((cgroup, kind), buckets)| {
            let count: u64 = buckets.values().map(|v| v.count).sum();
            let quantile = |q: f64| {
                let target = ((count as f64) * q).ceil().max(1.0) as u64;
                let mut seen = 0;
                for (bucket, value) in &buckets {
                    seen += value.count;
                    if seen >= target {
                        return bounds(*bucket).1;
                    }
                }
                0
            };
            LatencyRow {
                cgroup,
                kind: kind_name(kind),
                count,
                total_ns: buckets.values().map(|v| v.sum_ns).sum(),
                failed: buckets.values().map(|v| v.failed).sum(),
                p50_ns: quantile(0.5),
                p99_ns: quantile(0.99),
                max_ns: buckets.keys().last().map_or(0, |b| bounds(*b).1),
                buckets: buckets
                    .iter()
                    .map(|(b, v)| LatencyBucket {
                        low_ns: bounds(*b).0,
                        high_ns: bounds(*b).1,
                        count: v.count,
                    })
                    .collect(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use memstall_common::LatencyKey;

    #[test]
    fn rows_from_log2_buckets() {
        let key = |memcg_id, kind, bucket| LatencyKey {
            memcg_id,
            kind,
            bucket,
        };
        let value = |count, sum_ns, failed| LatencyValue {
            count,
            sum_ns,
            failed,
        };
        let now = LatencyCounters::from([
            (key(1, latency::CHARGE, 10), value(98, 98 * 700, 0)),
            (key(1, latency::CHARGE, 21), value(2, 2 * 1_500_000, 2)),
            (key(2, latency::FAULT, 12), value(5, 5 * 3000, 0)),
        ]);
        let before = LatencyCounters::from([(key(2, latency::FAULT, 12), value(5, 5 * 3000, 0))]);
        let mut name = |id: u64| format!("/cg{id}");
        let rows = rows(&now, &before, &mut name);
        assert_eq!(rows.len(), 1, "no change in cg2");
        let charge = &rows[0];
        assert_eq!(
            (
                charge.cgroup.as_str(),
                charge.kind,
                charge.count,
                charge.failed
            ),
            ("/cg1", "charge", 100, 2)
        );
        assert_eq!(charge.p50_ns, 1023);
        assert_eq!(charge.p99_ns, (1 << 21) - 1);
        assert_eq!(charge.total_ns, 98 * 700 + 3_000_000);
        assert_eq!(
            charge.buckets[0],
            LatencyBucket {
                low_ns: 512,
                high_ns: 1023,
                count: 98
            }
        );
    }
}
