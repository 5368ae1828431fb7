//! A stall record to a [`Stall`].
use memstall_common::{StallEvent, StallKind, comm_str};

use super::DecodeContext;
use crate::event::{Stall, ThrottleReason};

/// `None` for a kind this build does not know (a newer kernel side).
pub fn decode(raw: &StallEvent, ctx: &mut DecodeContext) -> Option<Stall> {
    let kind = StallKind::from_u32(raw.stall_kind)?;
    let (kernel_stack, user_stack) =
        ctx.stacks(raw.kernel_stack_id, raw.user_stack_id, raw.task.tgid);
    let shrinker = (kind == StallKind::ShrinkSlab && raw.detail != 0).then(|| {
        let symbol = ctx.symbolizer.kernel_symbol(raw.detail);
        symbol
            .strip_suffix("+0x0")
            .map_or(symbol.clone(), str::to_owned)
    });
    Some(Stall {
        kind,
        time_ns: ctx.clock.unix_ns(raw.header.boot_ns),
        latency_ns: raw.latency_ns,
        memcg_id: raw.task.memcg_id,
        cgroup: None,
        pid: raw.task.pid,
        tgid: raw.task.tgid,
        comm: comm_str(&raw.task.comm).to_string(),
        pages: raw.nr_reclaimed,
        pages_scanned: raw.pass_scanned,
        passes: raw.passes,
        retries: raw.retries,
        order: (raw.order >= 0).then_some(raw.order),
        gfp_flags: raw.gfp_flags,
        nid: (raw.nid >= 0).then_some(raw.nid),
        reason: (kind == StallKind::Throttled).then(|| ThrottleReason::from_kernel(raw.reason)),
        shrinker,
        kernel_stack,
        user_stack,
        labels: None,
    })
}
