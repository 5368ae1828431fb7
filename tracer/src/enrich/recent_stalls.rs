//! The last seconds of stalls, kept so an OOM kill can say how hard reclaim tried before it.
use std::collections::{HashMap, VecDeque};

use crate::event::ReclaimBefore;

const WINDOW_NS: u64 = 10_000_000_000;
/// Bounds memory in a stall storm; the oldest stalls go first.
const MAX_KEPT: usize = 100_000;

struct RecentStall {
    boot_ns: u64,
    memcg_id: u64,
    latency_ns: u64,
    pages: u64,
    scanned: u64,
}

#[derive(Default)]
pub struct RecentStalls {
    stalls: VecDeque<RecentStall>,
}

impl RecentStalls {
    pub fn push(&mut self, boot_ns: u64, memcg_id: u64, latency_ns: u64, pages: u64, scanned: u64) {
        while self
            .stalls
            .front()
            .is_some_and(|r| r.boot_ns.saturating_add(WINDOW_NS) < boot_ns)
            || self.stalls.len() >= MAX_KEPT
        {
            self.stalls.pop_front();
        }
        self.stalls.push_back(RecentStall {
            boot_ns,
            memcg_id,
            latency_ns,
            pages,
            scanned,
        });
    }

    /// The stalls of the window ending at `now_boot_ns` in the memcgs `inside` accepts.
    pub fn effort(&self, now_boot_ns: u64, mut inside: impl FnMut(u64) -> bool) -> ReclaimBefore {
        let mut before = ReclaimBefore {
            window_ns: WINDOW_NS,
            ..Default::default()
        };
        let mut known: HashMap<u64, bool> = HashMap::new();
        for r in self
            .stalls
            .iter()
            .filter(|r| r.boot_ns.saturating_add(WINDOW_NS) >= now_boot_ns)
        {
            if *known
                .entry(r.memcg_id)
                .or_insert_with(|| inside(r.memcg_id))
            {
                before.stalls += 1;
                before.stall_ns = before.stall_ns.saturating_add(r.latency_ns);
                before.pages_reclaimed = before.pages_reclaimed.saturating_add(r.pages);
                before.pages_scanned = before.pages_scanned.saturating_add(r.scanned);
            }
        }
        before
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_only_the_window_and_the_domain() {
        let mut recent = RecentStalls::default();
        recent.push(1_000, 7, 5, 1, 2);
        recent.push(WINDOW_NS + 2_000, 7, 10, 3, 4);
        recent.push(WINDOW_NS + 3_000, 8, 100, 30, 40);
        let mut asked = Vec::new();
        let before = recent.effort(WINDOW_NS + 3_000, |id| {
            asked.push(id);
            id == 7
        });
        assert_eq!(
            (
                before.stalls,
                before.stall_ns,
                before.pages_reclaimed,
                before.pages_scanned
            ),
            (1, 10, 3, 4)
        );
        assert_eq!(asked, [7, 8], "each memcg named once");
        assert_eq!(recent.effort(3 * WINDOW_NS, |_| true).stalls, 0);
    }

    /// Found by the ring_record fuzz target: a record's time near the end of u64.
    #[test]
    fn late_timestamps_do_not_overflow() {
        let mut recent = RecentStalls::default();
        recent.push(u64::MAX - 5, 1, u64::MAX, u64::MAX, u64::MAX);
        recent.push(u64::MAX, 1, u64::MAX, u64::MAX, u64::MAX);
        let before = recent.effort(u64::MAX, |_| true);
        assert_eq!((before.stalls, before.stall_ns), (2, u64::MAX));
    }
}
