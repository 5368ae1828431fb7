//! For machines: JSON Lines, one object per event and per summary row, then `run_end`.
use std::io::Write;

use anyhow::{Context as _, Result};
use serde::Serialize;

use crate::{
    aggregate::{
        FaultRow, KswapdActivity, LatencyRow, MemcgPages, PressureRow, Scope, Summary, SummaryRow,
    },
    event::{Event, Labels},
    pipeline::{RunSummary, Sink},
};

/// JSON Lines: one object per event, `summary` objects per interval and at the end, then a
/// `run_end` object.
pub struct JsonSink<W: Write> {
    out: W,
}

impl<W: Write> JsonSink<W> {
    pub fn new(out: W) -> Self {
        Self { out }
    }

    fn line(&mut self, value: &impl Serialize) -> Result<()> {
        serde_json::to_writer(&mut self.out, value).context("encoding JSON")?;
        self.out.write_all(b"\n").context("writing JSON")
    }
}

#[derive(Serialize)]
#[serde(tag = "type", rename = "run_end")]
struct RunEnd<'a> {
    #[serde(flatten)]
    run: &'a RunSummary,
}

/// Fields every summary line carries: which period it covers.
#[derive(Serialize)]
struct Period {
    scope: Scope,
    time_ns: u64,
    period_ns: u64,
    /// Events the kernel lost since start (ring buffer full): the figures miss them.
    dropped: u64,
    incomplete: bool,
}

#[derive(Serialize)]
#[serde(tag = "type", rename = "summary")]
struct SummaryLine<'a> {
    #[serde(flatten)]
    period: &'a Period,
    #[serde(flatten)]
    row: &'a SummaryRow,
    /// The cgroup's container and Kubernetes names, when it has any.
    #[serde(skip_serializing_if = "Option::is_none")]
    labels: Option<&'a Labels>,
}

#[derive(Serialize)]
#[serde(tag = "type", rename = "kswapd_wakeups")]
struct WakeupLine<'a> {
    #[serde(flatten)]
    period: &'a Period,
    cgroup: &'a str,
    count: u64,
}

#[derive(Serialize)]
#[serde(tag = "type", rename = "kswapd")]
struct KswapdLine<'a> {
    #[serde(flatten)]
    period: &'a Period,
    #[serde(flatten)]
    activity: &'a KswapdActivity,
}

#[derive(Serialize)]
#[serde(tag = "type", rename = "memcg_pages")]
struct MemcgPagesLine<'a> {
    #[serde(flatten)]
    period: &'a Period,
    #[serde(flatten)]
    pages: &'a MemcgPages,
    /// The cgroup's container and Kubernetes names, when it has any.
    #[serde(skip_serializing_if = "Option::is_none")]
    labels: Option<&'a Labels>,
}

#[derive(Serialize)]
#[serde(tag = "type", rename = "faults")]
struct FaultsLine<'a> {
    #[serde(flatten)]
    period: &'a Period,
    #[serde(flatten)]
    faults: &'a FaultRow,
    /// The cgroup's container and Kubernetes names, when it has any.
    #[serde(skip_serializing_if = "Option::is_none")]
    labels: Option<&'a Labels>,
}

#[derive(Serialize)]
#[serde(tag = "type", rename = "pressure")]
struct PressureLine<'a> {
    #[serde(flatten)]
    period: &'a Period,
    #[serde(flatten)]
    pressure: &'a PressureRow,
    /// The cgroup's container and Kubernetes names, when it has any.
    #[serde(skip_serializing_if = "Option::is_none")]
    labels: Option<&'a Labels>,
}

#[derive(Serialize)]
#[serde(tag = "type", rename = "latency")]
struct LatencyLine<'a> {
    #[serde(flatten)]
    period: &'a Period,
    #[serde(flatten)]
    latency: &'a LatencyRow,
    /// The cgroup's container and Kubernetes names, when it has any.
    #[serde(skip_serializing_if = "Option::is_none")]
    labels: Option<&'a Labels>,
}

impl<W: Write> Sink for JsonSink<W> {
    fn event(&mut self, event: &Event) -> Result<()> {
        self.line(event)?;
        // A line per write keeps `tail -f` and crash post-mortems useful.
        self.out.flush().context("writing JSON")
    }

    fn summary(&mut self, summary: &Summary) -> Result<()> {
        let dropped = summary.dropped.unwrap_or(0);
        let period = Period {
            scope: summary.scope,
            time_ns: summary.time_ns,
            period_ns: summary.period_ns,
            dropped,
            incomplete: dropped > 0,
        };
        for row in &summary.rows {
            self.line(&SummaryLine {
                period: &period,
                row,
                labels: summary.labels.get(&row.cgroup),
            })?;
        }
        for (cgroup, count) in &summary.kswapd_wakeups {
            self.line(&WakeupLine {
                period: &period,
                cgroup,
                count: *count,
            })?;
        }
        if let Some(activity) = &summary.kswapd {
            self.line(&KswapdLine {
                period: &period,
                activity,
            })?;
        }
        for pages in &summary.memcg_pages {
            self.line(&MemcgPagesLine {
                period: &period,
                pages,
                labels: summary.labels.get(&pages.cgroup),
            })?;
        }
        for pressure in &summary.pressure {
            self.line(&PressureLine {
                period: &period,
                pressure,
                labels: summary.labels.get(&pressure.cgroup),
            })?;
        }
        for latency in &summary.latency {
            self.line(&LatencyLine {
                period: &period,
                latency,
                labels: summary.labels.get(&latency.cgroup),
            })?;
        }
        for faults in &summary.faults {
            self.line(&FaultsLine {
                period: &period,
                faults,
                labels: summary.labels.get(&faults.cgroup),
            })?;
        }
        self.out.flush().context("writing JSON")
    }

    fn finish(&mut self, run: &RunSummary) -> Result<()> {
        self.line(&RunEnd { run })?;
        self.out.flush().context("writing JSON")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        aggregate::StallStats,
        event::{KillSource, OomKill},
    };
    use memstall_common::StallKind;

    fn lines(sink: JsonSink<Vec<u8>>) -> Vec<serde_json::Value> {
        String::from_utf8(sink.out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn writes_the_contract_fields() {
        let kill = OomKill {
            time_ns: 1,
            cgroup: Some("/a".into()),
            pid: 10,
            tgid: 10,
            comm: "alloc".into(),
            victim_pid: 11,
            victim_tgid: 11,
            victim_comm: "hog".into(),
            victim_cgroup: Some("/a/b".into()),
            victim_uid: Some(0),
            anon_rss_kb: 32000,
            file_rss_kb: 4,
            shmem_rss_kb: 0,
            pgtables_kb: 100,
            total_vm_kb: 140000,
            swap_entries: Some(0),
            oom_score_adj: 500,
            source: KillSource::TpBtf,
            ..Default::default()
        };
        let mut sink = JsonSink::new(Vec::new());
        sink.event(&Event::OomKill(Box::new(kill))).unwrap();
        sink.finish(&RunSummary {
            dropped: 3,
            diagnostics: [("end_without_begin", 2), ("in_flight_full", 0)].into(),
            lost_windows: [("memcg_reclaim", 2)].into(),
            ..Default::default()
        })
        .unwrap();
        let lines = lines(sink);
        for (key, want) in [
            ("type", serde_json::json!("oom_kill")),
            ("time_ns", 1.into()),
            ("cgroup", "/a".into()),
            ("pid", 10.into()),
            ("comm", "alloc".into()),
            ("victim_pid", 11.into()),
            ("victim_comm", "hog".into()),
            ("victim_cgroup", "/a/b".into()),
            ("anon_rss_kb", 32000.into()),
            ("file_rss_kb", 4.into()),
            ("shmem_rss_kb", 0.into()),
            ("pgtables_kb", 100.into()),
            ("oom_score_adj", 500.into()),
            ("source", "tp_btf".into()),
        ] {
            assert_eq!(lines[0][key], want, "{key}");
        }
        assert_eq!(lines[1]["type"], "run_end");
        assert_eq!(lines[1]["dropped"], 3);
        assert_eq!(
            lines[1]["diagnostics"],
            serde_json::json!({"end_without_begin": 2, "in_flight_full": 0})
        );
        assert_eq!(lines[1]["lost_windows"]["memcg_reclaim"], 2);
    }

    #[test]
    fn summary_lines_carry_kind_and_percentiles() {
        let mut stats = StallStats::default();
        stats.record(2_000_000, 32, 64);
        let summary = Summary {
            scope: Scope::Total,
            time_ns: 5,
            period_ns: 1_000,
            rows: vec![stats.row("/svc", StallKind::DirectReclaim)],
            kswapd_wakeups: vec![("/svc".into(), 3)],
            kswapd: Some(KswapdActivity {
                runs: 2,
                wakes: 2,
                awake_ns: 400,
                pages_scanned: 90,
                pages_reclaimed: 60,
            }),
            memcg_pages: vec![MemcgPages::new("/svc".into(), [10, 5, 0, 0, 0, 0])],
            faults: vec![FaultRow {
                cgroup: "/svc".into(),
                minor: 7,
                major: 1,
                ..Default::default()
            }],
            latency: Vec::new(),
            pressure: vec![PressureRow {
                cgroup: "/svc".into(),
                stall_ns: 2_000_000,
                by_cause: [("direct_reclaim", 2_000_000)].into(),
                tasks: 1,
                ..Default::default()
            }],
            dropped: None,
            labels: [(
                "/svc".to_owned(),
                Labels {
                    namespace: Some("shop".into()),
                    pod: Some("web-0".into()),
                    ..Default::default()
                },
            )]
            .into(),
        };
        let mut sink = JsonSink::new(Vec::new());
        sink.summary(&summary).unwrap();
        let lines = lines(sink);
        let row = &lines[0];
        assert_eq!(row["type"], "summary");
        assert_eq!(row["kind"], "direct_reclaim");
        assert_eq!(row["cgroup"], "/svc");
        assert_eq!(row["count"], 1);
        assert_eq!(row["total_ns"], 2_000_000);
        for key in ["p50_ns", "p99_ns", "max_ns"] {
            assert!(
                row[key].as_u64().unwrap().abs_diff(2_000_000) < 2_000,
                "{key}: {row}"
            );
        }
        assert_eq!(
            row["buckets"].as_array().unwrap().last().unwrap()["count"],
            1
        );
        assert_eq!(row["scope"], "total");
        assert_eq!(row["labels"]["namespace"], "shop");
        assert_eq!(row["labels"]["pod"], "web-0");
        for kind in ["memcg_pages", "pressure", "faults"] {
            let line = lines.iter().find(|l| l["type"] == kind).unwrap();
            assert_eq!(line["labels"]["pod"], "web-0", "{line}");
        }
        assert_eq!(lines[1]["type"], "kswapd_wakeups");
        assert_eq!(lines[1]["count"], 3);
        assert_eq!(lines[2]["type"], "kswapd");
        assert_eq!(
            (lines[2]["runs"].as_u64(), lines[2]["awake_ns"].as_u64()),
            (Some(2), Some(400))
        );
        assert_eq!(lines[2]["scope"], "total");
        assert_eq!(lines[3]["type"], "memcg_pages");
        assert_eq!(lines[3]["scanned_direct"], 10);
        assert_eq!(lines[3]["efficiency"], 0.5);
        assert_eq!(lines[4]["type"], "pressure");
        assert_eq!(lines[4]["stall_ns"], 2_000_000);
        assert_eq!(lines[4]["by_cause"]["direct_reclaim"], 2_000_000);
        assert_eq!(lines[4]["psi_some_ns"], serde_json::Value::Null);
        let lines = &lines[1..];
        assert_eq!(lines[4]["type"], "faults");
        assert_eq!(
            (
                lines[4]["cgroup"].as_str(),
                lines[4]["minor"].as_u64(),
                lines[4]["major"].as_u64()
            ),
            (Some("/svc"), Some(7), Some(1))
        );
    }
}
