//! The kernel side as userspace holds it: what this kernel's BTF says, loading the object
//! with that layout, attaching every hook with its fallbacks, and reading the maps.
pub mod attach;
pub mod bpf_log;
pub mod btf;
pub mod hooks;
pub mod maps;
pub mod preflight;
pub mod tracefs;

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use aya::{Btf, Ebpf, EbpfLoader, Endianness};
use memstall_common::{
    COMPACT_PARAMS, DIRTY_PARAMS_DTC, DIRTY_PARAMS_THRESH, FilterConfig, KernelLayout,
    KswapdTotals, MemcgItems, MemcgSlot, OomControlLayout,
    names::{global, map, program},
};

use self::{
    attach::{Hook, HookStatus},
    bpf_log::BpfLog,
    btf::KernelBtf,
    maps::{LatencyCounters, MemcgCounters},
};

/// What programs need to know about the running kernel.
pub struct KernelInfo {
    /// The BTF file: attaching parses it again with aya, once the object is loaded.
    pub btf_path: PathBuf,
    pub layout: Result<KernelLayout, String>,
    /// enum vm_event_item numbers of every memcg counter, fault slots included.
    memcg_items: MemcgItems,
    pub oom_control_layout: OomControlLayout,
    /// Whether tp_btf oom/mark_victim passes the victim's task_struct.
    pub mark_victim_passes_task: Result<bool, String>,
    /// try_to_compact_pages, where BTF has it with the parameters the fexit program expects
    /// (else why not); the swap-in read function (renamed in 6.6).
    pub compaction_function: Result<&'static str, String>,
    pub compact_skipped: u32,
    pub swapin_function: Option<&'static str>,
    /// The balance_dirty_pages program for this kernel's tracepoint, or why there is none.
    pub dirty_program: Result<&'static str, String>,
    /// The user asked for classic tracepoints only (`--force-tracepoints`).
    pub force_tracepoints: bool,
}

impl KernelInfo {
    pub fn read(btf_path: &Path, force_tracepoints: bool) -> Result<Self> {
        let (layout, memcg_items, oom_control_layout, mark_victim_passes_task, functions) = {
            let btf = KernelBtf::open(btf_path)?;
            // SAFETY: sysconf has no memory-safety preconditions.
            let page_size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64;
            let compact_args = btf.parameter_count("try_to_compact_pages");
            let compact_skipped = btf.enumerator_value("COMPACT_SKIPPED").unwrap_or(1);
            let swapin = ["swap_read_folio", "swap_readpage"]
                .into_iter()
                .find(|f| btf.has_function(f));
            let dirty_program = match btf.tracepoint_parameter_count("balance_dirty_pages") {
                Ok(DIRTY_PARAMS_DTC) => Ok(program::BALANCE_DIRTY_PAGES),
                Ok(DIRTY_PARAMS_THRESH) => Ok(program::BALANCE_DIRTY_PAGES_THRESH),
                Ok(params) => Err(format!(
                    "balance_dirty_pages passes {params} arguments here; this build reads {DIRTY_PARAMS_DTC} or {DIRTY_PARAMS_THRESH}"
                )),
                Err(e) => Err(format!("{e:#}")),
            };
            (
                btf.layout(page_size).map_err(|e| format!("{e:#}")),
                btf.memcg_items(),
                btf.oom_control_layout(),
                btf.tracepoint_first_arg_is_task("mark_victim")
                    .map_err(|e| format!("{e:#}")),
                (compact_args, compact_skipped, swapin, dirty_program),
            )
        };
        let (compact_args, compact_skipped, swapin_function, dirty_program) = functions;
        Ok(Self {
            btf_path: btf_path.to_owned(),
            layout,
            memcg_items,
            oom_control_layout,
            mark_victim_passes_task,
            compaction_function: match compact_args.map(|n| n as usize) {
                Some(COMPACT_PARAMS) => Ok("try_to_compact_pages"),
                Some(n) => Err(format!(
                    "try_to_compact_pages has {n} parameters here, this build reads the result after {COMPACT_PARAMS}"
                )),
                None => Err("no try_to_compact_pages in BTF".to_owned()),
            },
            compact_skipped,
            swapin_function,
            dirty_program,
            force_tracepoints,
        })
    }

    /// The memcg counter items to count; the fault slots only if `count_faults` (counting
    /// faults costs every fault).
    pub fn memcg_items(&self, count_faults: bool) -> MemcgItems {
        let mut items = self.memcg_items;
        if !count_faults {
            for slot in [MemcgSlot::Pgfault, MemcgSlot::Pgmajfault] {
                items.items[slot as usize] = u32::MAX;
            }
        }
        items
    }
}

/// What the programs are told at load time.
#[derive(Clone, Copy, Debug, Default)]
pub struct LoadOptions<'a> {
    /// Stalls at least this long carry stacks.
    pub stack_threshold_ns: u64,
    /// memcg ids of the in-kernel filter (empty: everything) ...
    pub watched: &'a [u64],
    /// ... with or without their descendants.
    pub descendants: bool,
    /// Attach memcg/count_memcg_events (runs on every page fault, ~100 ns each) ...
    pub memcg_events: bool,
    /// ... and count page faults per memcg there too.
    pub count_faults: bool,
    /// Time memcg charges and page faults with fentry/fexit (where the kernel allows it; runs
    /// on every fault).
    pub latency: bool,
    /// A smaller ring buffer than the object's 4 MiB (bytes, a power-of-two number of pages):
    /// for tests that need it to overflow.
    pub ring_bytes: Option<u32>,
    /// An IN_FLIGHT map of this many entries instead of 16384: for tests that need windows
    /// lost in the kernel.
    pub in_flight_entries: Option<u32>,
    /// The programs log their diagnostics through aya-log (`--bpf-log`); they are counted
    /// either way.
    pub bpf_log: bool,
}

/// In-kernel aggregates, as totals since load.
#[derive(Clone, Debug, Default)]
pub struct KernelCounters {
    /// kswapd wake-up requests per memcg id of the requester.
    pub kswapd_wakeups: Vec<(u64, u64)>,
    /// kswapd runs across the machine, whatever the filter.
    pub kswapd: KswapdTotals,
    pub memcg_pages: MemcgCounters,
    pub latency: LatencyCounters,
    /// Events the kernel could not queue (ring buffer full); `None` when unreadable.
    pub dropped: Option<maps::Drops>,
    /// Unexpected states the programs survived; `None` when unreadable.
    pub diagnostics: Option<maps::Diagnostics>,
}

/// A value read from a map, or its empty default with a warning: a summary goes out with what
/// could be read.
fn or_warn<T: Default>(what: &str, read: Result<T>) -> T {
    read.unwrap_or_else(|err| {
        log::warn!("reading {what}: {err:#}");
        T::default()
    })
}

/// The loaded object and how each hook attached. Programs detach when it drops (nothing is
/// pinned), and a tracefs mount memstall made goes with it.
pub struct Tracer {
    pub ebpf: Ebpf,
    pub hooks: Vec<HookStatus>,
    /// The programs' log, when asked for; the event loop takes it.
    pub bpf_log: Option<BpfLog>,
}

impl Drop for Tracer {
    fn drop(&mut self) {
        tracefs::unmount_ours();
    }
}

impl Tracer {
    pub fn load(object: &[u8], kernel: &KernelInfo, options: &LoadOptions) -> Result<Self> {
        let LoadOptions {
            stack_threshold_ns,
            watched,
            descendants,
            count_faults,
            memcg_events,
            latency,
            ring_bytes,
            in_flight_entries,
            bpf_log,
        } = *options;
        let filter = FilterConfig {
            enabled: u32::from(!watched.is_empty()),
            descendants: u32::from(descendants),
        };
        let layout = kernel.layout.clone().unwrap_or_default();
        // EbpfLoader::new() parses the kernel's BTF whatever it is told later (tens of MiB
        // at its peak, the start-up peak when it overlapped another parse). The object has no
        // CO-RE relocations (a test holds it to that), so loading needs no kernel BTF: drop
        // the loader's copy at once and parse one copy, for attaching, after loading.
        let memcg_items = kernel.memcg_items(count_faults);
        let mut loader = EbpfLoader::new();
        loader.btf(None);
        if let Some(bytes) = ring_bytes {
            loader.map_max_entries(map::EVENTS, bytes);
        }
        if let Some(entries) = in_flight_entries {
            loader.map_max_entries(map::IN_FLIGHT, entries);
        }
        let bpf_log_on = u32::from(bpf_log);
        let mut ebpf = loader
            .override_global(global::KERNEL_LAYOUT, &layout, true)
            .override_global(global::STACK_THRESHOLD_NS, &stack_threshold_ns, true)
            .override_global(global::MEMCG_ITEMS, &memcg_items, true)
            .override_global(global::FILTER, &filter, true)
            .override_global(global::OOM_CONTROL_LAYOUT, &kernel.oom_control_layout, true)
            .override_global(global::COMPACT_SKIPPED, &kernel.compact_skipped, true)
            .override_global(global::BPF_LOG, &bpf_log_on, true)
            .load(object)
            .context("loading the eBPF object")?;
        drop(loader);
        // Before any program attaches, so no event of an unwatched cgroup slips through.
        maps::watch(&mut ebpf, watched).context("filling the cgroup filter")?;
        let bpf_log = if bpf_log {
            Some(BpfLog::init(&mut ebpf)?)
        } else {
            None
        };
        let btf = Btf::parse_file(&kernel.btf_path, Endianness::default())
            .with_context(|| format!("parsing BTF {}", kernel.btf_path.display()))?;
        let mut hooks = vec![
            hooks::oom::attach(&mut ebpf, kernel, &btf),
            hooks::kill::attach(&mut ebpf, kernel, &btf),
        ];
        hooks.extend(hooks::reclaim::attach(&mut ebpf, kernel, &btf));
        if memcg_events {
            hooks.push(hooks::memcg::attach(&mut ebpf, kernel, &btf));
        }
        hooks.extend(hooks::sleep::attach(&mut ebpf, kernel, &btf));
        hooks.extend(hooks::compaction::attach(&mut ebpf, kernel, &btf));
        hooks.push(hooks::oom::attach_context(&mut ebpf, kernel, &btf));
        if latency {
            hooks.extend(hooks::latency::attach(&mut ebpf, &btf));
        }
        Ok(Self {
            ebpf,
            hooks,
            bpf_log,
        })
    }

    pub fn attached(&self) -> impl Iterator<Item = &HookStatus> {
        self.hooks.iter().filter(|h| h.is_attached())
    }

    pub fn is_attached(&self, hook: Hook) -> bool {
        self.attached().any(|h| h.hook == hook)
    }

    /// Counters the kernel keeps for us, read for a summary.
    pub fn counters(&self) -> KernelCounters {
        let ebpf = &self.ebpf;
        KernelCounters {
            kswapd_wakeups: or_warn("kswapd wake-up counts", maps::kswapd_wakeups(ebpf)),
            kswapd: or_warn("kswapd totals", maps::kswapd_totals(ebpf)),
            memcg_pages: or_warn("per-cgroup reclaim counters", maps::memcg_counters(ebpf)),
            latency: or_warn("latency histograms", maps::latency_counters(ebpf)),
            dropped: maps::drops(ebpf)
                .map_err(|err| log::warn!("reading the drop counter: {err:#}"))
                .ok(),
            diagnostics: maps::diagnostics(ebpf)
                .map_err(|err| log::warn!("reading the diagnostics counters: {err:#}"))
                .ok(),
        }
    }
}

#[cfg(test)]
mod tests {
    use memstall_common::names::program;

    use super::{
        attach::{attach_tp_btf, attach_tracepoint},
        btf::VMLINUX_BTF,
        *,
    };
    use crate::EBPF_OBJECT;

    /// Every map, global and program userspace names is in the built object (no root needed):
    /// a rename on one side fails here, not on a user's machine.
    #[test]
    fn every_name_userspace_uses_is_in_the_object() {
        use object::{Object as _, ObjectSymbol as _};
        let obj = aya_obj::Object::parse(EBPF_OBJECT).expect("the built eBPF object parses");
        for name in map::ALL {
            assert!(obj.maps.contains_key(*name), "map {name} missing");
        }
        for name in program::SINGLE {
            assert!(obj.programs.contains_key(*name), "program {name} missing");
        }
        for base in program::BTF_OR_RAW {
            for flavour in ["btf", "raw"] {
                let name = format!("{base}_{flavour}");
                assert!(obj.programs.contains_key(&name), "program {name} missing");
            }
        }
        let elf = object::File::parse(EBPF_OBJECT).expect("ELF");
        let symbols: Vec<&str> = elf.symbols().filter_map(|s| s.name().ok()).collect();
        for name in global::ALL {
            assert!(symbols.contains(name), "global {name} missing");
        }
        // Tracer::load gives the loader no kernel BTF: it would skip these relocations.
        assert!(
            !obj.has_btf_relocations(),
            "the object has CO-RE relocations: load it with the kernel's BTF"
        );
    }

    fn privileged() -> bool {
        preflight::check_privileges().is_ok() && Path::new(VMLINUX_BTF).exists()
    }

    /// A hook the kernel lacks fails with a reason naming it, on one line, and leaves the rest
    /// of the object usable.
    #[test]
    fn missing_hooks_fail_with_a_named_reason() {
        if !privileged() {
            crate::testing::skip("needs root and kernel BTF");
            return;
        }
        let btf = Btf::parse_file(VMLINUX_BTF, Endianness::default()).unwrap();
        let mut ebpf = EbpfLoader::new().load(EBPF_OBJECT).unwrap();
        let err = attach_tracepoint(
            &mut ebpf,
            program::OOM_MARK_VICTIM_TP,
            "oom",
            "no_such_event",
        )
        .unwrap_err();
        let text = format!("{err:#}");
        assert!(text.contains("tracepoint oom/no_such_event"), "{text}");
        assert!(!text.contains('\n'), "{text}");
        let err = attach_tp_btf(
            &mut ebpf,
            program::OOM_MARK_VICTIM_BTF,
            "no_such_event",
            &btf,
        )
        .unwrap_err();
        assert!(
            format!("{err:#}").contains("tp_btf/no_such_event"),
            "{err:#}"
        );
        let err =
            attach_tracepoint(&mut ebpf, "no_such_program", "oom", "mark_victim").unwrap_err();
        assert!(err.to_string().contains("no_such_program"));
    }
}
