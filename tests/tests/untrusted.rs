//! Names other users choose reach the on-call engineer's terminal escaped: a process that
//! renames itself to an escape sequence and gets OOM-killed in a cgroup whose name holds one.
use std::{fs, time::Duration};

use memstall_tests::{
    MIB, MemCgroup, Memstall, assert_attached, read_json_lines, run_to_oom_kill, wait_until,
};

/// Clears the screen, sets the window title, rings the bell (12 bytes: fits a comm).
const COMM: &str = "\\x1b[2J\\x1b]0;pwn\\x07";
const COMM_RAW: &str = "\x1b[2J\x1b]0;pwn\x07";
const COMM_SHOWN: &str = "\\x1b[2J\\x1b]0;pwn\\x07";
/// ESC, a double quote, a backslash and markup; cgroupfs refuses only '/' and newline.
const CGROUP_NAME: &str = "evil\x1b[31m\"q\\<b>";
const CGROUP_SHOWN: &str = "evil\\x1b[31m\"q\\<b>";

fn raw_controls(bytes: &[u8]) -> Vec<(usize, u8)> {
    let text = String::from_utf8_lossy(bytes);
    text.char_indices()
        .filter(|&(_, c)| c != '\n' && c.is_control())
        .map(|(at, c)| (at, c as u32 as u8))
        .collect()
}

#[test]
fn hostile_comm_and_cgroup_are_escaped_on_the_terminal_and_exact_in_json() {
    let parent = MemCgroup::create("untrusted", 32 * MIB).unwrap();
    let cgroup = parent.child_named(CGROUP_NAME, 32 * MIB).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (stdout_path, json) = (dir.path().join("stdout"), dir.path().join("events.jsonl"));
    let stdout = fs::File::create(&stdout_path).unwrap();
    let cgroup_arg = cgroup.path.to_str().unwrap();
    // --threshold 0: every reclaim stall before the kill prints a line with comm and cgroup.
    let memstall = Memstall::start_with_stdout(
        &[
            "--plain",
            "--threshold",
            "0",
            "--json",
            json.to_str().unwrap(),
            "--cgroup",
            cgroup_arg,
        ],
        stdout,
    )
    .unwrap();
    let victim = run_to_oom_kill(&["--cgroup", cgroup_arg, "--comm", COMM, "--anon-mib", "96"]);
    assert!(
        wait_until(Duration::from_secs(5), || cgroup.oom_kills().unwrap() >= 1),
        "the kernel counted no OOM kill in {}",
        cgroup.relative
    );
    let (status, stderr) = memstall.stop(libc::SIGINT).unwrap();
    assert!(status.success(), "{status}: {stderr:?}");

    let shown = fs::read(&stdout_path).unwrap();
    let text = String::from_utf8_lossy(&shown);
    assert_eq!(
        raw_controls(&shown),
        [],
        "raw control bytes on stdout: {text}"
    );
    let kill_line = text
        .lines()
        .find(|l| l.contains(" OOM KILL ") && l.contains(&format!("pid {victim} ")))
        .unwrap_or_else(|| panic!("no OOM KILL line for pid {victim}: {text}"));
    assert!(kill_line.contains(COMM_SHOWN), "{kill_line}");
    assert!(kill_line.contains(CGROUP_SHOWN), "{kill_line}");
    assert!(
        text.lines()
            .any(|l| l.contains(" STALL ") && l.contains(COMM_SHOWN)),
        "no stall line names the renamed task: {text}"
    );
    // The ready line names the watched cgroup: stderr is escaped too.
    let all_stderr = stderr.join("\n");
    assert_eq!(raw_controls(all_stderr.as_bytes()), [], "{all_stderr}");
    assert!(all_stderr.contains(CGROUP_SHOWN), "{all_stderr}");

    // JSON keeps the exact bytes (serde escapes them as \u001b).
    let events = read_json_lines(&json).unwrap();
    assert_attached(&events, &["oom_kill", "memcg_reclaim"]);
    let kill = events
        .iter()
        .find(|e| e["type"] == "oom_kill" && e["victim_pid"] == victim)
        .expect("the kill in JSON");
    assert_eq!(kill["victim_comm"], COMM_RAW);
    assert!(
        kill["victim_cgroup"]
            .as_str()
            .is_some_and(|c| c.ends_with(CGROUP_NAME)),
        "{kill}"
    );
}
