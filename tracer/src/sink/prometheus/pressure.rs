//! Memory pressure metrics: stall time by cause per cgroup (nested stalls once), and the
//! kernel's PSI beside it.
use std::sync::atomic::AtomicU64;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
    registry::{Registry, Unit},
};

use crate::aggregate::PressureRow;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CauseLabels {
    cgroup: String,
    cause: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CgroupLabels {
    cgroup: String,
}

type Seconds = Counter<f64, AtomicU64>;

#[derive(Debug, Default)]
pub struct PressureMetrics {
    stall: Family<CauseLabels, Seconds>,
    psi_some: Family<CgroupLabels, Seconds>,
    psi_full: Family<CgroupLabels, Seconds>,
}

impl PressureMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register_with_unit(
            "memstall_memory_stall",
            "Time tasks of a memory cgroup stalled on memory, by innermost cause (nested stalls once: the causes add up)",
            Unit::Seconds,
            metrics.stall.clone(),
        );
        registry.register_with_unit(
            "memstall_psi_memory_some",
            "The kernel's PSI memory `some` time of the cgroup (weighted by CPU time; beside, not equal to, the stall time)",
            Unit::Seconds,
            metrics.psi_some.clone(),
        );
        registry.register_with_unit(
            "memstall_psi_memory_full",
            "The kernel's PSI memory `full` time of the cgroup",
            Unit::Seconds,
            metrics.psi_full.clone(),
        );
        metrics
    }

    /// Folds an interval's rows in.
    pub fn add(&self, rows: &[PressureRow]) {
        for row in rows {
            for (cause, ns) in &row.by_cause {
                self.stall
                    .get_or_create(&CauseLabels {
                        cgroup: row.cgroup.clone(),
                        cause,
                    })
                    .inc_by(*ns as f64 / 1e9);
            }
            let labels = CgroupLabels {
                cgroup: row.cgroup.clone(),
            };
            if let Some(ns) = row.psi_some_ns {
                self.psi_some.get_or_create(&labels).inc_by(ns as f64 / 1e9);
            }
            if let Some(ns) = row.psi_full_ns {
                self.psi_full.get_or_create(&labels).inc_by(ns as f64 / 1e9);
            }
        }
    }
}
