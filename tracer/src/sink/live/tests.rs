//! Tests of live/mod.rs.
use super::*;
use crate::aggregate::{FaultRow, KswapdActivity, StallStats};
use crate::event::Labels;
use memstall_common::StallKind;

fn summary(cgroup: &str, ns: &[u64], faults: f64) -> Summary {
    let mut stats = StallStats::default();
    for &n in ns {
        stats.record(n, 0, 0);
    }
    Summary {
        scope: Scope::Interval,
        rows: vec![stats.row(cgroup, StallKind::MemcgReclaim)],
        faults: vec![FaultRow {
            cgroup: cgroup.into(),
            minor_per_s: faults,
            ..Default::default()
        }],
        pressure: vec![crate::aggregate::PressureRow {
            cgroup: cgroup.into(),
            stall_ns: ns.iter().sum(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

#[test]
fn folds_intervals_and_sorts() {
    let mut state = State::default();
    state.fold(&summary("/a", &[1_000_000; 10], 5.0));
    state.fold(&summary("/b", &[50_000_000], 900.0));
    state.fold(&summary("/a", &[2_000_000], 0.0));
    let a = &state.rows["/a"];
    assert_eq!(a.stalls(), 11);
    assert_eq!(a.faults_per_s, 0.0, "rates are per interval");
    assert_eq!(a.kinds["memcg_reclaim"].quantile_ns(0.5), 1_023_000);
    let by_time: Vec<&str> = state
        .sorted(SortKey::StallTime)
        .iter()
        .map(|(n, _)| n.as_str())
        .collect();
    assert_eq!(by_time, ["/b", "/a"]);
    let by_stalls: Vec<&str> = state
        .sorted(SortKey::Stalls)
        .iter()
        .map(|(n, _)| n.as_str())
        .collect();
    assert_eq!(by_stalls, ["/a", "/b"]);
    assert!(
        histograms("/a", a)
            .iter()
            .any(|l| l.to_string().contains("11 stalls"))
    );
}

fn text(terminal: &ratatui::Terminal<ratatui::backend::TestBackend>) -> String {
    terminal
        .backend()
        .buffer()
        .content()
        .iter()
        .map(ratatui::buffer::Cell::symbol)
        .collect()
}

#[test]
fn renders_into_a_buffer() {
    use ratatui::{Terminal, backend::TestBackend};
    let mut state = State::default();
    state.fold(&Summary {
        period_ns: 1_000_000_000,
        kswapd: Some(KswapdActivity {
            awake_ns: 400_000_000,
            ..Default::default()
        }),
        ..summary("/svc", &[3_000_000], 10.0)
    });
    state.last_oom = Some("memhog pid 7 in /svc".into());
    let mut terminal = Terminal::new(TestBackend::new(200, 12)).unwrap();
    let mut view = View {
        sort: SortKey::StallTime,
        table: TableState::default(),
        detail: false,
    };
    terminal.draw(|f| draw(f, &state, &mut view)).unwrap();
    let screen = text(&terminal);
    assert!(
        screen.contains("/svc") && screen.contains("memhog pid 7") && screen.contains("CGROUP"),
        "{screen}"
    );
    assert!(
        screen.contains("kswapd (whole machine) awake 40 % of the last interval"),
        "{screen}"
    );
    view.detail = true;
    terminal.draw(|f| draw(f, &state, &mut view)).unwrap();
    let screen = text(&terminal);
    assert!(screen.contains("histograms"), "{screen}");
}

/// A cgroup name and a victim comm with escape sequences reach the screen escaped, in the
/// table, the header and the histogram view.
#[test]
fn hostile_names_are_drawn_escaped() {
    use ratatui::{Terminal, backend::TestBackend};
    let cgroup = "/evil\x1b[2J\u{9b}";
    let mut live = LiveSink::new();
    live.done = true; // no real terminal in a test: fold only
    live.event(&Event::OomKill(Box::new(crate::event::OomKill {
        victim_comm: "pwn\x1b]0;t\x07".into(),
        victim_cgroup: Some(cgroup.into()),
        ..Default::default()
    })))
    .unwrap();
    live.summary(&summary(cgroup, &[3_000_000], 1.0)).unwrap();
    let state = locked(&live.state);
    let mut terminal = Terminal::new(TestBackend::new(220, 12)).unwrap();
    let mut view = View {
        sort: SortKey::StallTime,
        table: TableState::default(),
        detail: false,
    };
    for detail in [false, true] {
        view.detail = detail;
        terminal.draw(|f| draw(f, &state, &mut view)).unwrap();
        let screen = text(&terminal);
        assert!(!screen.chars().any(char::is_control), "{screen:?}");
        // The header's last OOM kill, and the table row or the histogram view's title.
        let shown = screen.matches("/evil\\x1b[2J\\u{9b}").count();
        assert_eq!(shown, 2, "{screen}");
        if !detail {
            assert!(screen.contains("pwn\\x1b]0;t\\x07"), "{screen}");
        }
    }
}

fn risk(cgroup: &str, reason: crate::event::RiskReason, eta_s: Option<f64>) -> Event {
    Event::OomRisk(Box::new(crate::event::OomRisk {
        cgroup: cgroup.into(),
        time_ns: 0,
        eta_s,
        headroom_kb: 2048,
        reason,
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
    }))
}

#[test]
fn kills_and_oom_risk_have_their_columns() {
    use crate::event::{Kill, Killer, RiskReason};
    use ratatui::{Terminal, backend::TestBackend};
    let mut state = State::default();
    state.fold(&summary("/svc", &[3_000_000], 10.0));
    state.event(&Event::Kill(Box::new(Kill {
        cgroup: Some("/svc".into()),
        comm: "worker".into(),
        tgid: 42,
        killer: Killer::Oomd,
        sender_process: "oomd".into(),
        ..Kill::default()
    })));
    state.event(&risk("/svc", RiskReason::Eta, Some(5.2)));
    let mut terminal = Terminal::new(TestBackend::new(260, 8)).unwrap();
    let mut view = View {
        sort: SortKey::StallTime,
        table: TableState::default(),
        detail: false,
    };
    terminal.draw(|f| draw(f, &state, &mut view)).unwrap();
    let screen = text(&terminal);
    for want in [
        "KILLS",
        "RISK",
        "OOM in 5 s",
        "worker pid 42 in /svc by oomd (oomd)",
    ] {
        assert!(screen.contains(want), "{want} missing:\n{screen}");
    }
    assert_eq!(state.rows["/svc"].kills, 1);
    state.event(&risk("/svc", RiskReason::Headroom, None));
    assert_eq!(state.rows["/svc"].risk.as_deref(), Some("2048 kB left"));
    state.event(&risk("/svc", RiskReason::Cleared, None));
    assert_eq!(state.rows["/svc"].risk, None);
}

/// A pod's cgroup is shown by its names (namespace/pod/container), its path in the histogram
/// view; the last OOM kill names the victim's pod.
#[test]
fn pod_cgroups_are_shown_by_name() {
    use ratatui::{Terminal, backend::TestBackend};
    let cgroup = "/kubepods/burstable/pod8d3a/0a1b2c3d4e5f";
    let labels = Labels {
        namespace: Some("shop".into()),
        pod: Some("web-0".into()),
        container: Some("nginx".into()),
        ..Default::default()
    };
    let mut live = LiveSink::new();
    live.done = true;
    live.summary(&Summary {
        labels: [(cgroup.to_owned(), labels.clone())].into(),
        ..summary(cgroup, &[3_000_000], 1.0)
    })
    .unwrap();
    live.event(&Event::OomKill(Box::new(crate::event::OomKill {
        victim_comm: "hog".into(),
        victim_cgroup: Some(cgroup.into()),
        victim_labels: Some(labels),
        ..Default::default()
    })))
    .unwrap();
    let state = locked(&live.state);
    let mut terminal = Terminal::new(TestBackend::new(220, 12)).unwrap();
    let mut view = View {
        sort: SortKey::StallTime,
        table: TableState::default(),
        detail: false,
    };
    terminal.draw(|f| draw(f, &state, &mut view)).unwrap();
    let screen = text(&terminal);
    assert_eq!(screen.matches("shop/web-0/nginx").count(), 2, "{screen}");
    assert!(!screen.contains("pod8d3a"), "{screen}");
    view.detail = true;
    terminal.draw(|f| draw(f, &state, &mut view)).unwrap();
    let screen = text(&terminal);
    assert!(
        screen.contains(cgroup) && screen.contains("pod shop/web-0/nginx"),
        "{screen}"
    );
}
