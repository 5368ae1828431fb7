//! The `memstall` command: checks, load, attach, run, report.
use std::{
    fmt, fs,
    io::{self, BufWriter, IsTerminal as _},
    net::SocketAddr,
    path::PathBuf,
    process::ExitCode,
    time::Duration,
};

use anyhow::{Context as _, Result};
use clap::Parser as _;

use crate::{
    EBPF_OBJECT,
    cgroup::{CgroupFilter, CgroupResolver, CgroupVersion, MemoryHierarchy},
    cli::{Cli, Command, OomArgs, SoakArgs, TraceArgs},
    decode::DecodeContext,
    faults::{self, FaultSource},
    k8s::{self, Labeler},
    live::{FinalSummaryOnly, LiveSink},
    loader::{KernelInfo, LoadOptions, Tracer},
    oom_view,
    pipeline::{CounterSources, MemoryStatScope, Pipeline},
    postmortem::PostMortem,
    preflight,
    run::run,
    serve::Exporter,
    sink::{HumanSink, JsonSink, Sink},
    soak::Soak,
    target::{self, Resolver, Target},
    term,
};

/// A failure the user can fix, printed as one line with no error chain.
#[derive(Debug)]
pub struct UserError {
    message: String,
    code: u8,
}

impl UserError {
    /// Bad command-line input: exit code 2, like clap's usage errors.
    pub fn input(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            code: 2,
        }
    }

    /// A soak run breached a threshold (`memstall soak`): exit code 3.
    pub fn breach(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            code: 3,
        }
    }

    /// The machine cannot run the tracer as asked (privileges, BTF, hooks): exit code 1.
    pub fn environment(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            code: 1,
        }
    }
}

impl fmt::Display for UserError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for UserError {}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .format(|out, record| {
            use std::io::Write as _;
            let level = record.level().as_str().to_ascii_lowercase();
            writeln!(
                out,
                "memstall: {level}: {}",
                term::escape(&record.args().to_string())
            )
        })
        .init();
    let result = match &cli.command {
        Some(Command::Oom(args)) => oom(args),
        Some(Command::Doctor(args)) => crate::doctor::run(args),
        Some(Command::Serve(args)) => trace(&args.trace, Some(args.listen), None),
        Some(Command::Soak(args)) => trace(&args.trace, None, Some(args)),
        None => trace(&cli.trace, None, None),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => match err.downcast_ref::<UserError>() {
            Some(user) => {
                term::say(format_args!("{user}"));
                ExitCode::from(user.code)
            }
            None => {
                term::say(format_args!("{err:#}"));
                ExitCode::FAILURE
            }
        },
    }
}

/// `live`: a terminal shows the live view, with the human summary kept for the end.
fn open_sinks(json: &Option<PathBuf>, live: bool) -> Result<Vec<Box<dyn Sink>>> {
    let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
    match json {
        Some(path) if path.as_os_str() == "-" => {
            sinks.push(Box::new(JsonSink::new(BufWriter::new(io::stdout()))));
        }
        Some(path) => {
            let file = fs::File::create(path).map_err(|err| {
                UserError::input(format!("cannot write --json {}: {err}", path.display()))
            })?;
            sinks.push(Box::new(JsonSink::new(BufWriter::new(file))));
            sinks.push(Box::new(HumanSink::new(io::stdout())));
        }
        None => sinks.push(Box::new(HumanSink::new(io::stdout()))),
    }
    if live {
        for sink in sinks.iter_mut() {
            let inner = std::mem::replace(sink, Box::new(LiveSink::new()));
            *sink = Box::new(FinalSummaryOnly(inner));
        }
        sinks.insert(0, Box::new(LiveSink::new()));
    }
    Ok(sinks)
}

/// `--cgroup` specs resolved to memory cgroups.
fn resolve_targets(hierarchy: &MemoryHierarchy, specs: &[String]) -> Result<Vec<Target>> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let resolver = Resolver {
        hierarchy,
        other_mounts: target::cgroup_mounts(&mountinfo)
            .into_iter()
            .filter(|m| *m != hierarchy.root)
            .collect(),
    };
    specs
        .iter()
        .map(|spec| {
            resolver
                .resolve(spec)
                .map_err(|why| UserError::input(format!("--cgroup {why}")).into())
        })
        .collect()
}

fn filter_for(targets: &[Target], descendants: bool) -> CgroupFilter {
    let paths = targets.iter().map(|t| t.relative.clone()).collect();
    if descendants {
        CgroupFilter::new(paths)
    } else {
        CgroupFilter::exact(paths)
    }
}

fn detect_hierarchy() -> Result<MemoryHierarchy> {
    Ok(MemoryHierarchy::detect().map_err(|err| UserError::environment(format!("{err:#}")))?)
}

fn oom(args: &OomArgs) -> Result<()> {
    let hierarchy = detect_hierarchy()?;
    let filter = filter_for(&resolve_targets(&hierarchy, &args.cgroup)?, true);
    let mut sinks = open_sinks(&args.json, false)?;
    let shown = oom_view::show(&hierarchy, &filter, args.last, &mut sinks)?;
    if shown == 0 {
        term::say(format_args!(
            "no OOM kills in the kernel log (it only holds the most recent messages)"
        ));
    }
    Ok(())
}

/// Returns freed heap to the kernel (glibc keeps it otherwise), so a long run's RSS is what it
/// uses, not what start-up once needed.
fn release_free_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The default command; with `listen`, also the Prometheus exporter (`memstall serve`); with
/// `soak`, the soak gate (`memstall soak`). Both add a sink and force an interval.
const LIVE_REFRESH: Duration = Duration::from_secs(1);

fn trace(cli: &TraceArgs, listen: Option<SocketAddr>, soak: Option<&SoakArgs>) -> Result<()> {
    let hierarchy = detect_hierarchy()?;
    let targets = resolve_targets(&hierarchy, &cli.cgroup)?;
    let filter = filter_for(&targets, !cli.no_descendants);
    // Live view: a terminal on stdout, nobody asked for lines, JSON Lines or intervals.
    let live = !cli.plain
        && listen.is_none()
        && soak.is_none()
        && cli.interval.is_none()
        && io::stdout().is_terminal()
        && cli.json.as_ref().is_none_or(|path| path.as_os_str() != "-");
    let mut sinks = open_sinks(&cli.json, live)?;
    let exporter = listen.map(Exporter::bind).transpose()?;
    let mut soak = soak
        .map(|args| Soak::open(args, &hierarchy, &targets))
        .transpose()?;
    let interval = match &exporter {
        Some(exporter) => Some(exporter.attach(&mut sinks, cli.interval)),
        None => match soak.as_mut() {
            Some(soak) => Some(soak.attach(&mut sinks, cli.interval)),
            None if live => Some(LIVE_REFRESH),
            None => cli.interval,
        },
    };
    // bcc-style `--interval S --count N`: N summaries, then the total.
    let duration = match (cli.count, interval) {
        (Some(count), Some(every)) => {
            let counted = every * count + Duration::from_millis(50);
            Some(cli.duration.map_or(counted, |d| d.min(counted)))
        }
        _ => cli.duration,
    };

    preflight::check_privileges()?;
    preflight::check_btf(&cli.btf)?;
    let kernel = KernelInfo::read(&cli.btf, cli.force_tracepoints)?;
    let threshold_ns = cli.threshold.as_nanos() as u64;
    if targets.iter().any(|t| t.relative.contains("kubepods"))
        && !Labeler::new(k8s::KUBELET_PODS).has_pod_names()
    {
        term::say(format_args!(
            "note: pod names unavailable (no kubelet pod directory at {}); events carry QoS class, pod uid and container id; namespaces and container names need the CRI, which memstall does not query",
            k8s::KUBELET_PODS
        ));
    }
    let watched: Vec<u64> = targets.iter().map(|t| t.id).collect();
    let fault_source = match cli.faults {
        FaultSource::Auto
            if targets.is_empty()
                && faults::count_cgroups(&hierarchy.root) > faults::AUTO_EBPF_ABOVE_CGROUPS =>
        {
            FaultSource::Ebpf
        }
        FaultSource::Auto => FaultSource::MemoryStat,
        chosen => chosen,
    };
    let kernel_faults = fault_source == FaultSource::Ebpf;
    let memcg_events = cli.memcg_events || kernel_faults;
    let options = LoadOptions {
        stack_threshold_ns: threshold_ns,
        watched: &watched,
        descendants: !cli.no_descendants,
        count_faults: kernel_faults,
        memcg_events,
        latency: cli.latency,
    };
    let mut tracer = Tracer::load(EBPF_OBJECT, &kernel, &options)?;
    // The parsed kernel BTF is tens of MiB and only needed to load: give it back now.
    drop(kernel);
    release_free_memory();
    if tracer.attached().next().is_none() {
        let hooks: Vec<String> = tracer.hooks.iter().map(ToString::to_string).collect();
        return Err(UserError::environment(format!(
            "no hook could attach on this kernel: {}",
            hooks.join("; ")
        ))
        .into());
    }
    for hook in tracer
        .hooks
        .iter()
        .filter(|h| h.attached.is_err() || !h.notes.is_empty())
    {
        term::say(format_args!("note: {hook}"));
    }
    if let Some(exporter) = &exporter {
        exporter.hooks(&tracer.hooks);
    }

    let mut decoder = DecodeContext::new(CgroupResolver::new(&hierarchy.root), hierarchy.version);
    decoder.stack_map = Some(tracer.take_stacks()?);
    decoder.postmortem = Some(PostMortem::new(&hierarchy, true));
    let mut pipeline = Pipeline::new(decoder, filter, sinks, threshold_ns);
    // v2's memory.stat has the LRU counters for free; v1 needs the kernel hook for them.
    let memory_stat_has_lru = hierarchy.version == CgroupVersion::V2;
    let hook_attached = tracer
        .hooks
        .iter()
        .any(|h| h.hook == "memcg_pages" && h.attached.is_ok());
    let kernel_faults = kernel_faults && hook_attached;
    if fault_source == FaultSource::Ebpf && !kernel_faults {
        term::say(format_args!(
            "note: --faults ebpf needs memcg/count_memcg_events, missing here: faults come from memory.stat"
        ));
    }
    let kernel_lru = memcg_events && hook_attached && !memory_stat_has_lru;
    let needs_memory_stat =
        (fault_source != FaultSource::Off && !kernel_faults) || memory_stat_has_lru;
    pipeline.count_from(CounterSources {
        memory_stat: needs_memory_stat.then(|| MemoryStatScope {
            root: hierarchy.root.clone(),
            version: hierarchy.version,
            // With descendants, a watched cgroup's hierarchical counters cover them.
            watched: targets.iter().map(|t| t.relative.clone()).collect(),
        }),
        kernel_lru,
        kernel_faults,
        report_faults: fault_source != FaultSource::Off,
    });
    let scope = if cli.cgroup.is_empty() {
        "all memory cgroups".to_owned()
    } else {
        let paths: Vec<&str> = targets.iter().map(|t| t.relative.as_str()).collect();
        let which = if cli.no_descendants {
            "only"
        } else {
            "and descendants"
        };
        format!("{} {which} (filtered in the kernel)", paths.join(", "))
    };
    let hooks: Vec<String> = tracer.attached().map(ToString::to_string).collect();
    let fault_note = match fault_source {
        FaultSource::Ebpf => "faults: kernel counter",
        FaultSource::Off => "faults: off",
        _ => "faults: memory.stat",
    };
    let serving = exporter
        .as_ref()
        .map(|e| format!("; Prometheus metrics at http://{}/metrics", e.addr))
        .unwrap_or_default();
    let ready = format!(
        "tracing {scope} (cgroup {} at {}; {}; {fault_note}){serving}; Ctrl-C to stop",
        hierarchy.version_name(),
        hierarchy.root.display(),
        hooks.join(", ")
    );

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    // Served beside the event loop; dropped with the runtime when tracing ends.
    let _server = exporter.map(|exporter| runtime.spawn(exporter.serve()));
    let summary = runtime.block_on(run(tracer, pipeline, targets, duration, interval, || {
        term::say(&ready)
    }))?;
    term::say(format_args!(
        "{} stall(s), {} event(s) reported in {:.1} s; {} dropped by the kernel (ring buffer full){}",
        summary.stalls,
        summary.events,
        summary.duration_ns as f64 / 1e9,
        summary.dropped,
        if summary.malformed > 0 {
            format!("; {} malformed", summary.malformed)
        } else {
            String::new()
        }
    ));
    match &soak {
        Some(soak) => soak.verdict(),
        None => Ok(()),
    }
}
