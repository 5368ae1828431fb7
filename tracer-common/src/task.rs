//! Kernel structure offsets the programs read task_struct and friends at.

/// Kernel structure layout, resolved from the running kernel's BTF by the loader and handed to
/// the programs as a global (aya-ebpf cannot emit CO-RE relocations). Offsets are in bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct KernelLayout {
    /// 0 until the loader fills the layout in; programs then leave task-derived fields at 0.
    pub valid: u32,
    pub task_pid: u32,
    pub task_tgid: u32,
    pub task_comm: u32,
    pub task_mm: u32,
    pub task_signal: u32,
    pub task_real_cred: u32,
    pub task_cgroups: u32,
    /// Offset of `css_set.subsys[memory_cgrp_id]` (the index folded in).
    pub css_set_memory_subsys: u32,
    pub css_cgroup: u32,
    pub cgroup_kn: u32,
    pub kernfs_node_id: u32,
    pub signal_oom_score_adj: u32,
    pub cred_uid: u32,
    pub mm_total_vm: u32,
    pub mm_pgtables_bytes: u32,
    /// Offset of the counter for each MM_* item: `rss_stat[i]` plus the offset of its count.
    pub mm_file_pages: u32,
    pub mm_anon_pages: u32,
    pub mm_swap_entries: u32,
    pub mm_shmem_pages: u32,
    /// log2(page size / 1024), to turn page counts into kB.
    pub page_kb_shift: u32,
    /// Offset of `mem_cgroup.css` (a memcg's cgroup_subsys_state).
    pub memcg_css: u32,
    /// Offset of `cgroup_subsys_state.parent`.
    pub css_parent: u32,
    /// Offset of `task_struct.group_leader` (a sender's process name).
    pub task_group_leader: u32,
    /// Bit offsets of task_struct's `in_iowait` and `in_memstall` bitfields (PSI marks a task
    /// in a memory stall; in_iowait tells a read from a sleep), u32::MAX where unresolved.
    pub task_in_iowait_bit: u32,
    pub task_in_memstall_bit: u32,
    /// Offset of `shrinker.scan_objects`, u32::MAX where unresolved.
    pub shrinker_scan_objects: u32,
    /// Offset of `task_struct.flags` (PF_KTHREAD: kernel threads are not a workload's stall).
    pub task_flags: u32,
    /// Offset of `mem_cgroup.memory.usage` (pages charged), u32::MAX where unresolved.
    pub memcg_usage: u32,
    pub _reserved: u32,
}
