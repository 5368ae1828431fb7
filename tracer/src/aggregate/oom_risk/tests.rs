//! Tests of oom_risk/mod.rs.
use std::fs;

use super::*;

#[test]
fn slope_needs_enough_samples() {
    let mut history = VecDeque::new();
    for i in 0..3 {
        history.push_back((f64::from(i) * 0.25, f64::from(i) * 2560.0));
    }
    assert_eq!(slope(&history, 0.0), None);
    history.push_back((0.75, 7680.0));
    let s = slope(&history, 0.0).unwrap();
    assert!((s - 10240.0).abs() < 1e-6, "{s}");
    assert_eq!(slope(&history, 0.5), None, "only two in the window");
}

#[test]
fn warns_a_cgroup_growing_toward_its_limit_and_clears() {
    let dir = tempfile::tempdir().unwrap();
    let cg = dir.path().join("app");
    fs::create_dir(&cg).unwrap();
    fs::write(cg.join("memory.max"), "67108864\n").unwrap();
    fs::write(
        cg.join("memory.stat"),
        "anon 0\ninactive_file 0\nactive_file 0\n",
    )
    .unwrap();
    fs::write(cg.join("cgroup.procs"), format!("{}\n", std::process::id())).unwrap();
    let mut watch = RiskWatch::new(dir.path(), CgroupVersion::V2, &["/app".to_owned()]);
    let mut warnings = Vec::new();
    for step in 0..8u64 {
        // 10 MiB/s from 3 MiB, sampled every quarter second.
        let usage = (3 << 20) + step * (10 << 20) / 4;
        fs::write(cg.join("memory.current"), format!("{usage}\n")).unwrap();
        watch.last_sample = None;
        // The samples are taken as if a quarter second apart.
        watch.watches.get_mut("/app").unwrap().started -= Duration::from_millis(250);
        warnings.extend(watch.sample(step));
    }
    let first = warnings.first().expect("a warning");
    assert_eq!(first.reason, RiskReason::Eta);
    assert!(first.eta_s.is_some_and(|eta| eta < 30.0), "{first:?}");
    assert_eq!(first.next_victim_pid, Some(std::process::id()));
    assert_eq!(warnings.len(), 1, "not repeated: {warnings:?}");
    // The usage falls back (a kill): cleared once the trend is safe again.
    assert!(watch.killed("/app", 9).is_some());
    fs::write(cg.join("memory.current"), "1048576\n").unwrap();
    let mut cleared = None;
    for step in 0..6 {
        watch.last_sample = None;
        if let Some(r) = watch.sample(10 + step).into_iter().next() {
            cleared = Some(r);
        }
    }
    assert_eq!(cleared, None, "already cleared by the kill");
}
