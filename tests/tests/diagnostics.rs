//! Kernel-side diagnostics: stall windows lost in the kernel are counted in `run_end`, logged
//! through aya-log with `--bpf-log` (and only then), and reconciled with the kernel's own count
//! of reclaims (taskstats); at the default map sizes there are none.
//!
//! The workload: three writers at once through one small cgroup, each reclaiming its cgroup's
//! page cache hundreds of times, so their reclaim windows overlap (more writers than CPUs: one
//! preempted inside its reclaim is overlapped too; two once ran a whole run without overlap). A one-entry IN_FLIGHT map
//! (the hidden `--test-in-flight-entries 1`) then loses windows: one task's begin evicts the
//! other's entry, whose end finds none.
use std::{
    io::{BufRead as _, BufReader},
    process::{Child, Stdio},
};

use memstall_tests::{
    MIB, MemCgroup, Memstall,
    contract::{Diagnostic, RunEnd},
    hook_status, kernel_has_tracepoint, memhog, parse_json_lines, read_json_lines,
    taskstats::{DelayacctGuard, taskstats},
};

const WRITERS: usize = 3;

/// What one traced run came to.
struct Run {
    run_end: RunEnd,
    /// memcg_reclaim windows and restarts memstall reported (summary totals).
    windows: u64,
    retries: u64,
    /// Memory-cgroup and direct reclaims the kernel counted for the writers (freepages_count).
    kernel_reclaims: u64,
    /// stderr lines from the programs' log (`memstall: warn: bpf: ...`).
    bpf_lines: Vec<String>,
}

impl Run {
    fn diagnostic(&self, kind: Diagnostic) -> u64 {
        *self
            .run_end
            .diagnostics
            .get(&kind)
            .unwrap_or_else(|| panic!("run_end has no diagnostics.{kind:?}: {:?}", self.run_end))
    }

    fn lost(&self, stall_kind: &str) -> u64 {
        self.run_end
            .lost_windows
            .get(stall_kind)
            .copied()
            .unwrap_or(0)
    }
}

/// Starts the writers at once, then waits until each has written its file (they then hold,
/// so their taskstats can be read).
fn writers(cgroup: &MemCgroup, files: &[tempfile::NamedTempFile]) -> Vec<Child> {
    let cg = cgroup.path.to_str().unwrap();
    let mut hogs: Vec<Child> = files
        .iter()
        .map(|file| {
            let spec = format!("{}:200", file.path().display());
            memhog()
                .args(["--cgroup", cg, "--write-file", &spec])
                .args(["--sync-every-mib", "16", "--hold-secs", "60"])
                .stdout(Stdio::piped())
                .spawn()
                .expect("memhog")
        })
        .collect();
    for hog in &mut hogs {
        let mut line = String::new();
        let stdout = hog.stdout.as_mut().expect("memhog stdout");
        BufReader::new(stdout).read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "memhog: done", "a writer did not finish");
    }
    hogs
}

fn traced(flags: &[&str]) -> Run {
    let _delayacct = DelayacctGuard::enable().unwrap();
    let cgroup = MemCgroup::create("diagnostics", 64 * MIB).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("events.jsonl");
    let mut args = vec![
        "--plain",
        "--json",
        json.to_str().unwrap(),
        "--cgroup",
        cgroup.path.to_str().unwrap(),
    ];
    args.extend_from_slice(flags);
    let memstall = Memstall::start(&args).unwrap();
    let files: Vec<_> = (0..WRITERS)
        .map(|_| tempfile::NamedTempFile::new_in("/var/tmp").unwrap())
        .collect();
    let mut hogs = writers(&cgroup, &files);
    let kernel_reclaims = hogs
        .iter()
        .map(|hog| taskstats(hog.id()).unwrap().freepages.count)
        .sum();
    let (status, stderr) = memstall.stop(libc::SIGINT).unwrap();
    for hog in &mut hogs {
        let _ = hog.kill();
        let _ = hog.wait();
    }
    assert!(status.success(), "{stderr:?}");
    let events = read_json_lines(&json).unwrap();
    let last = events.last().unwrap();
    assert_eq!(last["type"], "run_end");
    let run_end: RunEnd = serde_json::from_value(last.clone()).unwrap();
    assert!(
        run_end
            .hooks
            .iter()
            .any(|hook| hook.starts_with("memcg_reclaim: t")),
        "memcg_reclaim not attached: {:?}",
        run_end.hooks
    );
    assert_eq!(run_end.dropped, 0, "drops make the counts meaningless");
    assert_eq!(
        run_end.diagnostics.len(),
        memstall_common::Diagnostic::ALL.len(),
        "every kind of diagnostic, zeros included: {:?}",
        run_end.diagnostics
    );
    let (windows, retries) = events
        .iter()
        .filter(|e| e["type"] == "summary" && e["scope"] == "total")
        .filter(|e| e["kind"] == "memcg_reclaim")
        .fold((0, 0), |(windows, retries), e| {
            (
                windows + e["count"].as_u64().unwrap(),
                retries + e["retries"].as_u64().unwrap_or(0),
            )
        });
    let bpf_lines = stderr
        .iter()
        .filter(|line| line.starts_with("memstall: warn: bpf: "))
        .cloned()
        .collect();
    let run = Run {
        run_end,
        windows,
        retries,
        kernel_reclaims,
        bpf_lines,
    };
    eprintln!(
        "diagnostics {flags:?}: {} reclaims + {} restarts reported, {} windows lost, vs freepages_count {}; {:?}; {} bpf log line(s)",
        run.windows,
        run.retries,
        run.lost("memcg_reclaim"),
        run.kernel_reclaims,
        run.run_end.diagnostics,
        run.bpf_lines.len()
    );
    assert!(
        run.windows > 50,
        "too few reclaims to judge: {}",
        run.windows
    );
    run
}

/// Every reclaim the kernel counted is reported or counted lost: a lost window is at least
/// one of the kernel's (more when it restarted inside, which only the lost entry knew).
fn assert_accounted(run: &Run) {
    let lost = run.lost("memcg_reclaim");
    let seen = run.windows + run.retries;
    if memstall_tests::emulated() {
        // Delay accounting drops a window whose local_clock() end is not after its start,
        // which the guest's drifting per-CPU clocks make common (2604 reported, 2426 counted
        // on 6.1 under TCG): within 20 %, as memstall_tests::assert_matches_freepages.
        assert!(
            (seen + lost).abs_diff(run.kernel_reclaims) * 5 <= run.kernel_reclaims,
            "{seen} reported + {lost} lost vs {} counted by the kernel",
            run.kernel_reclaims
        );
        return;
    }
    assert!(
        seen + lost <= run.kernel_reclaims,
        "{seen} reported + {lost} lost > {} counted by the kernel",
        run.kernel_reclaims
    );
    let unexplained = run.kernel_reclaims - seen - lost;
    // A lost window's restarts are lost with it: allow as many per lost window as the
    // reported ones had on average, twice over, and 1 % besides (as the pressure tests do).
    let restarts_per_window = run.retries.div_ceil(run.windows.max(1)) * 2;
    assert!(
        unexplained <= lost * restarts_per_window + run.kernel_reclaims / 100,
        "{} counted by the kernel, {seen} reported, {lost} lost: {unexplained} unexplained",
        run.kernel_reclaims
    );
}

/// At the default sizes nothing is lost, nothing is logged, and what was reported is what
/// the kernel counted.
#[test]
fn none_at_the_default_sizes() {
    let run = traced(&["--bpf-log"]);
    for (kind, count) in &run.run_end.diagnostics {
        assert_eq!(*count, 0, "{kind:?}: {:?}", run.run_end);
    }
    assert!(run.run_end.lost_windows.is_empty(), "{:?}", run.run_end);
    assert!(run.bpf_lines.is_empty(), "{:?}", run.bpf_lines);
    assert_accounted(&run);
}

/// A one-entry IN_FLIGHT: windows are lost, counted by stall kind, logged with --bpf-log,
/// and they are the reclaims missing from the report.
#[test]
fn lost_windows_are_counted_and_logged() {
    let run = traced(&["--bpf-log", "--test-in-flight-entries", "1"]);
    let lost_kinds =
        run.diagnostic(Diagnostic::EndWithoutBegin) + run.diagnostic(Diagnostic::InFlightFull);
    let lost: u64 = run.run_end.lost_windows.values().sum();
    assert!(run.lost("memcg_reclaim") > 0, "{:?}", run.run_end);
    assert_eq!(lost, lost_kinds, "every lost window has its stall kind");
    assert_accounted(&run);
    // Logged, at most once a second per kind and CPU: fewer lines than losses when many.
    let logged_kinds = ["end_without_begin: ", "in_flight_full: "];
    assert!(
        run.bpf_lines
            .iter()
            .any(|l| logged_kinds.iter().any(|k| l.contains(k))),
        "no bpf log line: {:?}",
        run.bpf_lines
    );
    assert!(
        run.bpf_lines.len() as u64 <= lost,
        "{} lines for {lost} losses",
        run.bpf_lines.len()
    );
}

/// Without --bpf-log the programs stay silent, and still count.
#[test]
fn counted_without_the_log() {
    let run = traced(&["--test-in-flight-entries", "1"]);
    assert!(run.lost("memcg_reclaim") > 0, "{:?}", run.run_end);
    assert!(run.bpf_lines.is_empty(), "{:?}", run.bpf_lines);
    assert_accounted(&run);
}

/// Each tracepoint hook loads as tp_btf, with the log off and on: a program the verifier
/// refuses falls back to the classic tracepoint (or to nothing) with a note, and the run
/// goes on, so only this test sees it. 6.1's verifier gave up on the OOM program after a
/// million instructions (and 51 s under TCG) while a call sat on every read's failure path.
#[test]
fn every_tracepoint_hook_loads_as_tp_btf() {
    const TP_BTF_HOOKS: &[&str] = &[
        "oom_kill",
        "kills",
        "direct_reclaim",
        "memcg_reclaim",
        "kswapd",
        "reclaim_passes",
        "shrink_slab",
        "memstall_sleeps",
        "dirty_throttle",
    ];
    // count_memcg_events (6.13+) reads the memcg with plain loads the verifier checks
    // against BTF, unfiltered and up a watched cgroup's ancestors: the filter's branch is
    // a load-time constant, so only a run with --cgroup verifies the walk.
    let memcg_pages = kernel_has_tracepoint("count_memcg_events");
    let watched = MemCgroup::create("tp-btf", 64 * MIB).unwrap();
    let watched = watched.path.to_str().unwrap();
    let runs: [&[&str]; 3] = [&[], &["--bpf-log"], &["--cgroup", watched]];
    for flags in runs {
        let output = std::process::Command::new(memstall_tests::memstall_bin())
            .args([
                "--json",
                "-",
                "--duration",
                "1",
                "--memcg-events",
                "--faults",
                "ebpf",
            ])
            .args(flags)
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        let events = parse_json_lines(&String::from_utf8_lossy(&output.stdout)).unwrap();
        let hooks = TP_BTF_HOOKS
            .iter()
            .chain(memcg_pages.then_some(&"memcg_pages"));
        for name in hooks {
            let hook = hook_status(&events, name);
            assert!(
                hook.starts_with(&format!("{name}: tp_btf ")) && !hook.contains("not used"),
                "{flags:?}: {hook}"
            );
        }
    }
}
