//! Page faults per cgroup against the kernel's own counts: the workload's getrusage (minor and
//! major, over exactly its time in the cgroup) and memory.stat, from each source memstall
//! has; `--faults off`; and the `auto` switch to the kernel counter past 2000 cgroups.
use std::{
    io::{BufRead as _, BufReader},
    process::Stdio,
};

use memstall_tests::{
    MIB, MemCgroup, Memstall, hook_attached, hook_status, kernel_has_tracepoint, memhog,
    read_json_lines, skip,
};
use serde_json::Value;

const ANON_MIB: u64 = 64;
/// Read through a mapping after its page cache is dropped: one major fault per page.
const MAPPED_MIB: u64 = 8;
const PAGE: u64 = 4096;

fn faults_of(cgroup: &MemCgroup) -> (u64, u64) {
    let stat = cgroup.keyed("memory.stat").unwrap();
    (stat["pgfault"], stat["pgmajfault"])
}

/// (minor, major) from memhog's `memhog: faults minor=N major=M`.
struct Workload {
    minor: u64,
    major: u64,
}

/// Anonymous memory in steps (the faults spread over intervals), then a mapped file read
/// with its page cache dropped; the workload's own getrusage counts.
fn fault_workload(cgroup: &MemCgroup, dir: &std::path::Path) -> Workload {
    let map = format!("{}:{MAPPED_MIB}", dir.join("mapped.img").display());
    let mut hog = memhog()
        .args([
            "--cgroup",
            cgroup.path.to_str().unwrap(),
            "--anon-mib",
            &ANON_MIB.to_string(),
            "--step-mib",
            "8",
            "--step-ms",
            "150",
            "--map-file",
            &map,
            "--report-faults",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let lines: Vec<String> = BufReader::new(hog.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
        .collect();
    assert!(hog.wait().unwrap().success(), "{lines:?}");
    let report = lines
        .iter()
        .find_map(|l| l.strip_prefix("memhog: faults "))
        .unwrap_or_else(|| panic!("no fault report: {lines:?}"));
    let count = |key: &str| -> u64 {
        report
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
            .unwrap()
    };
    Workload {
        minor: count("minor"),
        major: count("major"),
    }
}

fn rows<'a>(events: &'a [Value], cgroup: &MemCgroup, scope: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| {
            e["type"] == "faults" && e["scope"] == scope && e["cgroup"] == cgroup.relative.as_str()
        })
        .collect()
}

fn sum(rows: &[&Value], key: &str) -> u64 {
    rows.iter().map(|r| r[key].as_u64().unwrap()).sum()
}

fn reconcile(source: &str, ready: &str) {
    let cgroup = MemCgroup::create(&format!("faults-{source}"), 256 * MIB).unwrap();
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let json = dir.path().join("events.jsonl");
    let memstall = Memstall::start(&[
        "--json",
        json.to_str().unwrap(),
        "--faults",
        source,
        "--memcg-events",
        "--interval",
        "0.5",
        "--cgroup",
        cgroup.path.to_str().unwrap(),
    ])
    .unwrap();
    let ready_line = memstall.ready_line().to_owned();
    let before = faults_of(&cgroup);
    let workload = fault_workload(&cgroup, dir.path());
    let after = faults_of(&cgroup);
    let (status, stderr) = memstall.stop(libc::SIGINT).unwrap();
    assert!(status.success(), "{stderr:?}");
    let events = read_json_lines(&json).unwrap();

    if source == "ebpf" && !hook_attached(&events, "memcg_pages") {
        // Kernels before 6.13 have no memcg/count_memcg_events: memstall falls back to
        // memory.stat and says so; comparing that with memory.stat would test nothing. A
        // kernel that has the tracepoint must get the hook.
        assert!(
            !kernel_has_tracepoint("count_memcg_events"),
            "the kernel has count_memcg_events: {}",
            hook_status(&events, "memcg_pages")
        );
        assert!(ready_line.contains("faults: memory.stat"), "{ready_line}");
        assert!(
            stderr.iter().any(|l| l.contains("--faults ebpf needs")),
            "{stderr:?}"
        );
        skip(&format!(
            "the kernel counter is missing here ({})",
            hook_status(&events, "memcg_pages")
        ));
        return;
    }
    assert!(
        ready_line.contains(&format!("faults: {ready}")),
        "{ready_line}"
    );
    let intervals = rows(&events, &cgroup, "interval");
    let total = rows(&events, &cgroup, "total");
    assert_eq!(total.len(), 1, "{total:?}");
    assert!(
        intervals.len() >= 2,
        "faults spread over intervals: {intervals:?}"
    );
    let (minor, major) = (sum(&total, "minor"), sum(&total, "major"));
    eprintln!(
        "{source}: memstall minor {minor} major {major}; getrusage minor {} major {}; memory.stat pgfault +{} pgmajfault +{}",
        workload.minor,
        workload.major,
        after.0 - before.0,
        after.1 - before.1
    );
    // The workload's own counters: one fault per anonymous page at least, one major fault
    // per mapped page; memstall's counts are the cgroup's, which holds only the workload.
    assert!(
        workload.minor >= ANON_MIB * MIB / PAGE && workload.major >= MAPPED_MIB * MIB / PAGE,
        "the workload did not fault as designed"
    );
    // Its last faults (printing the report, exiting) come after its last getrusage, and under
    // its limit the text they run may have been reclaimed: a major fault or two (seen: 2050 vs
    // 2049, with memory.stat at 2050). Exactness is checked against memory.stat below. And
    // before 6.x moved the memcg count to where the task's is, a major fault retried after its
    // I/O counted twice in memory.stat (6.1).
    assert!(
        (workload.major..=workload.major + 8).contains(&major),
        "major faults {major} vs getrusage {}",
        workload.major
    );
    let extra = (minor + major).checked_sub(workload.minor + workload.major);
    assert!(
        extra.is_some_and(|extra| extra <= workload.major + 8),
        "faults {} vs getrusage {}",
        minor + major,
        workload.minor + workload.major
    );
    assert_eq!(
        minor + major,
        after.0 - before.0,
        "total vs memory.stat pgfault"
    );
    assert_eq!(major, after.1 - before.1, "major vs memory.stat pgmajfault");
    // The total also holds the tail after the last interval. A memory.stat read may lag the
    // kernel's per-CPU counts by a flush batch (64 updates a CPU, rstat): an interval that
    // read its major faults fresher than its faults takes no negative minor count.
    let lag = 64 * std::thread::available_parallelism().map_or(2, |n| n.get() as u64);
    assert!(
        sum(&intervals, "minor") <= minor + lag && sum(&intervals, "major") <= major + lag,
        "intervals {} minor {} major vs total {minor} {major}",
        sum(&intervals, "minor"),
        sum(&intervals, "major")
    );
    assert!(
        intervals
            .iter()
            .any(|r| r["minor_per_s"].as_f64().unwrap() > 1000.0)
            && intervals
                .iter()
                .any(|r| r["major_per_s"].as_f64().unwrap() > 0.0),
        "a fault-rate spike shows: {intervals:?}"
    );
}

#[test]
fn faults_from_memory_stat_reconcile() {
    reconcile("memory-stat", "memory.stat");
}

#[test]
fn faults_from_the_kernel_counter_reconcile() {
    reconcile("ebpf", "kernel counter");
}

/// `--faults off`: no fault rows, while the cgroup faulted.
#[test]
fn faults_off_reports_none() {
    let cgroup = MemCgroup::create("faults-off", 256 * MIB).unwrap();
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let json = dir.path().join("events.jsonl");
    let memstall = Memstall::start(&[
        "--json",
        json.to_str().unwrap(),
        "--faults",
        "off",
        "--interval",
        "0.5",
        "--cgroup",
        cgroup.path.to_str().unwrap(),
    ])
    .unwrap();
    assert!(
        memstall.ready_line().contains("faults: off"),
        "{}",
        memstall.ready_line()
    );
    let before = faults_of(&cgroup);
    let workload = fault_workload(&cgroup, dir.path());
    assert!(faults_of(&cgroup).0 - before.0 >= workload.minor);
    let (status, stderr) = memstall.stop(libc::SIGINT).unwrap();
    assert!(status.success(), "{stderr:?}");
    let events = read_json_lines(&json).unwrap();
    let faults: Vec<_> = events.iter().filter(|e| e["type"] == "faults").collect();
    assert!(faults.is_empty(), "{faults:?}");
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "summary" || e["type"] == "run_end"),
        "the run itself reported"
    );
}

/// `auto`: memory.stat while walking cgroupfs is cheap (with --cgroup, or few cgroups), the
/// kernel counter past 2000 memory cgroups without --cgroup; its counts still reconcile.
#[test]
fn auto_switches_to_the_kernel_counter_past_2000_cgroups() {
    let busy = MemCgroup::create("faults-auto", 256 * MIB).unwrap();
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let watched =
        Memstall::start(&["--json", "-", "--cgroup", busy.path.to_str().unwrap()]).unwrap();
    assert!(
        watched.ready_line().contains("faults: memory.stat"),
        "{}",
        watched.ready_line()
    );
    drop(watched);

    let existing = memstall_tests::MemoryHierarchy::detect()
        .map(|h| walkdir_count(&h.root))
        .unwrap();
    let parent = MemCgroup::create("faults-many", 1 << 40).unwrap();
    let extra = 2001usize.saturating_sub(existing) + 1;
    let children: Vec<MemCgroup> = (0..extra)
        .map(|_| parent.child("c", 64 * MIB).unwrap())
        .collect();
    let json = dir.path().join("events.jsonl");
    let memstall = Memstall::start(&["--json", json.to_str().unwrap()]).unwrap();
    let ready = memstall.ready_line().to_owned();
    let before = faults_of(&busy);
    let workload = fault_workload(&busy, dir.path());
    let after = faults_of(&busy);
    let (status, stderr) = memstall.stop(libc::SIGINT).unwrap();
    assert!(status.success(), "{stderr:?}");
    drop(children);
    let events = read_json_lines(&json).unwrap();
    if !hook_attached(&events, "memcg_pages") {
        assert!(
            !kernel_has_tracepoint("count_memcg_events"),
            "the kernel has count_memcg_events: {}",
            hook_status(&events, "memcg_pages")
        );
        skip(&format!(
            "auto picks the kernel counter past 2000 cgroups, missing here ({})",
            hook_status(&events, "memcg_pages")
        ));
        return;
    }
    assert!(ready.contains("faults: kernel counter"), "{ready}");
    let total = rows(&events, &busy, "total");
    let counted = sum(&total, "minor") + sum(&total, "major");
    assert_eq!(counted, after.0 - before.0, "kernel counter vs memory.stat");
    assert!(counted >= workload.minor + workload.major);
}

/// Memory cgroups in the hierarchy, as memstall counts them (every directory).
fn walkdir_count(root: &std::path::Path) -> usize {
    let mut count = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        count += 1;
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(entry.path());
            }
        }
    }
    count
}
