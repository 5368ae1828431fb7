//! memstall's integration tests, one binary: real workloads in real memory cgroups, on the
//! running kernel, as root. Each module is one feature; `cargo xtask vmtest` runs, by name,
//! the tests whose outcome depends on the kernel and those this host cannot run (`TESTS` in
//! xtask/src/vmtest.rs).
mod cli;
mod contract;
mod dashboard;
mod diagnostics;
mod doctor;
mod faults;
mod fentry;
mod hardening;
mod kills;
mod live;
mod oom_kill;
mod oom_postmortem;
mod oom_scores;
mod pressure;
mod prometheus;
mod reclaim;
mod soak;
mod stall_kinds;
mod targeting;
mod threshold;
mod untrusted;
