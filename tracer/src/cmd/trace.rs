//! The default command, `serve` and `soak`: flags turned into each stage's configuration, then
//! load, attach, run the event loop and report.
use std::{
    io::{self, BufWriter, IsTerminal as _},
    net::SocketAddr,
    path::PathBuf,
    time::Duration,
};

use anyhow::{Context as _, Result};

use crate::{
    EBPF_OBJECT,
    aggregate::{
        FaultSource,
        counters::{self, AUTO_EBPF_ABOVE_CGROUPS, CounterSources, MemoryStatScope},
    },
    cgroup::{CgroupResolver, CgroupVersion, MemoryHierarchy, Target},
    cli::{SoakArgs, TraceArgs},
    decode::DecodeContext,
    enrich::{Enricher, k8s::KubeletRoots, postmortem::PostMortem},
    error::UserError,
    kernel::{KernelInfo, LoadOptions, Tracer, attach::Hook, maps, preflight},
    pipeline::{Pipeline, Sink},
    ringbuf::{self, Schedule, WatchedDir},
    sink::{
        self, file,
        human::HumanSink,
        json::JsonSink,
        live::LiveSink,
        prometheus::http::Exporter,
        soak::{Limits, Soak, SoakConfig},
    },
    term,
};

/// Which command is tracing: each adds a sink and forces an interval.
pub enum Mode<'a> {
    Trace,
    /// `memstall serve`: the Prometheus exporter on this address.
    Serve(SocketAddr),
    /// `memstall soak`: the soak gate.
    Soak(&'a SoakArgs),
}

/// How often the live view refreshes.
const LIVE_REFRESH: Duration = Duration::from_secs(1);

pub fn run(args: &TraceArgs, mode: Mode) -> Result<()> {
    let hierarchy = super::detect_hierarchy()?;
    let targets = super::resolve_targets(&hierarchy, &args.cgroup)?;
    let outputs = Outputs::open(args, &mode, &hierarchy, &targets)?;
    preflight::check_privileges()?;
    preflight::check_btf(&args.btf)?;
    let faults = fault_source(args, &hierarchy, &targets);
    let (mut tracer, sources) = load(args, faults, &hierarchy, &targets)?;
    // The ready line says where faults are really counted: without the kernel hook, ebpf
    // (asked for, or chosen by auto) falls back to memory.stat.
    let faults = match faults {
        FaultSource::Ebpf if !sources.kernel_faults => FaultSource::MemoryStat,
        chosen => chosen,
    };
    if let Some(exporter) = &outputs.exporter {
        exporter.hooks(&tracer.hooks);
    }
    let mut decoder = DecodeContext::new();
    decoder.stack_map = Some(maps::take_stacks(&mut tracer.ebpf)?);
    let enricher = Enricher::new(CgroupResolver::new(&hierarchy.root), hierarchy.version)
        .with_postmortem(PostMortem::new(&hierarchy, true))
        .with_kubelet(kubelet_roots(args));
    let filter = super::filter_for(&targets, !args.no_descendants);
    let mut pipeline = Pipeline::new(
        decoder,
        enricher,
        filter,
        outputs.sinks,
        args.threshold.as_nanos() as u64,
    );
    pipeline.count_from(sources);
    let ready = ready_line(
        args,
        faults,
        &hierarchy,
        &targets,
        &tracer,
        outputs.exporter.as_ref(),
    );

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    // Served beside the event loop; dropped with the runtime when tracing ends.
    let _server = outputs.exporter.map(|e| runtime.spawn(e.serve()));
    let watched = targets
        .iter()
        .map(|t| WatchedDir {
            relative: t.relative.clone(),
            dir: t.dir.clone(),
        })
        .collect();
    let pipeline = runtime.block_on(ringbuf::run(
        &mut tracer,
        pipeline,
        watched,
        outputs.schedule,
        || term::say(&ready),
    ))?;
    let hooks = tracer.hooks.iter().map(ToString::to_string).collect();
    let run = pipeline.finish(tracer.counters(), hooks)?;
    term::say(format_args!(
        "{} stall(s), {} event(s) reported in {:.1} s; {} dropped by the kernel (ring buffer full){}",
        run.stalls,
        run.events,
        run.duration_ns as f64 / 1e9,
        run.dropped,
        if run.malformed > 0 {
            format!("; {} malformed", run.malformed)
        } else {
            String::new()
        }
    ));
    match &outputs.soak {
        Some(soak) => soak.verdict(),
        None => Ok(()),
    }
}

/// Where the run's events and summaries go, and when it summarizes and stops.
struct Outputs {
    sinks: Vec<Box<dyn Sink>>,
    exporter: Option<Exporter>,
    soak: Option<Soak>,
    schedule: Schedule,
}

impl Outputs {
    fn open(
        args: &TraceArgs,
        mode: &Mode,
        hierarchy: &MemoryHierarchy,
        targets: &[Target],
    ) -> Result<Self> {
        // Live view: a terminal on stdout, nobody asked for lines, JSON Lines or intervals.
        let live = !args.plain
            && matches!(mode, Mode::Trace)
            && args.interval.is_none()
            && io::stdout().is_terminal()
            && args
                .json
                .as_ref()
                .is_none_or(|path| path.as_os_str() != "-");
        let mut sinks = open_sinks(args.json.as_ref(), live)?;
        let mut exporter = None;
        let mut soak = None;
        let interval = match mode {
            Mode::Serve(listen) => {
                let bound = Exporter::bind(*listen)?;
                let every = bound.attach(&mut sinks, args.interval);
                exporter = Some(bound);
                Some(every)
            }
            Mode::Soak(soak_args) => {
                let mut opened = Soak::open(soak_config(soak_args), hierarchy, targets)?;
                let every = opened.attach(&mut sinks, args.interval);
                soak = Some(opened);
                Some(every)
            }
            Mode::Trace if live => Some(LIVE_REFRESH),
            Mode::Trace => args.interval,
        };
        // bcc-style `--interval S --count N`: N summaries, then the total.
        let duration = match (args.count, interval) {
            (Some(count), Some(every)) => {
                let counted = every * count + Duration::from_millis(50);
                Some(args.duration.map_or(counted, |d| d.min(counted)))
            }
            _ => args.duration,
        };
        Ok(Self {
            sinks,
            exporter,
            soak,
            schedule: Schedule { duration, interval },
        })
    }
}

fn soak_config(args: &SoakArgs) -> SoakConfig {
    SoakConfig {
        limits: Limits {
            max_oom_kills: args.max_oom_kills,
            max_oom_risk: args.max_oom_risk,
            max_p99: args.max_p99.clone(),
            max_stall_per_minute_ms: args.max_stall_per_minute,
            max_growth_mib_per_hour: args.max_growth_per_hour,
        },
        report: args.report.clone(),
        report_json: args.report_json.clone(),
        interval: args.trace.interval,
    }
}

/// `--json` and the human lines; under the live view, the others keep only the final summary.
pub fn open_sinks(json: Option<&PathBuf>, live: bool) -> Result<Vec<Box<dyn Sink>>> {
    let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
    match json {
        Some(path) if path.as_os_str() == "-" => {
            sinks.push(Box::new(JsonSink::new(BufWriter::new(io::stdout()))));
        }
        Some(path) => {
            let file = file::create("--json", path)?;
            sinks.push(Box::new(JsonSink::new(file::Lines::new(
                "--json", path, file,
            ))));
            sinks.push(Box::new(HumanSink::new(io::stdout())));
        }
        None => sinks.push(Box::new(HumanSink::new(io::stdout()))),
    }
    if live {
        sink::hide_intervals(&mut sinks, false);
        sinks.insert(0, Box::new(LiveSink::new()));
    }
    Ok(sinks)
}

/// Where page faults are counted, given the flag and the machine.
fn fault_source(args: &TraceArgs, hierarchy: &MemoryHierarchy, targets: &[Target]) -> FaultSource {
    match args.faults {
        FaultSource::Auto
            if targets.is_empty()
                && counters::count_cgroups(&hierarchy.root) > AUTO_EBPF_ABOVE_CGROUPS =>
        {
            FaultSource::Ebpf
        }
        FaultSource::Auto => FaultSource::MemoryStat,
        chosen => chosen,
    }
}

/// Loads and attaches (one line of why when nothing attaches), and decides where each
/// per-cgroup counter comes from given what attached.
fn load(
    args: &TraceArgs,
    faults: FaultSource,
    hierarchy: &MemoryHierarchy,
    targets: &[Target],
) -> Result<(Tracer, CounterSources)> {
    let kernel = KernelInfo::read(&args.btf, args.force_tracepoints)?;
    let kubelet = kubelet_roots(args);
    if targets.iter().any(|t| t.relative.contains("kubepods")) && !kubelet.any_present() {
        term::say(format_args!(
            "note: pod names unavailable (none of {}, {}, {} here); events carry QoS class, pod uid and container id",
            kubelet.pod_logs.display(),
            kubelet.container_logs.display(),
            kubelet.pods.display()
        ));
    }
    let watched: Vec<u64> = targets.iter().map(|t| t.id).collect();
    let kernel_faults = faults == FaultSource::Ebpf;
    let memcg_events = args.memcg_events || kernel_faults;
    let options = LoadOptions {
        stack_threshold_ns: args.threshold.as_nanos() as u64,
        watched: &watched,
        descendants: !args.no_descendants,
        count_faults: kernel_faults,
        memcg_events,
        latency: args.latency,
        ring_bytes: args.test_ring_bytes,
        in_flight_entries: args.test_in_flight_entries,
        bpf_log: args.bpf_log,
    };
    let tracer = Tracer::load(EBPF_OBJECT, &kernel, &options)?;
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
        .filter(|h| !h.is_attached() || !h.notes.is_empty())
    {
        term::say(format_args!("note: {hook}"));
    }
    // v2's memory.stat has the LRU counters for free; v1 needs the kernel hook for them.
    let memory_stat_has_lru = hierarchy.version == CgroupVersion::V2;
    let hook_attached = tracer.is_attached(Hook::MemcgPages);
    let kernel_faults = kernel_faults && hook_attached;
    if faults == FaultSource::Ebpf && !kernel_faults {
        term::say(
            "note: --faults ebpf needs memcg/count_memcg_events, missing here: faults come from memory.stat",
        );
    }
    let needs_memory_stat = (faults != FaultSource::Off && !kernel_faults) || memory_stat_has_lru;
    let sources = CounterSources {
        memory_stat: needs_memory_stat.then(|| MemoryStatScope {
            root: hierarchy.root.clone(),
            version: hierarchy.version,
            // With descendants, a watched cgroup's hierarchical counters cover them.
            watched: targets.iter().map(|t| t.relative.clone()).collect(),
        }),
        kernel_lru: memcg_events && hook_attached && !memory_stat_has_lru,
        kernel_faults,
        report_faults: faults != FaultSource::Off,
    };
    Ok((tracer, sources))
}

/// The line that says tracing has begun (tests and people wait for it).
fn ready_line(
    args: &TraceArgs,
    faults: FaultSource,
    hierarchy: &MemoryHierarchy,
    targets: &[Target],
    tracer: &Tracer,
    exporter: Option<&Exporter>,
) -> String {
    let scope = if targets.is_empty() {
        "all memory cgroups".to_owned()
    } else {
        let paths: Vec<&str> = targets.iter().map(|t| t.relative.as_str()).collect();
        let which = if args.no_descendants {
            "only"
        } else {
            "and descendants"
        };
        format!("{} {which} (filtered in the kernel)", paths.join(", "))
    };
    let hooks: Vec<String> = tracer.attached().map(ToString::to_string).collect();
    let faults = match faults {
        FaultSource::Ebpf => "faults: kernel counter",
        FaultSource::Off => "faults: off",
        _ => "faults: memory.stat",
    };
    let serving = exporter
        .map(|e| format!("; Prometheus metrics at http://{}/metrics", e.addr))
        .unwrap_or_default();
    format!(
        "tracing {scope} (cgroup {} at {}; {}; {faults}){serving}; Ctrl-C to stop",
        hierarchy.version_name(),
        hierarchy.root.display(),
        hooks.join(", ")
    )
}

/// Where the kubelet's files are: the node's own, or a test's tree.
fn kubelet_roots(args: &TraceArgs) -> KubeletRoots {
    args.test_k8s_root
        .as_deref()
        .map_or_else(KubeletRoots::default, KubeletRoots::under)
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
