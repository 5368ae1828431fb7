//! The statistics of the bench: medians, a percentile bootstrap for their 95 % interval
//! (seeded, so a run's figures can be recomputed exactly from its samples), and verdicts that
//! say "undecided" when the interval straddles the goal.
use serde::{Deserialize, Serialize};

/// Bootstrap resamples per interval: the 2.5 % and 97.5 % points move by well under a
/// percent of the interval's width between seeds at this count.
const RESAMPLES: usize = 4000;

/// SplitMix64: tiny, seedable and good enough to pick resample indices.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in 0..n (n > 0); the modulo bias is below 2^-50 for the n used here.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// A stable seed from a label, so each figure has its own reproducible resampling.
pub fn seed_of(label: &str) -> u64 {
    // FNV-1a.
    label.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Median; the mean of the two middle values for an even count. `None` when empty.
pub fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    Some(if sorted.len().is_multiple_of(2) {
        f64::midpoint(sorted[mid - 1], sorted[mid])
    } else {
        sorted[mid]
    })
}

/// The value below which `q` (0..=1) of the sorted values lie (nearest rank).
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let rank = (q * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// A median with its bootstrap 95 % interval.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    pub median: f64,
    pub low: f64,
    pub high: f64,
}

impl Estimate {
    pub fn overlaps(&self, other: &Estimate) -> bool {
        self.low <= other.high && other.low <= self.high
    }
}

/// The median of `samples` and the 2.5–97.5 % percentile interval of the medians of
/// `RESAMPLES` resamples drawn with replacement. `None` with fewer than 3 samples.
pub fn bootstrap_median(samples: &[f64], seed: u64) -> Option<Estimate> {
    if samples.len() < 3 {
        return None;
    }
    let mut rng = Rng::new(seed);
    let mut resample = vec![0.0; samples.len()];
    let mut medians = Vec::with_capacity(RESAMPLES);
    for _ in 0..RESAMPLES {
        for slot in &mut resample {
            *slot = samples[rng.below(samples.len())];
        }
        medians.push(median(&resample)?);
    }
    medians.sort_by(f64::total_cmp);
    Some(Estimate {
        median: median(samples)?,
        low: quantile(&medians, 0.025),
        high: quantile(&medians, 0.975),
    })
}

/// Tracer-on over tracer-off, round by round: each round ran both back to back, so a slow
/// spell of the machine lands on both sides of its ratio. Rounds where either side is missing
/// or the baseline is zero are left out.
pub fn paired_ratios(on: &[Option<f64>], off: &[Option<f64>]) -> Vec<f64> {
    on.iter()
        .zip(off)
        .filter_map(|(on, off)| match (on, off) {
            (Some(on), Some(off)) if *off > 0.0 => Some(on / off),
            _ => None,
        })
        .collect()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Met,
    Missed,
    Undecided,
}

impl Verdict {
    pub fn word(self) -> &'static str {
        match self {
            Self::Met => "met",
            Self::Missed => "missed",
            Self::Undecided => "undecided",
        }
    }
}

/// A goal "at most `limit`" (a ratio, milliseconds, MiB) against an estimate: met only when
/// the whole interval is at or below it, missed only when the whole interval is above it.
pub fn verdict_at_most(estimate: &Estimate, limit: f64) -> Verdict {
    if estimate.high <= limit {
        Verdict::Met
    } else if estimate.low > limit {
        Verdict::Missed
    } else {
        Verdict::Undecided
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0]), Some(3.0));
        assert_eq!(median(&[5.0, 1.0, 3.0]), Some(3.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
    }

    #[test]
    fn rng_is_seeded_and_spreads() {
        let a: Vec<u64> = (0..4)
            .scan(Rng::new(7), |r, _| Some(r.next_u64()))
            .collect();
        let b: Vec<u64> = (0..4)
            .scan(Rng::new(7), |r, _| Some(r.next_u64()))
            .collect();
        assert_eq!(a, b);
        let mut rng = Rng::new(1);
        let mut counts = [0u32; 10];
        for _ in 0..100_000 {
            counts[rng.below(10)] += 1;
        }
        assert!(
            counts.iter().all(|&c| (9_500..10_500).contains(&c)),
            "{counts:?}"
        );
        assert_ne!(seed_of("faults/off"), seed_of("faults/on"));
    }

    #[test]
    fn bootstrap_interval_brackets_the_median_and_is_reproducible() {
        let samples: Vec<f64> = (0..21).map(|i| 1.0 + f64::from(i) * 0.01).collect();
        let a = bootstrap_median(&samples, 42).unwrap();
        assert_eq!(a, bootstrap_median(&samples, 42).unwrap());
        assert!((a.median - 1.10).abs() < 1e-9, "{a:?}");
        assert!(a.low <= a.median && a.median <= a.high, "{a:?}");
        // The median of 21 evenly spaced values moves by a few ranks under resampling:
        // the interval is a few hundredths wide, far from the range's ends.
        assert!(a.low >= 1.04 && a.high <= 1.16, "{a:?}");
        assert!(a.high - a.low >= 0.02, "{a:?}");
        // Identical samples: no spread at all.
        let flat = bootstrap_median(&[2.0; 15], 1).unwrap();
        assert_eq!((flat.low, flat.median, flat.high), (2.0, 2.0, 2.0));
        assert_eq!(bootstrap_median(&[1.0, 2.0], 1), None);
    }

    #[test]
    fn one_wild_round_does_not_move_the_interval_much() {
        let mut samples = vec![1.0, 1.01, 0.99, 1.02, 0.98, 1.0, 1.01, 0.99, 1.0, 1.0];
        samples.extend([1.01, 0.99, 1.0, 1.02, 0.98]);
        let calm = bootstrap_median(&samples, 3).unwrap();
        samples[4] = 5.6; // the machine was busy for one round
        let busy = bootstrap_median(&samples, 3).unwrap();
        assert!(busy.high <= calm.high + 0.011, "{calm:?} {busy:?}");
    }

    #[test]
    fn paired_ratios_skip_missing_rounds() {
        let on = [Some(1.1), None, Some(2.2), Some(3.0)];
        let off = [Some(1.0), Some(1.0), Some(2.0), Some(0.0)];
        let ratios = paired_ratios(&on, &off);
        assert_eq!(ratios.len(), 2);
        assert!((ratios[0] - 1.1).abs() < 1e-12 && (ratios[1] - 1.1).abs() < 1e-12);
    }

    #[test]
    fn verdicts_need_the_whole_interval() {
        let at = |median, low, high| Estimate { median, low, high };
        assert_eq!(verdict_at_most(&at(1.01, 1.00, 1.02), 1.02), Verdict::Met);
        assert_eq!(
            verdict_at_most(&at(1.01, 0.99, 1.03), 1.02),
            Verdict::Undecided
        );
        // A median under the goal is not enough ...
        assert_eq!(
            verdict_at_most(&at(1.015, 1.00, 1.05), 1.02),
            Verdict::Undecided
        );
        // ... and one over it is not a miss while the interval reaches below.
        assert_eq!(
            verdict_at_most(&at(1.03, 1.019, 1.04), 1.02),
            Verdict::Undecided
        );
        assert_eq!(
            verdict_at_most(&at(1.10, 1.05, 1.20), 1.02),
            Verdict::Missed
        );
        assert_eq!(Verdict::Undecided.word(), "undecided");
    }

    #[test]
    fn intervals_overlap() {
        let a = Estimate {
            median: 1.0,
            low: 0.9,
            high: 1.1,
        };
        let b = Estimate {
            median: 1.2,
            low: 1.1,
            high: 1.3,
        };
        let c = Estimate {
            median: 1.4,
            low: 1.2,
            high: 1.5,
        };
        assert!(a.overlaps(&b) && b.overlaps(&a));
        assert!(!a.overlaps(&c));
    }
}
