//! Tests of prometheus/mod.rs.
use super::*;
use crate::{
    aggregate::{FaultRow, MemcgPages, StallStats, SummaryRow},
    event::{Explanation, KillSource, Labels, OomKill},
};
use memstall_common::StallKind;

#[test]
fn log2_buckets_map_to_exact_bounds() {
    assert_eq!(BOUNDS_US[0], 2);
    assert_eq!(BOUNDS_US[25], 1 << 26);
    // bcc bucket 0 is [0, 1] µs, bucket k [2^k, 2^(k+1) - 1] µs: le = high_us + 1.
    assert_eq!(bucket_index(1), 0);
    assert_eq!(bucket_index(3), 1);
    assert_eq!(bucket_index(7), 2);
    assert_eq!(bucket_index((1 << 26) - 1), 25);
    // Past the last bound (cannot happen with 60 s stalls): +Inf, never lost.
    assert_eq!(bucket_index((1 << 27) - 1), BOUNDS_US.len());
    assert_eq!(bucket_index(u64::MAX), BOUNDS_US.len());
    // Not a power of two: rounded up to the next bound, still a true `le`.
    assert_eq!(bucket_index(4), 2);
    // Every row bucket of a real histogram lands on its own bound.
    let mut stats = StallStats::default();
    for ns in [500, 1_999, 2_000, 3_999, 70_000, 5_000_000, 60_000_000_000] {
        stats.record(ns, 0, 0);
    }
    for bucket in stats.log2_buckets() {
        let i = bucket_index(bucket.high_us);
        assert_eq!(BOUNDS_US[i], bucket.high_us + 1, "{bucket:?}");
    }
}

fn row(latencies_ns: &[u64]) -> SummaryRow {
    let mut stats = StallStats::default();
    for &ns in latencies_ns {
        stats.record(ns, 1, 2);
    }
    stats.row("/svc", StallKind::MemcgReclaim)
}

fn interval(rows: Vec<SummaryRow>) -> Summary {
    Summary {
        scope: Scope::Interval,
        rows,
        ..Default::default()
    }
}

fn sample<'a>(text: &'a str, series: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
}

#[test]
fn intervals_fold_into_cumulative_histograms() {
    let mut metrics = Metrics::new();
    metrics.summary(&interval(vec![row(&[1_500, 3_000, 3_500])]));
    metrics.summary(&interval(vec![row(&[10_000_000, 100])]));
    // Totals and removed-cgroup rows repeat what intervals carry: ignored.
    for scope in [Scope::Total, Scope::Removed] {
        metrics.summary(&Summary {
            scope,
            ..interval(vec![row(&[5_000; 4])])
        });
    }
    let text = metrics.render();
    let series = |suffix: &str, le: Option<&str>| {
        let labels = match le {
            Some(le) => format!("{{le=\"{le}\",cgroup=\"/svc\",kind=\"memcg_reclaim\"}}"),
            None => "{cgroup=\"/svc\",kind=\"memcg_reclaim\"}".to_owned(),
        };
        sample(&text, &format!("memstall_stall_seconds_{suffix}{labels}"))
            .unwrap_or_else(|| panic!("{suffix} {le:?} in\n{text}"))
            .to_owned()
    };
    assert_eq!(series("count", None), "5");
    let sum: f64 = series("sum", None).parse().unwrap();
    assert!((sum - 0.010_008_1).abs() < 1e-12, "{sum}");
    // Cumulative: 1.5 µs and 100 ns ≤ 2 µs; 3 and 3.5 µs ≤ 4 µs; 10 ms ≤ 16.384 ms.
    let le = |us: u64| BOUNDS_US.iter().position(|&b| b == us).unwrap();
    let bucket = |us: u64| {
        let value = BOUNDS_US[le(us)] as f64 / 1e6;
        let line = text
            .lines()
            .filter(|l| l.starts_with("memstall_stall_seconds_bucket{"))
            .find(|l| {
                l.split("le=\"")
                    .nth(1)
                    .and_then(|rest| rest.split('"').next())
                    .and_then(|v| v.parse::<f64>().ok())
                    == Some(value)
            })
            .unwrap_or_else(|| panic!("le {us} µs in\n{text}"));
        line.rsplit(' ').next().unwrap().parse::<u64>().unwrap()
    };
    assert_eq!(bucket(2), 2);
    assert_eq!(bucket(4), 4);
    assert_eq!(bucket(8192), 4);
    assert_eq!(bucket(16384), 5);
    assert_eq!(bucket(1 << 26), 5);
    assert_eq!(series("bucket", Some("+Inf")), "5");
    assert!(
        text.contains("# TYPE memstall_stall_seconds histogram"),
        "{text}"
    );
    assert!(
        text.contains("# UNIT memstall_stall_seconds seconds"),
        "{text}"
    );
    assert!(text.ends_with("# EOF\n"), "{text}");
}

#[test]
fn counters_oom_kills_drops_and_hooks_render() {
    let mut metrics = Metrics::new();
    let counters = Summary {
        faults: vec![FaultRow {
            cgroup: "/svc".into(),
            minor: 7,
            major: 1,
            ..Default::default()
        }],
        memcg_pages: vec![MemcgPages::new("/svc".into(), [10, 5, 4, 3, 0, 0])],
        kswapd_wakeups: vec![("/svc".into(), 2)],
        kswapd: Some(crate::aggregate::KswapdActivity {
            runs: 3,
            awake_ns: 250_000_000,
            ..Default::default()
        }),
        dropped: Some(3),
        ..interval(Vec::new())
    };
    metrics.summary(&counters);
    metrics.summary(&Summary {
        dropped: Some(5),
        ..counters
    });
    let kill = OomKill {
        time_ns: 1_700_000_000_500_000_000,
        cgroup: Some("/svc/trigger".into()),
        pid: 10,
        tgid: 10,
        comm: "alloc".into(),
        victim_pid: 11,
        victim_tgid: 11,
        victim_comm: "hog".into(),
        victim_cgroup: Some("/svc/a".into()),
        victim_uid: Some(0),
        source: KillSource::TpBtf,
        explanation: Explanation {
            constraint: Some("memcg".into()),
            oom_cgroup: Some("/svc".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    metrics.event(&Event::OomKill(Box::new(kill.clone())));
    metrics.event(&Event::OomKill(Box::new(kill)));
    metrics.hooks(&[
        HookStatus {
            hook: crate::kernel::attach::Hook::OomKill,
            attached: Ok("tp_btf oom/mark_victim".into()),
            notes: Vec::new(),
        },
        HookStatus {
            hook: crate::kernel::attach::Hook::NodeReclaim,
            attached: Err("no such tracepoint".into()),
            notes: Vec::new(),
        },
    ]);
    let mut sink = PrometheusSink::new(Arc::new(Mutex::new(metrics)));
    sink.finish(&RunSummary {
        dropped: 6,
        ..Default::default()
    })
    .unwrap();
    let text = locked(&sink.metrics).render();
    for (series, value) in [
        (
            r#"memstall_page_faults_total{cgroup="/svc",kind="minor"}"#,
            "14",
        ),
        (
            r#"memstall_page_faults_total{cgroup="/svc",kind="major"}"#,
            "2",
        ),
        (
            r#"memstall_lru_pages_scanned_total{cgroup="/svc",reclaimer="direct"}"#,
            "20",
        ),
        (
            r#"memstall_lru_pages_reclaimed_total{cgroup="/svc",reclaimer="direct"}"#,
            "10",
        ),
        (
            r#"memstall_lru_pages_scanned_total{cgroup="/svc",reclaimer="kswapd"}"#,
            "8",
        ),
        (
            r#"memstall_lru_pages_reclaimed_total{cgroup="/svc",reclaimer="kswapd"}"#,
            "6",
        ),
        (r#"memstall_kswapd_wakeups_total{cgroup="/svc"}"#, "4"),
        ("memstall_kswapd_runs_total", "6"),
        ("memstall_kswapd_awake_seconds_total", "0.5"),
        (
            r#"memstall_oom_kills_total{cgroup="/svc/a",constraint="memcg"}"#,
            "2",
        ),
        (
            r#"memstall_last_oom_kill_timestamp_seconds{cgroup="/svc/a"}"#,
            "1700000000.5",
        ),
        ("memstall_ring_buffer_dropped_events_total", "6"),
        (r#"memstall_hook_up{hook="oom_kill"}"#, "1"),
        (r#"memstall_hook_up{hook="node_reclaim"}"#, "0"),
    ] {
        assert_eq!(sample(&text, series), Some(value), "{series} in\n{text}");
    }
    // No per-process labels.
    assert!(!text.contains("hog") && !text.contains("pid"), "{text}");
    assert!(text.contains("# TYPE memstall_oom_kills counter"), "{text}");
}

/// A cgroup name with quotes, backslashes, markup and a newline stays one escaped label value:
/// it cannot end the label, forge a sample or a comment line.
#[test]
fn hostile_cgroup_names_stay_inside_their_label() {
    let mut metrics = Metrics::new();
    let mut stats = StallStats::default();
    stats.record(2_000, 1, 1);
    let name = "/a\"b\\c<b>\nmemstall_oom_kills_total 99\n# x";
    metrics.summary(&interval(vec![stats.row(name, StallKind::MemcgReclaim)]));
    let text = metrics.render();
    let escaped = "cgroup=\"/a\\\"b\\\\c<b>\\nmemstall_oom_kills_total 99\\n# x\"";
    assert!(text.contains(escaped), "{text}");
    assert!(
        !text
            .lines()
            .any(|l| l.starts_with("memstall_oom_kills_total 99")),
        "a label forged a sample: {text}"
    );
}

#[test]
fn pressure_by_cause_and_psi() {
    let mut metrics = Metrics::new();
    let row = crate::aggregate::PressureRow {
        cgroup: "/svc".into(),
        stall_ns: 3_000_000_000,
        by_cause: [
            ("memcg_reclaim", 2_000_000_000),
            ("throttled", 1_000_000_000),
        ]
        .into(),
        tasks: 1,
        psi_some_ns: Some(1_500_000_000),
        psi_full_ns: None,
        ..Default::default()
    };
    for _ in 0..2 {
        metrics.summary(&Summary {
            pressure: vec![row.clone()],
            ..interval(Vec::new())
        });
    }
    let text = metrics.render();
    for (series, want) in [
        (
            "memstall_memory_stall_seconds_total{cgroup=\"/svc\",cause=\"memcg_reclaim\"}",
            "4.0",
        ),
        (
            "memstall_memory_stall_seconds_total{cgroup=\"/svc\",cause=\"throttled\"}",
            "2.0",
        ),
        (
            "memstall_psi_memory_some_seconds_total{cgroup=\"/svc\"}",
            "3.0",
        ),
    ] {
        assert_eq!(sample(&text, series), Some(want), "{series} in\n{text}");
    }
    assert!(
        !text.contains("memstall_psi_memory_full_seconds_total{"),
        "{text}"
    );
}

#[test]
fn kills_by_killer_and_oom_eta() {
    use crate::event::{Kill, Killer, OomRisk, RiskReason};
    let mut metrics = Metrics::new();
    for killer in [Killer::Oomd, Killer::Oomd, Killer::CgroupKill] {
        metrics.event(&Event::Kill(Box::new(Kill {
            cgroup: Some("/svc".into()),
            killer,
            ..Kill::default()
        })));
    }
    metrics.event(&Event::OomKill(Box::new(OomKill {
        victim_cgroup: Some("/svc".into()),
        killer: Killer::KernelOom,
        ..OomKill::default()
    })));
    let warning = OomRisk {
        cgroup: "/svc".into(),
        time_ns: 0,
        eta_s: Some(4.5),
        headroom_kb: 1,
        reason: RiskReason::Eta,
        usage_kb: 0,
        limit_kb: 0,
        reclaimable_kb: 0,
        growth_kb_per_s: 0.0,
        signals: Vec::new(),
        next_victim_pid: None,
        next_victim_comm: None,
        next_victim_points: None,
        next_victim_freeable_kb: None,
        next_victim_shmem_kb: None,
    };
    metrics.event(&Event::OomRisk(Box::new(warning.clone())));
    let text = metrics.render();
    for (series, want) in [
        ("memstall_kills_total{cgroup=\"/svc\",killer=\"oomd\"}", "2"),
        (
            "memstall_kills_total{cgroup=\"/svc\",killer=\"cgroup_kill\"}",
            "1",
        ),
        (
            "memstall_kills_total{cgroup=\"/svc\",killer=\"kernel_oom\"}",
            "1",
        ),
        ("memstall_oom_eta_seconds{cgroup=\"/svc\"}", "4.5"),
    ] {
        assert_eq!(sample(&text, series), Some(want), "{series} in\n{text}");
    }
    metrics.event(&Event::OomRisk(Box::new(OomRisk {
        reason: RiskReason::Cleared,
        eta_s: None,
        ..warning
    })));
    let text = metrics.render();
    assert!(!text.contains("memstall_oom_eta_seconds{"), "{text}");
}

/// Kubernetes names become `namespace`, `pod` and `container` labels on every per-cgroup
/// series of a pod's cgroup (never its uid or container id); other cgroups keep their labels.
#[test]
fn pod_cgroups_carry_namespace_pod_and_container() {
    let pod_cgroup = "/kubepods/burstable/pod8d3a/0a1b2c3d4e5f";
    let labels = Labels {
        qos: Some("burstable".into()),
        pod_uid: Some("8d3a".into()),
        pod: Some("web-0".into()),
        container_id: Some("0a1b2c3d4e5f".into()),
        namespace: Some("shop".into()),
        container: Some("nginx".into()),
        ..Default::default()
    };
    let mut stats = StallStats::default();
    stats.record(2_000, 1, 1);
    let mut metrics = Metrics::new();
    metrics.summary(&Summary {
        faults: vec![FaultRow {
            cgroup: pod_cgroup.into(),
            minor: 3,
            ..Default::default()
        }],
        labels: [(pod_cgroup.to_owned(), labels.clone())].into(),
        ..interval(vec![
            stats.row(pod_cgroup, StallKind::MemcgReclaim),
            stats.row("/svc", StallKind::MemcgReclaim),
        ])
    });
    metrics.event(&Event::OomKill(Box::new(OomKill {
        time_ns: 1_700_000_000_000_000_000,
        victim_cgroup: Some(pod_cgroup.into()),
        victim_labels: Some(labels),
        explanation: Explanation {
            constraint: Some("memcg".into()),
            ..Default::default()
        },
        ..Default::default()
    })));
    let text = metrics.render();
    let names = r#"namespace="shop",pod="web-0",container="nginx""#;
    for series in [
        format!(
            r#"memstall_stall_seconds_count{{cgroup="{pod_cgroup}",kind="memcg_reclaim",{names}}}"#
        ),
        format!(r#"memstall_page_faults_total{{cgroup="{pod_cgroup}",kind="minor",{names}}}"#),
        format!(r#"memstall_oom_kills_total{{cgroup="{pod_cgroup}",constraint="memcg",{names}}}"#),
        format!(r#"memstall_last_oom_kill_timestamp_seconds{{cgroup="{pod_cgroup}",{names}}}"#),
        r#"memstall_stall_seconds_count{cgroup="/svc",kind="memcg_reclaim"}"#.to_owned(),
    ] {
        assert!(sample(&text, &series).is_some(), "{series} in\n{text}");
    }
    assert!(
        text.contains(&format!(
            r#"{{le="+Inf",cgroup="{pod_cgroup}",kind="memcg_reclaim",{names}}}"#
        )),
        "{text}"
    );
    // The ids stay in the cgroup path, never in labels of their own.
    assert!(!text.contains("uid=") && !text.contains("id=\""), "{text}");
}
