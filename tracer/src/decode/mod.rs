//! Ring-buffer records to events: the bytes decoded, boot times made wall-clock, comms made
//! text and outlier stacks symbolized. Cgroups stay ids here; enrichment names them.
mod kill;
mod oom;
mod stacks;
mod stall;

use std::collections::HashMap;

use aya::maps::{MapData, StackTraceMap};
use memstall_common::{DecodeError, OomContextEvent, RawEvent};

pub use stacks::Symbolizer;
#[cfg(feature = "fuzz")]
pub use stacks::{parse_maps, user_frame};

use crate::{
    clock::BootClock,
    event::{Event, KillMethod},
};

/// What decoding needs beyond the bytes.
pub struct DecodeContext {
    pub clock: BootClock,
    /// The kernel's STACKS map (outlier stacks); absent in tests that feed bytes directly.
    pub stack_map: Option<StackTraceMap<MapData>>,
    pub symbolizer: Symbolizer,
    /// oom_control of kills in progress (fentry), by victim pid, until their OomKill arrives.
    oom_contexts: HashMap<u32, OomContextEvent>,
    kernel_kills: kill::KernelKills,
}

impl Default for DecodeContext {
    fn default() -> Self {
        Self::new()
    }
}

impl DecodeContext {
    pub fn new() -> Self {
        Self {
            clock: BootClock::new(),
            stack_map: None,
            symbolizer: Symbolizer::default(),
            oom_contexts: HashMap::new(),
            kernel_kills: kill::KernelKills::default(),
        }
    }

    /// `None` for a record that decodes but names nothing this build knows, or one that only
    /// completes a later record (an OOM kill's context).
    pub fn decode(&mut self, bytes: &[u8]) -> Result<Option<Event>, DecodeError> {
        Ok(match RawEvent::decode(bytes)? {
            RawEvent::OomKill(raw) => {
                let context = self.oom_contexts.remove(&raw.victim.pid);
                self.kernel_kills
                    .oom_kill(raw.trigger.pid, raw.victim.tgid, raw.header.boot_ns);
                Some(Event::OomKill(Box::new(oom::decode(&raw, context, self))))
            }
            RawEvent::Kill(raw) => {
                let method = match kill::method(&raw) {
                    KillMethod::Kernel => self.kernel_kills.arrived(&raw),
                    other => Some(other),
                };
                method.map(|m| Event::Kill(Box::new(kill::decode(&raw, m, self))))
            }
            RawEvent::Stall(raw) => stall::decode(&raw, self).map(Event::Stall),
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

    /// Kernel SIGKILLs that no OOM kill claimed within [`kill::HOLD_NS`] (all of them when
    /// `now_boot_ns` is u64::MAX, at the end of a run).
    pub fn unclaimed_kills(&mut self, now_boot_ns: u64) -> Vec<Event> {
        self.kernel_kills
            .expired(now_boot_ns)
            .iter()
            .map(|raw| Event::Kill(Box::new(kill::decode(raw, KillMethod::Kernel, self))))
            .collect()
    }

    /// Kernel and user frames of stack ids captured with an outlier.
    fn stacks(&mut self, kernel_id: i32, user_id: i32, tgid: u32) -> (Vec<String>, Vec<String>) {
        let Some(map) = self.stack_map.as_mut() else {
            return (Vec::new(), Vec::new());
        };
        // User frames first: the process may exit while kallsyms loads for the first outlier.
        let user = self.symbolizer.user_stack(map, user_id, tgid);
        (self.symbolizer.kernel_stack(map, kernel_id), user)
    }
}
