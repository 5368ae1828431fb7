//! deploy/grafana/memstall.json against a real Prometheus scraping `memstall serve`: a pod's
//! container (kubepods-shaped cgroup, kubelet files under a test root) reclaims, faults and has
//! a process OOM-killed, then every panel's PromQL is run as Grafana would (a range query,
//! template variables substituted) and must return data: once with every variable at "All",
//! once narrowed to that pod, its container's cgroup and `memcg_reclaim`. Each variable's
//! `label_values` must offer the pod's values, and the OOM panel must count the kernel's kill.
use std::{
    fs,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use memstall_tests::{
    MIB, Memstall, k8s, pressure,
    prometheus::{Prometheus, ensure_prometheus, free_port, http_get},
    run_to_oom_kill,
};
use serde_json::Value;

const DASHBOARD: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../deploy/grafana/memstall.json"
);
/// What Grafana puts in for its own variables: a rate window of a few scrapes (Prometheus
/// scrapes every second here), a step and a range that cover the test.
const GRAFANA_VARIABLES: &[(&str, &str)] = &[
    ("$__rate_interval", "30s"),
    ("$__interval", "2s"),
    ("$__range", "5m"),
];

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// `expr` with the template variables replaced (longest names first, so `$pod` does not eat
/// a longer name).
fn substitute(expr: &str, values: &[(String, String)]) -> String {
    let mut all: Vec<(String, String)> = GRAFANA_VARIABLES
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .chain(values.iter().flat_map(|(name, value)| {
            [
                (format!("${{{name}}}"), value.clone()),
                (format!("${name}"), value.clone()),
            ]
        }))
        .collect();
    all.sort_by_key(|(k, _)| std::cmp::Reverse(k.len()));
    let mut out = expr.to_owned();
    for (k, v) in all {
        out = out.replace(&k, &v);
    }
    assert!(!out.contains('$'), "unsubstituted variable in {out}");
    out
}

/// (panel title, expr) of every query panel.
fn queries(dashboard: &Value) -> Vec<(String, String)> {
    dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["type"] != "row")
        .flat_map(|p| {
            let title = p["title"].as_str().unwrap().to_owned();
            p["targets"]
                .as_array()
                .unwrap()
                .iter()
                .map(move |t| (title.clone(), t["expr"].as_str().unwrap().to_owned()))
        })
        .collect()
}

/// The dashboard is one Grafana can import: schema, unique ids, every panel on the
/// `${datasource}` variable, every target with a refId.
fn check_shape(dashboard: &Value) {
    assert!(dashboard["schemaVersion"].as_u64().unwrap() >= 39);
    assert_eq!(dashboard["uid"], "memstall");
    let panels = dashboard["panels"].as_array().unwrap();
    let mut ids: Vec<u64> = panels.iter().map(|p| p["id"].as_u64().unwrap()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), panels.len(), "panel ids repeat");
    for panel in panels.iter().filter(|p| p["type"] != "row") {
        let title = &panel["title"];
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{title}");
        for key in ["x", "y", "w", "h"] {
            assert!(panel["gridPos"][key].is_u64(), "{title}: gridPos");
        }
        for target in panel["targets"].as_array().unwrap() {
            assert!(target["refId"].is_string(), "{title}: refId");
            assert_eq!(target["datasource"]["uid"], "${datasource}", "{title}");
        }
    }
    let types: Vec<&str> = panels.iter().filter_map(|p| p["type"].as_str()).collect();
    assert!(types.contains(&"heatmap"), "{types:?}");
}

/// Every `memstall_*` name the dashboard's queries use is a series the exporter serves.
fn check_metric_names(dashboard: &Value, exposition: &str) {
    let exprs: Vec<String> = queries(dashboard).into_iter().map(|(_, e)| e).collect();
    let exprs = exprs.join("\n");
    let mut rest = exprs.as_str();
    while let Some(at) = rest.find("memstall_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        let served = exposition
            .lines()
            .any(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")));
        assert!(served, "{name} is not in /metrics:\n{exposition}");
    }
}

/// Runs every panel query over the test's span; returns (title, series, largest value).
fn run_panels(
    prometheus: &Prometheus,
    dashboard: &Value,
    values: &[(String, String)],
    start: f64,
) -> Vec<(String, usize, f64)> {
    let end = now();
    queries(dashboard)
        .into_iter()
        .map(|(title, expr)| {
            let promql = substitute(&expr, values);
            let result = prometheus.query_range(&promql, start, end, 2);
            let finite: Vec<f64> = result
                .iter()
                .flat_map(|series| series["values"].as_array().cloned().unwrap_or_default())
                .filter_map(|point| point[1].as_str()?.parse::<f64>().ok())
                .filter(|v| v.is_finite())
                .collect();
            assert!(
                !finite.is_empty(),
                "panel {title:?} returned no data with {values:?}:\n{promql}\n{result:#?}"
            );
            let max = finite.iter().copied().fold(f64::MIN, f64::max);
            (title, result.len(), max)
        })
        .collect()
}

/// `label_values(SELECTOR, LABEL)` of each query variable, the other variables at `.*`.
fn variable_values(prometheus: &Prometheus, dashboard: &Value) -> Vec<(String, Vec<String>)> {
    let all: Vec<(String, String)> = dashboard["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["type"] == "query")
        .map(|v| (v["name"].as_str().unwrap().to_owned(), ".*".to_owned()))
        .collect();
    dashboard["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["type"] == "query")
        .map(|v| {
            let query = substitute(v["query"].as_str().unwrap(), &all);
            let inner = query
                .strip_prefix("label_values(")
                .and_then(|q| q.strip_suffix(')'))
                .unwrap_or_else(|| panic!("not label_values(): {query}"));
            let (selector, label) = inner.rsplit_once(',').unwrap();
            let name = v["name"].as_str().unwrap().to_owned();
            (name, prometheus.label_values(selector.trim(), label.trim()))
        })
        .collect()
}

#[test]
fn every_dashboard_panel_returns_data() {
    ensure_prometheus();
    let text = fs::read_to_string(DASHBOARD).unwrap();
    let dashboard: Value = serde_json::from_str(&text).unwrap();
    check_shape(&dashboard);

    let pod = k8s::Pod::create("dash", 96 * MIB).unwrap();
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let node = dir.path().join("node");
    k8s::kubelet_files(&node).unwrap();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let memstall = Memstall::start(&[
        "serve",
        "--listen",
        &listen,
        "--interval",
        "1",
        "--memcg-events",
        "--test-k8s-root",
        node.to_str().unwrap(),
        "--cgroup",
        &pod.container.relative,
    ])
    .unwrap();
    let prometheus = Prometheus::start(dir.path(), port);
    let start = now();

    let names = format!(
        r#"namespace="{}",pod="{}",container="{}""#,
        k8s::NAMESPACE,
        k8s::POD,
        k8s::CONTAINER
    );
    let cgroup = &pod.container.relative;
    let stalls = format!(
        r#"sum(memstall_stall_seconds_count{{cgroup="{cgroup}",kind="memcg_reclaim",{names}}})"#
    );
    let faults = format!(r#"sum(memstall_page_faults_total{{cgroup="{cgroup}",{names}}})"#);
    let scanned = format!(r#"sum(memstall_lru_pages_scanned_total{{cgroup="{cgroup}"}})"#);
    // Reclaim (page cache pushed out by anonymous memory) and faults, twice: a series is born
    // with its first interval's value, so rate() and increase() see only what comes after
    // Prometheus has scraped it once, as with any pressure that lasts.
    pressure(&pod.container, &dir.path().join("cache-1.img"), 40, 80);
    let first = [&stalls, &faults, &scanned].map(|q| prometheus.wait_for(q, |v| v > 0.0));
    pressure(&pod.container, &dir.path().join("cache-2.img"), 40, 80);
    for (query, before) in [&stalls, &faults, &scanned].iter().zip(first) {
        prometheus.wait_for(query, |v| v > before);
    }
    // Then an OOM kill in the same container.
    run_to_oom_kill(&[
        "--cgroup",
        pod.container.path.to_str().unwrap(),
        "--anon-mib",
        "160",
    ]);
    let kernel_kills = pod.container.oom_kills().unwrap();
    assert_eq!(kernel_kills, 1);
    prometheus.wait_for(
        &format!(r#"memstall_oom_kills_total{{cgroup="{cgroup}",{names}}}"#),
        |v| v == kernel_kills as f64,
    );
    // The last interval's fold is scraped: every panel now has what it will ever have.
    std::thread::sleep(Duration::from_secs(2));
    let (_, exposition) = http_get(port, "/metrics").unwrap();
    check_metric_names(&dashboard, &exposition);

    let variables = variable_values(&prometheus, &dashboard);
    let offered = |name: &str| {
        variables
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, values)| values.clone())
            .unwrap_or_default()
    };
    for (name, want) in [
        ("instance", listen.as_str()),
        ("namespace", k8s::NAMESPACE),
        ("pod", k8s::POD),
        ("cgroup", cgroup.as_str()),
        ("kind", "memcg_reclaim"),
    ] {
        assert!(
            offered(name).iter().any(|v| v == want),
            "${name} does not offer {want}: {variables:?}"
        );
    }

    let everything: Vec<(String, String)> = variables
        .iter()
        .map(|(name, _)| (name.clone(), ".*".to_owned()))
        .collect();
    let narrowed: Vec<(String, String)> = [
        ("instance", listen.as_str()),
        ("namespace", k8s::NAMESPACE),
        ("pod", k8s::POD),
        ("cgroup", cgroup.as_str()),
        ("kind", "memcg_reclaim"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    for values in [&everything, &narrowed] {
        let results = run_panels(&prometheus, &dashboard, values, start);
        for (title, series, max) in &results {
            eprintln!("dashboard: {title}: {series} series, max {max}");
        }
        let max_of = |title: &str| {
            results
                .iter()
                .filter(|(t, _, _)| t == title)
                .map(|(_, _, max)| *max)
                .fold(f64::MIN, f64::max)
        };
        assert!(max_of("Stall time per second, by cgroup and kind") > 0.0);
        assert!(max_of("Stall p99, by cgroup and kind") > 0.0);
        assert!(max_of("Stall latency heatmap") > 0.0);
        assert!(max_of("Page faults per second, by cgroup") > 0.0);
        assert_eq!(
            max_of("OOM kills since memstall started, by victim cgroup"),
            kernel_kills as f64,
            "the OOM panel counts the kernel's kill"
        );
        let last_kill_ms = max_of("Last OOM kill per cgroup");
        assert!((last_kill_ms / 1e3 - now()).abs() < 300.0, "{last_kill_ms}");
    }
    let (status, stderr) = memstall.stop(libc::SIGTERM).unwrap();
    assert!(status.success(), "{stderr:?}");
}
