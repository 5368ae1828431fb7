//! The in-kernel `--cgroup` filter.

/// The in-kernel cgroup filter (`--cgroup`): off, or the WATCHED memcg ids, optionally with
/// their descendants (found by walking up css->parent, so cgroups created later count too).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct FilterConfig {
    pub enabled: u32,
    pub descendants: u32,
}

/// How many ancestors the filter walks; deeper cgroups only match their nearer ancestors.
pub const FILTER_MAX_DEPTH: usize = 16;
