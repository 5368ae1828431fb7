//! Swap-in: reading a page back from swap. No tracepoint marks it, so the window is
//! fentry/fexit on the kernel's swap read (swap_read_folio since 6.6, swap_readpage before;
//! the loader picks the one in BTF), where the kernel allows trampolines.
use aya_ebpf::{
    macros::{fentry, fexit},
    programs::{FEntryContext, FExitContext},
};
use memstall_common::StallKind;

use crate::stall::{begin, end};

#[fentry(function = "swap_read_folio")]
pub fn swapin_enter(_ctx: FEntryContext) -> i32 {
    begin(StallKind::Swapin, 0, 0, -1);
    0
}

#[fexit(function = "swap_read_folio")]
pub fn swapin_exit(ctx: FExitContext) -> i32 {
    end(&ctx, StallKind::Swapin, 1, 0);
    0
}
