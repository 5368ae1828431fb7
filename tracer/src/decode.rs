//! Ring-buffer records to events: decode the bytes, then resolve ids to names and times.
use serde::Serialize;
use tracer_common::{DecodeError, RawEvent};

use crate::{
    cgroup::{CgroupResolver, CgroupVersion},
    clock::BootClock,
    oom::OomKill,
};

/// Every event memstall reports; `type` in JSON names the variant.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    OomKill(OomKill),
}

impl Event {
    /// The memory cgroups the event concerns, for `--cgroup` filtering.
    pub fn cgroups(&self) -> Vec<&str> {
        match self {
            Event::OomKill(kill) => kill.cgroups().collect(),
        }
    }
}

impl std::fmt::Display for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Event::OomKill(kill) => kill.fmt(f),
        }
    }
}

/// What decoding needs beyond the bytes.
pub struct DecodeContext {
    pub cgroups: CgroupResolver,
    pub version: CgroupVersion,
    pub clock: BootClock,
}

impl DecodeContext {
    pub fn decode(&mut self, bytes: &[u8]) -> Result<Event, DecodeError> {
        Ok(match RawEvent::decode(bytes)? {
            RawEvent::OomKill(raw) => Event::OomKill(OomKill::decode(&raw, self)),
        })
    }
}
