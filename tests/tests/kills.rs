//! Who killed what: SIGKILLs from other processes (named like oomd, a shell's kill -9,
//! tgkill, cgroup.kill), the kernel OOM killer's one record with its trigger's stacks, the
//! warning before an OOM kill and what each kill freed. Every figure is held against what
//! memstall did not compute: waitpid's signal, /proc before the kill, cgroupfs after it,
//! /proc/sysvipc/shm and the kernel's OOM counters.
use std::{
    ffi::CString,
    fs,
    os::unix::{ffi::OsStrExt as _, process::ExitStatusExt as _},
    path::Path,
    process::Child,
    time::Duration,
};

use memstall_tests::{
    CgroupVersion, MIB, MemCgroup, Memstall, hog_holding, memhog, own_memcg, read_json_lines,
    run_to_oom_kill, sigkill, skip, wait_for, wait_until,
};
use serde_json::Value;

/// A field of /proc/PID/status in kB.
fn status_kb(pid: u32, key: &str) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn usage(cgroup: &MemCgroup) -> u64 {
    let file = match cgroup.version {
        CgroupVersion::V1 => "memory.usage_in_bytes",
        CgroupVersion::V2 => "memory.current",
    };
    cgroup.read(file).unwrap().trim().parse().unwrap()
}

fn kills_of(events: &[Value], pid: u32) -> Vec<&Value> {
    events
        .iter()
        .filter(|e| e["type"] == "kill" && e["pid"] == pid)
        .collect()
}

/// Runs the sigkill helper with `args`; returns its pid.
fn send(args: &[&str]) -> u32 {
    let mut child = sigkill().args(args).spawn().expect("sigkill");
    let pid = child.id();
    let status = child.wait().unwrap();
    assert!(status.success(), "sigkill {args:?}: {status}");
    pid
}

/// [`send`] from a second thread of the helper, named `thread`: (its pid, the thread's tid).
fn send_from_thread(thread: &str, args: &[&str]) -> (u32, u32) {
    let out = sigkill()
        .args(["--from-thread", thread])
        .args(args)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("sigkill");
    let pid = out.id();
    let out = out.wait_with_output().unwrap();
    assert!(out.status.success(), "sigkill {args:?}: {}", out.status);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let tid = stdout
        .lines()
        .find_map(|l| l.strip_prefix("sigkill: tid ")?.parse().ok())
        .unwrap_or_else(|| panic!("no tid from sigkill: {stdout}"));
    (pid, tid)
}

/// Waits for a child the test SIGKILLed: the kernel's own word that the kill happened.
fn reap_killed(mut child: Child) {
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status}");
}

fn set_xattr(dir: &Path, name: &str, value: &str) -> bool {
    let path = CString::new(dir.as_os_str().as_bytes()).unwrap();
    let name = CString::new(name).unwrap();
    // SAFETY: NUL-terminated strings and a buffer with its length.
    unsafe {
        libc::setxattr(
            path.as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        ) == 0
    }
}

fn stop(memstall: Memstall) {
    let (status, stderr) = memstall.stop(libc::SIGINT).unwrap();
    assert!(status.success(), "memstall exit {status}: {stderr:?}");
}

fn hook_attached(events: &[Value], hook: &str) {
    let end = events
        .iter()
        .find(|e| e["type"] == "run_end")
        .expect("run_end");
    let hooks = end["hooks"].as_array().unwrap();
    assert!(
        hooks.iter().any(|h| h
            .as_str()
            .is_some_and(|h| h.starts_with(&format!("{hook}: ")) && !h.contains("unavailable"))),
        "{hook} not attached: {hooks:?}"
    );
}

#[test]
fn a_kill_by_a_process_named_oomd_names_its_sender() {
    let cgroup = MemCgroup::create("kill-oomd", 128 * MIB).unwrap();
    // oomd's own counter on a cgroup, which only root can write: the name is vouched for.
    let marked = MemCgroup::create("kill-oomd-marked", 128 * MIB).unwrap();
    assert!(set_xattr(&marked.path, "trusted.oomd_kill", "1"));
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("events.jsonl");
    let memstall = Memstall::start(&[
        "--json",
        json.to_str().unwrap(),
        "--cgroup",
        cgroup.path.to_str().unwrap(),
        "--cgroup",
        marked.path.to_str().unwrap(),
    ])
    .unwrap();
    let path = cgroup.path.to_str().unwrap();
    let hog = ["--cgroup", path, "--anon-mib", "16", "--hold-secs", "60"];

    let first = hog_holding(&hog);
    let first_pid = first.id();
    let anon_kb = status_kb(first_pid, "RssAnon");
    let usage_before = usage(&cgroup) / 1024;
    let pid_s = first_pid.to_string();
    let killer = send(&["--comm", "oomd", "--pid", &pid_s]);
    reap_killed(first);

    let second = hog_holding(&[
        "--cgroup",
        marked.path.to_str().unwrap(),
        "--anon-mib",
        "16",
        "--hold-secs",
        "60",
    ]);
    let second_pid = second.id();
    let pid_s = second_pid.to_string();
    let vouched_killer = send(&["--comm", "oomd", "--pid", &pid_s]);
    reap_killed(second);
    assert!(wait_until(Duration::from_secs(20), || {
        read_json_lines(&json).is_ok_and(|e| !kills_of(&e, second_pid).is_empty())
    }));
    stop(memstall);

    let events = read_json_lines(&json).unwrap();
    hook_attached(&events, "kills");
    let kills = kills_of(&events, first_pid);
    assert_eq!(kills.len(), 1, "one record per kill: {events:#?}");
    let kill = kills[0];
    assert_eq!(kill["tgid"], first_pid);
    assert_eq!(kill["comm"], "memhog");
    assert_eq!(kill["cgroup"], cgroup.relative.as_str());
    assert_eq!(kill["signal"], 9);
    assert_eq!(kill["sender_pid"], killer);
    assert_eq!(kill["sender_tgid"], killer);
    assert_eq!(kill["sender_comm"], "oomd");
    assert_eq!(kill["sender_process"], "oomd");
    assert_eq!(kill["sender_cgroup"], own_memcg(cgroup.version).as_str());
    assert_eq!(kill["method"], "kill");
    assert_eq!(kill["killer"], "oomd");
    // A name anyone can take with prctl is not proof. (Pages touched before memhog joined
    // the cgroup are charged elsewhere: usage may trail RssAnon by a little.)
    assert_eq!(kill["confidence"], "inferred", "{kill}");
    let seen_anon = kill["anon_rss_kb"].as_u64().unwrap();
    assert!(
        seen_anon.abs_diff(anon_kb) <= 512,
        "{seen_anon} vs /proc {anon_kb}"
    );
    let seen_usage = kill["usage_kb"].as_u64().unwrap();
    assert!(
        seen_usage + 1024 >= anon_kb && seen_usage <= usage_before + 1024,
        "usage at the kill {seen_usage} kB, before it {usage_before} kB"
    );

    let vouched = kills_of(&events, second_pid);
    assert_eq!(vouched.len(), 1, "{events:#?}");
    assert_eq!(vouched[0]["sender_pid"], vouched_killer);
    assert_eq!(vouched[0]["killer"], "oomd");
    assert_eq!(vouched[0]["confidence"], "high", "{}", vouched[0]);
    // Nothing else ran in the cgroup: the kill freed the victim's memory, as cgroupfs says.
    let freed = kill["freed_kb"].as_u64().unwrap();
    assert!(
        freed + 1024 >= anon_kb,
        "freed {freed} kB of {anon_kb} kB anon: {kill}"
    );
    assert!(usage(&cgroup) / 1024 <= usage_before - freed + 1024);
    let evidence = vouched[0]["evidence"].to_string();
    assert!(evidence.contains("trusted.oomd_kill=1"), "{evidence}");

    // None of this was the OOM killer, and memstall said so.
    assert_eq!(cgroup.oom_kills().unwrap() + marked.oom_kills().unwrap(), 0);
    assert!(!events.iter().any(|e| e["type"] == "oom_kill"));
}

#[test]
fn a_shell_kill_and_a_tgkill_are_a_process_kill() {
    let cgroup = MemCgroup::create("kill-shell", 64 * MIB).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("events.jsonl");
    let memstall = Memstall::start(&[
        "--json",
        json.to_str().unwrap(),
        "--cgroup",
        cgroup.path.to_str().unwrap(),
    ])
    .unwrap();
    let path = cgroup.path.to_str().unwrap();
    let hog = ["--cgroup", path, "--anon-mib", "4", "--hold-secs", "60"];

    let shot = hog_holding(&hog);
    let shot_pid = shot.id();
    let mut shell = std::process::Command::new("sh")
        .args(["-c", "kill -9 \"$1\"", "sh", &shot_pid.to_string()])
        .spawn()
        .unwrap();
    let shell_pid = shell.id();
    assert!(shell.wait().unwrap().success());
    reap_killed(shot);

    let threaded = hog_holding(&hog);
    let threaded_pid = threaded.id();
    let spec = format!("{threaded_pid}:{threaded_pid}");
    // From a worker thread: the sender is that thread, its process the helper.
    let (killer, killer_tid) =
        send_from_thread("reap-worker", &["--comm", "reaper", "--thread", &spec]);
    reap_killed(threaded);
    assert!(wait_until(Duration::from_secs(20), || {
        read_json_lines(&json).is_ok_and(|e| !kills_of(&e, threaded_pid).is_empty())
    }));
    stop(memstall);

    let events = read_json_lines(&json).unwrap();
    let kills = kills_of(&events, shot_pid);
    assert_eq!(kills.len(), 1, "{events:#?}");
    assert_eq!(kills[0]["sender_pid"], shell_pid);
    assert_eq!(kills[0]["sender_comm"], "sh");
    assert_eq!(kills[0]["killer"], "process");
    assert_eq!(kills[0]["confidence"], "certain");
    assert_eq!(kills[0]["method"], "kill");
    let kills = kills_of(&events, threaded_pid);
    assert_eq!(
        kills.len(),
        1,
        "the whole process dies of one SIGKILL: {events:#?}"
    );
    assert_eq!(kills[0]["sender_pid"], killer_tid);
    assert_eq!(kills[0]["sender_tgid"], killer);
    assert_eq!(kills[0]["sender_comm"], "reap-worker");
    assert_eq!(kills[0]["sender_process"], "reaper");
    assert_eq!(kills[0]["killer"], "process");
    assert_eq!(kills[0]["method"], "thread_kill");
}

#[test]
fn cgroup_kill_names_the_writer() {
    let cgroup = MemCgroup::create("kill-cgroup", 64 * MIB).unwrap();
    if cgroup.version != CgroupVersion::V2 || !cgroup.path.join("cgroup.kill").exists() {
        skip("cgroup.kill needs cgroup v2 (5.14+)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("events.jsonl");
    let memstall = Memstall::start(&[
        "--json",
        json.to_str().unwrap(),
        "--cgroup",
        cgroup.path.to_str().unwrap(),
    ])
    .unwrap();
    let path = cgroup.path.to_str().unwrap();
    let hog = ["--cgroup", path, "--anon-mib", "4", "--hold-secs", "60"];
    let (a, b) = (hog_holding(&hog), hog_holding(&hog));
    let (a_pid, b_pid) = (a.id(), b.id());
    let writer = send(&["--comm", "unit-stop", "--cgroup-kill", path]);
    reap_killed(a);
    reap_killed(b);
    assert!(wait_until(Duration::from_secs(20), || {
        read_json_lines(&json)
            .is_ok_and(|e| !kills_of(&e, a_pid).is_empty() && !kills_of(&e, b_pid).is_empty())
    }));
    stop(memstall);
    let events = read_json_lines(&json).unwrap();
    for pid in [a_pid, b_pid] {
        let kills = kills_of(&events, pid);
        assert_eq!(kills.len(), 1, "{events:#?}");
        assert_eq!(kills[0]["sender_pid"], writer);
        assert_eq!(kills[0]["sender_comm"], "unit-stop");
        assert_eq!(kills[0]["killer"], "cgroup_kill");
        assert_eq!(kills[0]["method"], "cgroup_kill");
    }
}

const ONE_OOM_KILL_LIMIT: u64 = 32 * MIB;

/// Runs memstall on a fresh 32 MiB cgroup while `workload` drives it to an OOM kill; returns
/// the one oom_kill record (checked to be the only record of that kill) and the victim's pid.
fn one_oom_kill(
    extra: &[&str],
    workload: impl FnOnce(&MemCgroup, &Path, &Memstall) -> u32,
) -> (Value, u32) {
    let cgroup = MemCgroup::create("kill-oom", ONE_OOM_KILL_LIMIT).unwrap();
    // On disk, not tmpfs: page cache there is what a trigger reclaims first.
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let json = dir.path().join("events.jsonl");
    let mut args = vec![
        "--json",
        json.to_str().unwrap(),
        "--cgroup",
        cgroup.path.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let memstall = Memstall::start(&args).unwrap();
    let victim = workload(&cgroup, dir.path(), &memstall);
    assert!(
        wait_until(Duration::from_secs(20), || {
            read_json_lines(&json).is_ok_and(|e| e.iter().any(|e| e["type"] == "oom_kill"))
        }),
        "{extra:?}: no oom_kill record within 20 s of the kill"
    );
    stop(memstall);
    let events = read_json_lines(&json).unwrap();
    assert_eq!(cgroup.oom_kills().unwrap(), 1);
    let kills: Vec<_> = events.iter().filter(|e| e["type"] == "oom_kill").collect();
    assert_eq!(kills.len(), 1, "{extra:?}: {events:#?}");
    assert!(
        kills_of(&events, victim).is_empty(),
        "{extra:?}: the OOM killer's own SIGKILL is the oom_kill record, not a second one"
    );
    let kill = kills[0].clone();
    assert_eq!(kill["victim_pid"], victim);
    assert_eq!(kill["killer"], "kernel_oom");
    let kernel = kill["trigger_kernel_stack"].to_string();
    assert!(kernel.contains("out_of_memory"), "{extra:?}: {kernel}");
    assert!(kernel.contains("try_charge_memcg"), "{extra:?}: {kernel}");
    (kill, victim)
}

/// A holder at oom_score_adj 1000 and a second task whose allocation runs the cgroup out: the
/// holder dies, and the record names the other as the trigger, with its stacks (mark_victim
/// runs in the trigger's context; the trigger lives on, so its frames are named).
#[test]
fn an_oom_kill_is_one_record_with_its_triggers_stacks() {
    for extra in [&[][..], &["--force-tracepoints"][..]] {
        // The kernel may kill the trigger too: when the victim is marked reaped before its
        // pages leave the cgroup, the trigger's next charge finds no other task to choose
        // (seen once in a full host run, 05:12:21: the holder, then the trigger). A second
        // try; a real fault fails both.
        let first = std::panic::catch_unwind(|| trigger_lives_on(extra));
        if let Err(panic) = first {
            let why = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            eprintln!("{extra:?}: trying once more after: {why}");
            trigger_lives_on(extra);
        }
    }
}

/// One OOM kill whose trigger survives it: a holder at adj 1000 is the victim.
fn trigger_lives_on(extra: &[&str]) {
    let mut trigger = None;
    let (kill, _) = one_oom_kill(extra, |cgroup, _, _| {
        let cgroup = cgroup.path.to_str().unwrap();
        let mut holder = hog_holding(&[
            "--cgroup",
            cgroup,
            "--anon-mib",
            "20",
            "--oom-score-adj",
            "1000",
            "--hold-secs",
            "60",
        ]);
        let allocating =
            hog_holding(&["--cgroup", cgroup, "--anon-mib", "20", "--hold-secs", "60"]);
        let status = holder.wait().unwrap();
        assert_eq!(
            status.signal(),
            Some(libc::SIGKILL),
            "the holder is the victim"
        );
        trigger = Some(allocating);
        holder.id()
    });
    let mut trigger = trigger.unwrap();
    assert_eq!(kill["pid"], trigger.id(), "{extra:?}: {kill}");
    let user = kill["trigger_user_stack"].to_string();
    let _ = trigger.kill();
    let _ = trigger.wait();
    assert!(user.contains("memhog::"), "{extra:?}: {user}");
}

/// The usual case: the trigger is the victim, and dies of the kill it triggered before its
/// record is decoded; its frames are named from the mappings memstall read at its first
/// reclaim. Made certain: memstall is stopped (SIGSTOP) while the trigger reclaims its page
/// cache (1 MiB every 50 ms through 16 MiB of it), and continued once the trigger is dead and
/// reaped. No reclaim is an outlier (a 1 s threshold): the plain ones must suffice.
#[test]
fn a_trigger_that_died_of_its_kill_still_has_its_frames_named() {
    let (kill, victim) = one_oom_kill(&["--threshold", "1000"], |cgroup, dir, memstall| {
        let cache = format!("{}:16", dir.join("cache.img").display());
        let mut trigger = memhog()
            .args([
                "--cgroup",
                cgroup.path.to_str().unwrap(),
                "--page-cache",
                &cache,
                "--anon-mib",
                "128",
                "--step-mib",
                "1",
                "--step-ms",
                "50",
            ])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("memhog");
        // At its limit, every charge reclaims (failcnt stays 0 on some v1 kernels).
        wait_for(
            "the trigger's first reclaim",
            Duration::from_secs(20),
            || usage(cgroup) + MIB >= ONE_OOM_KILL_LIMIT,
        );
        // Time for memstall to read the first reclaims; the kill is about 0.8 s away.
        std::thread::sleep(Duration::from_millis(300));
        signal(memstall.pid(), libc::SIGSTOP);
        let killed_before = cgroup.oom_kills().unwrap();
        let status = trigger.wait().unwrap();
        signal(memstall.pid(), libc::SIGCONT);
        assert_eq!(
            killed_before, 0,
            "the kill came before memstall was stopped"
        );
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{status}");
        trigger.id()
    });
    assert_eq!(kill["pid"], victim);
    let user = kill["trigger_user_stack"].to_string();
    assert!(user.contains("memhog::"), "{user}");
}

fn signal(pid: i32, signal: i32) {
    // SAFETY: a plain kill(2) to memstall, a child of this test.
    assert_eq!(
        unsafe { libc::kill(pid, signal) },
        0,
        "kill({pid}, {signal})"
    );
}

/// The oom_risk records before the first oom_kill, and that kill.
fn warnings_before_kill(events: &[Value]) -> (Vec<&Value>, &Value) {
    let kill = events
        .iter()
        .filter(|e| e["type"] == "oom_kill")
        .min_by_key(|e| e["time_ns"].as_u64())
        .expect("an oom_kill");
    let at = kill["time_ns"].as_u64().unwrap();
    let warnings = events
        .iter()
        .filter(|e| {
            e["type"] == "oom_risk"
                && e["reason"] != "cleared"
                && e["time_ns"].as_u64().unwrap() < at
        })
        .collect();
    (warnings, kill)
}

#[test]
fn oom_risk_warns_seconds_before_the_kill() {
    let cgroup = MemCgroup::create("risk", 64 * MIB).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("events.jsonl");
    let memstall = Memstall::start(&[
        "--json",
        json.to_str().unwrap(),
        "--cgroup",
        cgroup.path.to_str().unwrap(),
    ])
    .unwrap();
    // About 10 MiB/s toward 64 MiB.
    let victim = run_to_oom_kill(&[
        "--cgroup",
        cgroup.path.to_str().unwrap(),
        "--anon-mib",
        "100",
        "--step-mib",
        "1",
        "--step-ms",
        "100",
    ]);
    assert!(wait_until(Duration::from_secs(20), || {
        read_json_lines(&json).is_ok_and(|e| e.iter().any(|e| e["type"] == "oom_kill"))
    }));
    stop(memstall);
    let events = read_json_lines(&json).unwrap();
    assert_eq!(cgroup.oom_kills().unwrap(), 1);
    let (warnings, kill) = warnings_before_kill(&events);
    assert_eq!(kill["victim_pid"], victim);
    let first = warnings.first().expect("a warning before the kill");
    let kill_ns = kill["time_ns"].as_u64().unwrap();
    let lead_s = (kill_ns - first["time_ns"].as_u64().unwrap()) as f64 / 1e9;
    assert!(
        lead_s >= 2.0,
        "warned {lead_s:.2} s before the kill: {first}"
    );
    // The ETA said what then happened, within a factor of two.
    let eta = first["eta_s"].as_f64().expect("growing: an ETA");
    assert!(
        eta <= lead_s * 2.0 + 1.0 && eta >= lead_s / 2.0 - 1.0,
        "ETA {eta} s, kill after {lead_s:.2} s"
    );
    assert_eq!(first["cgroup"], cgroup.relative.as_str());
    assert_eq!(first["limit_kb"], 64 * 1024);
    let last = warnings.last().unwrap();
    assert_eq!(last["next_victim_pid"], victim, "{last}");
    assert_eq!(last["next_victim_comm"], "memhog");
}

#[test]
fn oom_risk_names_the_task_the_kernel_then_kills() {
    let cgroup = MemCgroup::create("risk-rank", 64 * MIB).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("events.jsonl");
    let memstall = Memstall::start(&[
        "--json",
        json.to_str().unwrap(),
        "--cgroup",
        cgroup.path.to_str().unwrap(),
    ])
    .unwrap();
    let path = cgroup.path.to_str().unwrap();
    // Bigger at adj 0, smaller at +500: the adj weighs more (its share of the limit, x16 pages
    // per point here), and /proc/PID/oom_score, scaled to the machine, would rank the other way.
    let bigger = hog_holding(&["--cgroup", path, "--anon-mib", "30", "--hold-secs", "60"]);
    let smaller = hog_holding(&[
        "--cgroup",
        path,
        "--anon-mib",
        "8",
        "--oom-score-adj",
        "500",
        "--hold-secs",
        "60",
    ]);
    let smaller_pid = smaller.id();
    let expected_points = {
        let pages = (status_kb(smaller_pid, "RssAnon")
            + status_kb(smaller_pid, "RssFile")
            + status_kb(smaller_pid, "RssShmem"))
            / 4
            + status_kb(smaller_pid, "VmPTE") / 4;
        pages as i64 + 500 * (64 * 1024 / 4 / 1000)
    };
    let mut grower = memhog()
        .args([
            "--cgroup",
            path,
            "--anon-mib",
            "60",
            "--step-mib",
            "1",
            "--step-ms",
            "100",
        ])
        .spawn()
        .unwrap();
    reap_killed(smaller);
    assert!(wait_until(Duration::from_secs(20), || {
        read_json_lines(&json).is_ok_and(|e| e.iter().any(|e| e["type"] == "oom_kill"))
    }));
    let _ = grower.kill();
    let _ = grower.wait();
    drop(bigger);
    stop(memstall);
    let events = read_json_lines(&json).unwrap();
    let (warnings, kill) = warnings_before_kill(&events);
    assert_eq!(kill["victim_pid"], smaller_pid, "the kernel's pick");
    let last = warnings.last().expect("a warning before the kill");
    assert_eq!(last["next_victim_pid"], smaller_pid, "{last}");
    let points = last["next_victim_points"].as_i64().unwrap();
    assert!(
        (points - expected_points).abs() <= 256,
        "points {points} vs {expected_points} from /proc"
    );
}

/// Removes SysV segments on drop (a kept segment outlives the test otherwise).
struct Segments(Vec<i32>);

impl Drop for Segments {
    fn drop(&mut self) {
        for &id in &self.0 {
            // SAFETY: IPC_RMID takes no buffer.
            unsafe { libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut()) };
        }
    }
}

/// Ids of the SysV segments process `pid` created.
fn segments_of(pid: u32) -> Vec<i32> {
    fs::read_to_string("/proc/sysvipc/shm")
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(4)?.parse::<u32>().ok()? == pid).then(|| f.get(1)?.parse().ok())?
        })
        .collect()
}

#[test]
fn a_kill_that_frees_little_says_why() {
    let cgroup = MemCgroup::create("freed", 256 * MIB).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("events.jsonl");
    let memstall = Memstall::start(&[
        "--json",
        json.to_str().unwrap(),
        "--cgroup",
        cgroup.path.to_str().unwrap(),
    ])
    .unwrap();
    let path = cgroup.path.to_str().unwrap();
    let shm = hog_holding(&[
        "--cgroup",
        path,
        "--shm-mib",
        "100",
        "--shm-keep",
        "--hold-secs",
        "60",
    ]);
    let shm_pid = shm.id();
    let segments = Segments(segments_of(shm_pid));
    assert_eq!(segments.0.len(), 1);
    let anon = hog_holding(&["--cgroup", path, "--anon-mib", "100", "--hold-secs", "60"]);
    let anon_pid = anon.id();

    let before = usage(&cgroup);
    send(&["--pid", &shm_pid.to_string()]);
    reap_killed(shm);
    assert!(wait_until(Duration::from_secs(20), || {
        read_json_lines(&json).is_ok_and(|e| !kills_of(&e, shm_pid).is_empty())
    }));
    let after_shm = usage(&cgroup);
    send(&["--pid", &anon_pid.to_string()]);
    reap_killed(anon);
    assert!(wait_until(Duration::from_secs(20), || {
        read_json_lines(&json).is_ok_and(|e| !kills_of(&e, anon_pid).is_empty())
    }));
    let after_anon = usage(&cgroup);
    stop(memstall);

    let events = read_json_lines(&json).unwrap();
    let kill = kills_of(&events, shm_pid)[0];
    let freed = kill["freed_kb"].as_u64().unwrap();
    let measured = before.saturating_sub(after_shm) / 1024;
    assert!(freed < 10 * 1024, "freed {freed} kB: {kill}");
    assert!(
        freed.abs_diff(measured) <= 2048,
        "{freed} kB vs cgroupfs {measured} kB"
    );
    let note = kill["freed_note"].as_str().expect("a note");
    assert!(
        note.contains(&format!("SysV shm segment {}", segments.0[0])),
        "{note}"
    );
    assert!(
        kill["shmem_rss_kb"].as_u64().unwrap() >= 100 * 1024,
        "{kill}"
    );

    let kill = kills_of(&events, anon_pid)[0];
    let freed = kill["freed_kb"].as_u64().unwrap();
    let measured = after_shm.saturating_sub(after_anon) / 1024;
    assert!(freed >= 95 * 1024, "freed {freed} kB: {kill}");
    assert!(
        freed.abs_diff(measured) <= 2048,
        "{freed} kB vs cgroupfs {measured} kB"
    );
    assert!(kill.get("freed_note").is_none(), "{kill}");
}
