//! `memstall soak`: a run that breaches its thresholds exits 3 naming each breach, a quiet one
//! exits 0, and the HTML report renders in a real browser (headless Chromium).
use std::{
    fs,
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use memstall_tests::{MIB, MemCgroup, Memstall, memhog, memstall_bin, pressure};
use serde_json::Value;

const CHROMIUM: &str = "/usr/bin/chromium";

/// Report paths in `dir`, as `--report FILE --report-json FILE` arguments.
struct Reports {
    html: PathBuf,
    json: PathBuf,
}

impl Reports {
    fn in_dir(dir: &Path) -> Self {
        Self {
            html: dir.join("soak.html"),
            json: dir.join("soak.json"),
        }
    }

    fn args(&self) -> [&str; 4] {
        [
            "--report",
            self.html.to_str().unwrap(),
            "--report-json",
            self.json.to_str().unwrap(),
        ]
    }

    fn json(&self) -> Value {
        serde_json::from_str(&fs::read_to_string(&self.json).unwrap()).unwrap()
    }
}

/// `memstall soak ARGS`, started (hooks attached) but not yet waited for.
fn start_soak(args: &[&str], reports: &Reports) -> Memstall {
    let mut all = vec!["soak"];
    all.extend_from_slice(args);
    all.extend_from_slice(&reports.args());
    Memstall::start(&all).unwrap()
}

fn soak_lines(stderr: &[String]) -> Vec<&str> {
    stderr
        .iter()
        .map(String::as_str)
        .filter(|l| l.starts_with("memstall: soak:"))
        .collect()
}

#[test]
fn oom_kill_and_slow_reclaim_breach_with_exit_3() {
    let started = Instant::now();
    let oom = MemCgroup::create("soak-oom", 32 * MIB).unwrap();
    let reclaim = MemCgroup::create("soak-reclaim", 96 * MIB).unwrap();
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let reports = Reports::in_dir(dir.path());
    let memstall = start_soak(
        &[
            "--duration",
            "8",
            "--interval",
            "1",
            "--cgroup",
            oom.path.to_str().unwrap(),
            "--cgroup",
            &reclaim.relative,
            "--max-oom-kills",
            "0",
            "--max-p99",
            "memcg_reclaim=0.001",
        ],
        &reports,
    );
    pressure(&reclaim, &dir.path().join("cache.img"), 40, 80);
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
    let (status, stderr) = memstall.wait().unwrap();
    let kernel_kills = oom.oom_kills().unwrap();
    let lines = soak_lines(&stderr);
    assert_eq!(status.code(), Some(3), "{stderr:#?}");
    let breach = |prefix: &str| {
        lines
            .iter()
            .any(|l| l.starts_with(&format!("memstall: soak: breach: {prefix}")))
    };
    assert!(
        breach(&format!("OOM kills {kernel_kills} > 0 (last: memhog pid ")),
        "{lines:#?}"
    );
    assert!(breach("memcg_reclaim p99 "), "{lines:#?}");
    assert!(
        lines.iter().any(
            |l| l.starts_with("memstall: soak: breach: memcg_reclaim p99 ")
                && l.contains(" ms > 0.001 ms (in ")
        ),
        "{lines:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("memstall: soak: 2 of 2 check(s) breached; report ")),
        "{lines:#?}"
    );

    let report = reports.json();
    assert_eq!(report["verdict"], "breach");
    assert_eq!(
        report["oom_kills"], kernel_kills,
        "kills seen = the kernel's counter"
    );
    assert_eq!(report["breaches"].as_array().unwrap().len(), 2);
    let stalls = report["stalls"].as_array().unwrap();
    assert!(
        stalls
            .iter()
            .any(|s| s["cgroup"] == reclaim.relative.as_str()
                && s["kind"] == "memcg_reclaim"
                && s["count"].as_u64() > Some(0)),
        "{stalls:#?}"
    );
    assert!(
        report["intervals"].as_u64() >= Some(6),
        "{}",
        report["intervals"]
    );
    let html = fs::read_to_string(&reports.html).unwrap();
    assert!(html.contains("BREACH: 2 of 2 check(s) breached"));
    for line in &lines {
        eprintln!("{line}");
    }
    eprintln!(
        "soak breach: exit {status}; test took {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn quiet_run_holds_with_exit_0() {
    let started = Instant::now();
    let cgroup = MemCgroup::create("soak-quiet", 256 * MIB).unwrap();
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let reports = Reports::in_dir(dir.path());
    // A steady resident: 16 MiB, touched before the run starts, held past its end.
    let mut hog = KillOnDrop(
        memhog()
            .args([
                "--cgroup",
                cgroup.path.to_str().unwrap(),
                "--anon-mib",
                "16",
                "--hold-secs",
                "60",
            ])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    BufReader::new(hog.0.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "memhog: done");
    let memstall = start_soak(
        &[
            "--duration",
            "6",
            "--interval",
            "1",
            "--cgroup",
            cgroup.path.to_str().unwrap(),
            "--max-oom-kills",
            "0",
            "--max-p99",
            "memcg_reclaim=1000",
            "--max-stall-per-minute",
            "60000",
            "--max-growth-per-hour",
            "512",
        ],
        &reports,
    );
    let (status, stderr) = memstall.wait().unwrap();
    let lines = soak_lines(&stderr);
    assert!(status.success(), "{status}: {stderr:#?}");
    assert_eq!(
        lines,
        [format!(
            "memstall: soak: pass: all 4 check(s) hold; report {}, {}",
            reports.html.display(),
            reports.json.display()
        )],
        "{stderr:#?}"
    );
    let report = reports.json();
    assert_eq!(report["verdict"], "pass");
    assert!(report["breaches"].as_array().unwrap().is_empty());
    let memory = &report["memory"][0];
    assert_eq!(memory["cgroup"], cgroup.relative.as_str());
    assert!(memory["samples"].as_u64() >= Some(7), "{memory}");
    assert!(
        memory["last_usage_bytes"].as_u64() >= Some(16 * MIB),
        "{memory}"
    );
    let growth = memory["growth_mib_per_hour"].as_f64().unwrap();
    assert!(growth.abs() < 512.0, "{growth}");
    for line in &lines {
        eprintln!("{line}");
    }
    eprintln!(
        "soak hold: exit {status}, growth {growth:.1} MiB/h; test took {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// A child process killed when the test ends, also on panic.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn ensure_chromium() {
    memstall_tests::ensure_installed(CHROMIUM, "chromium");
}

/// Headless Chromium's screenshot of `page`, 1200×1600.
fn screenshot(page: &Path, png: &Path) -> ExitStatus {
    let profile = tempfile::tempdir().unwrap();
    let mut chromium = KillOnDrop(
        Command::new(CHROMIUM)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(format!("--screenshot={}", png.display()))
            .arg("--window-size=1200,1600")
            .arg(format!("file://{}", page.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_mins(2);
    loop {
        if let Some(status) = chromium.0.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "chromium hung for 120 s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// (width, height, RGB pixels) of a PNG.
fn decode_png(path: &Path) -> (u32, u32, Vec<[u8; 3]>) {
    let file = BufReader::new(fs::File::open(path).unwrap());
    let mut reader = png::Decoder::new(file).read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let channels = info.color_type.samples();
    assert_eq!(info.bit_depth, png::BitDepth::Eight, "{info:?}");
    let pixels = buf[..info.buffer_size()]
        .chunks(channels)
        .map(|p| match channels {
            1 | 2 => [p[0]; 3],
            _ => [p[0], p[1], p[2]],
        })
        .collect();
    (info.width, info.height, pixels)
}

#[test]
fn growth_breach_and_the_html_report_renders_in_chromium() {
    let started = Instant::now();
    ensure_chromium();
    let grow = MemCgroup::create("soak-grow", 256 * MIB).unwrap();
    let reclaim = MemCgroup::create("soak-plot", 96 * MIB).unwrap();
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let reports = Reports::in_dir(dir.path());
    let memstall = start_soak(
        &[
            "--duration",
            "8",
            "--interval",
            "1",
            "--cgroup",
            grow.path.to_str().unwrap(),
            "--cgroup",
            reclaim.path.to_str().unwrap(),
            "--max-growth-per-hour",
            "100",
            "--max-p99",
            "memcg_reclaim=60000",
        ],
        &reports,
    );
    // 48 MiB in 4 MiB steps over about 5 s: thousands of MiB per hour.
    let _hog = KillOnDrop(
        memhog()
            .args([
                "--cgroup",
                grow.path.to_str().unwrap(),
                "--anon-mib",
                "48",
                "--step-mib",
                "4",
                "--step-ms",
                "400",
                "--hold-secs",
                "60",
            ])
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    pressure(&reclaim, &dir.path().join("cache.img"), 40, 80);
    let (status, stderr) = memstall.wait().unwrap();
    let lines = soak_lines(&stderr);
    assert_eq!(status.code(), Some(3), "{stderr:#?}");
    let growth_line = "memstall: soak: breach: memory growth ";
    let grow_breach = lines
        .iter()
        .find(|l| {
            l.starts_with(growth_line)
                && l.contains(&format!("MiB/h > 100 MiB/h ({}: usage ", grow.relative))
        })
        .unwrap_or_else(|| panic!("{lines:#?}"));
    eprintln!("{grow_breach}");

    // The page itself: four inline SVG charts, series drawn, axes labelled, nothing fetched.
    let html = fs::read_to_string(&reports.html).unwrap();
    assert_eq!(
        html.matches("<svg").count(),
        4,
        "memory, latency, stall/min, faults"
    );
    for needle in [
        "Memory usage and working set",
        "Stall latency per interval",
        "Page faults per second",
        "time since start (s)",
        "\nMiB\n</text>",
        "ms (log)",
        &format!("{} usage", grow.relative),
        &format!("{} working set", grow.relative),
        "memcg_reclaim p99",
        "stroke=\"#1F77B4\"",
    ] {
        assert!(html.contains(needle), "{needle} missing");
    }
    assert!(html.matches("<polyline").count() > 20);
    assert!(html.matches("<circle").count() > 10);
    for forbidden in ["http://", "https://", "<script", "<link", "<img", "url("] {
        assert!(!html.contains(forbidden), "{forbidden} in the report");
    }

    let png = dir.path().join("report.png");
    let shot = screenshot(&reports.html, &png);
    assert!(shot.success(), "chromium: {shot}");
    let size = fs::metadata(&png).unwrap().len();
    assert!(size > 10_000, "screenshot only {size} bytes");
    let (width, height, pixels) = decode_png(&png);
    assert_eq!((width, height), (1200, 1600));
    let near = |want: [u8; 3]| {
        pixels
            .iter()
            .any(|p| p.iter().zip(want).all(|(a, b)| a.abs_diff(b) <= 12))
    };
    let mut colours: Vec<[u8; 3]> = pixels.clone();
    colours.sort_unstable();
    colours.dedup();
    let white = pixels.iter().filter(|p| **p == [255; 3]).count();
    assert!(colours.len() > 50, "{} colours", colours.len());
    assert!(
        white < pixels.len() * 98 / 100,
        "{white} of {} white",
        pixels.len()
    );
    // The red BREACH banner (CSS) and the first series' blue (SVG) are on screen.
    assert!(near([0xc6, 0x28, 0x28]), "no banner red");
    assert!(near([0x1f, 0x77, 0xb4]), "no series blue");
    eprintln!(
        "soak report: {} bytes of HTML, screenshot {size} bytes {width}x{height}, {} colours, {:.1} % white; test took {:.1} s",
        html.len(),
        colours.len(),
        white as f64 * 100.0 / pixels.len() as f64,
        started.elapsed().as_secs_f64()
    );
}

/// Missing --duration, an unknown stall kind, an unwritable report: exit 2, before loading.
#[test]
fn bad_soak_input_is_exit_2() {
    let run = |args: &[&str]| {
        let out = Command::new(memstall_bin()).args(args).output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, stderr) = run(&["soak", "--max-oom-kills", "0"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--duration <SECS>"), "{stderr}");
    let (code, stderr) = run(&["soak", "--duration", "1", "--max-p99", "reclaim=5"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("unknown stall kind `reclaim`"), "{stderr}");
    let (code, stderr) = run(&[
        "soak",
        "--duration",
        "1",
        "--report",
        "/nonexistent/dir/r.html",
    ]);
    assert_eq!(code, Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("memstall: cannot write --report /nonexistent/dir/r.html: "),
        "{stderr}"
    );
}
