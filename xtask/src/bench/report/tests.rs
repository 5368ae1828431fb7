use super::*;
use crate::bench::{
    SettingRuns, StormRuns,
    cgroup_iter::IterCost,
    own_cost::{IntervalCost, StartupRss, WalkCost},
    storms::Sample,
};

fn run_with(fault_ratio: Estimate, summary_ms: Estimate, rss: Estimate) -> BenchRun {
    let sample = Some(Sample {
        cpu_s: 1.0,
        wall_s: 1.0,
        evidence: 7,
        compact_stalls: 0,
    });
    let settings = Setting::ALL
        .iter()
        .map(|&setting| SettingRuns {
            setting,
            samples: vec![sample; 3],
            cpu_ratio: Some(fault_ratio),
            wall_ratio: Some(fault_ratio),
        })
        .collect();
    BenchRun {
        date: "today".into(),
        kernel: "6.18".into(),
        cpus: 2,
        mem_gib: 24.0,
        load_before: "1.0".into(),
        load_after: "2.0".into(),
        minutes: 12.0,
        rounds: 15,
        quick: false,
        memstall_hooks: "memstall: tracing".into(),
        storms: vec![StormRuns {
            storm: Storm::Faults,
            skipped: None,
            settings,
        }],
        programs: Vec::new(),
        interval: vec![IntervalCost {
            cgroups: 10_000,
            scope: Scope::Default,
            cpu_ms: vec![1.0],
            estimate: Some(summary_ms),
            rss_mib: 18.0,
        }],
        walk: Vec::new(),
        iter: Vec::new(),
        iter_error: Some("no clang".into()),
        startup_rss: StartupRss {
            peak_mib: vec![29.0],
            rss_mib: vec![15.0],
            estimate: Some(rss),
        },
        ingest: "ingest: fast".into(),
        failures: Vec::new(),
    }
}

fn at(median: f64, low: f64, high: f64) -> Estimate {
    Estimate { median, low, high }
}

#[test]
fn goals_read_met_missed_or_undecided_with_their_figure() {
    let run = run_with(
        at(1.01, 0.99, 1.03),
        at(0.5, 0.4, 0.6),
        at(29.0, 28.8, 29.2),
    );
    let text = render(&run, None);
    // 1.03 reaches past 1.02 but not past 1.05.
    assert!(
        text.contains("| fault storm CPU time, memstall (defaults, --interval 1), ≤ 1.02× | 1.010× [0.990–1.030] | undecided |"),
        "{text}"
    );
    assert!(text.contains("memstall --faults ebpf, ≤ 1.05× | 1.010× [0.990–1.030] | met |"));
    assert!(text.contains("< 20 ms | 0.50 ms [0.40–0.60] | met |"));
    assert!(text.contains("| start-up peak RSS < 32 MiB | 29.0 MiB [28.8–29.2] | met |"));
    assert!(text.contains("Not measured here: no clang."));
    assert!(
        text.contains(
            "Decision: memstall keeps the file walk; the iterator was not measured here."
        )
    );
    assert!(!text.contains("Agreement"));
}

#[test]
fn agreement_is_overlap_of_intervals() {
    let before = run_with(
        at(1.01, 0.99, 1.03),
        at(0.5, 0.4, 0.6),
        at(29.0, 28.8, 29.2),
    );
    let now = run_with(
        at(1.10, 1.08, 1.12),
        at(0.55, 0.45, 0.65),
        at(29.1, 28.9, 29.3),
    );
    let text = render(&now, Some(&before));
    assert!(
        text.contains("## Agreement with the previous run (today"),
        "{text}"
    );
    assert!(
        text.contains("| page faults, memstall --faults ebpf, CPU | 1.100× [1.080–1.120] | 1.010× [0.990–1.030] | **no** |"),
        "{text}"
    );
    assert!(text.contains(
        "| start-up peak RSS | 29.10 MiB [28.90–29.30] | 29.00 MiB [28.80–29.20] | yes |"
    ));
    // 3 settings × CPU and wall disagree; the summary and the RSS agree.
    assert!(text.contains("2 of 8 figures agree."), "{text}");
}

/// The run with a file walk and an iterator measured over 10 000 cgroups.
fn with_walks(walk: Estimate, iter: Estimate) -> BenchRun {
    let mut run = run_with(at(1.0, 1.0, 1.0), at(0.5, 0.4, 0.6), at(29.0, 28.8, 29.2));
    run.walk = vec![WalkCost {
        files: 10_006,
        cpu_ms: vec![walk.median],
        estimate: Some(walk),
    }];
    run.iter = vec![IterCost {
        cgroups: 10_006,
        cpu_ms: vec![iter.median],
        estimate: Some(iter),
        checked: "memory.stat pgfault 2050 of a test cgroup = its event slot 12".into(),
    }];
    run.iter_error = None;
    run
}

#[test]
fn the_cheaper_walk_is_picked_only_when_the_intervals_part() {
    let text = render(
        &with_walks(at(500.0, 485.0, 577.0), at(8.5, 8.1, 10.4)),
        None,
    );
    assert!(
        text.contains("| 10006 | 8.50 ms [8.10–10.40] | 500.0 ms [485.0–577.0] | memory.stat pgfault 2050 of a test cgroup = its event slot 12 |"),
        "{text}"
    );
    assert!(text.contains("Decision: the measurement picks the iterator, 59× less CPU than the file walk over 10006 memory cgroups (8.50 ms against 500.0 ms). memstall does not use it yet"), "{text}");
    let text = render(&with_walks(at(5.0, 4.0, 6.0), at(8.5, 8.1, 10.4)), None);
    assert!(text.contains("Decision: the file walk is cheaper here, so memstall keeps it."));
    let text = render(&with_walks(at(9.0, 8.0, 12.0), at(8.5, 8.1, 10.4)), None);
    assert!(text.contains("Decision: undecided (the intervals overlap over 10006 memory cgroups), so memstall keeps the file walk."));
}
