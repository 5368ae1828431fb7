//! The command line: every clap type and value parser. Low-level arguments, validated here;
//! `cmd/` decides what they mean for each stage. Imported only by `cmd/`.
use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};
use memstall_common::StallKind;

use crate::{
    aggregate::FaultSource, kernel::btf::VMLINUX_BTF, sink::prometheus::http::DEFAULT_LISTEN,
    sink::soak::P99Limit,
};

/// `memstall --version`: the release, the commit it was built from and the SHA-256 of the
/// eBPF object inside (both from build.rs), so a copied binary can be traced to its source.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (git ",
    env!("MEMSTALL_GIT_REVISION"),
    ", eBPF object sha256 ",
    env!("MEMSTALL_EBPF_SHA256"),
    ")"
);

/// Which cgroup stalled on memory, for how long, and why the OOM killer picked its victim.
#[derive(Debug, Parser)]
#[command(name = "memstall", version = VERSION, args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub trace: TraceArgs,
}

/// How to trace: the default command's options, shared with `serve`.
#[derive(Debug, Args)]
pub struct TraceArgs {
    /// Write events as JSON Lines to FILE ("-" for stdout, which replaces the human lines).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,

    /// Stop after SECS seconds (decimals allowed); otherwise run until SIGINT or SIGTERM.
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    pub duration: Option<Duration>,

    /// Report stalls at least this long one by one, with kernel and user stacks (milliseconds,
    /// decimals allowed; 0 reports every stall). All stalls go into the histograms.
    #[arg(long, value_name = "MS", default_value = "10", value_parser = parse_ms)]
    pub threshold: Duration,

    /// Print a summary (per-cgroup stall table and histograms) every SECS seconds, besides
    /// the one at the end.
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    pub interval: Option<Duration>,

    /// With --interval: stop after N summaries (like bcc's tools).
    #[arg(long, value_name = "N", requires = "interval", value_parser = clap::value_parser!(u32).range(1..))]
    pub count: Option<u32>,

    /// Plain lines even when stdout is a terminal (no live view).
    #[arg(long)]
    pub plain: bool,

    /// Only report events of this memory cgroup and its descendants, filtered in the kernel.
    /// An absolute cgroupfs path (/sys/fs/cgroup/memory/app), a path relative to the memory
    /// hierarchy root (/kubepods/burstable/pod…), or a systemd unit or slice name
    /// (nginx.service). Repeatable.
    #[arg(long, value_name = "PATH")]
    pub cgroup: Vec<String>,

    /// With --cgroup: only the named cgroups themselves, not their descendants.
    #[arg(long, requires = "cgroup")]
    pub no_descendants: bool,

    /// Use classic tracepoints even where tp_btf programs would attach (a diagnostic for
    /// unusual kernels; classic records carry fewer fields, e.g. no victim memcg id).
    #[arg(long)]
    pub force_tracepoints: bool,

    /// Where per-cgroup page-fault counts come from: memory.stat each interval (free per
    /// fault), or a kernel counter on every fault (for hosts with thousands of cgroups).
    #[arg(long, value_enum, default_value = "auto")]
    pub faults: FaultSource,

    /// Count each cgroup's LRU pages scanned/reclaimed in the kernel (memcg/count_memcg_events).
    /// Needed on cgroup v1, whose memory.stat lacks them; it runs on every page fault.
    #[arg(long)]
    pub memcg_events: bool,

    /// Time memcg charges (with failed charges) and page faults per cgroup with fentry/fexit,
    /// where the kernel allows trampolines. Runs on every page fault.
    #[arg(long)]
    pub latency: bool,

    /// Kernel BTF to read structure layouts from.
    #[arg(long, value_name = "FILE", default_value = VMLINUX_BTF)]
    pub btf: PathBuf,

    /// Print the eBPF programs' own warnings on stderr (a stall window lost, a map full, a
    /// kernel read that failed), at most one per kind and CPU a second. They are counted in
    /// the run's end record either way.
    #[arg(long)]
    pub bpf_log: bool,

    /// For tests: a ring buffer of this many bytes (a power-of-two number of pages) instead of
    /// 4 MiB, so it can be made to overflow.
    #[arg(long, value_name = "BYTES", hide = true, value_parser = parse_ring_bytes)]
    pub test_ring_bytes: Option<u32>,

    /// For tests: an in-flight window map of N entries instead of 16384, so windows are lost
    /// when more tasks stall at once.
    #[arg(long, value_name = "N", hide = true, value_parser = clap::value_parser!(u32).range(1..))]
    pub test_in_flight_entries: Option<u32>,

    /// For tests: read the kubelet's files (var/log/pods, var/log/containers,
    /// var/lib/kubelet/pods) below DIR instead of /.
    #[arg(long, value_name = "DIR", hide = true)]
    pub test_k8s_root: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// OOM kills still in the kernel log, each explained (scope, scores, scoreboard, memory
    /// breakdown): a post-mortem that works when memstall was not running.
    Oom(OomArgs),

    /// Trace like the default command and serve per-cgroup metrics to Prometheus over HTTP
    /// (GET /metrics): stall histograms, page faults, LRU pages, OOM kills, drops, hooks.
    Serve(ServeArgs),

    /// Can this machine run memstall? Checks kernel, BTF, cgroups, tracefs and privileges, and
    /// really loads and attaches every hook, saying what each missing one costs.
    Doctor(DoctorArgs),

    /// A soak gate: trace like the default command for --duration, sample the watched
    /// cgroups' memory every interval, hold the run against thresholds and write a JSON and
    /// an HTML report. Exit 3 when a threshold is breached, each breach named on stderr.
    #[command(mut_arg("duration", |arg| arg.required(true)))]
    Soak(SoakArgs),

    /// The man page or shell completions of this command line, on stdout (for packagers:
    /// `cargo xtask dist` ships them).
    #[command(hide = true, subcommand)]
    Generate(Generate),
}

#[derive(Debug, Subcommand)]
pub enum Generate {
    /// memstall(1) in roff, or the page of one subcommand (memstall-serve(1): `man serve`).
    Man {
        #[arg(value_name = "SUBCOMMAND")]
        subcommand: Option<String>,
    },
    /// A completion script for SHELL.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Args)]
pub struct SoakArgs {
    /// Most OOM kills allowed in the watched cgroups.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub max_oom_kills: u64,

    /// Most OOM risk warnings allowed in the watched cgroups (0: fail when any cgroup came
    /// near its limit, before the night it crosses it). Unset: not checked.
    #[arg(long, value_name = "N")]
    pub max_oom_risk: Option<u64>,

    /// Highest p99 over the run allowed for a stall kind, in milliseconds (memcg_reclaim=500).
    /// Repeatable.
    #[arg(long, value_name = "KIND=MS", value_parser = parse_p99_limit)]
    pub max_p99: Vec<P99Limit>,

    /// Most stall time of the watched cgroups in any minute, in milliseconds (judged every
    /// interval over the last minute of intervals, scaled to a minute).
    #[arg(long, value_name = "MS", value_parser = parse_limit)]
    pub max_stall_per_minute: Option<f64>,

    /// Fastest memory growth allowed, in MiB per hour: the least-squares slope of each watched
    /// cgroup's usage over the run (without --cgroup, the whole hierarchy's).
    #[arg(long, value_name = "MIB", value_parser = parse_limit)]
    pub max_growth_per_hour: Option<f64>,

    /// Where to write the HTML report (charts as inline SVG, self-contained).
    #[arg(long, value_name = "FILE", default_value = "soak-report.html")]
    pub report: PathBuf,

    /// Where to write the JSON report (verdict, checks, totals, series).
    #[arg(long, value_name = "FILE", default_value = "soak-report.json")]
    pub report_json: PathBuf,

    #[command(flatten)]
    pub trace: TraceArgs,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to serve /metrics on (IP:PORT; loopback unless told otherwise).
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,

    #[command(flatten)]
    pub trace: TraceArgs,
}

#[derive(Debug, Args)]
pub struct OomArgs {
    /// Write the kills as JSON Lines (`type: "oom_kill"`) to FILE ("-" for stdout).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,

    /// Only kills whose victim or OOM domain is in this cgroup or below (any --cgroup form).
    #[arg(long, value_name = "PATH")]
    pub cgroup: Vec<String>,

    /// Show at most the N most recent kills.
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub last: usize,
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Print one JSON object with every check instead of lines.
    #[arg(long)]
    pub json: bool,

    /// Kernel BTF to check and load with.
    #[arg(long, value_name = "FILE", default_value = VMLINUX_BTF)]
    pub btf: PathBuf,

    /// Also keep every hook attached for a second with the programs' log on: their warnings
    /// go to stderr and a `diagnostics` check counts them.
    #[arg(short, long)]
    pub verbose: bool,
}

/// A non-negative, finite number (milliseconds, MiB per hour).
pub fn parse_limit(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(value) if value.is_finite() && value >= 0.0 => Ok(value),
        _ => Err(format!("`{text}` must be a number, zero or more")),
    }
}

pub fn parse_p99_limit(text: &str) -> Result<P99Limit, String> {
    let (kind, ms) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}` is not KIND=MS (e.g. memcg_reclaim=500)"))?;
    let kind = StallKind::ALL
        .iter()
        .map(|k| k.name())
        .find(|name| *name == kind.trim())
        .ok_or_else(|| {
            let names: Vec<&str> = StallKind::ALL.iter().map(|k| k.name()).collect();
            format!("unknown stall kind `{kind}` (one of {})", names.join(", "))
        })?;
    Ok(P99Limit {
        kind,
        ms: parse_limit(ms)?,
    })
}

fn parse_ring_bytes(text: &str) -> Result<u32, String> {
    match text.parse::<u32>() {
        Ok(bytes) if bytes >= 4096 && bytes.is_power_of_two() => Ok(bytes),
        _ => Err(format!("`{text}` must be a power of two, 4096 or more")),
    }
}

fn parse_secs(text: &str) -> Result<Duration, String> {
    let secs: f64 = text
        .parse()
        .map_err(|_| format!("`{text}` is not a number of seconds"))?;
    if !secs.is_finite() || secs <= 0.0 || secs > 1e9 {
        return Err(format!("`{text}` must be a positive number of seconds"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn parse_ms(text: &str) -> Result<Duration, String> {
    let ms: f64 = text
        .parse()
        .map_err(|_| format!("`{text}` is not a number of milliseconds"))?;
    if !ms.is_finite() || !(0.0..=1e9).contains(&ms) {
        return Err(format!(
            "`{text}` must be zero or a positive number of milliseconds"
        ));
    }
    Ok(Duration::from_secs_f64(ms / 1000.0))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn parses_the_contract_flags() {
        let cli = Cli::try_parse_from([
            "memstall",
            "--json",
            "-",
            "--duration",
            "2.5",
            "--cgroup",
            "/sys/fs/cgroup/memory/a",
            "--cgroup",
            "/sys/fs/cgroup/memory/b",
        ])
        .unwrap();
        assert_eq!(cli.trace.json, Some(PathBuf::from("-")));
        assert_eq!(cli.trace.duration, Some(Duration::from_millis(2500)));
        assert_eq!(cli.trace.cgroup.len(), 2);
        assert_eq!(cli.trace.btf, PathBuf::from(VMLINUX_BTF));
        assert_eq!(cli.trace.threshold, Duration::from_millis(10));
        let cli =
            Cli::try_parse_from(["memstall", "--threshold", "0.5", "--interval", "1"]).unwrap();
        assert_eq!(cli.trace.threshold, Duration::from_micros(500));
        assert_eq!(cli.trace.interval, Some(Duration::from_secs(1)));
    }

    #[test]
    fn serve_subcommand_takes_the_trace_flags() {
        let cli = Cli::try_parse_from([
            "memstall",
            "serve",
            "--cgroup",
            "/a",
            "--threshold",
            "5",
            "--faults",
            "off",
            "--memcg-events",
        ])
        .unwrap();
        let args = match cli.command {
            Some(Command::Serve(args)) => args,
            other => panic!("{other:?}"),
        };
        assert_eq!(args.listen, "127.0.0.1:9464".parse().unwrap());
        assert_eq!(args.trace.cgroup, ["/a"]);
        assert_eq!(args.trace.threshold, Duration::from_millis(5));
        assert_eq!(args.trace.faults, FaultSource::Off);
        assert!(args.trace.memcg_events);
        assert_eq!(args.trace.btf, PathBuf::from(VMLINUX_BTF));
        let cli = Cli::try_parse_from(["memstall", "serve", "--listen", "[::1]:0"]).unwrap();
        assert!(matches!(cli.command, Some(Command::Serve(a)) if a.listen.port() == 0));
        assert!(Cli::try_parse_from(["memstall", "serve", "--listen", "nowhere"]).is_err());
        assert!(Cli::try_parse_from(["memstall", "--threshold", "5", "serve"]).is_err());
    }

    #[test]
    fn kernel_diagnostics_flags() {
        let cli = Cli::try_parse_from(["memstall"]).unwrap();
        assert!(!cli.trace.bpf_log);
        assert_eq!(cli.trace.test_in_flight_entries, None);
        let cli = Cli::try_parse_from(["memstall", "--bpf-log", "--test-in-flight-entries", "1"])
            .unwrap();
        assert!(cli.trace.bpf_log);
        assert_eq!(cli.trace.test_in_flight_entries, Some(1));
        assert!(Cli::try_parse_from(["memstall", "--test-in-flight-entries", "0"]).is_err());
        assert!(matches!(
            Cli::try_parse_from(["memstall", "serve", "--bpf-log"]).unwrap().command,
            Some(Command::Serve(args)) if args.trace.bpf_log
        ));
    }

    #[test]
    fn oom_subcommand() {
        let cli = Cli::try_parse_from(["memstall", "oom", "--last", "3", "--json", "-"]).unwrap();
        match cli.command {
            Some(Command::Oom(args)) => assert_eq!((args.last, args.json), (3, Some("-".into()))),
            other => panic!("{other:?}"),
        }
        assert!(Cli::try_parse_from(["memstall", "--duration", "1", "oom"]).is_err());
    }

    #[test]
    fn rejects_bad_durations() {
        for bad in ["0", "-1", "abc", "inf", "NaN"] {
            assert!(
                Cli::try_parse_from(["memstall", "--duration", bad]).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn parses_thresholds() {
        assert_eq!(
            parse_p99_limit("memcg_reclaim=500").unwrap(),
            P99Limit {
                kind: "memcg_reclaim",
                ms: 500.0
            }
        );
        assert_eq!(parse_p99_limit("direct_reclaim=0.25").unwrap().ms, 0.25);
        let err = parse_p99_limit("reclaim=5").unwrap_err();
        assert!(
            err.starts_with("unknown stall kind `reclaim` (one of direct_reclaim, memcg_reclaim"),
            "{err}"
        );
        for bad in [
            "memcg_reclaim",
            "memcg_reclaim=",
            "memcg_reclaim=-1",
            "memcg_reclaim=NaN",
            "=5",
        ] {
            assert!(parse_p99_limit(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_limit("0").unwrap(), 0.0);
        for bad in ["-0.5", "inf", "x", ""] {
            assert!(parse_limit(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn soak_subcommand_flags() {
        let cli = Cli::try_parse_from([
            "memstall",
            "soak",
            "--duration",
            "8",
            "--interval",
            "1",
            "--cgroup",
            "/a",
            "--max-oom-kills",
            "2",
            "--max-p99",
            "memcg_reclaim=500",
            "--max-p99",
            "direct_reclaim=50",
            "--max-stall-per-minute",
            "1000",
            "--max-growth-per-hour",
            "64",
            "--json",
            "-",
            "--report",
            "r.html",
        ])
        .unwrap();
        let Some(Command::Soak(args)) = cli.command else {
            panic!("not soak");
        };
        assert_eq!(args.max_oom_kills, 2);
        assert_eq!(args.max_p99.len(), 2);
        assert_eq!(args.max_stall_per_minute, Some(1000.0));
        assert_eq!(args.max_growth_per_hour, Some(64.0));
        assert_eq!(args.report, Path::new("r.html"));
        assert_eq!(args.report_json, Path::new("soak-report.json"));
        assert_eq!(args.trace.cgroup, ["/a"]);
        assert_eq!(args.trace.json.as_deref(), Some(Path::new("-")));
        // --duration is required for soak, and only for soak.
        assert!(Cli::try_parse_from(["memstall", "soak", "--cgroup", "/a"]).is_err());
        assert!(
            Cli::try_parse_from(["memstall", "soak", "--duration", "1", "--max-p99", "x=1"])
                .is_err()
        );
        assert!(Cli::try_parse_from(["memstall", "--cgroup", "/a"]).is_ok());
    }
}
