//! How memstall starts, stops and refuses: exit codes, one-line errors, clean flushes.
use std::{
    process::{Command, Output},
    time::{Duration, Instant},
};

use memstall_tests::{MemoryHierarchy, Memstall, memstall_bin, read_json_lines};

fn memstall(args: &[&str]) -> Output {
    Command::new(memstall_bin()).args(args).output().unwrap()
}

/// Exactly one line on stderr, prefixed like every memstall message, and no panic.
fn assert_one_line_error(output: &Output, code: i32, needle: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(code), "stderr: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line expected: {stderr}");
    assert!(stderr.starts_with("memstall: "), "{stderr}");
    assert!(stderr.contains(needle), "expected `{needle}` in: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn unwritable_json_path_is_bad_input() {
    let out = memstall(&["--json", "/nonexistent-dir/events.jsonl", "--duration", "1"]);
    assert_one_line_error(&out, 2, "cannot write --json /nonexistent-dir/events.jsonl");
}

#[test]
fn missing_btf_is_explained() {
    let out = memstall(&["--btf", "/nonexistent/vmlinux", "--duration", "1"]);
    assert_one_line_error(&out, 1, "CONFIG_DEBUG_INFO_BTF");
}

#[test]
fn bad_cgroup_paths_are_bad_input() {
    let root = MemoryHierarchy::detect().unwrap().root;
    let missing = root.join("memstall-no-such-cgroup");
    let file = root.join("cgroup.procs");
    for (path, needle) in [
        (missing.to_str().unwrap(), "no such cgroup"),
        ("relative/path", "no such cgroup"),
        ("no-such.service", "is it running?"),
        ("../../etc", "'..' is not allowed"),
        (file.to_str().unwrap(), "not a cgroup directory"),
        ("/tmp", "not a cgroup (not under a cgroup filesystem)"),
    ] {
        let out = memstall(&["--cgroup", path, "--duration", "1"]);
        assert_one_line_error(&out, 2, needle);
    }
}

/// On a hybrid host a cgroup of another controller's hierarchy has no memory controller.
#[test]
fn cgroup_without_memory_controller_is_bad_input() {
    let Some(cpu) = ["/sys/fs/cgroup/cpu", "/sys/fs/cgroup/pids"]
        .iter()
        .map(std::path::Path::new)
        .find(|p| p.is_dir())
    else {
        eprintln!("skipped: no v1 cpu/pids hierarchy on this host");
        return;
    };
    let dir = cpu.join(format!("memstall-test-cpuonly-{}", std::process::id()));
    std::fs::create_dir(&dir).unwrap();
    let out = memstall(&["--cgroup", dir.to_str().unwrap(), "--duration", "1"]);
    std::fs::remove_dir(&dir).unwrap();
    assert_one_line_error(&out, 2, "has no memory controller");
}

#[test]
fn bad_flags_exit_2() {
    let out = memstall(&["--duration", "-3"]);
    assert_eq!(out.status.code(), Some(2));
    let out = memstall(&["--no-such-flag"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn unprivileged_user_is_told_to_use_root() {
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(memstall_bin())
        .args(["--duration", "1"])
        .output()
        .expect("setpriv (util-linux)");
    assert_one_line_error(&out, 1, "needs root");
}

#[test]
fn duration_stops_by_itself_and_flushes() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("events.jsonl");
    let started = Instant::now();
    let out = memstall(&["--json", json.to_str().unwrap(), "--duration", "1.5"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(started.elapsed() >= Duration::from_millis(1500));
    let events = read_json_lines(&json).unwrap();
    let end = events.last().unwrap();
    assert_eq!(end["type"], "run_end");
    assert!(end["duration_ns"].as_u64().unwrap() >= 1_500_000_000);
    assert!(
        end["hooks"][0].as_str().unwrap().starts_with("oom_kill: "),
        "{end}"
    );
}

#[test]
fn sigterm_and_sigint_stop_cleanly() {
    for signal in [libc::SIGTERM, libc::SIGINT] {
        let dir = tempfile::tempdir().unwrap();
        let json = dir.path().join("events.jsonl");
        let tracer = Memstall::start(&["--json", json.to_str().unwrap()]).unwrap();
        let (status, stderr) = tracer.stop(signal).unwrap();
        assert!(status.success(), "signal {signal}: {status} {stderr:?}");
        assert!(stderr.last().unwrap().contains("dropped"), "{stderr:?}");
        let events = read_json_lines(&json).unwrap();
        assert_eq!(events.last().unwrap()["type"], "run_end");
    }
}

#[test]
fn json_to_stdout_replaces_human_lines() {
    let out = memstall(&["--json", "-", "--duration", "0.5"]);
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    for line in stdout.lines() {
        serde_json::from_str::<serde_json::Value>(line).unwrap_or_else(|e| panic!("{line}: {e}"));
    }
    assert!(stdout.contains("\"run_end\""));
}
