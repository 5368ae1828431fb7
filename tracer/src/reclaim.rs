//! Reclaim stalls, user side: decoding, the outlier line, and attaching the vmscan hooks.
use std::fmt;

use serde::Serialize;
use tracer_common::{KswapdTotals, StallEvent, StallKind, comm_str};

use crate::{
    clock::format_unix_ns,
    decode::DecodeContext,
    k8s::Labels,
    loader::{self, HookStatus, KernelInfo},
    term::escape,
};

/// One finished stall: a task blocked in reclaim (or kswapd's run, or a throttling sleep).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Stall {
    /// Serialised as the event's `type`.
    #[serde(skip)]
    pub kind: StallKind,
    pub time_ns: u64,
    pub latency_ns: u64,
    /// Memory cgroup of the stalled task.
    pub cgroup: Option<String>,
    pub pid: u32,
    pub tgid: u32,
    pub comm: String,
    /// Pages reclaimed, as the reclaim call reported them (kswapd: by its LRU passes).
    pub pages: u64,
    /// Pages scanned by the inactive-LRU passes inside the stall, and how many passes.
    pub pages_scanned: u64,
    pub passes: u32,
    /// Allocation order (kswapd: the order it was woken for); absent where unknown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order: Option<i32>,
    pub gfp_flags: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nid: Option<i32>,
    /// Why a throttled reclaimer slept.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub kernel_stack: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub user_stack: Vec<String>,
    /// Kubernetes / container / unit names of `cgroup` (filled in by the pipeline).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub labels: Option<Labels>,
}

fn throttle_reason(reason: u32) -> &'static str {
    match reason {
        0 => "writeback",
        1 => "isolated",
        2 => "noprogress",
        3 => "congested",
        _ => "unknown",
    }
}

impl Stall {
    /// `None` for a kind this build does not know (a newer kernel side).
    pub fn decode(raw: &StallEvent, ctx: &mut DecodeContext) -> Option<Self> {
        let kind = StallKind::from_u32(raw.stall_kind)?;
        let (kernel_stack, user_stack) =
            ctx.stacks(raw.kernel_stack_id, raw.user_stack_id, raw.task.tgid);
        Some(Self {
            kind,
            time_ns: ctx.clock.unix_ns(raw.header.boot_ns),
            latency_ns: raw.latency_ns,
            cgroup: ctx.cgroups.path(raw.task.memcg_id),
            pid: raw.task.pid,
            tgid: raw.task.tgid,
            comm: comm_str(&raw.task.comm).to_string(),
            pages: raw.nr_reclaimed,
            pages_scanned: raw.pass_scanned,
            passes: raw.passes,
            order: (raw.order >= 0).then_some(raw.order),
            gfp_flags: raw.gfp_flags,
            nid: (raw.nid >= 0).then_some(raw.nid),
            reason: (kind == StallKind::Throttled).then(|| throttle_reason(raw.reason)),
            kernel_stack,
            user_stack,
            labels: None,
        })
    }
}

/// Milliseconds with the precision a reader needs.
pub struct Ms(pub u64);

impl fmt::Display for Ms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0 as f64 / 1e6;
        match ms {
            ms if ms >= 100.0 => write!(f, "{ms:.0} ms"),
            ms if ms >= 1.0 => write!(f, "{ms:.1} ms"),
            ms => write!(f, "{ms:.3} ms"),
        }
    }
}

impl fmt::Display for Stall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} STALL {} {} {} pid {} in {}: reclaimed {} pages",
            format_unix_ns(self.time_ns),
            self.kind.name(),
            Ms(self.latency_ns),
            escape(&self.comm),
            self.pid,
            escape(self.cgroup.as_deref().unwrap_or("?")),
            self.pages,
        )?;
        if self.passes > 0 {
            write!(
                f,
                " (scanned {} in {} LRU passes)",
                self.pages_scanned, self.passes
            )?;
        }
        if let Some(order) = self.order {
            write!(f, ", order {order}")?;
        }
        if let Some(nid) = self.nid {
            write!(f, ", node {nid}")?;
        }
        if let Some(reason) = self.reason {
            write!(f, ", reason {reason}")?;
        }
        for frame in &self.kernel_stack {
            write!(f, "\n    {}", escape(frame))?;
        }
        for frame in &self.user_stack {
            write!(f, "\n    [user] {}", escape(frame))?;
        }
        Ok(())
    }
}

/// kswapd across the whole machine over a period, whatever `--cgroup` watches: whether the
/// node was short of memory while the watched cgroups stalled.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct KswapdActivity {
    /// Wake-to-sleep runs that ended in the period (each a `kswapd_wake` stall where watched).
    pub runs: u64,
    /// Runs that began in the period.
    pub wakes: u64,
    /// Time awake in the period, runs still in progress included, summed over nodes.
    pub awake_ns: u64,
    pub pages_scanned: u64,
    pub pages_reclaimed: u64,
}

impl KswapdActivity {
    /// Percent of a period of `period_ns` kswapd was awake (over 100 with several nodes busy).
    pub fn awake_pct(&self, period_ns: u64) -> f64 {
        self.awake_ns as f64 * 100.0 / period_ns.max(1) as f64
    }

    /// The activity between two kernel totals; `None` when kswapd slept throughout.
    pub fn between(now: &KswapdTotals, before: &KswapdTotals) -> Option<Self> {
        let awake_ns = now.awake_ns.saturating_sub(before.awake_ns);
        (awake_ns > 0).then(|| Self {
            runs: now.runs.saturating_sub(before.runs),
            wakes: now.wakes.saturating_sub(before.wakes),
            awake_ns,
            pages_scanned: now.pages_scanned.saturating_sub(before.pages_scanned),
            pages_reclaimed: now.pages_reclaimed.saturating_sub(before.pages_reclaimed),
        })
    }
}

/// Hook groups: (hook name, [(program base name, tracepoint)]).
const HOOKS: &[(&str, &[(&str, &str)])] = &[
    (
        "direct_reclaim",
        &[
            ("direct_reclaim_begin", "mm_vmscan_direct_reclaim_begin"),
            ("direct_reclaim_end", "mm_vmscan_direct_reclaim_end"),
        ],
    ),
    (
        "memcg_reclaim",
        &[
            ("memcg_reclaim_begin", "mm_vmscan_memcg_reclaim_begin"),
            ("memcg_reclaim_end", "mm_vmscan_memcg_reclaim_end"),
        ],
    ),
    (
        "softlimit_reclaim",
        &[
            (
                "softlimit_reclaim_begin",
                "mm_vmscan_memcg_softlimit_reclaim_begin",
            ),
            (
                "softlimit_reclaim_end",
                "mm_vmscan_memcg_softlimit_reclaim_end",
            ),
        ],
    ),
    (
        "node_reclaim",
        &[
            ("node_reclaim_begin", "mm_vmscan_node_reclaim_begin"),
            ("node_reclaim_end", "mm_vmscan_node_reclaim_end"),
        ],
    ),
    (
        "kswapd",
        &[
            ("kswapd_wake", "mm_vmscan_kswapd_wake"),
            ("kswapd_sleep", "mm_vmscan_kswapd_sleep"),
            ("wakeup_kswapd", "mm_vmscan_wakeup_kswapd"),
        ],
    ),
    ("throttled", &[("throttled", "mm_vmscan_throttled")]),
    (
        "reclaim_passes",
        &[("lru_shrink_inactive", "mm_vmscan_lru_shrink_inactive")],
    ),
];

/// Attaches every vmscan hook, tp_btf first and raw_tp where tp_btf fails; one status per group.
pub fn attach(ebpf: &mut aya::Ebpf, kernel: &KernelInfo) -> Vec<HookStatus> {
    HOOKS
        .iter()
        .map(|(hook, programs)| {
            let mut vias = Vec::new();
            let mut notes = Vec::new();
            let mut failure = None;
            for (base, tracepoint) in *programs {
                let btf = if kernel.force_tracepoints {
                    Err("--force-tracepoints".to_owned())
                } else {
                    loader::attach_tp_btf(ebpf, &format!("{base}_btf"), tracepoint, &kernel.aya_btf)
                        .map_err(|e| format!("{e:#}"))
                };
                match btf {
                    Ok(()) => vias.push("tp_btf"),
                    Err(why) => match loader::attach_raw_tracepoint(
                        ebpf,
                        &format!("{base}_raw"),
                        tracepoint,
                    ) {
                        Ok(()) => {
                            vias.push("raw_tp");
                            notes.push(format!("{tracepoint}: tp_btf not used: {why}"));
                        }
                        Err(e) => failure = Some(format!("{e:#}")),
                    },
                }
            }
            vias.dedup();
            HookStatus {
                hook,
                attached: match failure {
                    Some(why) => Err(why),
                    None => Ok(format!(
                        "{} vmscan ({} tracepoints)",
                        vias.join("+"),
                        programs.len()
                    )),
                },
                notes,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kswapd_activity_is_the_difference_of_totals() {
        let before = KswapdTotals {
            runs: 4,
            wakes: 5,
            awake_ns: 1_000,
            pages_scanned: 50,
            pages_reclaimed: 40,
        };
        let now = KswapdTotals {
            runs: 6,
            wakes: 6,
            awake_ns: 4_000,
            pages_scanned: 80,
            pages_reclaimed: 60,
        };
        assert_eq!(
            KswapdActivity::between(&now, &before),
            Some(KswapdActivity {
                runs: 2,
                wakes: 1,
                awake_ns: 3_000,
                pages_scanned: 30,
                pages_reclaimed: 20,
            })
        );
        assert_eq!(KswapdActivity::between(&now, &now), None);
    }

    #[test]
    fn outlier_line_reads_well() {
        let stall = Stall {
            kind: StallKind::MemcgReclaim,
            time_ns: 1_700_000_000_123_000_000,
            latency_ns: 12_345_678,
            cgroup: Some("/svc".into()),
            pid: 42,
            tgid: 42,
            comm: "java".into(),
            pages: 32,
            pages_scanned: 64,
            passes: 2,
            order: Some(0),
            gfp_flags: 0xcc0,
            nid: None,
            reason: None,
            kernel_stack: vec!["try_charge_memcg+0x1a".into()],
            user_stack: vec![],
            labels: None,
        };
        assert_eq!(
            stall.to_string(),
            "2023-11-14T22:13:20.123Z STALL memcg_reclaim 12.3 ms java pid 42 in /svc: reclaimed 32 \
             pages (scanned 64 in 2 LRU passes), order 0\n    try_charge_memcg+0x1a"
        );
        assert_eq!(Ms(250_000).to_string(), "0.250 ms");
        assert_eq!(Ms(1_250_000_000).to_string(), "1250 ms");
    }
}
