//! OOM post-mortems: who was next and why the victim won, and why reclaim could not help.
use std::{process::Command, time::Duration};

use memstall_tests::{
    MIB, MemCgroup, Memstall, hog_holding, kernel_log, memstall_bin, read_json_lines,
    run_to_oom_kill, wait_until,
};
use serde_json::Value;

fn the_kill(events: &[Value], victim: u32) -> &Value {
    events
        .iter()
        .find(|e| e["type"] == "oom_kill" && e["victim_pid"] == victim)
        .unwrap_or_else(|| panic!("no oom_kill for {victim}: {events:#?}"))
}

/// The kernel's task-table row for `pid` in its OOM report: (rss, pgtables_bytes, swapents, adj).
fn kernel_task_row(pid: u32) -> (u64, u64, u64, i64) {
    let log = kernel_log().unwrap();
    let at = log
        .iter()
        .rposition(|l| l.trim_start().starts_with(&format!("[{pid:>7}]")))
        .unwrap_or_else(|| panic!("no task table row for {pid}"));
    let header = log[..at]
        .iter()
        .rposition(|l| l.contains("[  pid  ]"))
        .expect("task table header");
    let columns: Vec<&str> = log[header].split_whitespace().skip(3).collect();
    let row = &log[at];
    let values: Vec<&str> = row.split(']').nth(1).unwrap().split_whitespace().collect();
    let col = |name: &str| -> i64 {
        let i = columns.iter().position(|c| *c == name).unwrap();
        values[i].parse().unwrap()
    };
    (
        col("rss") as u64,
        col("pgtables_bytes") as u64,
        col("swapents") as u64,
        col("oom_score_adj"),
    )
}

/// Two tasks in one cgroup: the larger at oom_score_adj 0, the smaller at +500. The kernel
/// kills the smaller; memstall must say so and show why.
#[test]
fn scoreboard_explains_why_the_smaller_task_died() {
    let cgroup = MemCgroup::create("scoreboard", 64 * MIB).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("events.jsonl");
    let cg = cgroup.path.to_str().unwrap();
    let memstall = Memstall::start(&["--json", json.to_str().unwrap(), "--cgroup", cg]).unwrap();

    let mut big = hog_holding(&["--cgroup", cg, "--anon-mib", "36", "--hold-secs", "60"]);
    let small = run_to_oom_kill(&["--cgroup", cg, "--anon-mib", "60", "--oom-score-adj", "500"]);
    assert!(wait_until(Duration::from_secs(5), || cgroup
        .oom_kills()
        .unwrap()
        >= 1));
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        big.try_wait().unwrap().is_none(),
        "the larger task must survive"
    );
    let (status, stderr) = memstall.stop(libc::SIGINT).unwrap();
    assert!(status.success(), "{stderr:?}");
    let _ = big.kill();
    let _ = big.wait();

    let events = read_json_lines(&json).unwrap();
    let kill = the_kill(&events, small);
    assert_eq!(kill["constraint"], "memcg");
    assert_eq!(kill["oom_cgroup"], cgroup.relative.as_str());
    assert_eq!(kill["limit_kb"], 64 * 1024);
    assert_eq!(kill["totalpages"], 64 * MIB / 4096);
    assert_eq!(kill["report"], "kernel_log");
    let board = kill["scoreboard"].as_array().unwrap();
    let points = |c: &Value| c["points"].as_i64().unwrap();
    let victim = board
        .iter()
        .find(|c| c["pid"] == small)
        .expect("victim on the scoreboard");
    let larger = board
        .iter()
        .find(|c| c["pid"] == big.id())
        .expect("larger task on the scoreboard");
    assert_eq!(kill["points"].as_i64(), Some(points(victim)));
    assert_eq!(
        points(victim),
        board.iter().map(points).max().unwrap(),
        "victim has the most points"
    );
    assert!(points(larger) < points(victim));
    assert!(
        larger["rss_kb"].as_u64() > victim["rss_kb"].as_u64(),
        "larger by RSS, lower by points"
    );
    assert_eq!(victim["oom_score_adj"], 500);

    // The kernel's own figures for the same kill give the same points.
    let (rss, pgtables, swap, adj) = kernel_task_row(small);
    let totalpages = 64 * MIB / 4096;
    let expected = (rss + swap + pgtables / 4096) as i64 + adj * (totalpages / 1000) as i64;
    assert_eq!(
        points(victim),
        expected,
        "points from the kernel's task table"
    );

    // After the fact, `memstall oom` tells the same story from the kernel log alone.
    let out = Command::new(memstall_bin())
        .args(["oom", "--json", "-", "--cgroup", cg])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let again = the_kill(&listed, small);
    assert_eq!(again["points"], kill["points"]);
    assert_eq!(again["oom_cgroup"], kill["oom_cgroup"]);
    assert_eq!(again["anon_rss_kb"], kill["anon_rss_kb"]);
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
    assert!(wait_until(Duration::from_secs(5), || cgroup
        .oom_kills()
        .unwrap()
        >= 1));
    std::thread::sleep(Duration::from_millis(500));
    let (status, stderr) = memstall.stop(libc::SIGINT).unwrap();
    assert!(status.success(), "{stderr:?}");

    let events = read_json_lines(&json).unwrap();
    let kill = the_kill(&events, victim);
    let shmem_kb = kill["breakdown"]["shmem"].as_u64().unwrap();
    assert!(
        shmem_kb >= 40 * 1024,
        "shmem in the breakdown: {}",
        kill["breakdown"]
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
        eprintln!(
            "skipped: lowering oom_score_adj needs CAP_SYS_RESOURCE (runs in `cargo xtask vmtest`)"
        );
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
    assert!(wait_until(Duration::from_secs(10), || cgroup
        .oom_kills()
        .unwrap()
        >= 1));
    std::thread::sleep(Duration::from_millis(500));
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
