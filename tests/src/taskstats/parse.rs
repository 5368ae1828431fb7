//! `struct taskstats` bytes to [`TaskDelays`], by version (include/uapi/linux/taskstats.h).
use std::io;

/// `max_ns`/`min_ns` exist from taskstats version 15/16 on (kernel >= 6.15).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Delay {
    pub count: u64,
    pub total_ns: u64,
    pub max_ns: Option<u64>,
    pub min_ns: Option<u64>,
}

impl Delay {
    /// `self - earlier` for counts and totals (max/min are not differentiable: kept from self).
    #[must_use]
    pub fn since(&self, earlier: &Delay) -> Delay {
        Delay {
            count: self.count.wrapping_sub(earlier.count),
            total_ns: self.total_ns.wrapping_sub(earlier.total_ns),
            max_ns: self.max_ns,
            min_ns: self.min_ns,
        }
    }
}

/// The delay-accounting part of `struct taskstats` (plus a few identifying fields).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TaskDelays {
    /// `taskstats.version` as sent by the kernel (13 on 6.1, 14 on 6.12, 16 on 6.18).
    pub version: u16,
    /// Size of the struct the kernel sent (`sizeof(struct taskstats)` of that kernel).
    pub struct_len: usize,
    /// The pid/tgid the answer is about (from TASKSTATS_TYPE_PID / _TGID).
    pub id: u32,
    /// true if this is a thread-group (TGID) aggregate.
    pub is_tgid: bool,
    pub ac_pid: u32,
    /// v12+.
    pub ac_tgid: Option<u32>,
    pub comm: String,
    /// Wait on a runqueue (sched_info.run_delay).
    pub cpu: Delay,
    /// Sleeps with `in_iowait` set (io_schedule*): sync block I/O, folio-lock waits
    /// on pages under read, and also balance_dirty_pages() pauses.
    pub blkio: Delay,
    /// swap_read_folio() (6.x): submission, plus the read itself for
    /// SWP_SYNCHRONOUS_IO devices (zram) and zswap decompression.
    pub swapin: Delay,
    /// do_try_to_free_pages() (direct reclaim and memcg reclaim) and __node_reclaim().
    pub freepages: Delay,
    /// Waits on a locked, !uptodate, workingset folio; swap_read_folio() of a workingset folio.
    pub thrashing: Delay,
    /// v11+: __alloc_pages_direct_compact() around try_to_compact_pages().
    pub compact: Option<Delay>,
    /// v13+: copy-on-write copy (wp_page_copy / hugetlb_wp).
    pub wpcopy: Option<Delay>,
    /// v14+: IRQ/softirq time stolen from the task (CONFIG_IRQ_TIME_ACCOUNTING).
    pub irq: Option<Delay>,
    pub cpu_run_real_total_ns: u64,
    pub cpu_run_virtual_total_ns: u64,
    pub ac_majflt: u64,
    pub nvcsw: u64,
    pub nivcsw: u64,
}

impl TaskDelays {
    /// Sum of the memory-stall classes delay accounting knows of
    /// (freepages + compact + thrashing + swapin). Note: these can overlap
    /// (a workingset swap-in is counted in both swapin and thrashing).
    pub fn memory_delay_ns(&self) -> u64 {
        self.freepages.total_ns
            + self.compact.map_or(0, |d| d.total_ns)
            + self.thrashing.total_ns
            + self.swapin.total_ns
    }
}

/// Offsets of one delay class: (count, total, max, min).
#[derive(Clone, Copy)]
struct DOff {
    count: usize,
    total: usize,
    max: Option<usize>,
    min: Option<usize>,
}

struct Layout {
    cpu: DOff,
    blkio: DOff,
    swapin: DOff,
    run_real: usize,
    run_virtual: usize,
    comm: usize,
    pid: usize,
    majflt: usize,
    nvcsw: usize,
    nivcsw: usize,
    freepages: DOff,
    thrashing: DOff,
    compact: DOff,
    tgid: usize,
    wpcopy: DOff,
    irq: DOff,
}

const fn dm(count: usize, total: usize, max: usize, min: usize) -> DOff {
    DOff {
        count,
        total,
        max: Some(max),
        min: Some(min),
    }
}

/// Append-only layout: valid for v1..v14 (fields present if inside the payload)
/// and for v16+ (max/min appended at 432..560).
const LAYOUT_APPEND: Layout = Layout {
    cpu: dm(16, 24, 432, 440),
    blkio: dm(32, 40, 448, 456),
    swapin: dm(48, 56, 464, 472),
    run_real: 64,
    run_virtual: 72,
    comm: 80,
    pid: 128,
    majflt: 176,
    nvcsw: 272,
    nivcsw: 280,
    freepages: dm(312, 320, 480, 488),
    thrashing: dm(328, 336, 496, 504),
    compact: dm(352, 360, 512, 520),
    tgid: 368,
    wpcopy: dm(400, 408, 528, 536),
    irq: dm(416, 424, 544, 552),
};

/// Version 15 (6.15-rc only): max/min inserted after each total.
const LAYOUT_V15: Layout = Layout {
    cpu: dm(16, 24, 32, 40),
    blkio: dm(48, 56, 64, 72),
    swapin: dm(80, 88, 96, 104),
    run_real: 112,
    run_virtual: 120,
    comm: 128,
    pid: 176,
    majflt: 224,
    nvcsw: 320,
    nivcsw: 328,
    freepages: dm(360, 368, 376, 384),
    thrashing: dm(392, 400, 408, 416),
    compact: dm(432, 440, 448, 456),
    tgid: 464,
    wpcopy: dm(496, 504, 512, 520),
    irq: dm(528, 536, 544, 552),
};

fn rd_u64(b: &[u8], off: usize) -> Option<u64> {
    b.get(off..off + 8)
        .map(|s| u64::from_ne_bytes(s.try_into().unwrap()))
}
pub(super) fn rd_u32(b: &[u8], off: usize) -> Option<u32> {
    b.get(off..off + 4)
        .map(|s| u32::from_ne_bytes(s.try_into().unwrap()))
}
pub(super) fn rd_u16(b: &[u8], off: usize) -> Option<u16> {
    b.get(off..off + 2)
        .map(|s| u16::from_ne_bytes(s.try_into().unwrap()))
}

fn rd_delay(b: &[u8], o: DOff, with_minmax: bool) -> Option<Delay> {
    Some(Delay {
        count: rd_u64(b, o.count)?,
        total_ns: rd_u64(b, o.total)?,
        max_ns: if with_minmax {
            o.max.and_then(|x| rd_u64(b, x))
        } else {
            None
        },
        min_ns: if with_minmax {
            o.min.and_then(|x| rd_u64(b, x))
        } else {
            None
        },
    })
}

pub(super) fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// Parse the payload of a TASKSTATS_TYPE_STATS attribute (a `struct taskstats`).
pub fn parse_taskstats(b: &[u8]) -> io::Result<TaskDelays> {
    let version = rd_u16(b, 0).ok_or_else(|| bad("taskstats payload too short"))?;
    if version == 0 {
        return Err(bad("taskstats version 0"));
    }
    let (l, minmax) = match version {
        15 => (&LAYOUT_V15, true),
        v if v >= 16 => (&LAYOUT_APPEND, true),
        _ => (&LAYOUT_APPEND, false),
    };
    let need = |what: &str, v: Option<Delay>| {
        v.ok_or_else(|| bad(format!("taskstats v{version}: no {what}")))
    };
    let comm_bytes = b.get(l.comm..l.comm + 32).unwrap_or(&[]);
    let comm_end = comm_bytes
        .iter()
        .position(|&c| c == 0)
        .unwrap_or(comm_bytes.len());
    // compact is v11+, tgid v12+, wpcopy v13+, irq v14+; for v < 15 presence = inside the payload,
    // guarded by the version too so that padding of a short struct is never misread.
    let opt = |min_ver: u16, o: DOff| {
        if version >= min_ver {
            rd_delay(b, o, minmax)
        } else {
            None
        }
    };
    Ok(TaskDelays {
        version,
        struct_len: b.len(),
        id: 0,
        is_tgid: false,
        ac_pid: rd_u32(b, l.pid).unwrap_or(0),
        ac_tgid: if version >= 12 {
            rd_u32(b, l.tgid)
        } else {
            None
        },
        comm: String::from_utf8_lossy(&comm_bytes[..comm_end]).into_owned(),
        cpu: need("cpu", rd_delay(b, l.cpu, minmax))?,
        blkio: need("blkio", rd_delay(b, l.blkio, minmax))?,
        swapin: need("swapin", rd_delay(b, l.swapin, minmax))?,
        // freepages (<= v8) and thrashing (v9, 4.20) are absent from very old kernels: zero then.
        freepages: rd_delay(b, l.freepages, minmax).unwrap_or_default(),
        thrashing: if version >= 9 {
            rd_delay(b, l.thrashing, minmax).unwrap_or_default()
        } else {
            Delay::default()
        },
        compact: opt(11, l.compact),
        wpcopy: opt(13, l.wpcopy),
        irq: opt(14, l.irq),
        cpu_run_real_total_ns: rd_u64(b, l.run_real).unwrap_or(0),
        cpu_run_virtual_total_ns: rd_u64(b, l.run_virtual).unwrap_or(0),
        ac_majflt: rd_u64(b, l.majflt).unwrap_or(0),
        nvcsw: rd_u64(b, l.nvcsw).unwrap_or(0),
        nivcsw: rd_u64(b, l.nivcsw).unwrap_or(0),
    })
}

/// Iterate over netlink attributes: yields (type & NLA_TYPE_MASK, payload).
#[cfg(test)]
mod tests {
    use super::*;

    fn put(b: &mut [u8], off: usize, v: u64) {
        b[off..off + 8].copy_from_slice(&v.to_ne_bytes());
    }

    fn synth(version: u16, len: usize, l: &Layout) -> Vec<u8> {
        let mut b = vec![0u8; len];
        b[0..2].copy_from_slice(&version.to_ne_bytes());
        b[l.comm..l.comm + 4].copy_from_slice(b"demo");
        b[l.pid..l.pid + 4].copy_from_slice(&4242u32.to_ne_bytes());
        put(&mut b, l.freepages.count, 7);
        put(&mut b, l.freepages.total, 7000);
        put(&mut b, l.thrashing.count, 3);
        put(&mut b, l.swapin.total, 55);
        if l.compact.total + 8 <= len {
            put(&mut b, l.compact.count, 2);
            put(&mut b, l.compact.total, 2000);
        }
        if let Some(m) = l.freepages.max
            && m + 8 <= len
        {
            put(&mut b, m, 4000);
        }
        b
    }

    #[test]
    fn v16_layout() {
        let b = synth(16, 560, &LAYOUT_APPEND);
        let t = parse_taskstats(&b).unwrap();
        assert_eq!(t.version, 16);
        assert_eq!(t.comm, "demo");
        assert_eq!(t.ac_pid, 4242);
        assert_eq!(t.freepages.count, 7);
        assert_eq!(t.freepages.total_ns, 7000);
        assert_eq!(t.freepages.max_ns, Some(4000));
        assert_eq!(t.thrashing.count, 3);
        assert_eq!(t.swapin.total_ns, 55);
        assert_eq!(t.compact.unwrap().total_ns, 2000);
        assert!(t.irq.is_some());
    }

    #[test]
    fn v15_layout() {
        let b = synth(15, 560, &LAYOUT_V15);
        let t = parse_taskstats(&b).unwrap();
        assert_eq!(t.ac_pid, 4242);
        assert_eq!(t.freepages.total_ns, 7000);
        assert_eq!(t.freepages.max_ns, Some(4000));
        assert_eq!(t.compact.unwrap().count, 2);
    }

    #[test]
    fn v13_layout_6_1() {
        let b = synth(13, 416, &LAYOUT_APPEND);
        let t = parse_taskstats(&b).unwrap();
        assert_eq!(t.freepages.count, 7);
        assert_eq!(t.freepages.max_ns, None);
        assert!(t.wpcopy.is_some());
        assert!(t.irq.is_none());
    }

    #[test]
    fn v14_layout_6_12() {
        let b = synth(14, 432, &LAYOUT_APPEND);
        let t = parse_taskstats(&b).unwrap();
        assert!(t.irq.is_some());
        assert_eq!(t.compact.unwrap().total_ns, 2000);
        assert_eq!(t.cpu.max_ns, None);
    }
}
