//! Page faults per cgroup reconcile with the kernel's memory.stat, from both sources.
use std::{process::Stdio, time::Duration};

use memstall_tests::{MIB, MemCgroup, Memstall, memhog, read_json_lines};

fn faults_of(cgroup: &MemCgroup) -> u64 {
    cgroup.keyed("memory.stat").unwrap()["pgfault"]
}

fn reconcile(source: &str) {
    let cgroup = MemCgroup::create(&format!("faults-{source}"), 256 * MIB).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("events.jsonl");
    let cg = cgroup.path.to_str().unwrap();
    let memstall = Memstall::start(&[
        "--json",
        json.to_str().unwrap(),
        "--faults",
        source,
        "--interval",
        "0.5",
        "--cgroup",
        cg,
    ])
    .unwrap();
    let before = faults_of(&cgroup);
    let status = memhog()
        .args([
            "--cgroup",
            cg,
            "--anon-mib",
            "64",
            "--step-mib",
            "8",
            "--step-ms",
            "150",
        ])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    std::thread::sleep(Duration::from_millis(700));
    let after = faults_of(&cgroup);
    let (status, stderr) = memstall.stop(libc::SIGINT).unwrap();
    assert!(status.success(), "{stderr:?}");

    let events = read_json_lines(&json).unwrap();
    let rows = |scope: &str| -> Vec<&serde_json::Value> {
        events
            .iter()
            .filter(|e| {
                e["type"] == "faults"
                    && e["scope"] == scope
                    && e["cgroup"] == cgroup.relative.as_str()
            })
            .collect()
    };
    let sum = |rows: &[&serde_json::Value]| -> u64 {
        rows.iter()
            .map(|r| r["minor"].as_u64().unwrap() + r["major"].as_u64().unwrap())
            .sum()
    };
    let intervals = rows("interval");
    assert!(
        intervals.len() >= 2,
        "faults spread over intervals: {intervals:?}"
    );
    let total = rows("total");
    assert_eq!(total.len(), 1);
    eprintln!(
        "{source}: memory.stat pgfault +{}, memstall total {}, intervals {}",
        after - before,
        sum(&total),
        sum(&intervals)
    );
    assert!(
        sum(&total) >= 64 * MIB / 4096,
        "at least one fault per touched page"
    );
    assert_eq!(sum(&total), after - before, "total vs memory.stat pgfault");
    assert!(sum(&intervals) <= sum(&total));
    assert!(
        intervals
            .iter()
            .any(|r| r["minor_per_s"].as_f64().unwrap() > 1000.0),
        "a fault-rate spike shows: {intervals:?}"
    );
}

#[test]
fn faults_from_memory_stat_reconcile() {
    reconcile("memory-stat");
}

#[test]
fn faults_from_the_kernel_counter_reconcile() {
    reconcile("ebpf");
}
