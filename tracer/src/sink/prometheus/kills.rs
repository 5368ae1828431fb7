//! Kills by killer, and how far each watched cgroup is from an OOM kill.
use std::sync::atomic::AtomicU64;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::{Registry, Unit},
};

use super::names::PodNames;
use crate::event::{Event, Labels, RiskReason};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KillLabels {
    cgroup: String,
    killer: &'static str,
    #[prometheus(flatten)]
    names: PodNames,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CgroupLabels {
    cgroup: String,
}

#[derive(Debug, Default)]
pub struct KillMetrics {
    kills: Family<KillLabels, Counter>,
    eta: Family<CgroupLabels, Gauge<f64, AtomicU64>>,
}

impl KillMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "memstall_kills",
            "SIGKILLs of tasks in a memory cgroup, by killer (kernel_oom, oomd, systemd_oomd, kubelet, earlyoom, cgroup_kill, process)",
            metrics.kills.clone(),
        );
        registry.register_with_unit(
            "memstall_oom_eta",
            "Seconds until a cgroup at risk reaches its limit at the growth seen (+Inf: at risk for lack of headroom, not growing); absent when not at risk",
            Unit::Seconds,
            metrics.eta.clone(),
        );
        metrics
    }

    pub fn event(&self, event: &Event) {
        match event {
            Event::Kill(kill) => {
                self.count(
                    kill.cgroup.as_deref(),
                    kill.killer.name(),
                    kill.labels.as_ref(),
                );
            }
            Event::OomKill(kill) => {
                let cgroup = kill
                    .victim_cgroup
                    .as_deref()
                    .or(kill.explanation.oom_cgroup.as_deref());
                self.count(cgroup, kill.killer.name(), kill.victim_labels.as_ref());
            }
            Event::OomRisk(risk) => {
                let labels = CgroupLabels {
                    cgroup: risk.cgroup.clone(),
                };
                if risk.reason == RiskReason::Cleared {
                    self.eta.remove(&labels);
                } else {
                    self.eta
                        .get_or_create(&labels)
                        .set(risk.eta_s.unwrap_or(f64::INFINITY));
                }
            }
            Event::Stall(_) => {}
        }
    }

    fn count(&self, cgroup: Option<&str>, killer: &'static str, labels: Option<&Labels>) {
        self.kills
            .get_or_create(&KillLabels {
                cgroup: cgroup.unwrap_or("?").to_owned(),
                killer,
                names: PodNames::of(labels),
            })
            .inc();
    }
}
