//! Entry points for the fuzz targets (fuzz/, `cargo xtask test` runs each for a bounded time):
//! every parser of input memstall does not control — ring-buffer records, the kernel log,
//! memory.stat, /proc, mountinfo, tracefs formats, `--cgroup` specs, Kubernetes paths and a
//! `--btf` file — fed arbitrary bytes. Any panic or hang is a bug. Built only with the `fuzz`
//! feature.
use std::{path::PathBuf, sync::OnceLock};

use crate::{
    cgroup::{self, CgroupFilter, CgroupResolver, CgroupVersion, MemoryHierarchy, Resolver},
    decode::{self, DecodeContext},
    enrich::{Enricher, k8s, kmsg, oom_score, postmortem, snapshot},
    kernel::{btf::KernelBtf, preflight, tracefs},
    pipeline::Pipeline,
};

fn text(data: &[u8]) -> String {
    String::from_utf8_lossy(data).into_owned()
}

/// A throwaway cgroup-like tree for the resolvers (made once per process).
fn tree() -> &'static PathBuf {
    static TREE: OnceLock<PathBuf> = OnceLock::new();
    TREE.get_or_init(|| {
        let root = std::env::temp_dir().join(format!("memstall-fuzz-{}", std::process::id()));
        for dir in [
            "kubepods/burstable/pod1234/cri-containerd-0a1b2c3d4e5f",
            "system.slice/nginx.service",
            "user.slice",
        ] {
            let _ = std::fs::create_dir_all(root.join(dir));
        }
        root
    })
}

/// Ring-buffer records through the whole pipeline: decode, enrich, aggregate (no sinks).
pub fn ring_record(data: &[u8]) {
    thread_local! {
        static PIPELINE: std::cell::RefCell<Pipeline> = std::cell::RefCell::new(Pipeline::new(
            DecodeContext::new(),
            Enricher::new(CgroupResolver::new(tree()), CgroupVersion::V2),
            CgroupFilter::default(),
            Vec::new(),
            0,
        ));
    }
    PIPELINE.with(|pipeline| {
        let mut pipeline = pipeline.borrow_mut();
        let _ = pipeline.record(data);
        // Held kills, their aftermath and the OOM risk sampler run on time, not on records.
        let _ = pipeline.tick();
    });
}

/// /dev/kmsg records, and the OOM reports they make.
pub fn kmsg(data: &[u8]) {
    let records: Vec<kmsg::KmsgRecord> = data
        .split(|&b| b == 0)
        .filter_map(kmsg::parse_record)
        .collect();
    let mut parser = kmsg::OomReportParser::new();
    for record in &records {
        let _ = parser.push(record);
    }
    let _ = parser.finish();
    for report in kmsg::parse_reports(&records) {
        let _ = oom_score::scoreboard(&report.tasks, 16_384, 4096, report.victim_pid.unwrap_or(0));
    }
}

/// memory.stat text: the counters of both versions, and the OOM breakdown.
pub fn memory_stat(data: &[u8]) {
    let text = text(data);
    for version in [CgroupVersion::V1, CgroupVersion::V2] {
        for hierarchical in [false, true] {
            let _ = crate::aggregate::memory_stat::parse_counters(&text, hierarchical, version);
        }
    }
    let breakdown =
        oom_score::breakdown_from_memory_stat(&postmortem::hierarchical(&postmortem::keyed(&text)));
    let _ = oom_score::diagnose(&breakdown, 65_536, false);
}

/// /proc files: PID/cgroup, PID/stat, PID/maps, PID/status, self/status capabilities, and
/// mountinfo.
pub fn proc_files(data: &[u8]) {
    let text = text(data);
    for version in [CgroupVersion::V1, CgroupVersion::V2] {
        let _ = cgroup::memcg_from_proc_cgroup(&text, version);
    }
    let _ = cgroup::task_is_exiting(&text);
    let maps = decode::parse_maps(&text);
    let _ = decode::user_frame(&maps, 0x5555_5555_0000);
    let _ = snapshot::task_from_status(1, &text, 0, 4096);
    let _ = preflight::effective_caps(&text);
    let _ = MemoryHierarchy::from_mountinfo(&text, |_| true);
    let _ = cgroup::cgroup_mounts(&text);
}

/// A tracefs `format` file.
pub fn tracefs_format(data: &[u8]) {
    let fields = tracefs::parse_format(&text(data));
    let _ = tracefs::mark_victim_format(&fields);
}

/// `--cgroup` specs against a small tree, and Kubernetes cgroup paths.
pub fn cgroup_spec(data: &[u8]) {
    let spec = text(data);
    let hierarchy = MemoryHierarchy {
        root: tree().clone(),
        version: CgroupVersion::V2,
    };
    let resolver = Resolver {
        hierarchy: &hierarchy,
        other_mounts: Vec::new(),
    };
    let _ = resolver.resolve(&spec);
    let _ = k8s::parse(&spec);
}

/// A `--btf FILE`: both parsers memstall uses, and every question it asks.
pub fn btf(data: &[u8]) {
    if let Ok(btf) = KernelBtf::from_bytes(data) {
        let _ = btf.layout(4096);
        let _ = btf.memcg_items();
        let _ = btf.oom_control_layout();
        let _ = btf.tracepoint_first_arg_is_task("mark_victim");
        let _ = btf.tracepoint_parameter_count("balance_dirty_pages");
        let _ = btf.parameter_count("try_to_compact_pages");
        let _ = btf.enumerator_value("COMPACT_SKIPPED");
        let _ = btf.has_function("swap_read_folio");
    }
    let _ = aya::Btf::parse(data, aya::Endianness::default());
}
