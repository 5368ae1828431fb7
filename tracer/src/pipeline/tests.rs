use std::os::unix::fs::MetadataExt as _;

use memstall_common::{EventHeader, EventKind, StallEvent, StallKind, TaskInfo};

use super::Pipeline;
use crate::{
    cgroup::{CgroupFilter, CgroupResolver, CgroupVersion},
    decode::DecodeContext,
    enrich::Enricher,
};

/// Live cgroups past the bound: a fold keeps them all, and the next waits for a quarter more
/// of what it kept, pressure rows included (with the bound taken from the histograms alone,
/// 64 cgroups stalling in 3 kinds rescanned the hierarchy at every stall).
#[test]
fn live_cgroups_past_the_bound_are_not_rescanned_at_every_stall() {
    let root = tempfile::tempdir().unwrap();
    let ids: Vec<u64> = (0..64)
        .map(|i| {
            let dir = root.path().join(format!("cg{i}"));
            std::fs::create_dir(&dir).unwrap();
            std::fs::metadata(&dir).unwrap().ino()
        })
        .collect();
    let mut pipeline = Pipeline::new(
        DecodeContext::new(),
        Enricher::new(CgroupResolver::new(root.path()), CgroupVersion::V2),
        CgroupFilter::default(),
        Vec::new(),
        u64::MAX,
    );
    let kinds = [
        StallKind::MemcgReclaim,
        StallKind::DirectReclaim,
        StallKind::Compaction,
    ];
    let feed = |pipeline: &mut Pipeline, round: u64| {
        for (i, &memcg_id) in ids.iter().enumerate() {
            for (k, kind) in kinds.into_iter().enumerate() {
                let start_ns = (round * 1000 + (i * 3 + k) as u64) * 10_000;
                let stall = StallEvent {
                    header: EventHeader {
                        kind: EventKind::Stall as u32,
                        cpu: 0,
                        boot_ns: start_ns + 5_000,
                    },
                    task: TaskInfo {
                        pid: 100 + i as u32,
                        tgid: 100 + i as u32,
                        memcg_id,
                        comm: *b"worker\0\0\0\0\0\0\0\0\0\0",
                    },
                    stall_kind: kind as u32,
                    latency_ns: 5_000,
                    start_ns,
                    end_ns: start_ns + 5_000,
                    ..Default::default()
                };
                pipeline.record(bytemuck::bytes_of(&stall)).unwrap();
            }
        }
    };
    feed(&mut pipeline, 0);
    let held = pipeline.held();
    assert_eq!(
        held,
        64 * 3 + 64,
        "a histogram per cgroup and kind, a pressure row each"
    );
    assert!(
        held <= pipeline.fold_at,
        "{held} held, next fold at {}",
        pipeline.fold_at
    );
    let bound = pipeline.fold_at;
    feed(&mut pipeline, 1);
    assert_eq!((pipeline.held(), pipeline.fold_at), (held, bound));
}
