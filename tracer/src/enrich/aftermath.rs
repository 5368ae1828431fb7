//! What a kill freed: the victim's memory cgroup usage at the kill against the lowest usage
//! over the second after it, and in plain words why a kill freed little (shmem stays charged
//! to the cgroup that faulted it in: a SysV segment outlives its process, a shared mapping
//! lives on in a sibling, tmpfs files stay).
//!
//! Kill records wait here for that second before they are reported.
use std::{
    fs,
    time::{Duration, Instant},
};

use crate::{
    cgroup::memory::CgroupMemory,
    event::{Event, Freed},
};

/// When the victim's cgroup is read after the kill; the record is reported after the last.
const SAMPLES: [Duration; 3] = [
    Duration::from_millis(50),
    Duration::from_millis(200),
    Duration::from_millis(1000),
];
/// Kills waiting at once; past this the oldest is reported as it stands.
const MAX_PENDING: usize = 256;

struct Pending {
    event: Event,
    memory: Option<CgroupMemory>,
    held_at: Instant,
    samples_taken: usize,
    usage_at_kill: Option<u64>,
    lowest_after: Option<u64>,
}

/// Kills waiting for their second.
#[derive(Default)]
pub struct Aftermath {
    pending: Vec<Pending>,
}

/// The victim's memory as the kill's record gives it (kB).
struct Victim<'a> {
    comm: &'a str,
    tgid: u32,
    anon_kb: u64,
    shmem_kb: u64,
}

fn victim(event: &Event) -> Option<(Victim<'_>, Option<&str>, Option<u64>)> {
    match event {
        Event::Kill(k) => Some((
            Victim {
                comm: &k.comm,
                tgid: k.tgid,
                anon_kb: k.anon_rss_kb,
                shmem_kb: k.shmem_rss_kb,
            },
            k.cgroup.as_deref(),
            k.usage_kb,
        )),
        Event::OomKill(k) => Some((
            Victim {
                comm: &k.victim_comm,
                tgid: k.victim_tgid,
                anon_kb: k.anon_rss_kb,
                shmem_kb: k.shmem_rss_kb,
            },
            k.victim_cgroup.as_deref(),
            (k.victim_usage_kb > 0).then_some(k.victim_usage_kb),
        )),
        _ => None,
    }
}

fn freed_mut(event: &mut Event) -> Option<&mut Freed> {
    match event {
        Event::Kill(k) => Some(&mut k.freed),
        Event::OomKill(k) => Some(&mut k.freed),
        _ => None,
    }
}

impl Aftermath {
    /// Holds a kill for its second; `memory` is its victim's cgroup. Earlier kills in the same
    /// cgroup end now: what the new kill frees is not theirs, and the new kill's usage at its
    /// signal is their last sample.
    pub fn hold(&mut self, event: Event, memory: Option<CgroupMemory>) -> Vec<Event> {
        let usage_at_kill = victim(&event)
            .and_then(|(_, _, usage)| usage)
            .or_else(|| Some(memory.as_ref()?.usage()? / 1024));
        let mut done = Vec::new();
        if memory.is_some() {
            let mut i = 0;
            while i < self.pending.len() {
                if self.pending[i].memory == memory {
                    let mut earlier = self.pending.remove(i);
                    if let Some(now) = usage_at_kill {
                        earlier.lowest_after =
                            Some(earlier.lowest_after.map_or(now, |l| l.min(now)));
                    }
                    done.push(finish(earlier));
                } else {
                    i += 1;
                }
            }
        }
        if self.pending.len() >= MAX_PENDING {
            done.push(finish(self.pending.remove(0)));
        }
        self.pending.push(Pending {
            event,
            memory,
            held_at: Instant::now(),
            samples_taken: 0,
            usage_at_kill,
            lowest_after: None,
        });
        done
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Takes the samples that are due; returns the kills whose second is over.
    pub fn tick(&mut self) -> Vec<Event> {
        let mut done = Vec::new();
        let mut i = 0;
        while i < self.pending.len() {
            let pending = &mut self.pending[i];
            let elapsed = pending.held_at.elapsed();
            while pending.samples_taken < SAMPLES.len() && elapsed >= SAMPLES[pending.samples_taken]
            {
                pending.samples_taken += 1;
                if let Some(usage) = pending.memory.as_ref().and_then(CgroupMemory::usage) {
                    let kb = usage / 1024;
                    pending.lowest_after = Some(pending.lowest_after.map_or(kb, |l| l.min(kb)));
                }
            }
            if pending.samples_taken == SAMPLES.len() {
                done.push(finish(self.pending.remove(i)));
            } else {
                i += 1;
            }
        }
        done
    }

    /// Everything still waiting, with the samples it has (the run is ending).
    pub fn flush(&mut self) -> Vec<Event> {
        let mut done = Vec::new();
        for mut pending in std::mem::take(&mut self.pending) {
            if let Some(usage) = pending.memory.as_ref().and_then(CgroupMemory::usage) {
                let kb = usage / 1024;
                pending.lowest_after = Some(pending.lowest_after.map_or(kb, |l| l.min(kb)));
            }
            done.push(finish(pending));
        }
        done
    }
}

fn finish(pending: Pending) -> Event {
    let Pending {
        mut event,
        memory,
        usage_at_kill,
        lowest_after,
        ..
    } = pending;
    let freed_kb = usage_at_kill
        .zip(lowest_after)
        .map(|(at, after)| at.saturating_sub(after));
    let note = match (victim(&event), freed_kb) {
        (Some((victim, _, _)), Some(freed)) => note(&victim, freed, memory.as_ref()),
        _ => None,
    };
    if let Some(freed) = freed_mut(&mut event) {
        freed.freed_kb = freed_kb;
        freed.freed_note = note;
    }
    event
}

fn mib(kb: u64) -> String {
    let mib = kb as f64 / 1024.0;
    if mib >= 10.0 {
        format!("{mib:.0} MiB")
    } else {
        format!("{mib:.1} MiB")
    }
}

/// Below this the victim held too little for "freed little" to mean anything.
const NOTE_FROM_KB: u64 = 4096;

/// A sentence when the kill freed less than half of the memory the victim held as its own
/// (anon and shmem; its file pages are page cache that stays, reclaimable, after it).
fn note(victim: &Victim, freed_kb: u64, memory: Option<&CgroupMemory>) -> Option<String> {
    let held = victim.anon_kb.saturating_add(victim.shmem_kb);
    if held < NOTE_FROM_KB || freed_kb.saturating_mul(2) >= held {
        return None;
    }
    let head = format!("killing {} freed {}", victim.comm, mib(freed_kb));
    if victim.shmem_kb.saturating_mul(2) < held {
        return Some(format!(
            "{head} of its {} anon: the cgroup's other tasks charged memory as fast as it was freed",
            mib(victim.anon_kb)
        ));
    }
    let why = match (sysv_segments(victim.tgid), memory) {
        (segments, _) if !segments.is_empty() => segments.join(", "),
        (_, Some(memory)) => match shmem_holders(memory, victim.tgid).first() {
            Some((pid, comm, kb)) => format!(
                "a shared mapping that {comm} (pid {pid}, {} of shmem) still maps",
                mib(*kb)
            ),
            None => "tmpfs or memfd files, or shared pages no one maps".to_owned(),
        },
        _ => "tmpfs or memfd files, or shared pages no one maps".to_owned(),
    };
    Some(format!(
        "{head}: its {} of shmem stay charged to the cgroup ({why})",
        mib(victim.shmem_kb)
    ))
}

/// SysV segments the victim created or was the last to detach: they outlive it until
/// someone removes them.
fn sysv_segments(tgid: u32) -> Vec<String> {
    let text = fs::read_to_string("/proc/sysvipc/shm").unwrap_or_default();
    sysv_segments_in(&text, tgid)
}

fn sysv_segments_in(text: &str, tgid: u32) -> Vec<String> {
    // key shmid perms size cpid lpid nattch uid gid cuid cgid atime dtime ctime rss swap
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let shmid = fields.get(1)?;
            let size: u64 = fields.get(3)?.parse().ok()?;
            let cpid: u32 = fields.get(4)?.parse().ok()?;
            let lpid: u32 = fields.get(5)?.parse().ok()?;
            let attached: u32 = fields.get(6)?.parse().ok()?;
            (cpid == tgid || lpid == tgid).then(|| {
                format!(
                    "SysV shm segment {shmid} of {}, {attached} attached, outlives it until ipcrm",
                    mib(size / 1024)
                )
            })
        })
        .take(4)
        .collect()
}

/// Other tasks of the cgroup that map shmem, most first: (pid, comm, kB).
fn shmem_holders(memory: &CgroupMemory, victim: u32) -> Vec<(u32, String, u64)> {
    let mut holders: Vec<(u32, String, u64)> = memory
        .pids()
        .into_iter()
        .filter(|&pid| pid != victim)
        .take(4096)
        .filter_map(|pid| {
            let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
            let field = |key: &str| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
                    .map(str::trim)
            };
            let kb: u64 = field("RssShmem")?.split_whitespace().next()?.parse().ok()?;
            (kb > 0).then(|| (pid, field("Name").unwrap_or("?").to_owned(), kb))
        })
        .collect();
    holders.sort_by_key(|h| std::cmp::Reverse(h.2));
    holders
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysv_segments_of_the_victim() {
        let text = "       key      shmid perms                  size  cpid  lpid nattch   uid   gid  cuid  cgid      atime      dtime      ctime                   rss                  swap\n\
                    0 32768 600 157286400 9001 9001 0 0 0 0 0 1 2 3 157286400 0\n\
                    0 32769 600 4096 12 13 1 0 0 0 0 1 2 3 4096 0\n";
        assert_eq!(
            sysv_segments_in(text, 9001),
            ["SysV shm segment 32768 of 150 MiB, 0 attached, outlives it until ipcrm"]
        );
        assert!(sysv_segments_in(text, 1).is_empty());
        assert!(sysv_segments_in("header only\n", 1).is_empty());
    }

    #[test]
    fn a_kill_that_freed_most_says_nothing() {
        let victim = Victim {
            comm: "memhog",
            tgid: 1,
            anon_kb: 150 * 1024,
            shmem_kb: 0,
        };
        assert_eq!(note(&victim, 149 * 1024, None), None);
        assert_eq!(
            note(
                &Victim {
                    anon_kb: 1024,
                    ..victim
                },
                0,
                None
            ),
            None,
            "too small to say"
        );
        let shm = Victim {
            anon_kb: 100,
            shmem_kb: 150 * 1024,
            ..victim
        };
        let text = note(&shm, 260, None).unwrap();
        assert!(
            text.starts_with("killing memhog freed 0.3 MiB: its 150 MiB of shmem stay charged"),
            "{text}"
        );
    }
}
