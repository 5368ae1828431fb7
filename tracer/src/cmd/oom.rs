//! `memstall oom`: OOM kills still in the kernel log, explained, for post-mortems when memstall
//! was not running.
use anyhow::{Context as _, Result};

use crate::{
    cgroup::{CgroupFilter, MemoryHierarchy},
    cli::OomArgs,
    clock::BootClock,
    enrich::{kill, kmsg, postmortem::PostMortem},
    event::{Event, OomKill},
    pipeline::{RunSummary, Sink},
    term,
};

pub fn run(args: &OomArgs) -> Result<()> {
    let hierarchy = super::detect_hierarchy()?;
    let filter = super::filter_for(&super::resolve_targets(&hierarchy, &args.cgroup)?, true);
    let mut sinks = super::trace::open_sinks(args.json.as_ref(), false)?;
    let shown = show(&hierarchy, &filter, args.last, &mut sinks)?;
    if shown == 0 {
        term::say("no OOM kills in the kernel log (it only holds the most recent messages)");
    }
    Ok(())
}

/// Every kill in the kernel log, oldest first, with its explanation.
pub fn kills_in_kernel_log(hierarchy: &MemoryHierarchy) -> Result<Vec<OomKill>> {
    let records = kmsg::read_all().context("reading the kernel log (/dev/kmsg)")?;
    let postmortem = PostMortem::new(hierarchy, false);
    Ok(kmsg::parse_reports(&records)
        .iter()
        .filter_map(|report| {
            let victim = report
                .victim_pid
                .or(report.killed.as_ref().map(|k| k.pid))?;
            let explanation = postmortem.explain_report(report, victim);
            kill::from_report(
                report,
                explanation,
                BootClock::unix_ns_from_monotonic_us(report.usec),
            )
        })
        .collect())
}

/// Writes the last `last` kills that concern the watched cgroups; returns how many.
pub fn show(
    hierarchy: &MemoryHierarchy,
    filter: &CgroupFilter,
    last: usize,
    sinks: &mut [Box<dyn Sink>],
) -> Result<usize> {
    let kills: Vec<OomKill> = kills_in_kernel_log(hierarchy)?
        .into_iter()
        .filter(|kill| {
            filter.is_everything()
                || kill
                    .explanation
                    .oom_cgroup
                    .iter()
                    .chain(kill.victim_cgroup.iter())
                    .any(|c| filter.matches(c))
        })
        .collect();
    let shown = &kills[kills.len().saturating_sub(last)..];
    for kill in shown {
        let event = Event::OomKill(Box::new(kill.clone()));
        for sink in sinks.iter_mut() {
            sink.event(&event)?;
        }
    }
    let run = RunSummary {
        events: shown.len() as u64,
        ..Default::default()
    };
    for sink in sinks.iter_mut() {
        sink.finish(&run)?;
    }
    Ok(shown.len())
}
