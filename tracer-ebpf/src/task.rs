//! Reading task_struct and friends at offsets the loader resolved from kernel BTF.
use aya_ebpf::{Global, helpers::bpf_probe_read_kernel};
use memstall_common::{KernelLayout, TASK_COMM_LEN, TaskInfo};

use crate::diag;

#[unsafe(no_mangle)]
// SAFETY: KernelLayout is plain integers, for which all-zero is valid ("not resolved").
static KERNEL_LAYOUT: Global<KernelLayout> = Global::new(unsafe { core::mem::zeroed() });

pub fn layout() -> KernelLayout {
    KERNEL_LAYOUT.load()
}

/// Reads a `T` at `base + offset` in kernel memory; `None` for a null base or a failed read
/// (a diagnostic: the object was not null, so the offset or the object is not what BTF said).
#[inline(always)]
pub fn read<T>(base: u64, offset: u32) -> Option<T> {
    if base == 0 {
        return None;
    }
    // SAFETY: bpf_probe_read_kernel validates the address and fails instead of faulting.
    match unsafe { bpf_probe_read_kernel((base + offset as u64) as *const T) } {
        Ok(value) => Some(value),
        Err(_) => {
            diag::read_failed();
            None
        }
    }
}

/// The task's memory cgroup state: task->cgroups->subsys[memory].
#[inline(always)]
pub fn memcg_css(layout: &KernelLayout, task: u64) -> u64 {
    let css_set: u64 = read(task, layout.task_cgroups).unwrap_or(0);
    read(css_set, layout.css_set_memory_subsys).unwrap_or(0)
}

/// How a program reads a u64 of kernel memory.
pub trait KernelMemory {
    fn read_u64(base: u64, offset: u32) -> u64;
}

/// Through bpf_probe_read_kernel: any address, from any program.
pub enum Probed {}

impl KernelMemory for Probed {
    #[inline(always)]
    fn read_u64(base: u64, offset: u32) -> u64 {
        read(base, offset).unwrap_or(0)
    }
}

/// A plain load, for pointers the kernel passed typed by BTF (tp_btf arguments) and those
/// reached from them. The verifier checks each access against BTF when the program loads (the
/// offsets are constants to it: KERNEL_LAYOUT is frozen read-only data) and the JIT turns a
/// fault into 0. No helper call: count_memcg_events runs on every page fault.
pub enum BtfTyped {}

impl KernelMemory for BtfTyped {
    #[inline(always)]
    fn read_u64(base: u64, offset: u32) -> u64 {
        if base == 0 {
            return 0;
        }
        // SAFETY: the verifier admits the load only at a u64 field of base's BTF type, and a
        // fault there reads 0 instead of oopsing.
        unsafe { core::ptr::read_volatile((base + offset as u64) as *const u64) }
    }
}

/// The id of a cgroup subsystem state's cgroup: css->cgroup->kn->id (the directory's inode).
#[inline(always)]
pub fn css_id(layout: &KernelLayout, css: u64) -> u64 {
    css_id_via::<Probed>(layout, css)
}

#[inline(always)]
pub fn css_id_via<M: KernelMemory>(layout: &KernelLayout, css: u64) -> u64 {
    let cgroup = M::read_u64(css, layout.css_cgroup);
    let kn = M::read_u64(cgroup, layout.cgroup_kn);
    M::read_u64(kn, layout.kernfs_node_id)
}

/// The id of the task's memory cgroup: task->cgroups->subsys[memory]->cgroup->kn->id.
#[inline(always)]
pub fn memcg_id(layout: &KernelLayout, task: u64) -> u64 {
    css_id(layout, memcg_css(layout, task))
}

/// Identity of `task` read from its task_struct (pid, tgid, comm, memcg).
#[inline(always)]
pub fn task_info(layout: &KernelLayout, task: u64) -> TaskInfo {
    if layout.valid == 0 {
        return TaskInfo::default();
    }
    TaskInfo {
        pid: read(task, layout.task_pid).unwrap_or(0),
        tgid: read(task, layout.task_tgid).unwrap_or(0),
        memcg_id: memcg_id(layout, task),
        comm: read::<[u8; TASK_COMM_LEN]>(task, layout.task_comm).unwrap_or([0; TASK_COMM_LEN]),
    }
}

/// The current task's identity, from helpers where they exist and the layout for the memcg.
#[inline(always)]
pub fn current_info(layout: &KernelLayout) -> TaskInfo {
    let pid_tgid = aya_ebpf::helpers::bpf_get_current_pid_tgid();
    // SAFETY: bpf_get_current_task takes no arguments.
    let task = unsafe { aya_ebpf::helpers::generated::bpf_get_current_task() };
    TaskInfo {
        pid: pid_tgid as u32,
        tgid: (pid_tgid >> 32) as u32,
        memcg_id: if layout.valid != 0 {
            memcg_id(layout, task)
        } else {
            0
        },
        comm: aya_ebpf::helpers::bpf_get_current_comm().unwrap_or([0; TASK_COMM_LEN]),
    }
}

/// Page counts to kB; the kernel's own reports clamp negative per-CPU counter drift to zero.
#[inline(always)]
pub fn pages_to_kb(layout: &KernelLayout, pages: i64) -> u64 {
    if pages < 0 {
        0
    } else {
        (pages as u64) << layout.page_kb_shift
    }
}

/// The task's memory cgroup usage in kB (its page_counter), 0 where unreadable.
#[inline(always)]
pub fn memcg_usage_kb(layout: &KernelLayout, task: u64) -> u64 {
    if layout.valid == 0 || layout.memcg_usage == u32::MAX {
        return 0;
    }
    let css = memcg_css(layout, task);
    if css == 0 {
        return 0;
    }
    let memcg = css - layout.memcg_css as u64;
    pages_to_kb(layout, read::<i64>(memcg, layout.memcg_usage).unwrap_or(0))
}
