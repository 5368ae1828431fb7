//! `memstall doctor` on this kernel: the checks an on-call engineer reads, agreeing with the
//! machine and with what a real run attaches.
use std::process::{Command, Output};

use memstall_tests::{MemoryHierarchy, memstall_bin, read_json_lines};
use serde_json::Value;

fn memstall(args: &[&str]) -> Output {
    Command::new(memstall_bin()).args(args).output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn uname_r() -> String {
    let out = Command::new("uname").arg("-r").output().unwrap();
    text(&out.stdout).trim().to_owned()
}

/// The `NAME: detail` line of a human report.
fn line<'a>(stdout: &'a str, name: &str) -> &'a str {
    let prefix = format!("{name}: ");
    stdout
        .lines()
        .find(|l| l.get(6..).is_some_and(|rest| rest.starts_with(&prefix)))
        .unwrap_or_else(|| panic!("no `{name}` line in:\n{stdout}"))
}

/// Hook names of a real 1-second run (`run_end.hooks`, "name: how").
fn hooks_of_a_real_run() -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("events.jsonl");
    let out = memstall(&["--json", json.to_str().unwrap(), "--duration", "1"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let events = read_json_lines(&json).unwrap();
    let end = events.last().unwrap();
    assert_eq!(end["type"], "run_end");
    let hooks = end["hooks"].as_array().unwrap();
    let names: Vec<String> = hooks
        .iter()
        .map(|h| h.as_str().unwrap().split_once(": ").unwrap().0.to_owned())
        .collect();
    assert!(names.contains(&"oom_kill".to_owned()), "{names:?}");
    names
}

#[test]
fn human_report_matches_the_machine() {
    let out = memstall(&["doctor"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(!text(&out.stderr).contains("panicked"));
    let kernel = line(&stdout, "kernel");
    assert!(kernel.starts_with("ok    kernel: "), "{kernel}");
    assert!(kernel.contains(&uname_r()), "{kernel} vs {}", uname_r());
    let btf = line(&stdout, "btf");
    assert!(
        btf.starts_with("ok    btf: present at /sys/kernel/btf/vmlinux ("),
        "{btf}"
    );
    assert!(btf.ends_with("MiB)"), "{btf}");
    let hierarchy = MemoryHierarchy::detect().unwrap();
    let cgroups = line(&stdout, "cgroups");
    let memory = format!(
        "memory controller: {} at {}",
        hierarchy.version_name(),
        hierarchy.root.display()
    );
    assert!(cgroups.contains(&memory), "{cgroups}");
    let privileges = line(&stdout, "privileges");
    assert!(
        privileges.contains("privileges: root with "),
        "{privileges}"
    );
    assert!(!privileges.starts_with("FAIL"), "{privileges}");
    assert!(line(&stdout, "oom_kill").starts_with("ok    oom_kill: "));
    line(&stdout, "tracefs");
    line(&stdout, "fentry");
    assert!(
        stdout
            .trim_end()
            .ends_with("memstall doctor: tracing can work here"),
        "{stdout}"
    );
    for hook in hooks_of_a_real_run() {
        line(&stdout, &hook);
    }
    // Opt-in hooks are probed too, and say what they cost, or what their absence costs
    // (memcg/count_memcg_events is missing before 6.13).
    let memcg = line(&stdout, "memcg_pages");
    if memcg.starts_with("ok") {
        assert!(memcg.contains("per page fault"), "{memcg}");
    } else {
        assert!(memcg.contains("without it"), "{memcg}");
    }
}

#[test]
fn json_report_has_every_check() {
    let out = memstall(&["doctor", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert_eq!(stdout.lines().count(), 1, "one JSON object: {stdout}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["failing"], serde_json::json!([]));
    let checks = report["checks"].as_array().unwrap();
    let find = |name: &str| {
        checks
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no {name} in {report}"))
    };
    for c in checks {
        assert!(
            ["ok", "note", "warn", "fail"].contains(&c["status"].as_str().unwrap()),
            "{c}"
        );
        assert!(!c["detail"].as_str().unwrap().contains('\n'), "{c}");
    }
    assert!(
        find("kernel")["detail"]
            .as_str()
            .unwrap()
            .contains(&uname_r())
    );
    assert_eq!(find("btf")["status"], "ok");
    assert!(
        find("btf")["detail"]
            .as_str()
            .unwrap()
            .starts_with("present at ")
    );
    let root = MemoryHierarchy::detect().unwrap().root;
    let cgroups = find("cgroups")["detail"].as_str().unwrap().to_owned();
    assert!(cgroups.contains(&root.display().to_string()), "{cgroups}");
    assert_eq!(find("oom_kill")["status"], "ok");
    assert_eq!(find("fentry")["kind"], "probe");
    for hook in hooks_of_a_real_run() {
        assert_eq!(find(&hook)["kind"], "hook", "{hook}");
    }
}

#[test]
fn unprivileged_doctor_names_privileges() {
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(memstall_bin())
        .arg("doctor")
        .output()
        .expect("setpriv (util-linux)");
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line expected: {stderr}");
    assert!(stderr.starts_with("memstall: doctor: "), "{stderr}");
    assert!(stderr.contains("failing: privileges"), "{stderr}");
    assert!(
        line(&stdout, "privileges").starts_with("FAIL  privileges: uid 65534"),
        "{stdout}"
    );
    assert!(line(&stdout, "hooks").contains("not probed"), "{stdout}");
    // The checks that need no privileges still report.
    assert!(line(&stdout, "kernel").contains(&uname_r()));
    let json = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(memstall_bin())
        .args(["doctor", "--json"])
        .output()
        .unwrap();
    assert_eq!(json.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(
        (report["ok"].clone(), report["failing"][0].clone()),
        (false.into(), "privileges".into())
    );
}

/// `doctor -v` loads every program with its log on (the logging code must pass the verifier
/// wherever the quiet programs do), lets the hooks run a second, and finds nothing wrong.
#[test]
fn verbose_runs_the_hooks_with_their_log() {
    let report = |args: &[&str]| -> Value {
        let out = memstall(args);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        assert!(!text(&out.stderr).contains("panicked"));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let statuses = |report: &Value| -> Vec<(String, String)> {
        let checks = report["checks"].as_array().unwrap();
        let hooks = checks.iter().filter(|c| c["kind"] == "hook");
        hooks
            .map(|c| (c["name"].to_string(), c["status"].to_string()))
            .collect()
    };
    let quiet = report(&["doctor", "--json"]);
    let verbose = report(&["doctor", "-v", "--json"]);
    assert_eq!(statuses(&verbose), statuses(&quiet));
    let find = |report: &Value| {
        let checks = report["checks"].as_array().unwrap();
        checks.iter().find(|c| c["name"] == "diagnostics").cloned()
    };
    assert_eq!(find(&quiet), None, "only -v watches");
    let diagnostics = find(&verbose).expect("a diagnostics check with -v");
    assert_eq!(
        (diagnostics["kind"].as_str(), diagnostics["status"].as_str()),
        (Some("probe"), Some("ok")),
        "{diagnostics}"
    );
    assert!(
        diagnostics["detail"]
            .as_str()
            .unwrap()
            .starts_with("no unexpected state in the programs in 1.0 s"),
        "{diagnostics}"
    );
}
