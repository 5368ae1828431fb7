//! Direct compaction: an allocation defragmenting memory itself. No tracepoint marks its end,
//! so the window is fentry/fexit on try_to_compact_pages(), where the kernel allows trampolines
//! (the loader says so where it does not).
use aya_ebpf::{
    Global,
    macros::{fentry, fexit},
    programs::{FEntryContext, FExitContext},
};
use memstall_common::{COMPACT_PARAMS, StallKind};

use crate::stall::{Args, begin, discard, end};

/// enum compact_result's COMPACT_SKIPPED, from BTF: compaction did not run (no suitable
/// zone, too little free memory to migrate into); the kernel does not count it as a
/// compaction stall (vmstat compact_stall), and neither does memstall.
#[unsafe(no_mangle)]
static COMPACT_SKIPPED: Global<u32> = Global::new(1);

#[fentry(function = "try_to_compact_pages")]
pub fn compact_enter(ctx: FEntryContext) -> i32 {
    // try_to_compact_pages(gfp_mask, order, alloc_flags, ac, prio, capture)
    begin(
        StallKind::Compaction,
        ctx.u64_arg(1) as i32,
        ctx.u64_arg(0),
        -1,
    );
    0
}

#[fexit(function = "try_to_compact_pages")]
pub fn compact_exit(ctx: FExitContext) -> i32 {
    let result = ctx.u64_arg(COMPACT_PARAMS) as u32;
    if result == COMPACT_SKIPPED.load() {
        discard(StallKind::Compaction);
    } else {
        end(&ctx, StallKind::Compaction, 0, u64::from(result));
    }
    0
}
