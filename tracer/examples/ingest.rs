//! Userspace ingest rate: one core decoding ring-buffer records and recording them into the
//! histograms (what `cargo xtask bench` reports). A synthetic feed of stall records below the
//! outlier threshold, spread over 64 cgroups and every stall kind.
use std::{os::unix::fs::MetadataExt as _, time::Instant};

use memstall::{CgroupFilter, CgroupResolver, CgroupVersion, DecodeContext, Enricher, Pipeline};
use memstall_common::{EventHeader, EventKind, StallEvent, StallKind, TaskInfo};

fn main() {
    let records: usize = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(5_000_000);
    let root = tempfile::tempdir().expect("temp dir");
    let ids: Vec<u64> = (0..64)
        .map(|i| {
            let dir = root.path().join(format!("cg{i}"));
            std::fs::create_dir(&dir).expect("cgroup dir");
            std::fs::metadata(&dir).expect("stat").ino()
        })
        .collect();
    let feed: Vec<StallEvent> = (0..4096u64)
        .map(|i| StallEvent {
            header: EventHeader {
                kind: EventKind::Stall as u32,
                cpu: 0,
                boot_ns: i,
            },
            task: TaskInfo {
                pid: 1,
                tgid: 1,
                memcg_id: ids[i as usize % ids.len()],
                comm: *b"worker\0\0\0\0\0\0\0\0\0\0",
            },
            stall_kind: StallKind::ALL[i as usize % StallKind::ALL.len()] as u32,
            latency_ns: 1_000 + (i * 7919) % 5_000_000,
            nr_reclaimed: 32,
            pass_scanned: 64,
            ..Default::default()
        })
        .collect();
    let enricher = Enricher::new(CgroupResolver::new(root.path()), CgroupVersion::V2);
    let mut pipeline = Pipeline::new(
        DecodeContext::new(),
        enricher,
        CgroupFilter::default(),
        Vec::new(),
        u64::MAX,
    );
    let started = Instant::now();
    for i in 0..records {
        pipeline
            .record(bytemuck::bytes_of(&feed[i % feed.len()]))
            .expect("record");
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "ingest: {records} records in {secs:.3} s = {:.2} M records/s",
        records as f64 / secs / 1e6
    );
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let rss_kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").parse::<u64>().ok())
        .unwrap_or(0);
    println!(
        "\nRSS after ingest: {:.1} MiB with {} histograms ({} cgroups × {} stall kinds)",
        rss_kb as f64 / 1024.0,
        ids.len() * StallKind::ALL.len(),
        ids.len(),
        StallKind::ALL.len()
    );
}
