//! Ring-buffer records to events: decode the bytes, then resolve ids to names and times.
use aya::maps::{MapData, StackTraceMap};
use serde::{Serialize, Serializer};
use std::collections::HashMap;

use tracer_common::{DecodeError, OomContextEvent, RawEvent};

use crate::{
    cgroup::{CgroupResolver, CgroupVersion},
    clock::BootClock,
    oom::OomKill,
    postmortem::PostMortem,
    reclaim::Stall,
    stacks::Symbolizer,
};

/// Every event memstall reports; JSON `type` names the variant (for stalls, their kind).
#[derive(Clone, Debug, PartialEq)]
// Stalls are the hot path and stay unboxed; a kill, rare and carrying its whole post-mortem,
// is boxed.
#[allow(clippy::large_enum_variant)]
pub enum Event {
    OomKill(Box<OomKill>),
    Stall(Stall),
}

impl Event {
    pub fn type_name(&self) -> &'static str {
        match self {
            Event::OomKill(_) => "oom_kill",
            Event::Stall(stall) => stall.kind.name(),
        }
    }

    /// The memory cgroups the event concerns, for `--cgroup` filtering.
    pub fn cgroups(&self) -> Vec<&str> {
        match self {
            Event::OomKill(kill) => kill.cgroups().collect(),
            Event::Stall(stall) => stall.cgroup.as_deref().into_iter().collect(),
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
        }
    }
}

impl std::fmt::Display for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Event::OomKill(kill) => kill.fmt(f),
            Event::Stall(stall) => stall.fmt(f),
        }
    }
}

/// What decoding needs beyond the bytes.
pub struct DecodeContext {
    pub cgroups: CgroupResolver,
    pub version: CgroupVersion,
    pub clock: BootClock,
    /// The kernel's STACKS map (outlier stacks); absent in tests that feed bytes directly.
    pub stack_map: Option<StackTraceMap<MapData>>,
    pub symbolizer: Symbolizer,
    /// Kernel log reader and snapshotter for OOM kills; absent in byte-level tests.
    pub postmortem: Option<PostMortem>,
    /// oom_control of kills in progress (fentry), by victim pid, until their OomKill arrives.
    pub oom_contexts: HashMap<u32, OomContextEvent>,
}

impl DecodeContext {
    pub fn new(cgroups: CgroupResolver, version: CgroupVersion) -> Self {
        Self {
            cgroups,
            version,
            clock: BootClock::new(),
            stack_map: None,
            symbolizer: Symbolizer::default(),
            postmortem: None,
            oom_contexts: HashMap::new(),
        }
    }

    /// `None` for a record that decodes but names nothing this build knows.
    pub fn decode(&mut self, bytes: &[u8]) -> Result<Option<Event>, DecodeError> {
        Ok(match RawEvent::decode(bytes)? {
            RawEvent::OomKill(raw) => Some(Event::OomKill(Box::new(OomKill::decode(&raw, self)))),
            RawEvent::Stall(raw) => Stall::decode(&raw, self).map(Event::Stall),
            RawEvent::OomContext(raw) => {
                // Bounded: a context whose kill never came (filtered out) must not pile up.
                if self.oom_contexts.len() >= 64 {
                    self.oom_contexts.clear();
                }
                self.oom_contexts.insert(raw.victim_pid, raw);
                None
            }
        })
    }

    /// Kernel and user frames of stack ids captured with an outlier.
    pub fn stacks(
        &mut self,
        kernel_id: i32,
        user_id: i32,
        tgid: u32,
    ) -> (Vec<String>, Vec<String>) {
        let Some(map) = self.stack_map.as_mut() else {
            return (Vec::new(), Vec::new());
        };
        // User frames first: the process may exit while kallsyms loads for the first outlier.
        let user = self.symbolizer.user_stack(map, user_id, tgid);
        (self.symbolizer.kernel_stack(map, kernel_id), user)
    }
}
