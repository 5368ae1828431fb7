//! `memstall_stall_seconds`: the interval summaries' log2 buckets folded into a cumulative
//! Prometheus histogram with the same bounds.
use std::{
    fmt,
    sync::{Mutex, MutexGuard},
};

use prometheus_client::{
    encoding::{EncodeMetric, MetricEncoder, NoLabelSet},
    metrics::{MetricType, TypedMetric},
};

use crate::aggregate::SummaryRow;

/// Finite bucket upper bounds of `memstall_stall_seconds`, in µs: 2, 4, 8 … 2^26 (67 s). The
/// summary rows' log2 bucket k holds [2^k, 2^(k+1)) µs (k = 0 also below 1 µs), so bucket k
/// is exactly `le` = 2^(k+1) µs = high_us + 1; stalls are capped at 60 s, inside the last.
pub const BOUNDS_US: [u64; 26] = {
    let mut bounds = [0; 26];
    let mut i = 0;
    while i < bounds.len() {
        bounds[i] = 2 << i;
        i += 1;
    }
    bounds
};

/// Index of the bucket a summary-row bucket with this `high_us` folds into: the first bound
/// at or above `high_us + 1` (exact for log2 rows), or the `+Inf` slot.
pub fn bucket_index(high_us: u64) -> usize {
    let le_us = high_us.saturating_add(1);
    BOUNDS_US
        .iter()
        .position(|&bound| bound >= le_us)
        .unwrap_or(BOUNDS_US.len())
}

#[derive(Debug, Default)]
struct Cumulative {
    /// Per-bucket (not cumulative) counts; the last slot is `+Inf`.
    buckets: [u64; BOUNDS_US.len() + 1],
    count: u64,
    sum_ns: u128,
}

/// A histogram fed with already-bucketed counts and the exact sum (prometheus-client's own
/// histogram only takes single observations).
#[derive(Debug, Default)]
pub struct StallHistogram {
    state: Mutex<Cumulative>,
}

/// A poisoned lock still holds counts worth serving.
pub(super) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl StallHistogram {
    /// Adds one interval's row: its buckets, count and total stall time.
    pub fn add(&self, row: &SummaryRow) {
        let mut state = lock(&self.state);
        let mut bucketed = 0u64;
        for bucket in &row.buckets {
            let slot = &mut state.buckets[bucket_index(bucket.high_us)];
            *slot = slot.saturating_add(bucket.count);
            bucketed = bucketed.saturating_add(bucket.count);
        }
        // Count and +Inf always agree, whatever a row holds.
        let unbucketed = row.count.saturating_sub(bucketed);
        let inf = &mut state.buckets[BOUNDS_US.len()];
        *inf = inf.saturating_add(unbucketed);
        state.count = state
            .count
            .saturating_add(bucketed.saturating_add(unbucketed));
        state.sum_ns = state.sum_ns.saturating_add(u128::from(row.total_ns));
    }
}

impl TypedMetric for StallHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for StallHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), fmt::Error> {
        let state = lock(&self.state);
        let buckets: Vec<(f64, u64)> = BOUNDS_US
            .iter()
            .map(|&us| us as f64 / 1e6)
            .chain([f64::INFINITY])
            .zip(state.buckets.iter().copied())
            .collect();
        encoder.encode_histogram::<NoLabelSet>(
            state.sum_ns as f64 / 1e9,
            state.count,
            &buckets,
            None,
        )
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}
