//! `cargo xtask bench`: overhead of tracing, measured as ratios within one run (tracer on vs
//! off, interleaved round by round), against bpftrace doing the nearest equivalent; per-program
//! cost from the kernel's BPF stats; userspace ingest; tracer RSS and CPU. Results go to
//! bench/results.md. Speed goals live here, never in timed tests.
use std::{
    fmt::Write as _,
    fs,
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::{cargo, run, workspace_root};

const ROUNDS: usize = 7;
const FAULT_STORM_MIB_PER_THREAD: &str = "1024";
const CGROUP_COUNT: usize = 10_000;
const RECLAIM_STORM_MIB: u32 = 1024;

struct Bins {
    memstall: PathBuf,
    memhog: PathBuf,
}

/// A tracer running in the background, stopped with SIGINT when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGINT) };
        let _ = self.0.wait();
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Tracer {
    Off,
    Memstall,
    MemstallMemcgEvents,
    MemstallFaultCounter,
    BpftracePageFault,
    BpftraceMemcgEvents,
}

impl Tracer {
    const ALL: [Tracer; 6] = [
        Self::Off,
        Self::Memstall,
        Self::MemstallMemcgEvents,
        Self::MemstallFaultCounter,
        Self::BpftracePageFault,
        Self::BpftraceMemcgEvents,
    ];

    fn name(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Memstall => "memstall (default: faults from memory.stat)",
            Self::MemstallMemcgEvents => "memstall --memcg-events",
            Self::MemstallFaultCounter => "memstall --faults ebpf",
            Self::BpftracePageFault => "bpftrace exceptions:page_fault_user @[cgroup]=count()",
            Self::BpftraceMemcgEvents => "bpftrace memcg:count_memcg_events @[id]=count()",
        }
    }

    /// Starts the tracer and waits until it is attached.
    fn start(self, bins: &Bins) -> Result<Option<Running>> {
        let (mut command, ready_on_stderr, marker) = match self {
            Self::Off => return Ok(None),
            Self::Memstall | Self::MemstallMemcgEvents | Self::MemstallFaultCounter => {
                let mut c = Command::new(&bins.memstall);
                c.args(["--json", "/dev/null", "--interval", "1"]);
                if self == Self::MemstallMemcgEvents {
                    c.arg("--memcg-events");
                }
                if self == Self::MemstallFaultCounter {
                    c.args(["--faults", "ebpf"]);
                }
                (c, true, "tracing")
            }
            Self::BpftracePageFault | Self::BpftraceMemcgEvents => {
                let program = if self == Self::BpftracePageFault {
                    "tracepoint:exceptions:page_fault_user { @[cgroup] = count(); }"
                } else {
                    "tracepoint:memcg:count_memcg_events { @[args->id] = count(); }"
                };
                let mut c = Command::new("bpftrace");
                c.args(["-e", program]);
                (c, false, "Attaching")
            }
        };
        command.stdin(Stdio::null());
        if ready_on_stderr {
            command.stdout(Stdio::null()).stderr(Stdio::piped());
        } else {
            command.stdout(Stdio::piped()).stderr(Stdio::null());
        }
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {}", self.name()))?;
        let pipe: Box<dyn std::io::Read + Send> = if ready_on_stderr {
            Box::new(child.stderr.take().context("stderr")?)
        } else {
            Box::new(child.stdout.take().context("stdout")?)
        };
        let mut lines = BufReader::new(pipe).lines();
        loop {
            match lines.next() {
                Some(Ok(line)) if line.contains(marker) => break,
                Some(Ok(_)) => continue,
                _ => bail!("{} exited before attaching", self.name()),
            }
        }
        // Keep draining the pipe so the tracer never blocks on a full one.
        thread::spawn(move || for _ in lines {});
        Ok(Some(Running(child)))
    }
}

fn timed(mut start: impl FnMut() -> Result<Vec<Child>>) -> Result<f64> {
    let began = Instant::now();
    for mut child in start()? {
        let status = child.wait()?;
        if !status.success() {
            bail!("workload failed: {status}");
        }
    }
    Ok(began.elapsed().as_secs_f64())
}

/// Two threads (processes) touching fresh anonymous memory: every page is a fault.
fn fault_storm(bins: &Bins) -> Result<f64> {
    timed(|| {
        (0..2)
            .map(|_| {
                Command::new(&bins.memhog)
                    .args(["--anon-mib", FAULT_STORM_MIB_PER_THREAD])
                    .stdout(Stdio::null())
                    .spawn()
                    .context("memhog")
            })
            .collect()
    })
}

/// Page cache cycling through a 64 MiB memory cgroup: every charge reclaims.
fn reclaim_storm(bins: &Bins, cgroup: &Path, file: &Path) -> Result<f64> {
    let spec = format!("{}:{RECLAIM_STORM_MIB}", file.display());
    timed(|| {
        let child = Command::new(&bins.memhog)
            .args([
                "--cgroup",
                cgroup.to_str().unwrap_or_default(),
                "--page-cache",
                &spec,
            ])
            .stdout(Stdio::null())
            .spawn()
            .context("memhog")?;
        Ok(vec![child])
    })
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}

fn memory_root() -> Result<(PathBuf, bool)> {
    if Path::new("/sys/fs/cgroup/memory/memory.limit_in_bytes").exists() {
        Ok(("/sys/fs/cgroup/memory".into(), true))
    } else if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        fs::write("/sys/fs/cgroup/cgroup.subtree_control", "+memory").ok();
        Ok(("/sys/fs/cgroup".into(), false))
    } else {
        bail!("no memory cgroup hierarchy found")
    }
}

/// A cgroup made for the benchmark, removed (with its children) on drop.
struct BenchCgroup(PathBuf);

impl BenchCgroup {
    fn new(name: &str, limit: Option<u64>) -> Result<Self> {
        let (root, v1) = memory_root()?;
        let dir = root.join(name);
        let _ = fs::create_dir(&dir);
        if let Some(limit) = limit {
            let file = if v1 {
                "memory.limit_in_bytes"
            } else {
                "memory.max"
            };
            fs::write(dir.join(file), limit.to_string()).context("setting the limit")?;
        }
        Ok(Self(dir))
    }
}

impl Drop for BenchCgroup {
    fn drop(&mut self) {
        for entry in fs::read_dir(&self.0).into_iter().flatten().flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                let _ = fs::remove_dir(entry.path());
            }
        }
        for _ in 0..50 {
            if fs::remove_dir(&self.0).is_ok() || !self.0.exists() {
                return;
            }
            thread::sleep(Duration::from_millis(100));
        }
    }
}

/// run_time_ns / run_cnt of every memstall program, while the fault storm runs.
fn bpf_program_costs(bins: &Bins) -> Result<Vec<(String, u64, f64)>> {
    fs::write("/proc/sys/kernel/bpf_stats_enabled", "1").context("enabling BPF stats")?;
    let result = (|| {
        let _tracer = Tracer::MemstallFaultCounter.start(bins)?;
        fault_storm(bins)?;
        let out = Command::new("bpftool")
            .args(["prog", "show", "--json"])
            .output()
            .context("bpftool")?;
        let progs: serde_json::Value =
            serde_json::from_slice(&out.stdout).context("bpftool JSON")?;
        let mut costs = Vec::new();
        for prog in progs.as_array().into_iter().flatten() {
            let name = prog["name"].as_str().unwrap_or_default().to_owned();
            let (Some(runs), Some(ns)) = (prog["run_cnt"].as_u64(), prog["run_time_ns"].as_u64())
            else {
                continue;
            };
            if runs > 0 {
                costs.push((name, runs, ns as f64 / runs as f64));
            }
        }
        costs.sort_by_key(|c| std::cmp::Reverse(c.1));
        Ok(costs)
    })();
    let _ = fs::write("/proc/sys/kernel/bpf_stats_enabled", "0");
    result
}

/// RSS (kB) and CPU (% of one core) of a memstall run over `secs`.
fn tracer_footprint(bins: &Bins, secs: u64) -> Result<(u64, u64, f64)> {
    let tracer = Tracer::Memstall.start(bins)?.context("memstall")?;
    let pid = tracer.0.id();
    let cpu_ticks = || -> Result<u64> {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
        let fields: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        Ok(fields[11].parse::<u64>()? + fields[12].parse::<u64>()?)
    };
    let before = cpu_ticks()?;
    thread::sleep(Duration::from_secs(secs));
    let after = cpu_ticks()?;
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb = |key: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key)?.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Ok((
        kb("VmRSS:"),
        kb("VmHWM:"),
        (after - before) as f64 / hz / secs as f64 * 100.0,
    ))
}

fn row(out: &mut String, what: &str, times: &[f64], baseline: f64) {
    let m = median(times);
    let min = times.iter().copied().fold(f64::MAX, f64::min);
    let max = times.iter().copied().fold(0.0, f64::max);
    let _ = writeln!(
        out,
        "| {what} | {m:.3} s | {min:.3}–{max:.3} s | {:.3}× |",
        m / baseline
    );
}

pub fn bench() -> Result<()> {
    if !crate::is_root() {
        bail!("the benchmark loads eBPF programs and creates cgroups: run it as root");
    }
    crate::setup::apt_ensure(&["bpftrace", "bpftool"])?;
    run(cargo().args([
        "build",
        "--release",
        "-p",
        "memstall",
        "--bin",
        "memstall",
        "--example",
        "ingest",
    ]))?;
    run(cargo().args([
        "build",
        "--release",
        "-p",
        "memstall-tests",
        "--bin",
        "memhog",
    ]))?;
    let release = workspace_root().join("target/release");
    let bins = Bins {
        memstall: release.join("memstall"),
        memhog: release.join("memhog"),
    };

    eprintln!(
        "bench: fault storm and memcg-reclaim storm, {ROUNDS} rounds x {} tracer settings",
        Tracer::ALL.len()
    );
    let storm_cgroup = BenchCgroup::new("memstall-bench-reclaim", Some(64 << 20))?;
    let cache_dir = tempfile_dir()?;
    let cache_file = cache_dir.join("cycle.img");
    reclaim_storm(&bins, &storm_cgroup.0, &cache_file)?; // creates the file
    let mut faults: Vec<Vec<f64>> = vec![Vec::new(); Tracer::ALL.len()];
    let mut reclaim: Vec<Vec<f64>> = vec![Vec::new(); Tracer::ALL.len()];
    for round in 0..ROUNDS {
        for (i, tracer) in Tracer::ALL.iter().enumerate() {
            let _running = tracer.start(&bins)?;
            faults[i].push(fault_storm(&bins)?);
            reclaim[i].push(reclaim_storm(&bins, &storm_cgroup.0, &cache_file)?);
        }
        eprintln!("bench: round {} of {ROUNDS} done", round + 1);
    }
    drop(storm_cgroup);
    let _ = fs::remove_dir_all(&cache_dir);

    eprintln!("bench: per-program cost (kernel BPF stats)");
    let costs = bpf_program_costs(&bins)?;
    eprintln!("bench: userspace ingest");
    let ingest = Command::new(release.join("examples/ingest"))
        .arg("20000000")
        .output()
        .context("ingest example")?;
    let ingest = String::from_utf8_lossy(&ingest.stdout).trim().to_owned();
    eprintln!("bench: tracer footprint, idle and with {CGROUP_COUNT} cgroups");
    let idle = tracer_footprint(&bins, 10)?;
    let many = {
        let parent = BenchCgroup::new("memstall-bench-many", None)?;
        for i in 0..CGROUP_COUNT {
            fs::create_dir(parent.0.join(format!("c{i}"))).context("creating bench cgroups")?;
        }
        tracer_footprint(&bins, 10)?
    };

    let mut out = String::new();
    let uname = Command::new("uname")
        .arg("-r")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())?;
    let date = Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())?;
    let cpus = thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let mem_gib = fs::read_to_string("/proc/meminfo")?
        .lines()
        .find_map(|l| {
            l.strip_prefix("MemTotal:")?
                .split_whitespace()
                .next()?
                .parse::<f64>()
                .ok()
        })
        .unwrap_or(0.0)
        / 1024.0
        / 1024.0;
    let _ = writeln!(
        out,
        "# memstall benchmark\n\n`cargo xtask bench`, {date}; kernel {uname}; {cpus} CPUs, {mem_gib:.0} GiB; {ROUNDS} rounds, tracer settings interleaved within each round. Ratios are medians against `off` from the same run.\n"
    );
    let _ = writeln!(
        out,
        "## Fault storm (2 × {FAULT_STORM_MIB_PER_THREAD} MiB of fresh anonymous memory; goal ≤ 1.02× for memstall)\n\n| tracer | median | spread | ratio |\n| --- | --- | --- | --- |"
    );
    let base = median(&faults[0]);
    for (i, tracer) in Tracer::ALL.iter().enumerate() {
        row(&mut out, tracer.name(), &faults[i], base);
    }
    let _ = writeln!(
        out,
        "\n## memcg-reclaim storm ({RECLAIM_STORM_MIB} MiB of page cache read through a 64 MiB cgroup; goal ≤ 1.03×)\n\n| tracer | median | spread | ratio |\n| --- | --- | --- | --- |"
    );
    let base = median(&reclaim[0]);
    for (i, tracer) in Tracer::ALL.iter().enumerate() {
        row(&mut out, tracer.name(), &reclaim[i], base);
    }
    let _ = writeln!(
        out,
        "\n## Per-program cost during a fault storm with `--faults ebpf` (BPF stats)\n\n| program | runs | ns per run |\n| --- | --- | --- |"
    );
    for (name, runs, ns) in costs.iter().take(12) {
        let _ = writeln!(out, "| {name} | {runs} | {ns:.0} |");
    }
    let _ = writeln!(
        out,
        "\n## Userspace ingest (synthetic ring-buffer records, one core; goal ≥ 5 M/s)\n\n{ingest}\n"
    );
    let _ = writeln!(
        out,
        "## Tracer footprint over 10 s (goal ≤ 40 MiB with {CGROUP_COUNT} cgroups)\n\nRSS after start-up; the peak is start-up parsing the kernel's BTF, freed before tracing.\n\n| situation | RSS | peak RSS | CPU |\n| --- | --- | --- | --- |"
    );
    for (what, (rss, hwm, cpu)) in [
        ("idle", idle),
        (&*format!("{CGROUP_COUNT} memory cgroups"), many),
    ] {
        let _ = writeln!(
            out,
            "| {what} | {:.1} MiB | {:.1} MiB | {cpu:.1} % |",
            rss as f64 / 1024.0,
            hwm as f64 / 1024.0
        );
    }
    let path = workspace_root().join("bench/results.md");
    fs::create_dir_all(path.parent().unwrap_or(Path::new(".")))?;
    fs::write(&path, &out)?;
    print!("{out}");
    eprintln!("bench: written to {}", path.display());
    Ok(())
}

fn tempfile_dir() -> Result<PathBuf> {
    let dir = PathBuf::from(format!("/var/tmp/memstall-bench-{}", std::process::id()));
    fs::create_dir_all(&dir)?;
    Ok(dir)
}
