//! OOM post-mortems: why reclaim could not help, and the exempt task the killer must spare
//! (the victim's points and scoreboard against /proc are in oom_scores.rs).
use std::time::Duration;

use memstall_tests::{
    MIB, MemCgroup, Memstall, assert_attached, hog_holding, read_json_lines, run_to_oom_kill, skip,
    wait_for,
};
use serde_json::Value;

fn the_kill(events: &[Value], victim: u32) -> &Value {
    events
        .iter()
        .find(|e| e["type"] == "oom_kill" && e["victim_pid"] == victim)
        .unwrap_or_else(|| panic!("no oom_kill for {victim}: {events:#?}"))
}

/// A cgroup filled with SysV shared memory, then an anonymous allocation: the OOM report must
/// say the shmem is the unreclaimable bulk.
#[test]
fn shmem_oom_names_shmem_as_the_culprit() {
    let cgroup = MemCgroup::create("shmem", 64 * MIB).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("events.jsonl");
    let cg = cgroup.path.to_str().unwrap();
    let memstall = Memstall::start(&["--json", json.to_str().unwrap(), "--cgroup", cg]).unwrap();
    let victim = run_to_oom_kill(&["--cgroup", cg, "--shm-mib", "48", "--anon-mib", "64"]);
    wait_for(
        "the kernel counts the OOM kill",
        Duration::from_secs(5),
        || cgroup.oom_kills().unwrap() >= 1,
    );
    let shmem_after = cgroup
        .keyed("memory.stat")
        .unwrap()
        .get(match cgroup.version {
            memstall_tests::CgroupVersion::V1 => "total_shmem",
            memstall_tests::CgroupVersion::V2 => "shmem",
        })
        .copied()
        .unwrap_or(0);
    let (status, stderr) = memstall.stop(libc::SIGINT).unwrap();
    assert!(status.success(), "{stderr:?}");

    let events = read_json_lines(&json).unwrap();
    assert_attached(&events, &["oom_kill"]);
    let kill = the_kill(&events, victim);
    let shmem_kb = kill["breakdown"]["shmem"].as_u64().unwrap();
    // The victim's 48 MiB segment was removed with it (IPC_RMID at attach): shmem fell by
    // that much; what is left is the rest of the cgroup's shmem.
    assert!(
        shmem_kb >= 48 * 1024 && shmem_kb <= 48 * 1024 + shmem_after / 1024 + 1024,
        "shmem in the breakdown {shmem_kb} kB; {} kB after the kill",
        shmem_after / 1024
    );
    assert!(
        kill["unreclaimable_kb"].as_u64().unwrap() >= shmem_kb,
        "{kill}"
    );
    let culprit = kill["culprit"].as_str().unwrap();
    assert!(culprit.contains("shmem"), "culprit: {culprit}");
    assert!(
        kill["shmem_rss_kb"].as_u64().unwrap() >= 40 * 1024,
        "victim's shmem RSS: {kill}"
    );
}

/// Whether this process may lower oom_score_adj (CAP_SYS_RESOURCE): root in the VMs has it,
/// the development host's root does not.
fn can_exempt() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let caps = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or(0);
    caps & (1 << 24) != 0
}

/// A task at oom_score_adj -1000 is never the victim, however large: the scoreboard marks it
/// exempt and the smaller task dies.
#[test]
fn exempt_task_is_marked_and_spared() {
    if !can_exempt() {
        skip("lowering oom_score_adj needs CAP_SYS_RESOURCE (runs in `cargo xtask vmtest`)");
        return;
    }
    let cgroup = MemCgroup::create("exempt", 64 * MIB).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("events.jsonl");
    let cg = cgroup.path.to_str().unwrap();
    let memstall = Memstall::start(&["--json", json.to_str().unwrap(), "--cgroup", cg]).unwrap();
    let mut exempt = hog_holding(&[
        "--cgroup",
        cg,
        "--anon-mib",
        "40",
        "--oom-score-adj",
        "-1000",
        "--hold-secs",
        "120",
    ]);
    let victim = run_to_oom_kill(&["--cgroup", cg, "--anon-mib", "60"]);
    wait_for(
        "the kernel counts the OOM kill",
        Duration::from_secs(10),
        || cgroup.oom_kills().unwrap() >= 1,
    );
    assert!(
        exempt.try_wait().unwrap().is_none(),
        "the exempt task survives"
    );
    let (status, stderr) = memstall.stop(libc::SIGINT).unwrap();
    assert!(status.success(), "{stderr:?}");
    let _ = exempt.kill();
    let _ = exempt.wait();

    let events = read_json_lines(&json).unwrap();
    let kill = the_kill(&events, victim);
    let board = kill["scoreboard"].as_array().unwrap();
    let spared = board
        .iter()
        .find(|c| c["pid"] == exempt.id())
        .expect("exempt task on the scoreboard");
    assert_eq!(spared["exempt"], true, "{spared}");
    assert!(spared["points"].is_null(), "{spared}");
    assert_eq!(spared["oom_score_adj"], -1000);
    assert!(
        spared["rss_kb"].as_u64()
            > board.iter().find(|c| c["victim"] == true).unwrap()["rss_kb"].as_u64()
    );
}
