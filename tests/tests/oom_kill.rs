//! OOM kills inside a small memory cgroup, traced end to end and checked against the kernel's
//! own counters and its kill report.
use std::time::Duration;

use memstall_tests::{
    MIB, MemCgroup, Memstall, assert_attached, kernel_kill_report, kernel_task_row,
    read_json_lines, run_to_oom_kill, wait_for,
};

#[test]
fn oom_kill_via_tp_btf_matches_the_kernel() {
    oom_kill_matches_the_kernel(&[], "tp_btf");
}

#[test]
fn oom_kill_via_classic_tracepoint_matches_the_kernel() {
    oom_kill_matches_the_kernel(&["--force-tracepoints"], "tracepoint");
}

fn oom_kill_matches_the_kernel(extra_args: &[&str], source: &str) {
    let cgroup = MemCgroup::create("oom", 32 * MIB).unwrap();
    let bystander = MemCgroup::create("bystander", 32 * MIB).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("events.jsonl");
    let other_json = dir.path().join("other.jsonl");
    let cgroup_arg = cgroup.path.to_str().unwrap();
    let mut args = vec!["--json", json.to_str().unwrap(), "--cgroup", cgroup_arg];
    args.extend_from_slice(extra_args);
    let memstall = Memstall::start(&args).unwrap();
    // A second tracer watching only an unrelated cgroup must see none of this kill.
    let filtered = Memstall::start(&[
        "--json",
        other_json.to_str().unwrap(),
        "--cgroup",
        bystander.path.to_str().unwrap(),
    ])
    .unwrap();

    let hog_pid = run_to_oom_kill(&["--cgroup", cgroup_arg, "--anon-mib", "128"]);
    wait_for(
        "the kernel counts the OOM kill",
        Duration::from_secs(5),
        || cgroup.oom_kills().unwrap() >= 1,
    );
    // No pause: the kill was queued before memhog died, and stopping drains the ring buffer.
    let (status, stderr) = memstall.stop(libc::SIGINT).unwrap();
    assert!(status.success(), "memstall exit {status}: {stderr:?}");
    let (status, _) = filtered.stop(libc::SIGTERM).unwrap();
    assert!(status.success());

    let kernel_kills = cgroup.oom_kills().unwrap();
    let events = read_json_lines(&json).unwrap();
    assert_attached(&events, &["oom_kill"]);
    let kills: Vec<_> = events.iter().filter(|e| e["type"] == "oom_kill").collect();
    assert_eq!(
        kills.len() as u64,
        kernel_kills,
        "memstall vs memory.oom_control/events: {events:#?}"
    );
    let kill = kills
        .iter()
        .find(|k| k["victim_pid"] == hog_pid)
        .expect("the memhog kill");
    assert_eq!(kill["source"], source);
    assert_eq!(kill["victim_comm"], "memhog");
    // The classic record has no memcg: memstall takes it from the kernel's report, never from
    // cgroup v1's /proc/PID/cgroup, which shows an exiting victim in "/".
    assert_eq!(kill["victim_cgroup"], cgroup.relative.as_str(), "{kill}");
    assert_eq!(
        kill["cgroup"],
        cgroup.relative.as_str(),
        "memhog triggered its own kill"
    );
    assert_eq!(kill["pid"], hog_pid);
    // memhog is one thread: its pid is its tgid, for the trigger and the victim alike.
    assert_eq!(
        (&kill["tgid"], &kill["victim_tgid"]),
        (&hog_pid.into(), &hog_pid.into())
    );
    assert_eq!(kill["oom_score_adj"], 0);
    // The memcg retried reclaim before giving up: those stalls, in its OOM domain, are on record.
    let before = &kill["reclaim_before"];
    assert!(before["stalls"].as_u64().unwrap() >= 1, "{before}");
    assert!(before["stall_ns"].as_u64().unwrap() > 0, "{before}");
    assert!(kill["time_ns"].as_u64().unwrap() > 1_600_000_000_000_000_000);
    let anon_kb = kill["anon_rss_kb"].as_u64().unwrap();
    // The per-CPU rss counters the kernel reports run a few pages ahead of the exact count.
    assert!(
        (16 * 1024..=40 * 1024).contains(&anon_kb),
        "anon_rss_kb {anon_kb} in a 32 MiB cgroup"
    );

    let report = kernel_kill_report(hog_pid)
        .unwrap()
        .expect("kernel logged the kill");
    assert_eq!(
        Some(&anon_kb),
        report.get("anon-rss"),
        "kernel report {report:?}"
    );
    assert_eq!(
        kill["file_rss_kb"].as_u64(),
        report.get("file-rss").copied()
    );
    assert_eq!(
        kill["shmem_rss_kb"].as_u64(),
        report.get("shmem-rss").copied()
    );
    assert_eq!(
        kill["pgtables_kb"].as_u64(),
        report.get("pgtables").copied()
    );
    assert_eq!(kill["victim_uid"].as_u64(), report.get("UID").copied());
    assert_eq!(
        kill["total_vm_kb"].as_u64(),
        report.get("total-vm").copied(),
        "kernel report {report:?}"
    );
    // Swap entries: read from the victim's mm by tp_btf, absent from the classic record.
    let row = kernel_task_row(hog_pid).expect("the victim in the kernel's task table");
    match source {
        "tp_btf" => assert_eq!(kill["swap_entries"].as_u64(), Some(row.swapents), "{kill}"),
        _ => assert!(kill["swap_entries"].is_null(), "{kill}"),
    }

    let end = events.last().unwrap();
    assert_eq!(end["type"], "run_end");
    assert_eq!(end["dropped"], 0);

    let other = read_json_lines(&other_json).unwrap();
    assert!(
        other.iter().all(|e| e["type"] != "oom_kill"),
        "filtered tracer saw {other:#?}"
    );
}
