//! A real Prometheus server (Debian's, installed when missing) scraping `memstall serve` once a
//! second, and a tiny HTTP client to ask it (and the exporter) things.
use std::{
    fs,
    io::{Read as _, Write as _},
    net::{TcpListener, TcpStream},
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::wait_until;

const PROMETHEUS: &str = "/usr/bin/prometheus";

/// Debian's Prometheus, installed only when missing (CI machines start fresh, as root).
pub fn ensure_prometheus() {
    crate::ensure_installed(PROMETHEUS, "prometheus");
    // The package starts its service where systemd runs (on every interface): this test only
    // wants the binary.
    if Path::new("/run/systemd/system").exists() {
        let _ = Command::new("systemctl")
            .args(["disable", "--now", "prometheus.service"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    assert!(
        Path::new(PROMETHEUS).exists(),
        "{PROMETHEUS} missing after install"
    );
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process killed when the test ends, also on panic.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A plain HTTP/1.0 GET on loopback: (status, body).
pub fn http_get(port: u16, path_and_query: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET {path_and_query} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let response = String::from_utf8_lossy(&response);
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok((status, body.to_owned()))
}

pub fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub struct Prometheus {
    pub port: u16,
    _child: KillOnDrop,
}

impl Prometheus {
    pub fn start(dir: &Path, target_port: u16) -> Self {
        let config = dir.join("prometheus.yml");
        fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: memstall\n    static_configs:\n      - targets: [\"127.0.0.1:{target_port}\"]\n"
            ),
        )
        .unwrap();
        let port = free_port();
        let log = fs::File::create(dir.join("prometheus.log")).unwrap();
        let child = Command::new(PROMETHEUS)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let prometheus = Self {
            port,
            _child: KillOnDrop(child),
        };
        let ready = wait_until(Duration::from_secs(30), || {
            http_get(port, "/-/ready").is_ok_and(|(status, _)| status == 200)
        });
        assert!(
            ready,
            "Prometheus not ready: {}",
            fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default()
        );
        prometheus
    }

    /// An instant query's result vector.
    pub fn query(&self, promql: &str) -> Vec<Value> {
        let (status, body) = http_get(
            self.port,
            &format!("/api/v1/query?query={}", url_encode(promql)),
        )
        .unwrap();
        let reply: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        assert_eq!(status, 200, "{promql}: {body}");
        assert_eq!(reply["status"], "success", "{promql}: {body}");
        reply["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The value of a query that yields one series, if it does.
    pub fn value(&self, promql: &str) -> Option<f64> {
        let result = self.query(promql);
        let [series] = result.as_slice() else {
            return None;
        };
        series["value"][1].as_str()?.parse().ok()
    }

    /// Polls until `promql` yields one series whose value satisfies `ok`.
    pub fn wait_for(&self, promql: &str, ok: impl Fn(f64) -> bool) -> f64 {
        let deadline = Instant::now() + Duration::from_mins(1);
        loop {
            let value = self.value(promql);
            if let Some(v) = value.filter(|v| ok(*v)) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "{promql}: {value:?} after 60 s; all series: {:#?}",
                self.query(r#"{__name__=~"memstall_.*_count|memstall_.*_total|up"}"#)
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// A range query's result matrix, from `start` to `end` (Unix seconds) every `step_secs`.
    pub fn query_range(&self, promql: &str, start: f64, end: f64, step_secs: u32) -> Vec<Value> {
        let (status, body) = http_get(
            self.port,
            &format!(
                "/api/v1/query_range?query={}&start={start:.3}&end={end:.3}&step={step_secs}",
                url_encode(promql)
            ),
        )
        .unwrap();
        let reply: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        assert_eq!(status, 200, "{promql}: {body}");
        assert_eq!(reply["status"], "success", "{promql}: {body}");
        reply["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The values `label` takes in series matching `selector` (what Grafana's
    /// `label_values(selector, label)` asks).
    pub fn label_values(&self, selector: &str, label: &str) -> Vec<String> {
        let (status, body) = http_get(
            self.port,
            &format!(
                "/api/v1/label/{label}/values?match[]={}",
                url_encode(selector)
            ),
        )
        .unwrap();
        let reply: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        assert_eq!(status, 200, "{selector} {label}: {body}");
        reply["data"]
            .as_array()
            .map(|values| {
                values
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }
}
