//! `cargo xtask bench [--quick]`: what tracing costs, measured so a busy machine cannot fake
//! it. Each storm runs under every tracer setting in each of 15 interleaved rounds (plus a
//! warm-up), in a shuffled order per round; a setting's cost is the median over rounds of its
//! CPU time (user + sys of the workload) and wall time over the tracer-off run of the same
//! round, with a bootstrap 95 % interval. Separate passes with the kernel's BPF stats on give
//! each program's ns per run. Then memstall's own cost: CPU per summary over 1 000 and
//! 10 000 memory cgroups and the start-up peak RSS. Results: bench/results.md and .json,
//! compared with the previous run's. Speed goals live here, never in timed tests.
mod bpf_stats;
mod cgroup_iter;
mod cleanup;
mod own_cost;
mod report;
mod stats;
mod storms;
mod tracers;

use std::{collections::HashMap, fs, path::PathBuf, process::Command, time::Instant};

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};

use self::{
    bpf_stats::{ProgramCost, StatsEnabled},
    cgroup_iter::{CgroupIter, IterCost},
    cleanup::{check_interrupted, memory_root},
    own_cost::{IntervalCost, ManyCgroups, StartupRss, WalkCost},
    stats::{Estimate, Rng, bootstrap_median, median, paired_ratios, seed_of},
    storms::{Env, Sample, Sizes, Storm, meminfo},
    tracers::Setting,
};
use crate::{cargo, run, workspace_root};

#[derive(Clone, Debug)]
pub struct Bins {
    pub memstall: PathBuf,
    pub memhog: PathBuf,
    pub storm: PathBuf,
}

/// One tracer setting's runs of one storm.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SettingRuns {
    pub setting: Setting,
    /// One per round; `None` where the run failed.
    pub samples: Vec<Option<Sample>>,
    pub cpu_ratio: Option<Estimate>,
    pub wall_ratio: Option<Estimate>,
}

impl SettingRuns {
    pub fn values(&self, pick: impl Fn(&Sample) -> f64) -> Vec<f64> {
        self.samples.iter().flatten().map(pick).collect()
    }

    pub fn median_of(&self, pick: impl Fn(&Sample) -> f64) -> Option<f64> {
        median(&self.values(pick))
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StormRuns {
    pub storm: Storm,
    /// Why it did not run here.
    pub skipped: Option<String>,
    pub settings: Vec<SettingRuns>,
}

/// Kernel BPF stats of one tracer setting over one storm, summed over the stats passes.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StormPrograms {
    pub storm: Storm,
    pub setting: Setting,
    pub runs: u32,
    pub workload_cpu_s: f64,
    pub costs: Vec<ProgramCost>,
}

/// Everything one bench run measured (bench/results.json).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BenchRun {
    pub date: String,
    pub kernel: String,
    pub cpus: usize,
    pub mem_gib: f64,
    pub load_before: String,
    pub load_after: String,
    pub minutes: f64,
    pub rounds: usize,
    pub quick: bool,
    /// memstall's "tracing ..." line: the hooks that attached.
    pub memstall_hooks: String,
    pub storms: Vec<StormRuns>,
    pub programs: Vec<StormPrograms>,
    pub interval: Vec<IntervalCost>,
    pub walk: Vec<WalkCost>,
    /// The BPF cgroup iterator over the same hierarchy, or why it could not run.
    #[serde(default)]
    pub iter: Vec<IterCost>,
    #[serde(default)]
    pub iter_error: Option<String>,
    pub startup_rss: StartupRss,
    pub ingest: String,
    pub failures: Vec<String>,
}

fn build() -> Result<Bins> {
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
        "--bin",
        "storm",
    ]))?;
    let release = workspace_root().join("target/release");
    Ok(Bins {
        memstall: release.join("memstall"),
        memhog: release.join("memhog"),
        storm: release.join("storm"),
    })
}

fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn output_of(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// The timed rounds: round 0 warms up (caches, the first page-cache fill) and is dropped.
fn timed_rounds(
    bins: &Bins,
    env: &mut Env,
    rounds: usize,
    failures: &mut Vec<String>,
) -> Result<(Vec<StormRuns>, String)> {
    let mut samples: HashMap<(Storm, Setting), Vec<Option<Sample>>> = HashMap::new();
    let mut rng = Rng::new(seed_of("setting order"));
    let mut hooks = String::new();
    let began = Instant::now();
    for round in 0..=rounds {
        let mut order = Setting::ALL;
        for i in (1..order.len()).rev() {
            order.swap(i, rng.below(i + 1));
        }
        for setting in order {
            check_interrupted()?;
            let tracer = setting.start(bins)?;
            if setting == Setting::Memstall
                && let Some(t) = &tracer
            {
                hooks.clone_from(&t.ready_line);
            }
            for storm in Storm::ALL {
                check_interrupted()?;
                if env.unavailable(storm).is_some() {
                    continue;
                }
                let sample = match env.run(storm) {
                    Ok(sample) => Some(sample),
                    Err(err) => {
                        let what = format!(
                            "round {round}, {}, {}: {err:#}",
                            storm.name(),
                            setting.name()
                        );
                        eprintln!("bench: {what}");
                        failures.push(what);
                        None
                    }
                };
                if round > 0 {
                    samples
                        .entry((storm, setting))
                        .or_insert_with(|| vec![None; rounds])[round - 1] = sample;
                }
            }
        }
        eprintln!(
            "bench: round {round} of {rounds} done ({}; {:.0} s; load {})",
            if round == 0 { "warm-up" } else { "timed" },
            began.elapsed().as_secs_f64(),
            loadavg()
        );
    }
    let storms = Storm::ALL
        .iter()
        .map(|&storm| {
            let off = samples
                .get(&(storm, Setting::Off))
                .cloned()
                .unwrap_or_default();
            let pick = |runs: &[Option<Sample>], f: fn(&Sample) -> f64| -> Vec<Option<f64>> {
                runs.iter().map(|s| s.as_ref().map(f)).collect()
            };
            let settings = Setting::ALL
                .iter()
                .map(|&setting| {
                    let runs = samples.get(&(storm, setting)).cloned().unwrap_or_default();
                    let ratio = |what: &str, f: fn(&Sample) -> f64| {
                        let ratios = paired_ratios(&pick(&runs, f), &pick(&off, f));
                        let label = format!("{storm:?}/{setting:?}/{what}");
                        bootstrap_median(&ratios, seed_of(&label))
                    };
                    SettingRuns {
                        setting,
                        cpu_ratio: ratio("cpu", |s| s.cpu_s),
                        wall_ratio: ratio("wall", |s| s.wall_s),
                        samples: runs,
                    }
                })
                .collect();
            StormRuns {
                storm,
                skipped: env.unavailable(storm),
                settings,
            }
        })
        .collect();
    Ok((storms, hooks))
}

/// Each traced setting over each storm with the kernel's BPF stats on.
fn program_costs(bins: &Bins, env: &mut Env, passes: u32) -> Result<Vec<StormPrograms>> {
    let _stats = StatsEnabled::new()?;
    let mut all: Vec<StormPrograms> = Vec::new();
    for _ in 0..passes {
        for setting in [
            Setting::Memstall,
            Setting::MemstallFaultsEbpf,
            Setting::Bpftrace,
        ] {
            check_interrupted()?;
            let tracer = setting.start(bins)?.context("a tracer")?;
            let names = bpf_stats::names()?;
            for storm in Storm::ALL {
                check_interrupted()?;
                if env.unavailable(storm).is_some() {
                    continue;
                }
                let before = bpf_stats::counters_of(tracer.pid())?;
                let sample = env.run(storm)?;
                let after = bpf_stats::counters_of(tracer.pid())?;
                let costs = bpf_stats::delta(&before, &after, &names);
                let index = all
                    .iter()
                    .position(|p| p.storm == storm && p.setting == setting)
                    .unwrap_or_else(|| {
                        all.push(StormPrograms {
                            storm,
                            setting,
                            runs: 0,
                            workload_cpu_s: 0.0,
                            costs: Vec::new(),
                        });
                        all.len() - 1
                    });
                let entry = &mut all[index];
                entry.runs += 1;
                entry.workload_cpu_s += sample.cpu_s;
                for cost in costs {
                    match entry.costs.iter_mut().find(|c| c.program == cost.program) {
                        Some(sum) => {
                            sum.runs += cost.runs;
                            sum.ns += cost.ns;
                        }
                        None => entry.costs.push(cost),
                    }
                }
            }
        }
    }
    for entry in &mut all {
        entry.costs.sort_by_key(|c| std::cmp::Reverse(c.ns));
    }
    Ok(all)
}

pub fn bench(quick: bool) -> Result<()> {
    if !crate::is_root() {
        anyhow::bail!("the benchmark loads eBPF programs and creates cgroups: run it as root");
    }
    crate::setup::apt_ensure(&["bpftrace", "bpftool", "clang-22"])?;
    let bins = build()?;
    cleanup::catch_interrupts();
    cleanup::remove_leftovers();
    let _tracefs = cleanup::Tracefs::ensure()?;
    let began = Instant::now();
    let load_before = loadavg();
    let rounds = if quick { 5 } else { 15 };
    let mem_total = meminfo("MemTotal").context("MemTotal")?;
    let mut failures = Vec::new();

    let mut env = Env::new(
        bins.clone(),
        Sizes::new(quick, mem_total),
        cleanup::scratch_dir()?,
    )?;
    eprintln!(
        "bench: {} storms x {} tracer settings, {rounds} rounds and a warm-up",
        Storm::ALL.len(),
        Setting::ALL.len()
    );
    let (storms, memstall_hooks) = timed_rounds(&bins, &mut env, rounds, &mut failures)?;
    eprintln!("bench: per-program cost (kernel BPF stats)");
    let programs = program_costs(&bins, &mut env, if quick { 1 } else { 2 })?;
    drop(env);

    eprintln!("bench: start-up peak RSS");
    let startup_rss = own_cost::startup_rss(&bins, 5)?;
    let (root, _) = memory_root()?;
    let mut interval = Vec::new();
    let mut walk = Vec::new();
    let mut iter = Vec::new();
    eprintln!("bench: building and loading the BPF cgroup iterator");
    // Room for the bench's 10 000 cgroups and what the machine has (a walk that finds more
    // says so).
    let cgroup_iter = CgroupIter::new(&root, &workspace_root().join("target/bench/iter"), 16_384)
        .map_err(|e| format!("{e:#}"));
    let mut iter_error = cgroup_iter.as_ref().err().cloned();
    {
        let mut many = ManyCgroups::new()?;
        for count in [1_000, 10_000] {
            eprintln!("bench: creating {count} memory cgroups");
            many.grow_to(count)?;
            interval.extend(own_cost::interval_costs(
                &bins,
                &many,
                if quick { 5 } else { 12 },
            )?);
            walk.push(own_cost::file_walk_cost(&root, 5));
            if let Ok(cgroup_iter) = &cgroup_iter {
                eprintln!("bench: the iterator over {count} cgroups");
                let check = own_cost::faults_in_first_cgroup(&bins, &many);
                match cgroup_iter::iter_cost(cgroup_iter, 5, check) {
                    Ok(cost) => iter.push(cost),
                    Err(e) => iter_error = Some(format!("{e:#}")),
                }
            }
        }
        eprintln!("bench: removing the cgroups");
    }
    drop(cgroup_iter);
    eprintln!("bench: userspace ingest");
    let ingest = output_of(
        workspace_root()
            .join("target/release/examples/ingest")
            .to_str()
            .unwrap_or_default(),
        &["20000000"],
    );

    let result = BenchRun {
        date: output_of("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        kernel: output_of("uname", &["-r"]),
        cpus: std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
        mem_gib: mem_total as f64 / (1u64 << 30) as f64,
        load_before,
        load_after: loadavg(),
        minutes: began.elapsed().as_secs_f64() / 60.0,
        rounds,
        quick,
        memstall_hooks,
        storms,
        programs,
        interval,
        walk,
        iter,
        iter_error,
        startup_rss,
        ingest,
        failures,
    };
    report::write(&result)
}
