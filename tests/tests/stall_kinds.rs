//! The stall kinds only special set-ups produce, each provoked for real and held against a
//! kernel figure: node reclaim (vm.zone_reclaim_mode) against /proc/vmstat's
//! zone_reclaim_success + zone_reclaim_failed, soft-limit reclaim (v1) against the cgroup's
//! page cache, reclaim throttling against the writer's own delay accounting.
use std::{
    fs,
    io::Read as _,
    path::Path,
    process::Stdio,
    time::{Duration, Instant},
};

use memstall_tests::{
    CgroupVersion, MIB, MemCgroup, Memstall, assert_attached, hog_holding, memhog, meminfo_kb,
    read_json_lines, skip,
    taskstats::{DelayacctGuard, taskstats},
    vmstat_sum, wait_for,
};
use serde_json::Value;

const ZONE_RECLAIM_MODE: &str = "/proc/sys/vm/zone_reclaim_mode";

/// Sets a sysctl for the guard's life and restores the old value, also on panic.
struct Sysctl {
    path: &'static str,
    old: String,
}

impl Sysctl {
    fn set(path: &'static str, value: &str) -> Self {
        let old = fs::read_to_string(path).unwrap().trim().to_owned();
        fs::write(path, value).unwrap_or_else(|e| panic!("writing {value} to {path}: {e}"));
        Self { path, old }
    }
}

impl Drop for Sysctl {
    fn drop(&mut self) {
        if let Err(e) = fs::write(self.path, &self.old) {
            eprintln!(
                "warning: could not restore {} to {}: {e}",
                self.path, self.old
            );
        }
    }
}

fn total_count(events: &[Value], kind: &str) -> u64 {
    events
        .iter()
        .filter(|e| e["type"] == "summary" && e["scope"] == "total" && e["kind"] == kind)
        .map(|e| e["count"].as_u64().unwrap())
        .sum()
}

/// A sparse file of `bytes` whose holes read as page cache at memory speed, no disk I/O.
fn holes(dir: &Path, name: &str, bytes: u64) -> std::path::PathBuf {
    let path = dir.join(name);
    fs::File::create(&path).unwrap().set_len(bytes).unwrap();
    path
}

fn read_all(path: &Path) {
    let mut file = fs::File::open(path).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    while file.read(&mut buf).unwrap() > 0 {}
}

/// With vm.zone_reclaim_mode=1 an allocation that finds its node under the low watermark
/// reclaims that node's page cache itself. The kernel counts each __node_reclaim() in
/// zone_reclaim_success or zone_reclaim_failed: memstall's node_reclaim stalls, machine-wide,
/// must be as many. Footprint: MemFree + 512 MiB of clean page cache read by one task, the
/// sysctl restored right after.
#[test]
fn node_reclaim_matches_zone_reclaim_counters() {
    if !Path::new(ZONE_RECLAIM_MODE).exists() {
        skip("no vm.zone_reclaim_mode: a kernel without NUMA has no node reclaim");
        return;
    }
    let vmstat = fs::read_to_string("/proc/vmstat").unwrap();
    if !vmstat.contains("zone_reclaim_success ") {
        skip("no zone_reclaim_success in /proc/vmstat to count node reclaims against");
        return;
    }
    let _delayacct = DelayacctGuard::enable().unwrap();
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let fill_mib = meminfo_kb("MemFree") / 1024 + 512;
    let file = holes(dir.path(), "holes.img", fill_mib * MIB);
    let json = dir.path().join("events.jsonl");
    let memstall =
        Memstall::start(&["--json", json.to_str().unwrap(), "--threshold", "1000"]).unwrap();
    let counted = || vmstat_sum("zone_reclaim_success") + vmstat_sum("zone_reclaim_failed");
    let before = counted();
    let spec = format!("{}:{fill_mib}", file.display());
    let (mut reader, kernel) = {
        let _mode = Sysctl::set(ZONE_RECLAIM_MODE, "1");
        let mut reader = hog_holding(&["--page-cache", &spec, "--hold-secs", "30"]);
        let kernel = taskstats(reader.id());
        if kernel.is_err() {
            let _ = reader.kill();
        }
        (reader, kernel.unwrap())
    };
    // Node reclaim is counted when it returns, after its end tracepoint: once the counter is
    // still, every reclaim counted has ended.
    let mut after = counted();
    wait_for(
        "the node reclaim counters settle",
        Duration::from_secs(10),
        || {
            std::thread::sleep(Duration::from_millis(200));
            let now = counted();
            let still = now == after;
            after = now;
            still
        },
    );
    let (status, stderr) = memstall.stop(libc::SIGINT).unwrap();
    let _ = reader.kill();
    let _ = reader.wait();
    assert!(status.success(), "{stderr:?}");
    let events = read_json_lines(&json).unwrap();
    assert_attached(&events, &["node_reclaim"]);
    let stalls = total_count(&events, "node_reclaim");
    eprintln!(
        "node reclaim: memstall {stalls}, zone_reclaim_success + zone_reclaim_failed +{}; the reader's freepages {} (read {fill_mib} MiB)",
        after - before,
        kernel.freepages.count
    );
    if after == before {
        skip(&format!(
            "the kernel did no node reclaim while {fill_mib} MiB were read (memstall saw {stalls})"
        ));
        return;
    }
    assert_eq!(
        stalls,
        after - before,
        "node_reclaim stalls vs zone_reclaim_*"
    );
    assert!(
        kernel.freepages.count > 0,
        "the reader itself reclaimed its node"
    );
}

/// cgroup v1 soft limits: under global pressure, kswapd and direct reclaimers first take
/// pages from cgroups over their soft limit. A cgroup holding 512 MiB of page cache over a
/// 16 MiB soft limit must be where softlimit_reclaim stalls take their pages from, no more
/// than it lost. Footprint per round (3 at most, until soft-limit reclaim shows): MemFree +
/// 1 GiB of clean page cache, then anonymous memory of MemAvailable / 8, doubling, between
/// 1 GiB and MemTotal / 5 (at oom_score_adj 1000), in order-0 pages: soft-limit reclaim skips
/// higher orders.
#[test]
fn softlimit_reclaim_takes_from_the_cgroup_over_its_soft_limit() {
    let cgroup = MemCgroup::create("softlimit", 1024 * MIB).unwrap();
    if cgroup.version != CgroupVersion::V1 {
        skip("soft limits are cgroup v1 (memory.soft_limit_in_bytes); this kernel runs v2");
        return;
    }
    cgroup
        .write("memory.soft_limit_in_bytes", &(16 * MIB).to_string())
        .unwrap();
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    // Written, then read back (memhog fills a file it does not find): on 6.18 a cache of
    // read holes drew no soft-limit reclaim at all, written pages do.
    let spec = format!("{}:512", dir.path().join("cache.img").display());
    let status = memhog()
        .args([
            "--cgroup",
            cgroup.path.to_str().unwrap(),
            "--page-cache",
            &spec,
        ])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let cache_before = cgroup.keyed("memory.stat").unwrap()["total_cache"];
    assert!(cache_before >= 500 * MIB, "{cache_before}");
    let json = dir.path().join("events.jsonl");
    let memstall =
        Memstall::start(&["--json", json.to_str().unwrap(), "--threshold", "0"]).unwrap();
    let softlimit_so_far = || {
        fs::read_to_string(&json)
            .unwrap_or_default()
            .matches("\"type\":\"softlimit_reclaim\"")
            .count()
    };
    let available = meminfo_kb("MemAvailable") / 1024;
    let mut rounds = Vec::new();
    for round in 0..3 {
        let fill = holes(
            dir.path(),
            "fill.img",
            (meminfo_kb("MemFree") / 1024 + 1024) * MIB,
        );
        read_all(&fill);
        let anon_mib = ((available / 8) << round).clamp(1024, meminfo_kb("MemTotal") / 1024 / 5);
        let status = memhog()
            .args([
                "--anon-mib",
                &anon_mib.to_string(),
                "--oom-score-adj",
                "1000",
            ])
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
        rounds.push(anon_mib);
        if memstall_tests::wait_until(Duration::from_secs(1), || softlimit_so_far() > 0) {
            break;
        }
    }
    let cache_after = cgroup.keyed("memory.stat").unwrap()["total_cache"];
    let (status, stderr) = memstall.stop(libc::SIGINT).unwrap();
    assert!(status.success(), "{stderr:?}");
    let events = read_json_lines(&json).unwrap();
    assert_attached(&events, &["softlimit_reclaim"]);
    let stalls: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "softlimit_reclaim")
        .collect();
    let pages: u64 = stalls.iter().map(|s| s["pages"].as_u64().unwrap()).sum();
    let dropped = cache_before.saturating_sub(cache_after) / 4096;
    eprintln!(
        "soft limit: {} softlimit_reclaim stalls reclaimed {pages} pages; the cgroup's cache fell by {dropped} pages to {} MiB",
        stalls.len(),
        cache_after / MIB
    );
    // The kernel's own stacks say where soft-limit reclaim ran, whatever memstall calls it.
    let through_soft_limit: Vec<&Value> = events
        .iter()
        .filter(|e| {
            e["kernel_stack"].as_array().is_some_and(|frames| {
                frames.iter().any(|f| {
                    f.as_str()
                        .unwrap()
                        .starts_with("memcg1_soft_limit_reclaim+")
                })
            })
        })
        .collect();
    assert!(
        through_soft_limit
            .iter()
            .all(|e| e["type"] == "softlimit_reclaim"),
        "soft-limit reclaim reported as another kind: {:#}",
        through_soft_limit
            .iter()
            .find(|e| e["type"] != "softlimit_reclaim")
            .unwrap()
    );
    if stalls.is_empty() {
        skip(&format!(
            "no soft-limit reclaim: global reclaim never ran at order 0 in rounds of {rounds:?} MiB (cache fell by {dropped} pages)"
        ));
        return;
    }
    // Soft-limit reclaim takes only from cgroups over their soft limit: this one.
    assert!(
        pages > 0 && pages <= dropped + 64,
        "{pages} pages vs {dropped}"
    );
    for stall in &stalls {
        assert!(
            stall["kernel_stack"]
                .as_array()
                .is_none_or(|f| f.iter().any(|f| f.as_str().unwrap().contains("soft_limit"))),
            "{stall}"
        );
    }
}

/// Dirty page cache written through a small cgroup: reclaim finds pages under writeback and
/// puts the writer to sleep (mm_vmscan_throttled). Each throttle sleeps inside one of the
/// writer's reclaim calls, so their time is within its freepages delay (taskstats).
#[test]
fn throttled_writers_sleep_inside_their_reclaim() {
    let _delayacct = DelayacctGuard::enable().unwrap();
    let cgroup = MemCgroup::create("throttle", 64 * MIB).unwrap();
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let json = dir.path().join("events.jsonl");
    let cg = cgroup.path.to_str().unwrap();
    let memstall = Memstall::start(&[
        "--json",
        json.to_str().unwrap(),
        "--threshold",
        "0",
        "--cgroup",
        cg,
    ])
    .unwrap();
    let throttles_so_far = || {
        fs::read_to_string(&json)
            .unwrap_or_default()
            .matches("\"type\":\"throttled\"")
            .count()
    };
    // Up to three writers, each 300 MiB through 64 MiB, until one was throttled.
    let mut writers = Vec::new();
    let started = Instant::now();
    for round in 0..3 {
        let file = dir.path().join(format!("dirty-{round}.img"));
        let spec = format!("{}:300", file.display());
        let writer = hog_holding(&["--cgroup", cg, "--write-file", &spec, "--hold-secs", "60"]);
        let kernel = taskstats(writer.id()).unwrap();
        writers.push((writer, kernel));
        if memstall_tests::wait_until(Duration::from_secs(2), || throttles_so_far() > 0) {
            break;
        }
    }
    let wall_ns = started.elapsed().as_nanos() as u64;
    let (status, stderr) = memstall.stop(libc::SIGINT).unwrap();
    for (writer, _) in &mut writers {
        let _ = writer.kill();
        let _ = writer.wait();
    }
    assert!(status.success(), "{stderr:?}");
    let events = read_json_lines(&json).unwrap();
    assert_attached(&events, &["throttled", "memcg_reclaim"]);
    let throttled: Vec<&Value> = events.iter().filter(|e| e["type"] == "throttled").collect();
    if throttled.is_empty() {
        skip(&format!(
            "no reclaim throttling in {} writers of 300 MiB through 64 MiB ({} memcg reclaims)",
            writers.len(),
            total_count(&events, "memcg_reclaim")
        ));
        return;
    }
    for (writer, kernel) in &writers {
        let pid = writer.id();
        let mine: Vec<&&Value> = throttled.iter().filter(|s| s["pid"] == pid).collect();
        let slept: u64 = mine.iter().map(|s| s["latency_ns"].as_u64().unwrap()).sum();
        eprintln!(
            "throttled: writer {pid} {} throttles ({:?}), {slept} ns; its freepages delay {} ns in {} reclaims",
            mine.len(),
            mine.iter()
                .map(|s| s["reason"].as_str().unwrap())
                .collect::<Vec<_>>(),
            kernel.freepages.total_ns,
            kernel.freepages.count
        );
        assert!(
            slept <= kernel.freepages.total_ns,
            "throttles of {pid} ({slept} ns) outside its reclaim ({} ns)",
            kernel.freepages.total_ns
        );
        for stall in &mine {
            assert_eq!(stall["cgroup"], cgroup.relative.as_str(), "{stall}");
            // Timed from the task's last sleep inside its reclaim; a throttle never sleeps past
            // its timeout (at most HZ/10 for writeback, 1 s for the rest).
            let latency = stall["latency_ns"].as_u64().unwrap();
            assert!(latency > 0 && latency <= 1_100_000_000, "{stall}");
        }
    }
    let all: u64 = throttled
        .iter()
        .map(|s| s["latency_ns"].as_u64().unwrap())
        .sum();
    assert!(
        all < wall_ns,
        "throttled {all} ns in {wall_ns} ns of writing"
    );
    assert!(
        throttled
            .iter()
            .all(|s| writers.iter().any(|(w, _)| s["pid"] == w.id())),
        "only the writers were throttled in this cgroup"
    );
}
