//! How memstall starts, stops and refuses: exit codes, one-line errors, clean flushes.
use std::{
    os::unix::process::CommandExt as _,
    process::{Command, Output},
    time::{Duration, Instant},
};

use memstall_tests::{
    MemoryHierarchy, Memstall, hook_status, memstall_bin, parse_json_lines, read_json_lines, skip,
};

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
        skip("no v1 cpu or pids hierarchy on this host (pure cgroup v2 has one hierarchy)");
        return;
    };
    let dir = cpu.join(format!("memstall-test-cpuonly-{}", std::process::id()));
    std::fs::create_dir(&dir).unwrap();
    let out = memstall(&["--cgroup", dir.to_str().unwrap(), "--duration", "1"]);
    std::fs::remove_dir(&dir).unwrap();
    assert_one_line_error(&out, 2, "has no memory controller");
}

/// Every kind of clap error (unknown flag, missing value, bad value for each value parser,
/// a flag that needs another, conflicting and misplaced arguments) is one line, exit 2.
#[test]
fn every_clap_error_is_one_line_exit_2() {
    for (args, needle) in [
        (
            &["--no-such-flag"][..],
            "unexpected argument '--no-such-flag'",
        ),
        (
            &["--durat", "1"],
            "tip: a similar argument exists: '--duration'",
        ),
        (
            &["--duration"],
            "a value is required for '--duration <SECS>'",
        ),
        (&["--duration", "-3"], "unexpected argument '-3'"),
        (&["--duration=-3"], "must be a positive number of seconds"),
        (&["--duration", "soon"], "`soon` is not a number of seconds"),
        (&["--duration", "0"], "must be a positive number of seconds"),
        (&["--threshold=-1"], "must be zero or a positive number"),
        (&["--threshold", "NaN"], "must be zero or a positive number"),
        (&["--interval", "0"], "must be a positive number of seconds"),
        (&["--count", "3"], "--interval <SECS>"),
        (&["--interval", "1", "--count", "0"], "--count <N>"),
        (
            &["--faults", "sometimes"],
            "invalid value 'sometimes' for '--faults",
        ),
        (&["--no-descendants"], "--cgroup <PATH>"),
        (&["--test-ring-bytes", "5000"], "must be a power of two"),
        (
            &["serve", "--listen", "nowhere"],
            "invalid value 'nowhere' for '--listen",
        ),
        (
            &["--threshold", "5", "serve"],
            "cannot be used with '--threshold <MS>'",
        ),
        (&["soak", "--max-oom-kills", "0"], "--duration <SECS>"),
        (
            &["soak", "--duration", "1", "--max-p99", "memcg_reclaim"],
            "is not KIND=MS",
        ),
        (
            &["soak", "--duration", "1", "--max-growth-per-hour=-1"],
            "must be a number, zero or more",
        ),
        (
            &["oom", "--last", "many"],
            "invalid value 'many' for '--last",
        ),
        (
            &["doctor", "--btf"],
            "a value is required for '--btf <FILE>'",
        ),
        (&["nonsense"], "unrecognized subcommand 'nonsense'"),
    ] {
        let out = memstall(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_one_line_error(&out, 2, needle);
        assert!(
            stderr.trim_end().ends_with("(see memstall --help)") && !stderr.contains("Usage:"),
            "{args:?}: {stderr}"
        );
        assert!(out.stdout.is_empty(), "{args:?}: nothing on stdout");
    }
    // Help and version are not errors: stdout, exit 0.
    for args in [&["--help"][..], &["--version"], &["soak", "--help"]] {
        let out = memstall(args);
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        assert!(!out.stdout.is_empty() && out.stderr.is_empty(), "{args:?}");
    }
}

/// A seccomp filter (installed in the child before exec, inherited by memstall) that lets the
/// object load but refuses every way of attaching a program: bpf(BPF_RAW_TRACEPOINT_OPEN)
/// (tp_btf, raw_tp, fentry), bpf(BPF_LINK_CREATE) and perf_event_open (classic tracepoints).
fn refuse_attaching(command: &mut Command) {
    const BPF_LD_W_ABS: u16 = 0x20;
    const BPF_JEQ_K: u16 = 0x15;
    const BPF_RET_K: u16 = 0x06;
    const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
    const BPF_RAW_TRACEPOINT_OPEN: u32 = 17;
    const BPF_LINK_CREATE: u32 = 28;
    // struct seccomp_data: nr at 0, arch at 4, args[0] (low half, little-endian) at 16.
    let op = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
    let deny = libc::SECCOMP_RET_ERRNO | libc::EPERM as u32;
    let filter = [
        op(BPF_LD_W_ABS, 0, 0, 4),
        op(BPF_JEQ_K, 1, 0, AUDIT_ARCH_X86_64),
        op(BPF_RET_K, 0, 0, libc::SECCOMP_RET_ALLOW),
        op(BPF_LD_W_ABS, 0, 0, 0),
        op(BPF_JEQ_K, 5, 0, libc::SYS_perf_event_open as u32),
        op(BPF_JEQ_K, 0, 3, libc::SYS_bpf as u32),
        op(BPF_LD_W_ABS, 0, 0, 16),
        op(BPF_JEQ_K, 2, 0, BPF_RAW_TRACEPOINT_OPEN),
        op(BPF_JEQ_K, 1, 0, BPF_LINK_CREATE),
        op(BPF_RET_K, 0, 0, libc::SECCOMP_RET_ALLOW),
        op(BPF_RET_K, 0, 0, deny),
    ];
    // SAFETY: between fork and exec only async-signal-safe calls (prctl), on data owned by
    // the closure.
    unsafe {
        command.pre_exec(move || {
            let program = libc::sock_fprog {
                len: filter.len() as u16,
                filter: filter.as_ptr().cast_mut(),
            };
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                || libc::prctl(
                    libc::PR_SET_SECCOMP,
                    libc::SECCOMP_MODE_FILTER,
                    &raw const program,
                ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Every hook refused (a seccomp filter on the attach calls, the object itself loads): exit 1,
/// one line naming why each hook is missing, nothing traced.
#[test]
fn no_hook_attaching_is_exit_1() {
    let mut command = Command::new(memstall_bin());
    command.args(["--json", "-", "--duration", "1"]);
    refuse_attaching(&mut command);
    let out = command.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_one_line_error(
        &out,
        1,
        "no hook could attach on this kernel: oom_kill: unavailable (",
    );
    for hook in [
        "memcg_reclaim: unavailable (",
        "direct_reclaim: unavailable (",
    ] {
        assert!(stderr.contains(hook), "{stderr}");
    }
    assert!(
        out.stdout.is_empty(),
        "nothing traced: {}",
        String::from_utf8_lossy(&out.stdout)
    );
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
        !hook_status(&events, "oom_kill").contains("unavailable"),
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
    let events = parse_json_lines(&stdout).unwrap();
    assert_eq!(events.last().unwrap()["type"], "run_end", "{stdout}");
}
