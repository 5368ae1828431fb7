//! bench/results.md (for people) and bench/results.json (for the next run to compare with).
use std::{fmt::Write as _, fs, path::PathBuf};

use anyhow::{Context as _, Result};

use super::{
    BenchRun, StormPrograms,
    own_cost::Scope,
    stats::{Estimate, Verdict, median, verdict_at_most},
    storms::{Env, Storm},
    tracers::{BPFTRACE_SCRIPT, Setting},
};
use crate::workspace_root;

mod iterator;

fn ratio(e: Option<&Estimate>) -> String {
    e.map_or("–".into(), |e| {
        format!("{:.3}× [{:.3}–{:.3}]", e.median, e.low, e.high)
    })
}

fn amount(e: Option<&Estimate>, unit: &str, digits: usize) -> String {
    e.map_or("–".into(), |e| {
        format!(
            "{:.d$} {unit} [{:.d$}–{:.d$}]",
            e.median,
            e.low,
            e.high,
            d = digits
        )
    })
}

struct Goal {
    what: String,
    figure: String,
    verdict: Option<Verdict>,
}

fn goal(what: String, e: Option<&Estimate>, limit: f64, figure: String) -> Goal {
    Goal {
        what,
        figure,
        verdict: e.map(|e| verdict_at_most(e, limit)),
    }
}

fn goals(run: &BenchRun) -> Vec<Goal> {
    let cpu = |storm: Storm, setting: Setting| {
        run.storms
            .iter()
            .find(|s| s.storm == storm)?
            .settings
            .iter()
            .find(|s| s.setting == setting)?
            .cpu_ratio
    };
    let mut goals = Vec::new();
    for (setting, limit) in [
        (Setting::Memstall, 1.02),
        (Setting::MemstallFaultsEbpf, 1.05),
    ] {
        let e = cpu(Storm::Faults, setting);
        goals.push(goal(
            format!("fault storm CPU time, {}, ≤ {limit}×", setting.name()),
            e.as_ref(),
            limit,
            ratio(e.as_ref()),
        ));
    }
    let e = cpu(Storm::MemcgReclaim, Setting::Memstall);
    goals.push(goal(
        "memcg-reclaim storm CPU time, memstall, ≤ 1.03× (earlier goal)".into(),
        e.as_ref(),
        1.03,
        ratio(e.as_ref()),
    ));
    for cost in run.interval.iter().filter(|c| c.cgroups == 10_000) {
        goals.push(goal(
            format!(
                "CPU per summary, 10 000 cgroups, {}, < 20 ms",
                cost.scope.name()
            ),
            cost.estimate.as_ref(),
            20.0,
            amount(cost.estimate.as_ref(), "ms", 2),
        ));
    }
    let e = run.startup_rss.estimate;
    goals.push(goal(
        "start-up peak RSS < 32 MiB".into(),
        e.as_ref(),
        32.0,
        amount(e.as_ref(), "MiB", 1),
    ));
    goals
}

fn storm_sections(out: &mut String, run: &BenchRun) {
    for storm in &run.storms {
        let _ = writeln!(
            out,
            "\n### {}\n\nmemstall hooks exercised: {}.",
            storm.storm.name(),
            storm.storm.hooks()
        );
        if let Some(why) = &storm.skipped {
            let _ = writeln!(out, "\nNot run here: {why}.");
            continue;
        }
        let _ = writeln!(
            out,
            "\n| tracer | CPU (median) | CPU ratio [95 % CI] | wall (median) | wall ratio [95 % CI] | {} (median) |\n| --- | --- | --- | --- | --- | --- |",
            Env::evidence_name(storm.storm)
        );
        for s in &storm.settings {
            let fmt_s = |v: Option<f64>| v.map_or("–".into(), |v| format!("{v:.3} s"));
            let evidence = median(&s.values(|x| x.evidence as f64))
                .map_or("–".into(), |v| format!("{v:.0}"));
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {evidence} |",
                s.setting.name(),
                fmt_s(s.median_of(|x| x.cpu_s)),
                ratio(s.cpu_ratio.as_ref()),
                fmt_s(s.median_of(|x| x.wall_s)),
                ratio(s.wall_ratio.as_ref()),
            );
        }
        if storm.storm == Storm::DirectReclaim {
            let compact: Vec<f64> = storm
                .settings
                .iter()
                .flat_map(|s| s.values(|x| x.compact_stalls as f64))
                .collect();
            let compaction = if run.memstall_hooks.contains("compaction:") {
                "memstall's compaction hook attached and is in the figures above".to_owned()
            } else {
                "memstall's compaction hook (fentry/fexit on try_to_compact_pages) did not attach on this kernel (trampolines refused), so its cost is not measured here: run the bench where fentry loads (the Debian VMs of `cargo xtask vmtest`)".to_owned()
            };
            let _ = writeln!(
                out,
                "\nThe huge-page allocations also compact: vmstat compact_stall +{:.0} per run (median). {compaction}.",
                median(&compact).unwrap_or(0.0)
            );
        }
    }
}

fn program_section(out: &mut String, programs: &[StormPrograms]) {
    let _ = writeln!(
        out,
        "\n## BPF programs per storm (kernel BPF stats, separate passes)\n\nRun time as the kernel accounts it (`BPF_ENABLE_STATS`), summed over the passes and divided by the runs of the storm; the last column is that time as a share of the workload's CPU time in the same runs. Programs with no runs are left out.\n"
    );
    for storm in Storm::ALL {
        let rows: Vec<&StormPrograms> = programs.iter().filter(|p| p.storm == storm).collect();
        if rows.is_empty() {
            continue;
        }
        let _ = writeln!(
            out,
            "\n**{}**\n\n| tracer | program | runs per storm | ns per run | ms per storm | share of workload CPU |\n| --- | --- | --- | --- | --- | --- |",
            storm.name()
        );
        for p in rows {
            let runs = f64::from(p.runs.max(1));
            for c in &p.costs {
                let ms = c.ns as f64 / runs / 1e6;
                let share = c.ns as f64 / 1e9 / p.workload_cpu_s.max(1e-9) * 100.0;
                let _ = writeln!(
                    out,
                    "| {} | {} | {:.0} | {:.0} | {ms:.2} | {share:.2} % |",
                    p.setting.name(),
                    c.program,
                    c.runs as f64 / runs,
                    c.ns_per_run()
                );
            }
        }
    }
}

fn own_cost_section(out: &mut String, run: &BenchRun) {
    let _ = writeln!(
        out,
        "\n## memstall's own cost\n\n### CPU per summary (`--interval 1`, all threads' schedstat read half-way between summaries, so each 1 s window holds one)\n\n| memory cgroups | scope | CPU per interval [95 % CI] | RSS |\n| --- | --- | --- | --- |"
    );
    for c in &run.interval {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.1} MiB |",
            c.cgroups,
            c.scope.name(),
            amount(c.estimate.as_ref(), "ms", 2),
            c.rss_mib
        );
    }
    let _ = writeln!(
        out,
        "\nThe file walk alone (every memory cgroup's memory.stat opened, read and closed by one thread, no parsing: what `{}` pays each summary):\n\n| memory.stat files | CPU [95 % CI] |\n| --- | --- |",
        Scope::WalkForced.name()
    );
    for w in &run.walk {
        let _ = writeln!(
            out,
            "| {} | {} |",
            w.files,
            amount(w.estimate.as_ref(), "ms", 1)
        );
    }
    iterator::section(out, run);
    let rss = &run.startup_rss;
    let _ = writeln!(
        out,
        "\n### Start-up peak RSS\n\nVmHWM once attached over {} starts: {}; each start {}. RSS one second later: {}.",
        rss.peak_mib.len(),
        amount(rss.estimate.as_ref(), "MiB", 1),
        rss.peak_mib
            .iter()
            .map(|v| format!("{v:.1}"))
            .collect::<Vec<_>>()
            .join(", "),
        median(&rss.rss_mib).map_or("–".into(), |v| format!("{v:.1} MiB"))
    );
    let _ = writeln!(
        out,
        "\n### Userspace ingest (synthetic ring-buffer records, one core; goal ≥ 5 M/s)\n\n{}",
        run.ingest
    );
}

/// Whether this run's intervals overlap the previous run's, figure by figure.
fn agreement(out: &mut String, run: &BenchRun, previous: &BenchRun) {
    let _ = writeln!(
        out,
        "\n## Agreement with the previous run ({}, load {} → {})\n\nTwo runs agree on a figure when their 95 % intervals overlap.\n\n| figure | this run | previous run | agree |\n| --- | --- | --- | --- |",
        previous.date, previous.load_before, previous.load_after
    );
    let mut agree = 0;
    let mut total = 0;
    let mut row = |what: String, this: Option<&Estimate>, before: Option<&Estimate>, unit: &str| {
        let (Some(this), Some(before)) = (this, before) else {
            return;
        };
        let ok = this.overlaps(before);
        total += 1;
        agree += usize::from(ok);
        let f = |e: &Estimate| {
            if unit == "×" {
                ratio(Some(e))
            } else {
                amount(Some(e), unit, 2)
            }
        };
        let _ = writeln!(
            out,
            "| {what} | {} | {} | {} |",
            f(this),
            f(before),
            if ok { "yes" } else { "**no**" }
        );
    };
    for storm in &run.storms {
        let Some(old) = previous.storms.iter().find(|s| s.storm == storm.storm) else {
            continue;
        };
        for s in storm.settings.iter().filter(|s| s.setting != Setting::Off) {
            let Some(o) = old.settings.iter().find(|o| o.setting == s.setting) else {
                continue;
            };
            let name = format!("{}, {}", storm.storm.name(), s.setting.name());
            row(
                format!("{name}, CPU"),
                s.cpu_ratio.as_ref(),
                o.cpu_ratio.as_ref(),
                "×",
            );
            row(
                format!("{name}, wall"),
                s.wall_ratio.as_ref(),
                o.wall_ratio.as_ref(),
                "×",
            );
        }
    }
    for c in &run.interval {
        let old = previous
            .interval
            .iter()
            .find(|o| o.cgroups == c.cgroups && o.scope == c.scope);
        row(
            format!("CPU per summary, {} cgroups, {}", c.cgroups, c.scope.name()),
            c.estimate.as_ref(),
            old.and_then(|o| o.estimate.as_ref()),
            "ms",
        );
    }
    row(
        "start-up peak RSS".into(),
        run.startup_rss.estimate.as_ref(),
        previous.startup_rss.estimate.as_ref(),
        "MiB",
    );
    let _ = writeln!(out, "\n{agree} of {total} figures agree.");
}

pub fn render(run: &BenchRun, previous: Option<&BenchRun>) -> String {
    let mut out = String::new();
    let quick = if run.quick {
        " **`--quick`: a smoke run with a quarter of the work and 5 rounds; not for conclusions.**"
    } else {
        ""
    };
    let _ = writeln!(
        out,
        "# memstall benchmark\n\n`cargo xtask bench`, {}; kernel {}; {} CPUs, {:.0} GiB; load average {} at the start, {} at the end; {:.1} minutes.{quick}\n\nMethod: {} timed rounds after a warm-up round; in each round every tracer setting (in a shuffled order) runs every storm once. A storm's cost under a setting is the median over rounds of its run's CPU time (user + sys of every process of the workload, from wait4) over the tracer-off run of the same round, and likewise for wall time; the interval is a percentile bootstrap (4 000 resamples of the rounds, seeded). A goal is **met** when its whole interval is within it, **missed** when its whole interval is beyond it, else **undecided**. BPF program costs come from separate passes with the kernel's BPF stats on, so the timed rounds do not pay for the accounting. memstall attached: `{}`.",
        run.date,
        run.kernel,
        run.cpus,
        run.mem_gib,
        run.load_before,
        run.load_after,
        run.minutes,
        run.rounds,
        run.memstall_hooks
    );
    let _ = writeln!(
        out,
        "\n## Goals\n\n| goal | figure [95 % CI] | verdict |\n| --- | --- | --- |"
    );
    for g in goals(run) {
        let _ = writeln!(
            out,
            "| {} | {} | {} |",
            g.what,
            g.figure,
            g.verdict.map_or("–", Verdict::word)
        );
    }
    let _ = writeln!(out, "\n## Storms");
    storm_sections(&mut out, run);
    program_section(&mut out, &run.programs);
    own_cost_section(&mut out, run);
    if let Some(previous) = previous {
        agreement(&mut out, run, previous);
    }
    if !run.failures.is_empty() {
        let _ = writeln!(out, "\n## Runs that failed (left out of the figures)\n");
        for f in &run.failures {
            let _ = writeln!(out, "- {f}");
        }
    }
    let _ = writeln!(
        out,
        "\n## The bpftrace script (the nearest equivalent of memstall's hooks)\n\n```\n{}\n```",
        BPFTRACE_SCRIPT.trim()
    );
    out
}

pub fn write(run: &BenchRun) -> Result<()> {
    let dir = if run.quick {
        workspace_root().join("target/bench")
    } else {
        workspace_root().join("bench")
    };
    fs::create_dir_all(&dir)?;
    let name = if run.quick {
        "results-quick"
    } else {
        "results"
    };
    let json: PathBuf = dir.join(format!("{name}.json"));
    let previous: Option<BenchRun> = fs::read(&json)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok());
    let markdown = render(run, previous.as_ref());
    fs::write(dir.join(format!("{name}.md")), &markdown)?;
    fs::write(&json, serde_json::to_vec_pretty(run)?).context("writing the JSON")?;
    print!("{markdown}");
    eprintln!(
        "bench: written to {}",
        dir.join(format!("{name}.md")).display()
    );
    Ok(())
}

#[cfg(test)]
mod tests;
