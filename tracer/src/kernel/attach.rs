//! Attaching programs, each hook with its fallbacks, and how each hook ended up.
use std::fmt;

use anyhow::{Context as _, Result, anyhow};
use aya::{
    Btf, Ebpf,
    programs::{BtfTracePoint, FEntry, FExit, ProgramError, RawTracePoint, TracePoint},
};

/// Every hook memstall knows: a closed set, named in notes, JSON `hooks`, doctor and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Hook {
    OomKill,
    OomContext,
    DirectReclaim,
    MemcgReclaim,
    SoftlimitReclaim,
    NodeReclaim,
    Kswapd,
    Throttled,
    ReclaimPasses,
    MemcgPages,
    ChargeLatency,
    FaultLatency,
    ShrinkSlab,
    MemstallSleeps,
    DirtyThrottle,
    Compaction,
    Swapin,
    Kills,
}

impl Hook {
    #[cfg(test)]
    pub const ALL: [Hook; 18] = [
        Self::OomKill,
        Self::OomContext,
        Self::DirectReclaim,
        Self::MemcgReclaim,
        Self::SoftlimitReclaim,
        Self::NodeReclaim,
        Self::Kswapd,
        Self::Throttled,
        Self::ReclaimPasses,
        Self::MemcgPages,
        Self::ChargeLatency,
        Self::FaultLatency,
        Self::ShrinkSlab,
        Self::MemstallSleeps,
        Self::DirtyThrottle,
        Self::Compaction,
        Self::Swapin,
        Self::Kills,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::OomKill => "oom_kill",
            Self::OomContext => "oom_context",
            Self::DirectReclaim => "direct_reclaim",
            Self::MemcgReclaim => "memcg_reclaim",
            Self::SoftlimitReclaim => "softlimit_reclaim",
            Self::NodeReclaim => "node_reclaim",
            Self::Kswapd => "kswapd",
            Self::Throttled => "throttled",
            Self::ReclaimPasses => "reclaim_passes",
            Self::MemcgPages => "memcg_pages",
            Self::ChargeLatency => "charge_latency",
            Self::FaultLatency => "fault_latency",
            Self::ShrinkSlab => "shrink_slab",
            Self::MemstallSleeps => "memstall_sleeps",
            Self::DirtyThrottle => "dirty_throttle",
            Self::Compaction => "compaction",
            Self::Swapin => "swapin",
            Self::Kills => "kills",
        }
    }
}

impl fmt::Display for Hook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How one hook ended up attached, or why it is missing.
#[derive(Clone, Debug)]
pub struct HookStatus {
    pub hook: Hook,
    /// `Ok("tp_btf oom/mark_victim")`, or why no program attached.
    pub attached: Result<String, String>,
    /// Fallbacks taken on the way (e.g. why tp_btf was not used).
    pub notes: Vec<String>,
}

impl HookStatus {
    pub fn is_attached(&self) -> bool {
        self.attached.is_ok()
    }
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

fn program<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
{
    Ok(ebpf
        .program_mut(name)
        .ok_or_else(|| anyhow!("program {name} missing from the object"))?
        .try_into()?)
}

pub fn attach_tp_btf(ebpf: &mut Ebpf, name: &str, target: &str, btf: &Btf) -> Result<()> {
    let program: &mut BtfTracePoint = program(ebpf, name)?;
    program
        .load(target, btf)
        .with_context(|| format!("loading tp_btf/{target}"))?;
    program
        .attach()
        .with_context(|| format!("attaching tp_btf/{target}"))?;
    Ok(())
}

pub fn attach_raw_tracepoint(ebpf: &mut Ebpf, name: &str, tracepoint: &str) -> Result<()> {
    let program: &mut RawTracePoint = program(ebpf, name)?;
    program
        .load()
        .with_context(|| format!("loading raw_tp/{tracepoint}"))?;
    program
        .attach(tracepoint)
        .with_context(|| format!("attaching raw_tp/{tracepoint}"))?;
    Ok(())
}

pub fn attach_tracepoint(ebpf: &mut Ebpf, name: &str, category: &str, event: &str) -> Result<()> {
    let program: &mut TracePoint = program(ebpf, name)?;
    program
        .load()
        .with_context(|| format!("loading tracepoint {category}/{event}"))?;
    program
        .attach(category, event)
        .with_context(|| format!("attaching tracepoint {category}/{event}"))?;
    Ok(())
}

/// A kernel without trampolines refuses fentry/fexit loads with EPERM: say so instead of
/// quoting the verifier log.
fn trampoline_refused(err: ProgramError, what: &str) -> anyhow::Error {
    let refused = match &err {
        ProgramError::LoadError { io_error, .. } => io_error.raw_os_error() == Some(libc::EPERM),
        ProgramError::SyscallError(syscall) => syscall.io_error.raw_os_error() == Some(libc::EPERM),
        _ => false,
    };
    if refused {
        anyhow!("{what}: this kernel refuses fentry/fexit trampolines (EPERM)")
    } else {
        anyhow::Error::new(err).context(what.to_owned())
    }
}

pub fn attach_fentry(ebpf: &mut Ebpf, name: &str, function: &str, btf: &Btf) -> Result<()> {
    let program: &mut FEntry = program(ebpf, name)?;
    program
        .load(function, btf)
        .map_err(|e| trampoline_refused(e, &format!("loading fentry/{function}")))?;
    program
        .attach()
        .with_context(|| format!("attaching fentry/{function}"))?;
    Ok(())
}

pub fn attach_fexit(ebpf: &mut Ebpf, name: &str, function: &str, btf: &Btf) -> Result<()> {
    let program: &mut FExit = program(ebpf, name)?;
    program
        .load(function, btf)
        .map_err(|e| trampoline_refused(e, &format!("loading fexit/{function}")))?;
    program
        .attach()
        .with_context(|| format!("attaching fexit/{function}"))?;
    Ok(())
}

/// tp_btf where it loads, else raw_tp: both programs share one body in the object, named
/// `<base>_btf` and `<base>_raw`. Returns which one attached (and why tp_btf did not).
pub fn attach_btf_or_raw(
    ebpf: &mut Ebpf,
    base: &str,
    tracepoint: &str,
    btf: &Btf,
    force_tracepoints: bool,
) -> Result<(&'static str, Option<String>)> {
    let why_not_btf = if force_tracepoints {
        "--force-tracepoints".to_owned()
    } else {
        match attach_tp_btf(ebpf, &format!("{base}_btf"), tracepoint, btf) {
            Ok(()) => return Ok(("tp_btf", None)),
            Err(e) => format!("{e:#}"),
        }
    };
    attach_raw_tracepoint(ebpf, &format!("{base}_raw"), tracepoint)?;
    Ok((
        "raw_tp",
        Some(format!("{tracepoint}: tp_btf not used: {why_not_btf}")),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hook_status_reads_well() {
        let ok = HookStatus {
            hook: Hook::OomKill,
            attached: Ok("tracepoint oom/mark_victim".into()),
            notes: vec!["tp_btf not used: old kernel".into()],
        };
        assert_eq!(
            ok.to_string(),
            "oom_kill: tracepoint oom/mark_victim; tp_btf not used: old kernel"
        );
        let missing = HookStatus {
            hook: Hook::OomKill,
            attached: Err("no tracefs".into()),
            notes: vec![],
        };
        assert_eq!(missing.to_string(), "oom_kill: unavailable (no tracefs)");
    }

    #[test]
    fn an_eperm_load_means_no_trampolines() {
        let err = ProgramError::LoadError {
            io_error: std::io::Error::from_raw_os_error(libc::EPERM),
            verifier_log: aya_obj::VerifierLog::new(String::new()),
        };
        let text = trampoline_refused(err, "loading fentry/x").to_string();
        assert!(text.contains("refuses fentry/fexit trampolines"), "{text}");
        let other = ProgramError::LoadError {
            io_error: std::io::Error::from_raw_os_error(libc::EINVAL),
            verifier_log: aya_obj::VerifierLog::new(String::new()),
        };
        let text = format!("{:#}", trampoline_refused(other, "loading fentry/x"));
        assert!(!text.contains("trampolines"), "{text}");
    }
}
