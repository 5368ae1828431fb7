//! Types shared by memstall's eBPF programs and its loader, one module per kernel-side file.
//!
//! Every event the kernel side emits starts with an [`EventHeader`] whose `kind` is one of
//! [`EventKind`]; the payload layout is fixed by `#[repr(C)]` and has no padding (checked by the
//! size asserts below each type), so userspace can decode it from the ring buffer's bytes
//! without trusting the kernel to have filled every byte.
#![no_std]

#[cfg(feature = "user")]
mod decode;
mod diagnostics;
mod events;
mod filter;
mod kill;
pub mod latency;
mod memcg;
pub mod names;
mod oom;
mod reclaim;
mod task;

#[cfg(feature = "user")]
pub use decode::{CommStr, DecodeError, RawEvent, comm_str};
pub use diagnostics::*;
pub use events::*;
pub use filter::*;
pub use kill::*;
pub use latency::{LatencyKey, LatencyValue};
pub use memcg::*;
pub use oom::*;
pub use reclaim::*;
pub use task::*;

/// Fails the build when a shared type's size is not what both sides were written for (a
/// field added without its padding, a type changed on one side).
macro_rules! assert_size {
    ($($ty:ty = $size:expr),* $(,)?) => {
        $(const _: () = assert!(core::mem::size_of::<$ty>() == $size);)*
    };
}

assert_size!(
    EventHeader = 16,
    TaskInfo = 32,
    StallEvent = 144,
    OomKillEvent = 160,
    KillEvent = 160,
    OomContextEvent = 48,
    OomControlLayout = 24,
    MarkVictimFormat = 40,
    InFlight = 56,
    KswapdTotals = 40,
    KernelLayout = 120,
    FilterConfig = 8,
    MemcgItems = 24,
    MemcgCounterKey = 16,
    LatencyKey = 16,
    LatencyValue = 24,
);

/// Map keys and values userspace reads and writes through aya.
#[cfg(feature = "user")]
mod pod {
    use super::{
        FilterConfig, InFlight, KernelLayout, KswapdTotals, LatencyKey, LatencyValue,
        MarkVictimFormat, MemcgCounterKey, MemcgItems, OomControlLayout,
    };

    // SAFETY: each is #[repr(C)], all integer fields, no padding (see the size asserts).
    unsafe impl aya::Pod for KernelLayout {}
    unsafe impl aya::Pod for MarkVictimFormat {}
    unsafe impl aya::Pod for MemcgItems {}
    unsafe impl aya::Pod for FilterConfig {}
    unsafe impl aya::Pod for OomControlLayout {}
    unsafe impl aya::Pod for LatencyKey {}
    unsafe impl aya::Pod for LatencyValue {}
    unsafe impl aya::Pod for MemcgCounterKey {}
    unsafe impl aya::Pod for KswapdTotals {}
    unsafe impl aya::Pod for InFlight {}
}

#[cfg(all(test, feature = "user"))]
mod tests {
    extern crate std;
    use super::*;

    fn oom_bytes() -> ([u8; size_of::<OomKillEvent>()], OomKillEvent) {
        let event = OomKillEvent {
            header: EventHeader {
                kind: EventKind::OomKill as u32,
                cpu: 1,
                boot_ns: 42,
            },
            victim: TaskInfo {
                pid: 7,
                tgid: 7,
                memcg_id: 99,
                comm: *b"memhog\0\0\0\0\0\0\0\0\0\0",
            },
            anon_rss_kb: 1234,
            oom_score_adj: -17,
            ..Default::default()
        };
        let mut bytes = [0u8; size_of::<OomKillEvent>()];
        bytes.copy_from_slice(bytemuck::bytes_of(&event));
        (bytes, event)
    }

    #[test]
    fn decodes_oom_kill() {
        let (bytes, event) = oom_bytes();
        assert_eq!(RawEvent::decode(&bytes), Ok(RawEvent::OomKill(event)));
    }

    #[test]
    fn rejects_truncated_and_unknown_records() {
        let (mut bytes, _) = oom_bytes();
        assert_eq!(
            RawEvent::decode(&bytes[..20]),
            Err(DecodeError::TooShort {
                len: 20,
                need: size_of::<OomKillEvent>()
            })
        );
        assert!(matches!(
            RawEvent::decode(&bytes[..3]),
            Err(DecodeError::TooShort { .. })
        ));
        bytes[0] = 0xee;
        assert_eq!(
            RawEvent::decode(&bytes),
            Err(DecodeError::UnknownKind(0xee))
        );
    }

    #[test]
    fn decodes_stall_and_names_kinds() {
        let event = StallEvent {
            header: EventHeader {
                kind: EventKind::Stall as u32,
                cpu: 0,
                boot_ns: 5,
            },
            stall_kind: StallKind::MemcgReclaim as u32,
            latency_ns: 1_000_000,
            ..Default::default()
        };
        assert_eq!(
            RawEvent::decode(bytemuck::bytes_of(&event)),
            Ok(RawEvent::Stall(event))
        );
        for kind in StallKind::ALL {
            assert_eq!(StallKind::from_u32(kind as u32), Some(kind));
        }
        assert_eq!(StallKind::from_u32(0), None);
        assert_eq!(StallKind::MemcgReclaim.name(), "memcg_reclaim");
    }

    #[test]
    fn comm_stops_at_nul_and_survives_bad_utf8() {
        use std::string::ToString;
        assert_eq!(comm_str(b"memhog\0garbage\0\0").to_string(), "memhog");
        assert_eq!(
            comm_str(b"\xffab\0\0\0\0\0\0\0\0\0\0\0\0\0").to_string(),
            "\\xffab"
        );
        assert_eq!(
            comm_str(b"0123456789abcdef").to_string(),
            "0123456789abcdef"
        );
    }
}
