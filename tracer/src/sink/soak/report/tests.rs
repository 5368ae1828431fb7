//! Tests of report/mod.rs.
use super::*;

#[test]
fn renders_self_contained_svg() {
    let chart = Chart {
        title: "usage <&>".into(),
        y_label: "MiB".into(),
        lines: vec![Line {
            name: "/a".into(),
            points: vec![(0.0, 1.0), (1.0, 2.0), (2.0, 4.0)],
            ..Default::default()
        }],
        limits: vec![("3 MiB".into(), 3.0), ("far".into(), 1e6)],
        marks: vec![1.5],
        ..Default::default()
    };
    let svg = svg(&chart, 2.0).unwrap();
    assert!(svg.starts_with("<svg"), "{svg}");
    assert!(!svg.contains("http"), "{svg}");
    for (color, what) in [
        ("#1F77B4", "series"),
        ("#D60000", "near limit"),
        ("#C80000", "mark"),
    ] {
        let lines = format!("stroke=\"{color}\"");
        assert_eq!(svg.matches(&lines).count(), 1, "{what}: {svg}");
    }
    assert!(svg.contains("usage &lt;&amp;&gt;"));
    assert!(svg.contains("time since start (s)"));
    let report = Report {
        title: "t".into(),
        charts: vec![
            chart,
            Chart {
                title: "none".into(),
                empty: "no stalls".into(),
                ..Default::default()
            },
        ],
        span_secs: 2.0,
        ..Default::default()
    };
    let html = html(&report);
    assert!(html.contains("no stalls") && html.contains("<svg"));
    assert!(!html.contains("<script") && !html.contains("http"));
}

#[test]
fn log_axis_skips_zeros() {
    let chart = Chart {
        title: "p99".into(),
        y_label: "ms".into(),
        lines: vec![Line {
            name: "memcg_reclaim".into(),
            points: vec![(0.0, 0.0), (1.0, 0.01), (2.0, 100.0)],
            ..Default::default()
        }],
        log_y: true,
        ..Default::default()
    };
    let svg = svg(&chart, 2.0).unwrap();
    assert_eq!(svg.matches("<circle").count(), 2, "{svg}");
    assert_eq!(time_unit(3600.0), (60.0, "min"));
    assert_eq!(time_unit(86_400.0).1, "h");
}
