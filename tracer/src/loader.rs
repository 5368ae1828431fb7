//! Loading the eBPF object with this kernel's layout, and attaching programs with fallbacks.
use std::{fmt, path::Path};

use anyhow::{Context as _, Result, anyhow};
use aya::{
    Btf, Ebpf, EbpfLoader, Endianness,
    maps::{HashMap, MapData, PerCpuArray, PerCpuHashMap, StackTraceMap},
    programs::{BtfTracePoint, FEntry, FExit, RawTracePoint, TracePoint},
};
use tracer_common::{
    FilterConfig, InFlight, KernelLayout, KswapdTotals, MemcgItems, MemcgSlot, OomControlLayout,
};

use crate::{kernel_layout::KernelBtf, latency, memcg, oom, reclaim};

/// How one hook ended up attached, or why it is missing.
#[derive(Clone, Debug)]
pub struct HookStatus {
    pub hook: &'static str,
    /// `Ok("tp_btf oom/mark_victim")`, or why no program attached.
    pub attached: Result<String, String>,
    /// Fallbacks taken on the way (e.g. why tp_btf was not used).
    pub notes: Vec<String>,
}

impl fmt::Display for HookStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.attached {
            Ok(via) => write!(f, "{}: {via}", self.hook)?,
            Err(why) => write!(f, "{}: unavailable ({why})", self.hook)?,
        }
        for note in &self.notes {
            write!(f, "; {note}")?;
        }
        Ok(())
    }
}

/// What programs need to know about the running kernel.
pub struct KernelInfo {
    pub aya_btf: Btf,
    pub layout: Result<KernelLayout, String>,
    /// enum vm_event_item numbers of every memcg counter, fault slots included.
    memcg_items: MemcgItems,
    pub oom_control_layout: OomControlLayout,
    /// Whether tp_btf oom/mark_victim passes the victim's task_struct.
    pub mark_victim_passes_task: Result<bool, String>,
    /// The user asked for classic tracepoints only (`--force-tracepoints`).
    pub force_tracepoints: bool,
}

impl KernelInfo {
    pub fn read(btf_path: &Path, force_tracepoints: bool) -> Result<Self> {
        // One parse of vmlinux BTF at a time: btf-rs answers the layout questions and is gone
        // before aya parses its own copy (each holds tens of MiB).
        let (layout, memcg_items, oom_control_layout, mark_victim_passes_task) = {
            let btf = KernelBtf::open(btf_path)?;
            // SAFETY: sysconf has no memory-safety preconditions.
            let page_size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64;
            (
                btf.layout(page_size).map_err(|e| format!("{e:#}")),
                btf.memcg_items(),
                btf.oom_control_layout(),
                btf.tracepoint_first_arg_is_task("mark_victim")
                    .map_err(|e| format!("{e:#}")),
            )
        };
        let aya_btf = Btf::parse_file(btf_path, Endianness::default())
            .with_context(|| format!("parsing BTF {}", btf_path.display()))?;
        Ok(Self {
            aya_btf,
            layout,
            memcg_items,
            oom_control_layout,
            mark_victim_passes_task,
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
}

/// In-kernel aggregates, as totals since load.
#[derive(Clone, Debug, Default)]
pub struct KernelCounters {
    /// kswapd wake-up requests per memcg id of the requester.
    pub kswapd_wakeups: Vec<(u64, u64)>,
    /// kswapd runs across the machine, whatever the filter.
    pub kswapd: KswapdTotals,
    pub memcg_pages: memcg::MemcgCounters,
    pub latency: latency::LatencyCounters,
    /// Events the kernel could not queue (ring buffer full); `None` when unreadable.
    pub dropped: Option<u64>,
}

pub struct Tracer {
    pub ebpf: Ebpf,
    pub hooks: Vec<HookStatus>,
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
        } = *options;
        let filter = FilterConfig {
            enabled: !watched.is_empty() as u32,
            descendants: descendants as u32,
        };
        let layout = kernel.layout.clone().unwrap_or_default();
        let mut ebpf = EbpfLoader::new()
            .btf(Some(&kernel.aya_btf))
            .override_global("KERNEL_LAYOUT", &layout, true)
            .override_global("STACK_THRESHOLD_NS", &stack_threshold_ns, true)
            .override_global("MEMCG_ITEMS", &kernel.memcg_items(count_faults), true)
            .override_global("FILTER", &filter, true)
            .override_global("OOM_CONTROL_LAYOUT", &kernel.oom_control_layout, true)
            .load(object)
            .context("loading the eBPF object")?;
        // Before any program attaches, so no event of an unwatched cgroup slips through.
        let map = ebpf
            .map_mut("WATCHED")
            .ok_or_else(|| anyhow!("map WATCHED missing"))?;
        let mut watched_map = HashMap::<_, u64, u8>::try_from(map)?;
        for id in watched {
            watched_map
                .insert(id, 1, 0)
                .context("filling the cgroup filter")?;
        }
        let mut hooks = vec![oom::attach(&mut ebpf, kernel)];
        hooks.extend(reclaim::attach(&mut ebpf, kernel));
        if memcg_events {
            hooks.push(memcg::attach(&mut ebpf, kernel));
        }
        hooks.push(oom::attach_context(&mut ebpf, kernel));
        if latency {
            hooks.extend(latency::attach(&mut ebpf, kernel));
        }
        Ok(Self { ebpf, hooks })
    }

    pub fn attached(&self) -> impl Iterator<Item = &HookStatus> {
        self.hooks.iter().filter(|h| h.attached.is_ok())
    }

    /// Counters the kernel keeps for us, read for a summary.
    pub fn counters(&self) -> KernelCounters {
        KernelCounters {
            kswapd_wakeups: self.kswapd_wakeups().unwrap_or_else(|err| {
                log::warn!("reading kswapd wake-up counts: {err:#}");
                Vec::new()
            }),
            kswapd: self.kswapd_totals().unwrap_or_else(|err| {
                log::warn!("reading kswapd totals: {err:#}");
                KswapdTotals::default()
            }),
            memcg_pages: memcg::read_counters(&self.ebpf).unwrap_or_else(|err| {
                log::warn!("reading per-cgroup reclaim counters: {err:#}");
                memcg::MemcgCounters::new()
            }),
            latency: latency::read_counters(&self.ebpf).unwrap_or_else(|err| {
                log::warn!("reading latency histograms: {err:#}");
                latency::LatencyCounters::new()
            }),
            dropped: self
                .dropped()
                .map_err(|err| log::warn!("reading the drop counter: {err:#}"))
                .ok(),
        }
    }

    /// kswapd wake-up requests per memcg id of the requester, summed over CPUs.
    pub fn kswapd_wakeups(&self) -> Result<Vec<(u64, u64)>> {
        let map = self
            .ebpf
            .map("KSWAPD_WAKEUPS")
            .ok_or_else(|| anyhow!("map KSWAPD_WAKEUPS missing"))?;
        let wakeups = PerCpuHashMap::<_, u64, u64>::try_from(map)?;
        let mut counts = Vec::new();
        for entry in wakeups.iter() {
            let (memcg, per_cpu) = entry?;
            counts.push((memcg, per_cpu.iter().sum()));
        }
        Ok(counts)
    }

    /// kswapd since load, summed over CPUs, with the runs still in progress counted up to
    /// now: a node that stays awake across summaries shows in each of them.
    pub fn kswapd_totals(&self) -> Result<KswapdTotals> {
        let map = self
            .ebpf
            .map("KSWAPD_TOTALS")
            .ok_or_else(|| anyhow!("map KSWAPD_TOTALS missing"))?;
        let per_cpu = PerCpuArray::<_, KswapdTotals>::try_from(map)?.get(&0, 0)?;
        let mut totals = KswapdTotals::default();
        for cpu in per_cpu.iter() {
            totals.runs += cpu.runs;
            totals.wakes += cpu.wakes;
            totals.awake_ns += cpu.awake_ns;
            totals.pages_scanned += cpu.pages_scanned;
            totals.pages_reclaimed += cpu.pages_reclaimed;
        }
        let map = self
            .ebpf
            .map("KSWAPD")
            .ok_or_else(|| anyhow!("map KSWAPD missing"))?;
        let awake: Vec<InFlight> = HashMap::<_, u32, InFlight>::try_from(map)?
            .iter()
            .filter_map(|entry| entry.ok().map(|(_, run)| run))
            .collect();
        // Read after the runs, so none of them starts after `now`.
        let now = crate::clock::BootClock::now_boot_ns();
        for run in awake {
            totals.awake_ns += now.saturating_sub(run.start_ns);
            totals.pages_scanned += run.scanned;
            totals.pages_reclaimed += run.reclaimed;
        }
        Ok(totals)
    }

    /// Takes the STACKS map out for the decoder.
    pub fn take_stacks(&mut self) -> Result<StackTraceMap<MapData>> {
        let map = self
            .ebpf
            .take_map("STACKS")
            .ok_or_else(|| anyhow!("map STACKS missing"))?;
        Ok(StackTraceMap::try_from(map)?)
    }

    /// Events the kernel dropped because the ring buffer was full, summed over CPUs and kinds.
    pub fn dropped(&self) -> Result<u64> {
        let map = self
            .ebpf
            .map("DROPS")
            .ok_or_else(|| anyhow!("map DROPS missing"))?;
        let drops = PerCpuArray::<_, u64>::try_from(map)?;
        let mut total = 0;
        for slot in drops.iter() {
            total += slot?.iter().sum::<u64>();
        }
        Ok(total)
    }
}

pub fn attach_tp_btf(ebpf: &mut Ebpf, program: &str, target: &str, btf: &Btf) -> Result<()> {
    let program: &mut BtfTracePoint = ebpf
        .program_mut(program)
        .ok_or_else(|| anyhow!("program {program} missing from the object"))?
        .try_into()?;
    program
        .load(target, btf)
        .with_context(|| format!("loading tp_btf/{target}"))?;
    program
        .attach()
        .with_context(|| format!("attaching tp_btf/{target}"))?;
    Ok(())
}

pub fn attach_raw_tracepoint(ebpf: &mut Ebpf, program: &str, tracepoint: &str) -> Result<()> {
    let program: &mut RawTracePoint = ebpf
        .program_mut(program)
        .ok_or_else(|| anyhow!("program {program} missing from the object"))?
        .try_into()?;
    program
        .load()
        .with_context(|| format!("loading raw_tp/{tracepoint}"))?;
    program
        .attach(tracepoint)
        .with_context(|| format!("attaching raw_tp/{tracepoint}"))?;
    Ok(())
}

/// aya's load error for a refused trampoline spans the verifier log; say what it means.
fn trampoline_refused(err: aya::programs::ProgramError, what: &str) -> anyhow::Error {
    let text = err.to_string();
    if text.contains("Operation not permitted") {
        anyhow!("{what}: this kernel refuses fentry/fexit trampolines (EPERM)")
    } else {
        anyhow::Error::new(err).context(what.to_owned())
    }
}

pub fn attach_fentry(ebpf: &mut Ebpf, program: &str, function: &str, btf: &Btf) -> Result<()> {
    let program: &mut FEntry = ebpf
        .program_mut(program)
        .ok_or_else(|| anyhow!("program {program} missing from the object"))?
        .try_into()?;
    program
        .load(function, btf)
        .map_err(|e| trampoline_refused(e, &format!("loading fentry/{function}")))?;
    program
        .attach()
        .with_context(|| format!("attaching fentry/{function}"))?;
    Ok(())
}

pub fn attach_fexit(ebpf: &mut Ebpf, program: &str, function: &str, btf: &Btf) -> Result<()> {
    let program: &mut FExit = ebpf
        .program_mut(program)
        .ok_or_else(|| anyhow!("program {program} missing from the object"))?
        .try_into()?;
    program
        .load(function, btf)
        .map_err(|e| trampoline_refused(e, &format!("loading fexit/{function}")))?;
    program
        .attach()
        .with_context(|| format!("attaching fexit/{function}"))?;
    Ok(())
}

pub fn attach_tracepoint(ebpf: &mut Ebpf, program: &str, category: &str, name: &str) -> Result<()> {
    let program: &mut TracePoint = ebpf
        .program_mut(program)
        .ok_or_else(|| anyhow!("program {program} missing from the object"))?
        .try_into()?;
    program
        .load()
        .with_context(|| format!("loading tracepoint {category}/{name}"))?;
    program
        .attach(category, name)
        .with_context(|| format!("attaching tracepoint {category}/{name}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{EBPF_OBJECT, kernel_layout::VMLINUX_BTF, preflight};

    fn privileged() -> bool {
        preflight::check_privileges().is_ok() && Path::new(VMLINUX_BTF).exists()
    }

    /// A hook the kernel lacks fails with a reason naming it, on one line, and leaves the rest
    /// of the object usable.
    #[test]
    fn missing_hooks_fail_with_a_named_reason() {
        if !privileged() {
            eprintln!("skipped: needs root and kernel BTF");
            return;
        }
        let kernel = KernelInfo::read(Path::new(VMLINUX_BTF), false).unwrap();
        let mut ebpf = EbpfLoader::new()
            .btf(Some(&kernel.aya_btf))
            .load(EBPF_OBJECT)
            .unwrap();
        let err =
            attach_tracepoint(&mut ebpf, "oom_mark_victim_tp", "oom", "no_such_event").unwrap_err();
        let text = format!("{err:#}");
        assert!(text.contains("tracepoint oom/no_such_event"), "{text}");
        assert!(!text.contains('\n'), "{text}");
        let err = attach_tp_btf(
            &mut ebpf,
            "oom_mark_victim_btf",
            "no_such_event",
            &kernel.aya_btf,
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

    #[test]
    fn hook_status_reads_well() {
        let ok = HookStatus {
            hook: "oom_kill",
            attached: Ok("tracepoint oom/mark_victim".into()),
            notes: vec!["tp_btf not used: old kernel".into()],
        };
        assert_eq!(
            ok.to_string(),
            "oom_kill: tracepoint oom/mark_victim; tp_btf not used: old kernel"
        );
        let missing = HookStatus {
            hook: "oom_kill",
            attached: Err("no tracefs".into()),
            notes: vec![],
        };
        assert_eq!(missing.to_string(), "oom_kill: unavailable (no tracefs)");
    }
}
