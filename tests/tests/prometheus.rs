//! `memstall serve` scraped by a real Prometheus server: memcg reclaim stalls arrive as a
//! histogram Prometheus can take quantiles of, and an OOM kill as a counter that equals the
//! kernel's own.
use std::{
    net::TcpListener,
    process::{Command, Stdio},
    time::Instant,
};

use memstall_tests::{
    MIB, MemCgroup, Memstall, memhog, memstall_bin, pressure,
    prometheus::{Prometheus, ensure_prometheus, free_port, http_get},
};

#[test]
fn prometheus_scrapes_stall_histograms_and_oom_kills() {
    let started = Instant::now();
    ensure_prometheus();
    let reclaim = MemCgroup::create("prom-reclaim", 96 * MIB).unwrap();
    let oom = MemCgroup::create("prom-oom", 32 * MIB).unwrap();
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let memstall = Memstall::start(&[
        "serve",
        "--listen",
        &listen,
        "--interval",
        "1",
        "--memcg-events",
        "--cgroup",
        reclaim.path.to_str().unwrap(),
        "--cgroup",
        &oom.relative,
    ])
    .unwrap();
    let prometheus = Prometheus::start(dir.path(), port);

    let faults_before = reclaim.keyed("memory.stat").unwrap()["pgfault"];
    pressure(&reclaim, &dir.path().join("cache.img"), 40, 80);
    let faults_after = reclaim.keyed("memory.stat").unwrap()["pgfault"];
    let pressure_ended = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let hog = memhog()
        .args(["--cgroup", oom.path.to_str().unwrap(), "--anon-mib", "128"])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&hog),
        Some(libc::SIGKILL),
        "memhog should be OOM-killed, got {hog}"
    );
    let kernel_kills = oom.oom_kills().unwrap();
    assert!(kernel_kills >= 1);

    let stalls = format!(
        r#"memstall_stall_seconds_count{{job="memstall",cgroup="{}",kind="memcg_reclaim"}}"#,
        reclaim.relative
    );
    let count = prometheus.wait_for(&stalls, |v| v > 0.0);
    let kills = format!(
        r#"memstall_oom_kills_total{{cgroup="{}",constraint="memcg"}}"#,
        oom.relative
    );
    prometheus.wait_for(&kills, |v| v == kernel_kills as f64);
    // The pressure is over: a sample scraped over an interval (1 s) after its end holds every
    // stall of it.
    prometheus.wait_for(&format!("timestamp({stalls})"), |t| {
        t > pressure_ended + 1.5
    });
    let count = prometheus.value(&stalls).unwrap_or(count);

    // The plain `_count` query of the brief finds the series too.
    let all = prometheus.query("memstall_stall_seconds_count");
    assert!(
        all.iter()
            .any(|s| s["metric"]["cgroup"] == reclaim.relative.as_str()
                && s["metric"]["kind"] == "memcg_reclaim"),
        "{all:#?}"
    );
    let selector = format!(
        r#"memstall_stall_seconds_bucket{{cgroup="{}",kind="memcg_reclaim"}}"#,
        reclaim.relative
    );
    let inf = prometheus
        .value(&format!(
            r#"memstall_stall_seconds_bucket{{cgroup="{}",kind="memcg_reclaim",le="+Inf"}}"#,
            reclaim.relative
        ))
        .unwrap();
    assert_eq!(inf, count, "+Inf bucket = count");
    let sum = prometheus.value(&stalls.replace("_count", "_sum")).unwrap();
    assert!(sum > 0.0 && sum < count * 60.0, "sum {sum} s of {count}");
    let quantiles: Vec<f64> = [0.5, 0.99]
        .iter()
        .map(|q| {
            prometheus
                .value(&format!("histogram_quantile({q}, {selector})"))
                .unwrap_or(f64::NAN)
        })
        .collect();
    // Reclaiming clean page cache takes microseconds to tens of ms a call, never seconds
    // (the lowest bucket bound is 2 µs).
    for q in &quantiles {
        assert!(
            q.is_finite() && *q >= 0.000_002 && *q < 2.0,
            "histogram_quantile: {quantiles:?}"
        );
    }
    assert!(quantiles[0] <= quantiles[1], "{quantiles:?}");
    // Aggregating over the label set, the way dashboards do, works as well.
    let by_le = prometheus
        .value(&format!(
            "histogram_quantile(0.9, sum by (le) ({selector}))"
        ))
        .unwrap();
    assert!(by_le.is_finite() && by_le > 0.0, "{by_le}");

    // memhog touched 80 MiB of anonymous memory: a fault per 4 KiB page, 20 480 at least, and
    // the cgroup's memory.stat says how many it took in all.
    let expected = (faults_after - faults_before) as f64;
    assert!(expected >= 20480.0, "memory.stat pgfault +{expected}");
    let faults = prometheus.wait_for(
        &format!(
            r#"sum(memstall_page_faults_total{{cgroup="{}"}})"#,
            reclaim.relative
        ),
        |v| v >= expected,
    );
    assert_eq!(faults, expected, "minor + major vs memory.stat pgfault");
    prometheus.wait_for(
        &format!(
            r#"memstall_lru_pages_reclaimed_total{{cgroup="{}",reclaimer="direct"}}"#,
            reclaim.relative
        ),
        |v| v > 0.0,
    );
    let last_kill = prometheus
        .value(&format!(
            r#"memstall_last_oom_kill_timestamp_seconds{{cgroup="{}"}}"#,
            oom.relative
        ))
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!((now - last_kill).abs() < 300.0, "{last_kill} vs {now}");
    assert_eq!(
        prometheus.value("memstall_ring_buffer_dropped_events_total"),
        Some(0.0)
    );
    assert_eq!(
        prometheus.value(r#"memstall_hook_up{hook="memcg_reclaim"}"#),
        Some(1.0)
    );
    assert_eq!(prometheus.value(r#"up{job="memstall"}"#), Some(1.0));

    // What Prometheus parsed, straight from the exporter: OpenMetrics, no per-process labels.
    let (status, text) = http_get(port, "/metrics").unwrap();
    assert_eq!(status, 200);
    assert!(text.ends_with("# EOF\n"), "{text}");
    assert!(!text.contains("pid=") && !text.contains("comm="), "{text}");
    let sample: Vec<&str> = text
        .lines()
        .filter(|l| !l.contains("_bucket{") || l.contains("le=\"0.000128\""))
        .collect();
    eprintln!("/metrics (buckets but one elided):\n{}", sample.join("\n"));
    assert_eq!(http_get(port, "/nope").unwrap().0, 404);

    let (status, stderr) = memstall.stop(libc::SIGTERM).unwrap();
    assert!(status.success(), "{stderr:?}");
    assert!(
        stderr
            .iter()
            .any(|l| l.contains(&format!("Prometheus metrics at http://{listen}/metrics"))),
        "{stderr:?}"
    );
    eprintln!(
        "prometheus: {count} memcg_reclaim stalls, p50 {:.6} s, p99 {:.6} s, {kernel_kills} OOM kill(s); test took {:.1} s",
        quantiles[0],
        quantiles[1],
        started.elapsed().as_secs_f64()
    );
}

/// A port already taken is bad input: exit 2, one line, before anything loads.
#[test]
fn taken_port_is_a_one_line_error() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = Command::new(memstall_bin())
        .args(["serve", "--listen", &addr, "--duration", "1"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with(&format!("memstall: cannot listen on {addr}: ")),
        "{stderr}"
    );
}
