//! memstall: which cgroup stalled on memory reclaim, for how long, and why the OOM killer
//! picked its victim.
//!
//! Data flows one way: kernel programs → ring buffer → [`decode`] → [`run::Pipeline`] → [`sink`].

pub mod app;
pub mod cgroup;
pub mod cli;
pub mod clock;
pub mod decode;
pub mod doctor;
pub mod faults;
pub mod k8s;
pub mod kernel_layout;
pub mod kmsg;
pub mod latency;
pub mod live;
pub mod loader;
pub mod memcg;
pub mod oom;
pub mod oom_score;
pub mod oom_view;
pub mod pipeline;
pub mod postmortem;
pub mod preflight;
pub mod recent_stalls;
pub mod reclaim;
pub mod report;
pub mod run;
pub mod serve;
pub mod sink;
pub mod soak;
pub mod stacks;
pub mod stats;
pub mod target;
pub mod term;
pub mod tracefs;

/// The eBPF object built by build.rs (aya-build, pinned nightly, bpf-linker).
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tracer"));
