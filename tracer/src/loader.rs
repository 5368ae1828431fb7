//! Loading the eBPF object with this kernel's layout, and attaching programs with fallbacks.
use std::{fmt, path::Path};

use anyhow::{Context as _, Result, anyhow};
use aya::{
    Btf, Ebpf, EbpfLoader, Endianness,
    maps::PerCpuArray,
    programs::{BtfTracePoint, TracePoint},
};
use tracer_common::KernelLayout;

use crate::{kernel_layout::KernelBtf, oom};

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
    pub btf: KernelBtf,
    pub aya_btf: Btf,
    pub layout: Result<KernelLayout, String>,
}

impl KernelInfo {
    pub fn read(btf_path: &Path) -> Result<Self> {
        let btf = KernelBtf::open(btf_path)?;
        let aya_btf = Btf::parse_file(btf_path, Endianness::default())
            .with_context(|| format!("parsing BTF {}", btf_path.display()))?;
        // SAFETY: sysconf has no memory-safety preconditions.
        let page_size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64;
        let layout = btf.layout(page_size).map_err(|e| format!("{e:#}"));
        Ok(Self { btf, aya_btf, layout })
    }
}

pub struct Tracer {
    pub ebpf: Ebpf,
    pub hooks: Vec<HookStatus>,
}

impl Tracer {
    pub fn load(object: &[u8], kernel: &KernelInfo) -> Result<Self> {
        let layout = kernel.layout.clone().unwrap_or_default();
        let mut ebpf = EbpfLoader::new()
            .btf(Some(&kernel.aya_btf))
            .override_global("KERNEL_LAYOUT", &layout, true)
            .load(object)
            .context("loading the eBPF object")?;
        let hooks = vec![oom::attach(&mut ebpf, kernel)];
        Ok(Self { ebpf, hooks })
    }

    pub fn attached(&self) -> impl Iterator<Item = &HookStatus> {
        self.hooks.iter().filter(|h| h.attached.is_ok())
    }

    /// Events the kernel dropped because the ring buffer was full, summed over CPUs and kinds.
    pub fn dropped(&self) -> Result<u64> {
        let map = self.ebpf.map("DROPS").ok_or_else(|| anyhow!("map DROPS missing"))?;
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
    program.load(target, btf).context("load")?;
    program.attach().context("attach")?;
    Ok(())
}

pub fn attach_tracepoint(ebpf: &mut Ebpf, program: &str, category: &str, name: &str) -> Result<()> {
    let program: &mut TracePoint = ebpf
        .program_mut(program)
        .ok_or_else(|| anyhow!("program {program} missing from the object"))?
        .try_into()?;
    program.load().context("load")?;
    program.attach(category, name).context("attach")?;
    Ok(())
}
