//! memstall: which cgroup stalled on memory, for how long, on what cause, and who killed what
//! and why.
//!
//! Data flows one way, and each stage imports only the stages before it:
//!
//! ```text
//! kernel/ ─▶ ringbuf ─▶ decode/ ─▶ cgroup/, enrich/ ─▶ aggregate/ ─▶ pipeline ─▶ sink/
//! ```
//!
//! `cmd/` turns the command line ([`cli`]) into each stage's configuration. `error`, `event/`,
//! `clock` and `term` are leaves every stage may use.
mod aggregate;
mod cgroup;
mod cli;
mod clock;
mod cmd;
mod decode;
mod enrich;
mod error;
mod event;
#[cfg(feature = "fuzz")]
#[doc(hidden)]
pub mod fuzz;
mod kernel;
mod pipeline;
mod ringbuf;
mod sink;
mod term;
#[cfg(test)]
mod testing;

pub use cmd::main;

/// What the integration tests and the ingest benchmark drive directly; everything else is
/// the crate's own.
pub use cgroup::{CgroupFilter, CgroupResolver, CgroupVersion, MemoryHierarchy};
pub use decode::DecodeContext;
pub use enrich::Enricher;
pub use pipeline::Pipeline;

/// The eBPF object built by build.rs (aya-build, pinned nightly, bpf-linker).
pub static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/memstall-ebpf"));
