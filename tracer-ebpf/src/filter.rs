//! The in-kernel cgroup filter: events of unwatched cgroups never reach the ring buffer.
use aya_ebpf::{Global, macros::map, maps::HashMap};
use memstall_common::{FILTER_MAX_DEPTH, FilterConfig, KernelLayout};

use crate::task::{KernelMemory, Probed, css_id_via, memcg_css};

#[unsafe(no_mangle)]
static FILTER: Global<FilterConfig> = Global::new(FilterConfig {
    enabled: 0,
    descendants: 0,
});

/// Watched memcg ids (kernfs ids of the cgroup directories).
#[map]
pub static WATCHED: HashMap<u64, u8> = HashMap::with_max_entries(1024, 0);

/// Whether the memcg with subsystem state `css` is watched: itself, or with descendants on,
/// one of its ancestors.
#[inline(always)]
pub fn css_watched(layout: &KernelLayout, css: u64) -> bool {
    css_watched_via::<Probed>(layout, css)
}

#[inline(always)]
pub fn css_watched_via<M: KernelMemory>(layout: &KernelLayout, css: u64) -> bool {
    let config = FILTER.load();
    if config.enabled == 0 {
        return true;
    }
    let mut css = css;
    for _ in 0..FILTER_MAX_DEPTH {
        if css == 0 {
            return false;
        }
        // SAFETY: the key is a plain u64 copied by the helper.
        if unsafe { WATCHED.get(&css_id_via::<M>(layout, css)) }.is_some() {
            return true;
        }
        if config.descendants == 0 {
            return false;
        }
        css = M::read_u64(css, layout.css_parent);
    }
    false
}

#[inline(always)]
pub fn task_watched(layout: &KernelLayout, task: u64) -> bool {
    FILTER.load().enabled == 0 || css_watched(layout, memcg_css(layout, task))
}

#[inline(always)]
pub fn current_watched(layout: &KernelLayout) -> bool {
    if FILTER.load().enabled == 0 {
        return true;
    }
    // SAFETY: bpf_get_current_task takes no arguments.
    let task = unsafe { aya_ebpf::helpers::generated::bpf_get_current_task() };
    task_watched(layout, task)
}
