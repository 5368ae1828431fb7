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
pub mod aggregate;
pub mod cgroup;
mod cli;
pub mod clock;
mod cmd;
pub mod decode;
pub mod enrich;
pub mod error;
pub mod event;
pub mod kernel;
pub mod pipeline;
pub mod ringbuf;
pub mod sink;
pub mod term;

pub use cmd::main;

/// The eBPF object built by build.rs (aya-build, pinned nightly, bpf-linker).
pub static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/memstall-ebpf"));
