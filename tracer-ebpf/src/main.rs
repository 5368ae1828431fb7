//! memstall's kernel side: one module per hook family, all writing to one ring buffer.
#![no_std]
#![no_main]

mod compaction;
mod diag;
mod events;
mod filter;
mod kill;
mod latency;
mod memcg;
mod oom;
mod reclaim;
mod sleep;
mod stall;
mod swapin;
mod task;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any reachable panic path, so this is never entered at run time.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
