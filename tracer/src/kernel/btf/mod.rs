//! Structure offsets of the running kernel, read from its BTF.
//!
//! aya-ebpf cannot emit CO-RE relocations, so the programs read kernel memory at offsets we
//! resolve here and hand them as the `KERNEL_LAYOUT` global.
mod raw;

use std::path::Path;

use anyhow::{Context as _, Result, anyhow, bail};
use memstall_common::KernelLayout;

use self::raw::{Kind, RawBtf, Type};

pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

pub struct KernelBtf {
    btf: RawBtf,
}

impl KernelBtf {
    pub fn open(path: &Path) -> Result<Self> {
        let bytes =
            std::fs::read(path).with_context(|| format!("reading BTF {}", path.display()))?;
        let btf =
            RawBtf::parse(bytes).with_context(|| format!("parsing BTF {}", path.display()))?;
        Ok(Self { btf })
    }

    /// BTF from bytes (the fuzz target).
    #[cfg(feature = "fuzz")]
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        Ok(Self {
            btf: RawBtf::parse(bytes.to_vec()).context("parsing BTF")?,
        })
    }

    fn named_struct(&self, name: &str) -> Result<Type<'_>> {
        self.btf
            .find(name, Kind::Struct)
            .ok_or_else(|| anyhow!("struct {name} not in kernel BTF"))
    }

    /// The type `id` refers to, past typedefs and qualifiers: the one that has a shape.
    fn strip(&self, mut id: u32) -> Result<Type<'_>> {
        // A chain longer than this is a loop in malformed BTF.
        for _ in 0..64 {
            let ty = self.btf.ty(id)?;
            match ty.kind {
                Kind::Typedef | Kind::Volatile | Kind::Const | Kind::Restrict | Kind::TypeTag => {
                    id = ty.size_or_type;
                }
                _ => return Ok(ty),
            }
        }
        bail!("BTF type {id}: qualifier chain too long")
    }

    /// Byte offset and type of `field` in `st`, looking through anonymous structs and unions
    /// (mm_struct keeps its fields in one).
    fn member(&self, st: &Type<'_>, field: &str) -> Result<Option<(u32, Type<'_>)>> {
        for member in st.members() {
            let name = self.btf.name(member.name_off).unwrap_or_default();
            if name == field {
                if member.bit_offset % 8 != 0 {
                    bail!("field {field} is a bitfield");
                }
                return Ok(Some((member.bit_offset / 8, self.strip(member.type_id)?)));
            }
            if name.is_empty() {
                let inner = self.strip(member.type_id)?;
                if let Some((offset, ty)) = self.member(&inner, field)? {
                    return Ok(Some((member.bit_offset / 8 + offset, ty)));
                }
            }
        }
        Ok(None)
    }

    /// Bit offset of `field` in `st`, bitfields included, through anonymous members.
    fn member_bit(&self, st: &Type<'_>, field: &str) -> Result<Option<u32>> {
        for member in st.members() {
            let name = self.btf.name(member.name_off).unwrap_or_default();
            if name == field {
                return Ok(Some(member.bit_offset));
            }
            if name.is_empty()
                && let Some(bit) = self.member_bit(&self.strip(member.type_id)?, field)?
            {
                return Ok(Some(member.bit_offset + bit));
            }
        }
        Ok(None)
    }

    /// A one-bit flag's bit offset in `struct_name`, u32::MAX where the kernel lacks it (an
    /// optional feature of the layout).
    fn flag_bit(&self, struct_name: &str, field: &str) -> u32 {
        self.named_struct(struct_name)
            .and_then(|st| self.member_bit(&st, field))
            .ok()
            .flatten()
            .unwrap_or(u32::MAX)
    }

    /// Byte offset of an optional field, u32::MAX where the kernel lacks it.
    fn optional_offset(&self, struct_name: &str, field: &str) -> u32 {
        self.offset_of(struct_name, field).unwrap_or(u32::MAX)
    }

    /// How many parameters kernel function `name` takes (where an fexit program finds its
    /// return value).
    pub fn parameter_count(&self, name: &str) -> Option<u32> {
        let func = self.btf.find(name, Kind::Func)?;
        let proto = self.btf.ty(func.size_or_type).ok()?;
        (proto.kind == Kind::FuncProto).then(|| proto.parameters().count() as u32)
    }

    /// The value of enumerator `name`, where BTF has it.
    pub fn enumerator_value(&self, name: &str) -> Option<u32> {
        self.enumerator(name).ok()
    }

    /// Whether the kernel has a function called `name` (kernels rename them).
    pub fn has_function(&self, name: &str) -> bool {
        self.parameter_count(name).is_some()
    }

    fn offset(&self, struct_name: &str, field: &str) -> Result<(u32, Type<'_>)> {
        let st = self.named_struct(struct_name)?;
        self.member(&st, field)?
            .ok_or_else(|| anyhow!("{struct_name}.{field} not in kernel BTF"))
    }

    fn offset_of(&self, struct_name: &str, field: &str) -> Result<u32> {
        self.offset(struct_name, field).map(|(offset, _)| offset)
    }

    fn size_of(&self, ty: &Type<'_>) -> Result<u32> {
        Ok(match ty.kind {
            Kind::Struct | Kind::Union | Kind::Int | Kind::Enum | Kind::Enum64 => ty.size_or_type,
            Kind::Ptr => 8,
            Kind::Array => {
                let (element, len) = ty.array().ok_or_else(|| anyhow!("array without shape"))?;
                self.size_of(&self.strip(element)?)?.saturating_mul(len)
            }
            other => bail!("no size for BTF kind {other:?}"),
        })
    }

    /// Value of an enumerator, searching every enum (the MM_* counters live in an anonymous one).
    fn enumerator(&self, name: &str) -> Result<u32> {
        self.btf
            .types()
            .find_map(|ty| {
                ty.enumerators()
                    .find(|&(name_off, _)| self.btf.name(name_off).is_ok_and(|n| n == name))
                    .map(|(_, value)| value)
            })
            .ok_or_else(|| anyhow!("enumerator {name} not in kernel BTF"))
    }

    /// Offsets of the four MM_* counters inside mm_struct. Since 6.2 `rss_stat` is an array of
    /// percpu_counter (we read its approximate `count`, as the kernel's OOM report does); before,
    /// a struct mm_rss_stat holding an array of atomic_long_t.
    fn rss_counters(&self) -> Result<[u32; 4]> {
        let (base, ty) = self.offset("mm_struct", "rss_stat")?;
        let (base, stride, count_offset) = match ty.kind {
            Kind::Array => {
                let (element, _) = ty.array().ok_or_else(|| anyhow!("array without shape"))?;
                let element = self.strip(element)?;
                if element.kind != Kind::Struct {
                    bail!("mm_struct.rss_stat has an unexpected element type");
                }
                let (count, _) = self
                    .member(&element, "count")?
                    .ok_or_else(|| anyhow!("percpu_counter.count not in kernel BTF"))?;
                (base, self.size_of(&element)?, count)
            }
            Kind::Struct => {
                let (count, _) = self
                    .member(&ty, "count")?
                    .ok_or_else(|| anyhow!("mm_rss_stat.count not in kernel BTF"))?;
                (base + count, 8, 0)
            }
            other => bail!("mm_struct.rss_stat has unexpected kind {other:?}"),
        };
        let at = |name: &str| -> Result<u32> {
            Ok(base + self.enumerator(name)? * stride + count_offset)
        };
        Ok([
            at("MM_FILEPAGES")?,
            at("MM_ANONPAGES")?,
            at("MM_SWAPENTS")?,
            at("MM_SHMEMPAGES")?,
        ])
    }

    pub fn layout(&self, page_size: u64) -> Result<KernelLayout> {
        let memory_cgrp_id = self.enumerator("memory_cgrp_id")?;
        let [
            mm_file_pages,
            mm_anon_pages,
            mm_swap_entries,
            mm_shmem_pages,
        ] = self.rss_counters()?;
        let page_kb_shift = (page_size / 1024).trailing_zeros();
        Ok(KernelLayout {
            valid: 1,
            task_pid: self.offset_of("task_struct", "pid")?,
            task_tgid: self.offset_of("task_struct", "tgid")?,
            task_comm: self.offset_of("task_struct", "comm")?,
            task_mm: self.offset_of("task_struct", "mm")?,
            task_signal: self.offset_of("task_struct", "signal")?,
            task_real_cred: self.offset_of("task_struct", "real_cred")?,
            task_cgroups: self.offset_of("task_struct", "cgroups")?,
            css_set_memory_subsys: self.offset_of("css_set", "subsys")? + 8 * memory_cgrp_id,
            css_cgroup: self.offset_of("cgroup_subsys_state", "cgroup")?,
            cgroup_kn: self.offset_of("cgroup", "kn")?,
            kernfs_node_id: self.offset_of("kernfs_node", "id")?,
            signal_oom_score_adj: self.offset_of("signal_struct", "oom_score_adj")?,
            cred_uid: self.offset_of("cred", "uid")?,
            mm_total_vm: self.offset_of("mm_struct", "total_vm")?,
            mm_pgtables_bytes: self.offset_of("mm_struct", "pgtables_bytes")?,
            mm_file_pages,
            mm_anon_pages,
            mm_swap_entries,
            mm_shmem_pages,
            page_kb_shift,
            memcg_css: self.offset_of("mem_cgroup", "css")?,
            css_parent: self.offset_of("cgroup_subsys_state", "parent")?,
            task_group_leader: self.offset_of("task_struct", "group_leader")?,
            task_in_iowait_bit: self.flag_bit("task_struct", "in_iowait"),
            task_in_memstall_bit: self.flag_bit("task_struct", "in_memstall"),
            shrinker_scan_objects: self.optional_offset("shrinker", "scan_objects"),
            task_flags: self.offset_of("task_struct", "flags")?,
            memcg_usage: self.memcg_usage_offset(),
            _reserved: 0,
        })
    }

    /// `mem_cgroup.memory.usage`: a page_counter's atomic count of charged pages.
    fn memcg_usage_offset(&self) -> u32 {
        match (
            self.offset_of("mem_cgroup", "memory"),
            self.offset_of("page_counter", "usage"),
        ) {
            (Ok(memory), Ok(usage)) => memory + usage,
            _ => u32::MAX,
        }
    }

    /// Item numbers of `enum vm_event_item` for the memcg counters; u32::MAX where missing.
    pub fn memcg_items(&self) -> memstall_common::MemcgItems {
        use memstall_common::MemcgSlot;
        let mut items = [u32::MAX; memstall_common::MEMCG_SLOTS];
        for slot in MemcgSlot::ALL {
            if let Ok(value) = self.enumerator(slot.kernel_item()) {
                items[slot as usize] = value;
            }
        }
        memstall_common::MemcgItems { items }
    }

    /// struct oom_control offsets for the fentry hook; `valid` 0 when BTF lacks them.
    pub fn oom_control_layout(&self) -> memstall_common::OomControlLayout {
        let resolve = || -> Result<memstall_common::OomControlLayout> {
            Ok(memstall_common::OomControlLayout {
                valid: 1,
                memcg: self.offset_of("oom_control", "memcg")?,
                totalpages: self.offset_of("oom_control", "totalpages")?,
                chosen: self.offset_of("oom_control", "chosen")?,
                chosen_points: self.offset_of("oom_control", "chosen_points")?,
                constraint: self.offset_of("oom_control", "constraint")?,
            })
        };
        resolve().unwrap_or_default()
    }

    /// The prototype of tracepoint `name`'s probes (its btf_trace_ typedef points to it);
    /// `None` when the typedef is something else.
    fn tracepoint_proto(&self, name: &str) -> Result<Option<Type<'_>>> {
        let typedef = format!("btf_trace_{name}");
        let ty = self
            .btf
            .find(&typedef, Kind::Typedef)
            .ok_or_else(|| anyhow!("{typedef} not in kernel BTF"))?;
        let ptr = self.strip(ty.size_or_type)?;
        if ptr.kind != Kind::Ptr {
            return Ok(None);
        }
        let proto = self.strip(ptr.size_or_type)?;
        Ok((proto.kind == Kind::FuncProto).then_some(proto))
    }

    /// How many arguments the tracepoint `name` passes (its probes' prototype less the
    /// private `void *__data`).
    pub fn tracepoint_parameter_count(&self, name: &str) -> Result<u32> {
        let proto = self
            .tracepoint_proto(name)?
            .ok_or_else(|| anyhow!("btf_trace_{name} is not a pointer to a prototype"))?;
        Ok((proto.parameters().count() as u32).saturating_sub(1))
    }

    /// Whether the tp_btf hook `name` passes `struct task_struct *` as its first argument
    /// (oom/mark_victim did not before 6.8).
    pub fn tracepoint_first_arg_is_task(&self, name: &str) -> Result<bool> {
        let Some(proto) = self.tracepoint_proto(name)? else {
            return Ok(false);
        };
        // Parameter 0 is the tracepoint's private `void *__data`.
        let Some(first) = proto.parameters().nth(1) else {
            return Ok(false);
        };
        let arg = self.strip(first)?;
        if arg.kind != Kind::Ptr || arg.size_or_type == 0 {
            return Ok(false);
        }
        let target = self.strip(arg.size_or_type)?;
        Ok(target.kind == Kind::Struct
            && self
                .btf
                .name(target.name_off)
                .is_ok_and(|n| n == "task_struct"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads this machine's BTF: every kernel memstall supports has it, and the layout must be
    /// complete on it.
    #[test]
    fn resolves_layout_from_running_kernel() {
        if !Path::new(VMLINUX_BTF).exists() {
            crate::testing::skip(&format!("no kernel BTF at {VMLINUX_BTF}"));
            return;
        }
        let btf = KernelBtf::open(Path::new(VMLINUX_BTF)).unwrap();
        let layout = btf.layout(4096).unwrap();
        assert_eq!(layout.valid, 1);
        // PSI's flags are bits of one word, in_iowait first (6.18: bits 9544 and 9550).
        assert!(layout.task_in_iowait_bit < layout.task_in_memstall_bit);
        assert!(layout.task_in_memstall_bit - layout.task_in_iowait_bit < 32);
        assert_ne!(layout.shrinker_scan_objects, u32::MAX);
        assert_ne!(layout.memcg_usage, u32::MAX);
        assert_eq!(btf.parameter_count("try_to_compact_pages"), Some(6));
        assert_eq!(layout.page_kb_shift, 2);
        assert_eq!(
            layout.task_tgid,
            layout.task_pid + 4,
            "pid and tgid are adjacent"
        );
        assert!(layout.task_comm > layout.task_tgid);
        let counters = [
            layout.mm_file_pages,
            layout.mm_anon_pages,
            layout.mm_swap_entries,
            layout.mm_shmem_pages,
        ];
        let mut sorted = counters;
        sorted.sort_unstable();
        assert_eq!(sorted, counters, "MM_* counters are laid out in enum order");
        assert!(btf.tracepoint_first_arg_is_task("mark_victim").is_ok());
        assert_eq!(btf.oom_control_layout().valid, 1);
        let items = btf.memcg_items().items;
        assert!(items.iter().all(|&i| i != u32::MAX), "{items:?}");
        let mut distinct = items.to_vec();
        distinct.dedup();
        assert_eq!(distinct.len(), items.len(), "{items:?}");
        assert!(
            btf.tracepoint_first_arg_is_task("sched_switch")
                .is_ok_and(|task| !task)
        );
        // sched_switch(preempt, prev, next, prev_state); balance_dirty_pages has 8 (6.12 on)
        // or 12 (6.1) arguments, the vmtests load the program for each.
        assert_eq!(btf.tracepoint_parameter_count("sched_switch").unwrap(), 4);
        let dirty = btf
            .tracepoint_parameter_count("balance_dirty_pages")
            .unwrap();
        assert!(
            [
                memstall_common::DIRTY_PARAMS_DTC,
                memstall_common::DIRTY_PARAMS_THRESH
            ]
            .contains(&dirty),
            "{dirty}"
        );
        assert!(
            btf.tracepoint_parameter_count("no_such_tracepoint")
                .is_err()
        );
    }
}
