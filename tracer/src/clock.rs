//! Kernel timestamps (CLOCK_BOOTTIME) to wall-clock time.

/// Offset between CLOCK_REALTIME and CLOCK_BOOTTIME, taken once at start.
#[derive(Clone, Copy, Debug)]
pub struct BootClock {
    realtime_minus_boot_ns: i128,
}

fn now_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec; both clocks exist on every Linux the tool supports.
    unsafe { libc::clock_gettime(clock, &raw mut ts) };
    i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
}

impl BootClock {
    pub fn new() -> Self {
        let boot = now_ns(libc::CLOCK_BOOTTIME);
        let real = now_ns(libc::CLOCK_REALTIME);
        Self {
            realtime_minus_boot_ns: real - boot,
        }
    }

    pub fn unix_ns(&self, boot_ns: u64) -> u64 {
        (i128::from(boot_ns) + self.realtime_minus_boot_ns).clamp(0, i128::from(u64::MAX)) as u64
    }

    /// Kernel log timestamps (µs of the monotonic clock) to unix ns; off by the time the
    /// machine spent suspended since, like `dmesg -T`.
    pub fn unix_ns_from_monotonic_us(usec: u64) -> u64 {
        let offset = now_ns(libc::CLOCK_REALTIME) - now_ns(libc::CLOCK_MONOTONIC);
        (i128::from(usec) * 1000 + offset).clamp(0, i128::from(u64::MAX)) as u64
    }

    pub fn now_boot_ns() -> u64 {
        now_ns(libc::CLOCK_BOOTTIME) as u64
    }
}

impl Default for BootClock {
    fn default() -> Self {
        Self::new()
    }
}

/// RFC 3339 UTC with milliseconds, for human output.
pub fn format_unix_ns(unix_ns: u64) -> String {
    match jiff::Timestamp::from_nanosecond(i128::from(unix_ns)) {
        Ok(ts) => format!("{ts:.3}"),
        Err(_) => format!("@{unix_ns}ns"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_time_maps_to_now() {
        let clock = BootClock::new();
        let unix = clock.unix_ns(BootClock::now_boot_ns());
        let real = now_ns(libc::CLOCK_REALTIME) as u64;
        assert!(real.abs_diff(unix) < 1_000_000_000, "{real} vs {unix}");
    }

    #[test]
    fn formats_utc() {
        assert_eq!(
            format_unix_ns(1_700_000_000_123_000_000),
            "2023-11-14T22:13:20.123Z"
        );
    }
}
