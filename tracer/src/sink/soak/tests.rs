use super::{checks::stall_ns, series::*, *};
use crate::{
    aggregate::{FaultRow, SummaryRow},
    event::OomKill,
};

fn pressure(cgroup: &str, stall_ms: f64) -> crate::aggregate::PressureRow {
    crate::aggregate::PressureRow {
        cgroup: cgroup.into(),
        stall_ns: (stall_ms * 1e6) as u64,
        ..Default::default()
    }
}

fn config(dir: &std::path::Path, limits: Limits) -> SoakConfig {
    SoakConfig {
        limits,
        report: dir.join("r.html"),
        report_json: dir.join("r.json"),
        interval: None,
    }
}

fn row(cgroup: &str, kind: &'static str, count: u64, p99_ms: f64, total_ms: f64) -> SummaryRow {
    SummaryRow {
        cgroup: cgroup.into(),
        kind,
        count,
        total_ns: (total_ms * 1e6) as u64,
        p50_ns: (p99_ms * 1e6 / 2.0) as u64,
        p90_ns: 0,
        p99_ns: (p99_ms * 1e6) as u64,
        p999_ns: 0,
        max_ns: (p99_ms * 1e6) as u64,
        pages_reclaimed: 0,
        pages_scanned: 0,
        retries: 0,
        buckets: Vec::new(),
    }
}

#[test]
fn checks_name_each_breach() {
    let limits = Limits {
        max_oom_kills: 0,
        max_oom_risk: Some(0),
        max_p99: vec![
            P99Limit {
                kind: "memcg_reclaim",
                ms: 500.0,
            },
            P99Limit {
                kind: "direct_reclaim",
                ms: 10.0,
            },
        ],
        max_stall_per_minute_ms: Some(1000.0),
        max_growth_mib_per_hour: Some(64.0),
    };
    let measured = Measured {
        oom_kills: 1,
        last_kill: Some("memhog pid 7 in /svc".into()),
        oom_risks: 2,
        last_risk: Some("/svc: 512 kB left, limit in 3 s".into()),
        totals: vec![
            row("/svc", "memcg_reclaim", 10, 812.3, 2000.0),
            row("/svc/a", "memcg_reclaim", 3, 100.0, 200.0),
        ],
        worst_minute: Some((42.0, 1500.0)),
        growth: vec![
            ("/svc".into(), Some(120.5), "usage 10 -> 20 MiB".into()),
            ("/other".into(), None, "0 readable sample(s)".into()),
        ],
    };
    let checks = evaluate(&limits, &measured);
    let lines: Vec<(&str, bool)> = checks.iter().map(|c| (c.detail.as_str(), c.ok)).collect();
    assert_eq!(
        lines,
        [
            ("OOM kills 1 > 0 (last: memhog pid 7 in /svc)", false),
            (
                "OOM risk warnings 2 > 0 (last: /svc: 512 kB left, limit in 3 s)",
                false
            ),
            (
                "memcg_reclaim p99 812.3 ms > 500 ms (in /svc, 10 stall(s))",
                false
            ),
            ("direct_reclaim p99: no stalls (limit 10 ms)", true),
            (
                "stall time 1500 ms per minute > 1000 ms (worst window ending at 42 s)",
                false
            ),
            (
                "memory growth 120.5 MiB/h > 64 MiB/h (/svc: usage 10 -> 20 MiB)",
                false
            ),
            (
                "memory growth of /other not measured: 0 readable sample(s)",
                true
            ),
        ]
    );
    assert_eq!(checks[2].value, Some(812.3));
    assert_eq!(checks[6].value, None);

    let calm = Measured {
        totals: vec![row("/svc", "memcg_reclaim", 10, 12.0, 40.0)],
        worst_minute: Some((10.0, 40.0)),
        growth: vec![("/svc".into(), Some(-3.0), String::new())],
        ..Default::default()
    };
    assert!(evaluate(&limits, &calm).iter().all(|c| c.ok));
    // Only the OOM check when nothing else is asked.
    assert_eq!(evaluate(&Limits::default(), &calm).len(), 1);
}

#[test]
fn numbers_read_well() {
    assert_eq!(num(812.34), "812.3");
    assert_eq!(num(500.0), "500");
    assert_eq!(num(5.0), "5");
    assert_eq!(num(1.256), "1.26");
    assert_eq!(num(0.001), "0.001");
    assert_eq!(num(0.000123), "0.000123");
    assert_eq!(num(0.0), "0");
    assert_eq!(num(-14662.49), "-14662.5");
}

#[test]
fn slope_is_least_squares() {
    let mut trend = Trend::default();
    assert_eq!(trend.slope(), None);
    trend.add(0.0, 5.0);
    assert_eq!(trend.slope(), None, "one sample");
    // 1 GiB baseline growing 1 MiB per second: 3600 MiB/h, exact despite the offset.
    let mut trend = Trend::default();
    for t in 0..10_000 {
        trend.add(f64::from(t), (1u64 << 30) as f64 + f64::from(t) * MIB);
    }
    let mib_per_hour = trend.slope().unwrap() * 3600.0 / MIB;
    assert!((mib_per_hour - 3600.0).abs() < 1e-6, "{mib_per_hour}");
    assert!((trend.at(0.0).unwrap() - (1u64 << 30) as f64).abs() < 1.0);
    // Symmetric noise around a flat line: slope 0; the textbook example: y = 1 + 0.8x.
    let mut flat = Trend::default();
    for (t, v) in [
        (0.0, 10.0),
        (1.0, 12.0),
        (2.0, 8.0),
        (3.0, 8.0),
        (4.0, 12.0),
        (5.0, 10.0),
    ] {
        flat.add(t, v);
    }
    assert!(flat.slope().unwrap().abs() < 1e-9);
    let mut fit = Trend::default();
    for (t, v) in [(1.0, 2.0), (2.0, 3.0), (3.0, 5.0), (4.0, 4.0), (5.0, 6.0)] {
        fit.add(t, v);
    }
    assert!((fit.slope().unwrap() - 0.9).abs() < 1e-12);
    let mut same_time = Trend::default();
    same_time.add(1.0, 1.0);
    same_time.add(1.0, 2.0);
    assert_eq!(same_time.slope(), None);
    same_time.add(f64::NAN, 1.0);
    assert_eq!(same_time.samples(), 2);
}

#[test]
fn series_stay_bounded_and_span_the_run() {
    let mut mean = Series::with_cap(100, Merge::Mean);
    let mut max = Series::with_cap(100, Merge::Max);
    for i in 0..100_000u32 {
        let t = f64::from(i);
        mean.push(t, 2.0);
        max.push(t, if i == 54_321 { 99.0 } else { 1.0 });
        assert!(mean.len() <= 100, "{i}: {}", mean.len());
    }
    let points = mean.points();
    assert!(points.len() >= 50, "{}", points.len());
    assert!(
        points.iter().all(|p| (p.1 - 2.0).abs() < 1e-9),
        "means stay means"
    );
    assert!(
        points[0].0 < 1000.0 && points.last().unwrap().0 > 99_000.0,
        "{points:?}"
    );
    assert!(
        points.windows(2).all(|w| w[0].0 < w[1].0),
        "time keeps its order"
    );
    assert_eq!(max.max(), Some(99.0), "a spike survives merging");
    // The mean of a ramp is kept: every sample counts once whatever the merging.
    let mut ramp = Series::with_cap(10, Merge::Mean);
    for i in 0..1000 {
        ramp.push(f64::from(i), f64::from(i));
    }
    let pts = ramp.points();
    assert!(pts.len() <= 10);
    assert!(pts.iter().all(|(t, v)| (t - v).abs() < 1e-9), "{pts:?}");
    let mut few = Series::new(Merge::Mean);
    few.push(0.0, 1.0);
    few.push(f64::INFINITY, 1.0);
    few.push(1.0, f64::NAN);
    assert_eq!(few.points(), [(0.0, 1.0)]);
    assert_eq!(MAX_POINTS, 2000);
}

#[test]
fn stall_minutes_are_scaled_windows() {
    let s = 1_000_000_000;
    let mut window = MinuteWindow::default();
    // 1 s with 100 ms stalled: 6 s per minute while the run is younger than a minute.
    assert_eq!(window.add(s, 100_000_000), Some(6000.0));
    for _ in 0..59 {
        window.add(s, 0);
    }
    assert_eq!(window.add(s, 0), Some(0.0), "the stall has left the window");
    // Ten 10 s intervals, one stalled 600 ms: the minute holding it says 600 ms.
    let mut window = MinuteWindow::default();
    let values: Vec<f64> = (0..10)
        .map(|i| {
            window
                .add(10 * s, if i == 2 { 600_000_000 } else { 0 })
                .unwrap()
        })
        .collect();
    assert_eq!(values[5], 600.0);
    assert_eq!(values[8], 0.0);
    // One interval longer than a minute is scaled down to it.
    let mut window = MinuteWindow::default();
    assert_eq!(window.add(120 * s, 1_000_000_000), Some(500.0));
    assert_eq!(MinuteWindow::default().add(0, 5), None);
    // The pressure rows' stall time: nested stalls counted once by the aggregator.
    let pressure = [pressure("/a", 10.0), pressure("/b", 5.0)];
    assert_eq!(stall_ns(&pressure), 15_000_000);
}

#[test]
fn memory_samples_v1_v2_and_host() {
    let dir = tempfile::tempdir().unwrap();
    let v1 = dir.path().join("v1");
    fs::create_dir(&v1).unwrap();
    fs::write(v1.join("memory.usage_in_bytes"), "104857600\n").unwrap();
    fs::write(
        v1.join("memory.stat"),
        "cache 1\ninactive_file 4096\ntotal_inactive_file 10485760\n",
    )
    .unwrap();
    assert_eq!(
        cgroup_sample(&v1, CgroupVersion::V1),
        Some(MemorySample {
            usage: 100 << 20,
            working_set: 90 << 20
        })
    );
    let v2 = dir.path().join("v2");
    fs::create_dir(&v2).unwrap();
    fs::write(v2.join("memory.current"), "8192\n").unwrap();
    fs::write(
        v2.join("memory.stat"),
        "anon 4096\ninactive_file_x 1\ninactive_file 12288\n",
    )
    .unwrap();
    // More inactive file than usage (racy reads): clamp, never wrap.
    assert_eq!(
        cgroup_sample(&v2, CgroupVersion::V2),
        Some(MemorySample {
            usage: 8192,
            working_set: 0
        })
    );
    assert_eq!(
        cgroup_sample(&v2, CgroupVersion::V1),
        None,
        "no usage_in_bytes"
    );
    fs::write(v2.join("memory.current"), "garbage").unwrap();
    assert_eq!(cgroup_sample(&v2, CgroupVersion::V2), None);
    assert_eq!(
        cgroup_sample(&dir.path().join("gone"), CgroupVersion::V2),
        None
    );

    let root = dir.path().join("root");
    fs::create_dir(&root).unwrap();
    fs::write(
        root.join("memory.stat"),
        "anon 100\nfile 50\nkernel 25\nsock 5\ninactive_file 30\n",
    )
    .unwrap();
    assert_eq!(
        v2_root_sample(&root),
        Some(MemorySample {
            usage: 180,
            working_set: 150
        })
    );
    fs::write(root.join("memory.stat"), "anon 100\nfile 50\n").unwrap();
    assert_eq!(
        v2_root_sample(&root),
        None,
        "kernel memory unknown: use /proc/meminfo"
    );
    let meminfo = "MemTotal:       16000000 kB\nMemFree:         4000000 kB\nMemAvailable:   9000000 kB\nInactive(file):  2000000 kB\n";
    assert_eq!(
        meminfo_sample(meminfo),
        Some(MemorySample {
            usage: 12_000_000 * 1024,
            working_set: 10_000_000 * 1024
        })
    );
    assert_eq!(meminfo_sample("MemTotal: x kB\n"), None);
    assert!(
        MemorySource::V2Root {
            dir: dir.path().join("nowhere")
        }
        .read()
        .is_some(),
        "falls back to /proc/meminfo"
    );
}

fn kill(time_ns: u64) -> Event {
    Event::OomKill(Box::new(OomKill {
        time_ns,
        cgroup: Some("/svc".into()),
        pid: 10,
        tgid: 10,
        comm: "hog".into(),
        victim_pid: 10,
        victim_tgid: 10,
        victim_comm: "hog".into(),
        victim_cgroup: Some("/svc".into()),
        victim_uid: Some(0),
        source: crate::event::KillSource::TpBtf,
        ..Default::default()
    }))
}

/// A v2-style cgroup in a temporary hierarchy, watched by a soak sink fed by hand.
#[test]
fn sink_samples_judges_and_writes_both_reports() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("cg");
    let svc = root.join("svc");
    fs::create_dir_all(&svc).unwrap();
    let set_usage = |mib: u64| {
        fs::write(svc.join("memory.current"), (mib << 20).to_string()).unwrap();
        fs::write(
            svc.join("memory.stat"),
            format!("inactive_file {}\n", 1u64 << 20),
        )
        .unwrap();
    };
    set_usage(10);
    let html = dir.path().join("r.html");
    let json = dir.path().join("r.json");
    let args = config(
        dir.path(),
        Limits {
            max_oom_kills: 0,
            max_oom_risk: None,
            max_p99: vec![P99Limit {
                kind: "memcg_reclaim",
                ms: 50.0,
            }],
            max_stall_per_minute_ms: Some(100.0),
            max_growth_mib_per_hour: Some(1000.0),
        },
    );
    let hierarchy = MemoryHierarchy {
        root: root.clone(),
        version: CgroupVersion::V2,
    };
    let target = Target {
        spec: "/svc".into(),
        dir: svc.clone(),
        relative: "/svc".into(),
        id: 1,
    };
    let mut soak = Soak::open(args, &hierarchy, &[target]).unwrap();
    assert!(html.exists() && json.exists(), "created up front");
    let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
    assert_eq!(soak.attach(&mut sinks, None), DEFAULT_INTERVAL);
    let mut sink = sinks.pop().unwrap();

    let t0 = 1_800_000_000_000_000_000u64;
    let s = 1_000_000_000u64;
    for i in 1..=6u64 {
        set_usage(10 + i);
        let (rows, stalled) = if i == 3 {
            (
                vec![row("/svc", "memcg_reclaim", 4, 80.0, 200.0)],
                vec![pressure("/svc", 200.0)],
            )
        } else {
            (Vec::new(), Vec::new())
        };
        sink.summary(&Summary {
            scope: Scope::Interval,
            time_ns: t0 + i * 10 * s,
            period_ns: 10 * s,
            rows,
            pressure: stalled,
            faults: vec![FaultRow {
                cgroup: "/svc".into(),
                minor: 100,
                major: 1,
                minor_per_s: 10.0,
                major_per_s: 0.1,
            }],
            ..Default::default()
        })
        .unwrap();
        if i == 4 {
            sink.event(&kill(t0 + 35 * s)).unwrap();
        }
    }
    sink.summary(&Summary {
        scope: Scope::Total,
        time_ns: t0 + 61 * s,
        period_ns: 61 * s,
        rows: vec![row("/svc", "memcg_reclaim", 5, 80.0, 250.0)],
        pressure: vec![pressure("/svc", 250.0)],
        ..Default::default()
    })
    .unwrap();
    sink.finish(&RunSummary {
        duration_ns: 61 * s,
        ..Default::default()
    })
    .unwrap();

    let err = soak.verdict().unwrap_err();
    let user = err.downcast_ref::<UserError>().expect("a UserError");
    assert!(
        user.to_string()
            .starts_with("soak: 3 of 4 check(s) breached; report "),
        "{user}"
    );
    let report: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["verdict"], "breach");
    let breaches: Vec<&str> = report["breaches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b.as_str().unwrap())
        .collect();
    assert_eq!(breaches.len(), 3, "{breaches:?}");
    assert!(breaches[0].starts_with("OOM kills 1 > 0 (last: hog pid 10 in /svc)"));
    assert!(breaches[1].starts_with("memcg_reclaim p99 80 ms > 50 ms"));
    // 200 ms in the first 30 s: 400 ms per minute (the first minute is extrapolated).
    assert_eq!(
        breaches[2],
        "stall time 400 ms per minute > 100 ms (worst window ending at 30 s)"
    );
    let memory = &report["memory"][0];
    assert_eq!(memory["cgroup"], "/svc");
    assert_eq!(memory["samples"], 8, "start, six intervals, end");
    // 10 → 16 MiB over 60 s (then flat to 61 s): about 360 MiB/h, under the 1000 limit.
    let growth = memory["growth_mib_per_hour"].as_f64().unwrap();
    assert!((300.0..400.0).contains(&growth), "{growth}");
    assert_eq!(memory["last_working_set_bytes"], 15u64 << 20);
    assert_eq!(report["oom_kill_marks"][0]["victim_comm"], "hog");
    assert_eq!(
        report["stall_percentiles"]["memcg_reclaim"]["p99_ms"][0][1],
        80.0
    );
    assert_eq!(report["minor_faults_per_s"].as_array().unwrap().len(), 6);
    let page = fs::read_to_string(&html).unwrap();
    assert!(page.contains("BREACH: 3 of 4 check(s) breached"));
    assert_eq!(
        page.matches("<svg").count(),
        4,
        "memory, latency, stall minutes, faults"
    );
    assert!(!page.contains("http://") && !page.contains("https://") && !page.contains("<script"));
    assert!(page.contains("OOM kill (1)") && page.contains("/svc working set"));
}

#[test]
fn report_paths_are_checked_up_front() {
    let dir = tempfile::tempdir().unwrap();
    let hierarchy = MemoryHierarchy {
        root: dir.path().into(),
        version: CgroupVersion::V1,
    };
    let missing = SoakConfig {
        report: dir.path().join("no/such/dir/r.html"),
        ..config(dir.path(), Limits::default())
    };
    let err = Soak::open(missing, &hierarchy, &[]).err().unwrap();
    let user = err.downcast_ref::<UserError>().unwrap();
    assert!(
        user.to_string().starts_with("cannot write --report "),
        "{user}"
    );
    let same = SoakConfig {
        report_json: dir.path().join("r.html"),
        ..config(dir.path(), Limits::default())
    };
    assert!(Soak::open(same, &hierarchy, &[]).is_err());
}
