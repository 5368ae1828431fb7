//! The values that flow from decoding to the sinks: one [`Event`] per kernel record worth
//! reporting. Plain data: this module imports no stage.
mod kill;
mod labels;
mod oom;
mod oom_risk;
mod stall;

pub use kill::{Confidence, Freed, Kill, KillMethod, Killer};
pub use labels::Labels;
pub use oom::{
    Breakdown, Candidate, Diagnosis, Explanation, KillSource, OomControl, OomKill, ReclaimBefore,
    ReportSource,
};
pub use oom_risk::{OomRisk, RiskReason};
pub use stall::{Stall, ThrottleReason};

use serde::{Serialize, Serializer};

/// Every event memstall reports; JSON `type` names the variant (for stalls, their kind).
#[derive(Clone, Debug, PartialEq)]
// Stalls are the hot path and stay unboxed; a kill, rare and carrying its whole post-mortem,
// is boxed.
#[allow(clippy::large_enum_variant)]
pub enum Event {
    OomKill(Box<OomKill>),
    Stall(Stall),
    Kill(Box<Kill>),
    OomRisk(Box<OomRisk>),
}

impl Event {
    pub fn type_name(&self) -> &'static str {
        match self {
            Event::OomKill(_) => "oom_kill",
            Event::Stall(stall) => stall.kind.name(),
            Event::Kill(_) => "kill",
            Event::OomRisk(_) => "oom_risk",
        }
    }

    /// The memory cgroups the event concerns, for `--cgroup` filtering.
    pub fn cgroups(&self) -> Vec<&str> {
        match self {
            Event::OomKill(kill) => kill.cgroups().collect(),
            Event::Stall(stall) => stall.cgroup.as_deref().into_iter().collect(),
            Event::Kill(kill) => kill.cgroup.as_deref().into_iter().collect(),
            Event::OomRisk(risk) => vec![risk.cgroup.as_str()],
        }
    }
}

/// `{"type": ..., <fields>}`
#[derive(Serialize)]
struct Tagged<'a, T: Serialize> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(flatten)]
    body: &'a T,
}

impl Serialize for Event {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let kind = self.type_name();
        match self {
            Event::OomKill(body) => Tagged { kind, body }.serialize(serializer),
            Event::Stall(body) => Tagged { kind, body }.serialize(serializer),
            Event::Kill(body) => Tagged { kind, body }.serialize(serializer),
            Event::OomRisk(body) => Tagged { kind, body }.serialize(serializer),
        }
    }
}
