//! Tests of doctor/mod.rs.
use super::*;
use crate::cgroup::CgroupVersion;

const HYBRID: &str = "\
34 33 0:29 / /sys/fs/cgroup/unified rw shared:10 - cgroup2 cgroup2 rw,nsdelegate
39 33 0:34 / /sys/fs/cgroup/memory rw shared:15 - cgroup cgroup rw,memory
40 33 0:35 / /sys/fs/cgroup/cpu\\040set rw shared:16 - cgroup cgroup rw,cpuset
42 23 0:13 / /sys/kernel/tracing rw,relatime - tracefs tracefs rw
";
const PURE_V2: &str = "33 25 0:28 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n";

fn hook(hook: Hook, attached: Result<&str, &str>) -> HookStatus {
    let attached = attached.map(str::to_owned).map_err(str::to_owned);
    HookStatus {
        hook,
        attached,
        notes: vec![],
    }
}

#[test]
fn lines_are_single_and_bounded() {
    assert_eq!(one_line("a\n\n  b \nc"), "a / b / c");
    let long = one_line(&"x".repeat(1000));
    assert_eq!(long.chars().count(), 401);
    assert!(long.ends_with('…'));
    let check = sys("kernel", Fail, "6.18\nboom");
    assert_eq!(human_line(&check), "FAIL  kernel: 6.18 / boom");
}

#[test]
fn hooks_say_what_they_cost() {
    let oom = hook_check(&hook(Hook::OomKill, Ok("tp_btf oom/mark_victim")));
    assert_eq!(human_line(&oom), "ok    oom_kill: tp_btf oom/mark_victim");
    let memcg = hook_check(&hook(
        Hook::MemcgPages,
        Ok("tp_btf memcg/count_memcg_events"),
    ));
    assert!(
        memcg.detail.contains("off by default: --memcg-events"),
        "{memcg:?}"
    );
    assert!(memcg.detail.contains("ns per page fault"), "{memcg:?}");
    let node = hook_check(&hook(Hook::NodeReclaim, Err("no such tracepoint")));
    assert_eq!(node.status, Warn);
    assert_eq!(
        node.detail,
        "unavailable (no such tracepoint); without it: no node reclaim stalls"
    );
    let oom = hook_check(&hook(Hook::OomKill, Err("no tracefs")));
    assert_eq!((oom.status, oom.kind), (Fail, CheckKind::Hook));
    for hook in Hook::ALL {
        assert!(
            HOOK_ROLES.iter().any(|role| role.0 == hook),
            "doctor says nothing of what {hook} gives"
        );
    }
}

#[test]
fn verdict_needs_the_oom_hook_and_no_failure() {
    let ok = hook_check(&hook(Hook::OomKill, Ok("tp_btf oom/mark_victim")));
    let warn = hook_check(&hook(Hook::Throttled, Err("x")));
    assert!(failing(&[sys("kernel", Good, "6.18"), ok.clone(), warn.clone()]).is_empty());
    assert_eq!(failing(&[warn]), ["oom_kill"]);
    let no_root = privileges_check(65534, Some(0));
    assert_eq!(
        failing(&[no_root, sys("btf", Fail, "x"), ok]),
        ["privileges", "btf"]
    );
}

#[test]
fn cgroup_layouts() {
    let v1 = MemoryHierarchy {
        root: "/sys/fs/cgroup/memory".into(),
        version: CgroupVersion::V1,
    };
    let hybrid = cgroup_check(HYBRID, Some(&v1));
    assert_eq!(hybrid.status, Good);
    assert_eq!(
        hybrid.detail,
        "hybrid (2 v1 hierarchies, cgroup2 at /sys/fs/cgroup/unified); \
             memory controller: v1 at /sys/fs/cgroup/memory"
    );
    let v2 = MemoryHierarchy {
        root: "/sys/fs/cgroup".into(),
        version: CgroupVersion::V2,
    };
    let pure = cgroup_check(PURE_V2, Some(&v2));
    assert!(
        pure.detail
            .starts_with("v2 at /sys/fs/cgroup; memory controller: v2")
    );
    let none = cgroup_check(PURE_V2, None);
    assert_eq!(none.status, Fail);
    assert_eq!(
        cgroup_check("", None).detail.split(';').next(),
        Some("no cgroup filesystem mounted")
    );
}

#[test]
fn tracefs_mounted_or_not() {
    assert_eq!(
        tracefs_check(HYBRID).detail,
        "mounted at /sys/kernel/tracing"
    );
    let missing = tracefs_check(PURE_V2);
    assert_eq!(missing.status, Note);
    assert!(missing.detail.starts_with("not mounted"), "{missing:?}");
}

#[test]
fn privileges() {
    let all = privileges_check(0, Some(u64::MAX));
    assert_eq!(all.status, Good);
    assert_eq!(
        all.detail,
        "root with CAP_SYS_ADMIN, CAP_BPF, CAP_PERFMON, CAP_SYSLOG"
    );
    let bpf = privileges_check(998, Some((1 << 39) | (1 << 38)));
    assert_eq!(bpf.status, Warn);
    assert!(
        bpf.detail
            .starts_with("uid 998 with CAP_BPF, CAP_PERFMON; without CAP_SYS_ADMIN")
    );
    let nobody = privileges_check(65534, Some(0));
    assert_eq!(nobody.status, Fail);
    assert!(nobody.detail.contains("needs root"), "{nobody:?}");
    assert_eq!(privileges_check(0, None).status, Fail);
}

#[test]
fn fentry_probe() {
    assert_eq!(fentry_check(None).status, Note);
    assert_eq!(fentry_check(Some(Ok(true))).status, Good);
    let eperm = fentry_check(Some(Err("bpf_prog_load failed: EPERM".into())));
    assert_eq!((eperm.status, eperm.kind), (Note, CheckKind::Probe));
    assert!(eperm.detail.contains("EPERM"));
}

#[test]
fn parses() {
    use clap::Parser as _;
    let cli = crate::cli::Cli::try_parse_from(["memstall", "doctor", "--json"]).unwrap();
    match cli.command {
        Some(crate::cli::Command::Doctor(args)) => assert!(args.json && !args.verbose),
        other => panic!("{other:?}"),
    }
    let cli = crate::cli::Cli::try_parse_from(["memstall", "doctor", "-v"]).unwrap();
    assert!(matches!(cli.command, Some(crate::cli::Command::Doctor(a)) if a.verbose));
}

#[test]
fn diagnostics_seen_while_watching() {
    use memstall_common::{Diagnostic, StallKind};

    use crate::kernel::maps::Diagnostics;
    let second = Duration::from_secs(1);
    let clean = Diagnostics {
        counts: Diagnostic::ALL.map(|kind| (kind, 0)).to_vec(),
        lost_windows: Vec::new(),
    };
    let check = watch::diagnostics_check(Some(&clean), second);
    assert_eq!((check.status, check.kind), (Good, CheckKind::Probe));
    assert_eq!(check.name, "diagnostics");
    let mut lost = clean.clone();
    lost.counts[0].1 = 3;
    lost.lost_windows = vec![(StallKind::MemcgReclaim, 3)];
    let check = watch::diagnostics_check(Some(&lost), second);
    assert_eq!(check.status, Warn);
    assert!(
        check.detail.starts_with("in 1.0 s: end_without_begin 3 ("),
        "{}",
        check.detail
    );
    assert_eq!(watch::diagnostics_check(None, second).status, Warn);
}

#[test]
fn json_report_shape() {
    let checks = [sys("kernel", Good, "6.18")];
    let report = Report {
        ok: true,
        failing: &[],
        checks: &checks,
    };
    assert_eq!(
        serde_json::to_string(&report).unwrap(),
        r#"{"ok":true,"failing":[],"checks":[{"name":"kernel","kind":"system","status":"ok","detail":"6.18"}]}"#
    );
}
