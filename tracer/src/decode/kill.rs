//! A signal_generate record to a [`Kill`]; the kernel's own SIGKILLs held back until it is
//! known whether an oom/mark_victim follows (then the OOM kill record tells the story alone).
use memstall_common::{KillEvent, comm_str, signal_origin};

use super::DecodeContext;
use crate::event::{Kill, KillMethod};

/// How long a kernel SIGKILL waits for its mark_victim: the OOM killer marks the victim
/// microseconds after signalling it, on the same CPU; a ring-buffer read can fall between.
pub const HOLD_NS: u64 = 20_000_000;
/// A task sharing the OOM victim's memory is signalled right after the victim is marked.
const SHARED_MM_NS: u64 = 5_000_000;
/// Kernel kills waiting at once (a pid namespace's teardown signals each of its tasks).
const MAX_HELD: usize = 4096;

/// si_code of tgkill(2).
const SI_TKILL: i32 = -6;

pub fn decode(raw: &KillEvent, method: KillMethod, ctx: &DecodeContext) -> Kill {
    Kill {
        time_ns: ctx.clock.unix_ns(raw.header.boot_ns),
        memcg_id: raw.target.memcg_id,
        pid: raw.target.pid,
        tgid: raw.target.tgid,
        comm: comm_str(&raw.target.comm).to_string(),
        sender_memcg_id: raw.sender.memcg_id,
        sender_pid: raw.sender.pid,
        sender_tgid: raw.sender.tgid,
        sender_comm: comm_str(&raw.sender.comm).to_string(),
        sender_process: comm_str(&raw.sender_leader_comm).to_string(),
        signal: raw.signal,
        method,
        anon_rss_kb: raw.anon_rss_kb,
        file_rss_kb: raw.file_rss_kb,
        shmem_rss_kb: raw.shmem_rss_kb,
        swap_entries: raw.swap_entries,
        usage_kb: (raw.target_memcg_usage_kb > 0).then_some(raw.target_memcg_usage_kb),
        ..Kill::default()
    }
}

pub fn method(raw: &KillEvent) -> KillMethod {
    match raw.origin {
        signal_origin::NOINFO => KillMethod::CgroupKill,
        signal_origin::PRIV => KillMethod::Kernel,
        _ if raw.si_code == SI_TKILL => KillMethod::ThreadKill,
        _ => KillMethod::Kill,
    }
}

/// Kernel SIGKILLs not yet known to be the OOM killer's, and the last OOM kill's trigger.
#[derive(Default)]
pub struct KernelKills {
    held: Vec<KillEvent>,
    /// (trigger tid, boot ns) of the last mark_victim.
    last_oom: Option<(u32, u64)>,
}

impl KernelKills {
    /// A kernel SIGKILL: `Some(method)` to report it now, `None` while it waits.
    pub fn arrived(&mut self, raw: &KillEvent) -> Option<KillMethod> {
        if let Some((trigger, at)) = self.last_oom
            && trigger == raw.sender.pid
            && raw.header.boot_ns.saturating_sub(at) <= SHARED_MM_NS
        {
            return Some(KillMethod::OomKiller);
        }
        if self.held.len() >= MAX_HELD {
            return Some(KillMethod::Kernel);
        }
        self.held.push(*raw);
        None
    }

    /// The OOM killer marked `victim_tgid`: its own SIGKILL is the same kill.
    pub fn oom_kill(&mut self, trigger_pid: u32, victim_tgid: u32, boot_ns: u64) {
        self.held
            .retain(|k| !(k.sender.pid == trigger_pid && k.target.tgid == victim_tgid));
        self.last_oom = Some((trigger_pid, boot_ns));
    }

    /// Kills that waited long enough (all of them with `now` = u64::MAX).
    pub fn expired(&mut self, now_boot_ns: u64) -> Vec<KillEvent> {
        let (due, keep) = std::mem::take(&mut self.held)
            .into_iter()
            .partition(|k| now_boot_ns.saturating_sub(k.header.boot_ns) >= HOLD_NS);
        self.held = keep;
        due
    }
}
