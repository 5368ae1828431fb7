//! An OOM kill's figures against what memstall did not compute: /proc/PID/status and
//! /proc/PID/oom_score sampled until just before the kill, the kernel's own report lines, and
//! the cgroup's memory.stat. Then the human report an on-call engineer reads, line by line.
use std::{
    fs,
    io::{BufRead as _, BufReader},
    os::unix::process::ExitStatusExt as _,
    process::{Command, Stdio},
    sync::mpsc,
    thread,
    time::Duration,
};

use memstall_tests::{
    CgroupVersion, MIB, MemCgroup, Memstall, assert_attached, hog_holding, kernel_kill_report,
    kernel_oom_report, memhog, meminfo_kb, memstall_bin, parse_json_lines, read_json_lines,
    wait_for,
};
use serde_json::Value;

const LIMIT_MIB: u64 = 64;
const PAGE_KB: u64 = 4;
/// The victim touches its memory 1 MiB at a time: the last sample before the kill is at most
/// one step behind the kernel's figures.
const STEP_PAGES: i64 = 256;
/// The kernel's task table reads its three per-CPU rss counters approximately (up to a batch
/// of 32 pages a CPU each); /proc may sum them exactly.
fn counter_drift() -> i64 {
    3 * 32 * thread::available_parallelism().map_or(2, |n| n.get() as i64)
}

/// What /proc says of a process, in the kernel's units.
#[derive(Clone, Debug, Default)]
struct ProcSample {
    rss_pages: i64,
    swap_pages: i64,
    pgtables_kb: i64,
    vm_size_kb: u64,
    tgid: u32,
    oom_score: i64,
    oom_score_adj: i64,
}

impl ProcSample {
    /// oom_badness() from these figures, in a domain of `totalpages`.
    fn points(&self, totalpages: i64) -> i64 {
        self.rss_pages
            + self.swap_pages
            + self.pgtables_kb / PAGE_KB as i64
            + self.oom_score_adj * (totalpages / 1000)
    }
}

/// None once the task has no mm (exiting) or is gone.
fn sample(pid: u32) -> Option<ProcSample> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    if status
        .lines()
        .any(|l| l.starts_with("State:") && (l.contains("Z (") || l.contains("X (")))
    {
        return None;
    }
    let field = |key: &str| -> Option<i64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    };
    let number = |file: &str| -> Option<i64> {
        fs::read_to_string(format!("/proc/{pid}/{file}"))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    Some(ProcSample {
        rss_pages: (field("RssAnon")? + field("RssFile")? + field("RssShmem")?) / PAGE_KB as i64,
        swap_pages: field("VmSwap")? / PAGE_KB as i64,
        pgtables_kb: field("VmPTE")?,
        vm_size_kb: field("VmSize")? as u64,
        tgid: field("Tgid")? as u32,
        oom_score: number("oom_score")?,
        oom_score_adj: number("oom_score_adj")?,
    })
}

/// Samples `pid` as fast as /proc answers until it is killed: the last sample before.
fn sample_until_gone(pid: u32) -> mpsc::Receiver<ProcSample> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut last = None;
        while let Some(now) = sample(pid) {
            // Once the kernel has chosen it, the victim reads 0 (oom_badness() skips a task
            // being reaped) while its counters still stand: that sample is after the kill.
            if now.oom_score > 0 || now.oom_score_adj <= 0 {
                last = Some(now);
            }
            thread::sleep(Duration::from_micros(500));
        }
        if let Some(last) = last {
            let _ = tx.send(last);
        }
    });
    rx
}

/// /proc/PID/oom_score for a task of `points` badness in a domain of `totalpages`, rescaled
/// to the whole machine as proc_oom_score() does: the adj term counts against RAM + swap.
fn proc_oom_score(points: i64, adj: i64, totalpages: i64) -> i64 {
    let machine = ((meminfo_kb("MemTotal") + meminfo_kb("SwapTotal")) / PAGE_KB) as i64;
    let raw = points - adj * (totalpages / 1000);
    let badness = raw + adj * (machine / 1000);
    (1000 + badness * 1000 / machine) * 2 / 3
}

fn kb_value(line: &str, key: &str) -> Option<u64> {
    let rest = &line[line.find(key)? + key.len()..];
    rest.trim_start()
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// Two tasks in a 64 MiB cgroup: the larger at oom_score_adj 0, the smaller at +500 and
/// allocating from a second thread. The kernel kills the smaller; every figure memstall gives
/// is held against /proc sampled just before, the kernel's report, and memory.stat after.
#[test]
fn kill_figures_match_proc_and_the_kernel_report() {
    let cgroup = MemCgroup::create("scores", LIMIT_MIB * MIB).unwrap();
    let totalpages = (LIMIT_MIB * MIB / 4096) as i64;
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("events.jsonl");
    let human = dir.path().join("stdout");
    let cg = cgroup.path.to_str().unwrap();
    let memstall = Memstall::start_with_stdout(
        &["--plain", "--json", json.to_str().unwrap(), "--cgroup", cg],
        fs::File::create(&human).unwrap(),
    )
    .unwrap();

    let mut big = hog_holding(&["--cgroup", cg, "--anon-mib", "36", "--hold-secs", "60"]);
    let mut small = memhog()
        .args([
            "--cgroup",
            cg,
            "--anon-mib",
            "60",
            "--step-mib",
            "1",
            "--step-ms",
            "20",
        ])
        .args(["--oom-score-adj", "500", "--in-thread"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let hog = small.id();
    let samples = sample_until_gone(hog);
    let mut first = String::new();
    BufReader::new(small.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let tid: u32 = first
        .trim()
        .strip_prefix("memhog: tid ")
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("{first:?}"));
    let thread_tgid = sample(tid).map(|s| s.tgid);
    let status = small.wait().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status}");
    let before = samples
        .recv_timeout(Duration::from_secs(10))
        .expect("/proc samples of the victim");
    wait_for(
        "the kernel counts the OOM kill",
        Duration::from_secs(5),
        || cgroup.oom_kills().unwrap() >= 1,
    );
    assert!(
        big.try_wait().unwrap().is_none(),
        "the larger task survives"
    );
    // The survivor holds still: /proc now says what the kernel saw at the kill.
    let survivor = sample(big.id()).expect("the survivor's /proc");
    let stat_after = cgroup.keyed("memory.stat").unwrap();
    let peak_kb = match cgroup.version {
        CgroupVersion::V1 => cgroup.read("memory.max_usage_in_bytes").ok(),
        CgroupVersion::V2 => cgroup.read("memory.peak").ok(),
    }
    .and_then(|t| t.trim().parse::<u64>().ok())
    .map(|bytes| bytes / 1024);
    let (status, stderr) = memstall.stop(libc::SIGINT).unwrap();
    assert!(status.success(), "{stderr:?}");
    let _ = big.kill();
    let _ = big.wait();

    let events = read_json_lines(&json).unwrap();
    assert_attached(&events, &["oom_kill"]);
    let kill = events
        .iter()
        .find(|e| e["type"] == "oom_kill" && e["victim_pid"] == hog)
        .unwrap_or_else(|| panic!("no oom_kill for {hog}: {events:#?}"));
    let report = kernel_oom_report(hog).unwrap();
    let killed = kernel_kill_report(hog)
        .unwrap()
        .expect("Killed process line");
    eprintln!("victim before the kill: {before:?}; survivor: {survivor:?}");

    // Who: the allocating thread triggered, its process died; tgids from /proc.
    assert_eq!(thread_tgid, Some(hog), "/proc/{tid}/status Tgid");
    assert_eq!(kill["pid"], tid, "the trigger is the allocating thread");
    assert_eq!(kill["tgid"], hog, "{kill}");
    assert_eq!(
        (&kill["victim_pid"], &kill["victim_tgid"]),
        (&hog.into(), &hog.into())
    );

    // Scope: the limit exactly (the fixture capped swap), as the kernel's report says.
    assert_eq!(kill["constraint"], "memcg");
    assert_eq!(kill["oom_cgroup"], cgroup.relative.as_str());
    assert_eq!(kill["totalpages"], totalpages);
    assert_eq!(kill["limit_kb"], LIMIT_MIB * 1024);
    let memory_line = report
        .iter()
        .find(|l| l.starts_with("memory: usage "))
        .expect("memory: usage line in the kernel report");
    let usage_kb = kill["usage_kb"].as_u64().unwrap();
    assert_eq!(
        Some(usage_kb),
        kb_value(memory_line, "usage"),
        "{memory_line}"
    );
    assert!(
        usage_kb <= LIMIT_MIB * 1024 && usage_kb + 1024 >= LIMIT_MIB * 1024,
        "{usage_kb}"
    );
    if let Some(peak) = peak_kb {
        assert!(
            usage_kb <= peak,
            "usage {usage_kb} kB above the cgroup's peak {peak} kB"
        );
    }

    // The victim's points: between the last /proc sample and one step (plus counter drift)
    // past it; its oom_score as /proc would print it at the kill.
    let points = kill["points"].as_i64().unwrap();
    let sampled = before.points(totalpages);
    assert!(
        (sampled - counter_drift()..=sampled + STEP_PAGES + counter_drift()).contains(&points),
        "points {points} vs {sampled} from /proc just before the kill"
    );
    assert_eq!(before.oom_score_adj, 500);
    let rescaled = proc_oom_score(points, 500, totalpages);
    assert!(
        (rescaled - before.oom_score).abs() <= 1,
        "points {points} as /proc/PID/oom_score: {rescaled}, /proc said {}",
        before.oom_score
    );
    eprintln!(
        "victim points {points} (from /proc just before the kill: {sampled}), /proc/PID/oom_score {} = {rescaled} rescaled from the points",
        before.oom_score
    );
    // memstall's oom_score is the same scale against the OOM domain.
    let domain_score = (1000 + sampled * 1000 / totalpages) * 2 / 3;
    let oom_score = kill["oom_score"].as_i64().unwrap();
    assert!(
        (oom_score - domain_score).abs() <= (STEP_PAGES + counter_drift()) * 1000 / totalpages,
        "oom_score {oom_score} vs {domain_score} from /proc"
    );
    assert_eq!(
        kill["total_vm_kb"].as_u64(),
        Some(before.vm_size_kb),
        "VmSize"
    );
    assert_eq!(
        kill["total_vm_kb"].as_u64(),
        killed.get("total-vm").copied()
    );
    assert_eq!(
        kill["swap_entries"].as_i64(),
        Some(before.swap_pages),
        "VmSwap"
    );

    // The scoreboard: the victim first, the survivor's points from its /proc.
    let board = kill["scoreboard"].as_array().unwrap();
    let row = |pid: u32| {
        board
            .iter()
            .find(|c| c["pid"] == pid)
            .unwrap_or_else(|| panic!("{pid} not on {board:#?}"))
    };
    assert_eq!(row(hog)["victim"], true);
    assert_eq!(row(hog)["points"].as_i64(), Some(points));
    let survivor_points = row(big.id())["points"].as_i64().unwrap();
    let expected = survivor.points(totalpages);
    assert!(
        (survivor_points - expected).abs() <= counter_drift(),
        "survivor points {survivor_points} vs {expected} from /proc"
    );
    assert!(
        (proc_oom_score(survivor_points, 0, totalpages) - survivor.oom_score).abs() <= 1,
        "survivor oom_score {}",
        survivor.oom_score
    );
    assert!(
        survivor_points < points && row(big.id())["rss_kb"].as_u64() > row(hog)["rss_kb"].as_u64()
    );
    let ranked: Vec<i64> = board.iter().filter_map(|c| c["points"].as_i64()).collect();
    assert!(
        ranked.windows(2).all(|w| w[0] >= w[1]),
        "ranked: {ranked:?}"
    );

    // What reclaim could have freed: the page cache left in the cgroup after the kill (the
    // victim's anonymous memory went, its file pages stayed).
    let (file, shmem) = match cgroup.version {
        CgroupVersion::V1 => (stat_after["total_cache"], stat_after["total_shmem"]),
        CgroupVersion::V2 => (stat_after["file"], stat_after["shmem"]),
    };
    let page_cache_kb = (file - shmem) / 1024;
    let slab_kb = kill["breakdown"]["slab_reclaimable"].as_u64().unwrap_or(0);
    let reclaimable = kill["reclaimable_kb"].as_u64().unwrap();
    assert!(
        reclaimable.abs_diff(page_cache_kb + slab_kb) <= 512,
        "reclaimable {reclaimable} kB vs page cache {page_cache_kb} kB + slab {slab_kb} kB"
    );

    human_report_tells_the_same(
        &fs::read_to_string(&human).unwrap(),
        kill,
        &cgroup,
        tid,
        usage_kb,
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
    let listed = parse_json_lines(&String::from_utf8_lossy(&out.stdout)).unwrap();
    let again = listed
        .iter()
        .find(|e| e["type"] == "oom_kill" && e["victim_pid"] == hog)
        .expect("the kill in `memstall oom`");
    for key in [
        "points",
        "oom_score",
        "totalpages",
        "oom_cgroup",
        "usage_kb",
        "anon_rss_kb",
        "total_vm_kb",
    ] {
        assert_eq!(again[key], kill[key], "{key}");
    }
    assert_eq!(again["source"], "kernel_log");
}

/// The OOM KILL block of the human output, against the JSON record of the same run and the
/// kernel's figures.
fn human_report_tells_the_same(
    text: &str,
    kill: &Value,
    cgroup: &MemCgroup,
    tid: u32,
    usage_kb: u64,
) {
    let hog = kill["victim_pid"].as_u64().unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.contains(" OOM KILL ") && l.contains(&format!(" pid {hog} in ")))
        .unwrap_or_else(|| panic!("no OOM KILL line for {hog}:\n{text}"));
    let head = lines[at];
    let cg = &cgroup.relative;
    for part in [
        format!(
            "OOM KILL memhog pid {hog} in {cg}: anon-rss {} kB",
            kill["anon_rss_kb"]
        ),
        format!("oom_score_adj 500, uid {}", kill["victim_uid"]),
        format!("; triggered by memhog pid {tid} in {cg}"),
    ] {
        assert!(head.contains(&part), "`{part}` in {head}");
    }
    let block: Vec<&str> = lines[at + 1..]
        .iter()
        .take_while(|l| l.starts_with("    "))
        .copied()
        .collect();
    let scope = format!(
        "    scope: memcg OOM in {cg} (usage {usage_kb} kB of {} kB); victim points {} of {} pages, oom_score {} [kernel_log]",
        kill["limit_kb"], kill["points"], kill["totalpages"], kill["oom_score"]
    );
    assert_eq!(block.first().copied(), Some(scope.as_str()), "{block:#?}");
    let why = block[1];
    assert!(
        why.starts_with("    why: ")
            && why.ends_with(&format!(
                "; reclaimable {} kB, unreclaimable {} kB",
                kill["reclaimable_kb"], kill["unreclaimable_kb"]
            ))
            && why.contains("anonymous"),
        "{why}"
    );
    assert!(
        block[2].starts_with("    reclaim in the last 10 s: "),
        "{block:#?}"
    );
    // What the kill freed, then where the trigger was (its kernel stack through the OOM
    // killer), then one scoreboard line per candidate, in the JSON's order, the victim starred.
    let freed = block.get(3).copied().unwrap_or_default();
    assert!(
        freed.starts_with(&format!("    freed {} kB (", kill["freed_kb"]))
            && freed.contains(" within a second"),
        "{block:#?}"
    );
    let trigger: Vec<&str> = block[4..]
        .iter()
        .take_while(|l| l.starts_with("    trigger: "))
        .copied()
        .collect();
    assert!(
        trigger.iter().any(|l| l.contains("out_of_memory")),
        "{block:#?}"
    );
    let board: Vec<&str> = block[4 + trigger.len()..].to_vec();
    let rows = kill["scoreboard"].as_array().unwrap();
    assert_eq!(board.len(), rows.len(), "{board:#?}");
    for (line, row) in board.iter().zip(rows) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let starred = fields[0] == "*";
        let f = if starred { &fields[1..] } else { &fields[..] };
        assert_eq!(starred, row["victim"] == true, "{line}");
        assert_eq!(
            f[..8],
            [
                row["pid"].to_string().as_str(),
                "memhog",
                "points",
                row["points"].to_string().as_str(),
                "adj",
                row["oom_score_adj"].to_string().as_str(),
                "rss",
                row["rss_kb"].to_string().as_str(),
            ],
            "{line}"
        );
    }
}
