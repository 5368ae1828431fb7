//! The event loop: kernel ring buffer → [`Pipeline`], until a signal, the deadline, or the
//! last watched cgroup going away.
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow};
use aya::maps::{MapData, RingBuf};
use tokio::{
    io::{Interest, unix::AsyncFd},
    signal::unix::{SignalKind, signal},
};

use crate::{loader::Tracer, pipeline::Pipeline, sink::RunSummary, target::Target, term};

fn drain(ring: &mut RingBuf<MapData>, pipeline: &mut Pipeline) -> Result<()> {
    while let Some(item) = ring.next() {
        pipeline.record(&item)?;
    }
    Ok(())
}

/// Runs until SIGINT/SIGTERM or `duration`, printing a summary every `interval`, then drains
/// what is left and flushes every sink. `on_ready` is called once events can flow.
pub async fn run(
    mut tracer: Tracer,
    mut pipeline: Pipeline,
    mut targets: Vec<Target>,
    duration: Option<Duration>,
    interval: Option<Duration>,
    on_ready: impl FnOnce(),
) -> Result<RunSummary> {
    let map = tracer
        .ebpf
        .take_map("EVENTS")
        .ok_or_else(|| anyhow!("map EVENTS missing"))?;
    let ring = RingBuf::try_from(map).context("opening the EVENTS ring buffer")?;
    // SAFETY: the RingBuf owns its map's fd, which stays open and the same until it is dropped.
    let mut ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
        .map_err(|err| anyhow!("polling the EVENTS ring buffer: {}", err.into_parts().1))?;
    let mut sigint = signal(SignalKind::interrupt()).context("handling SIGINT")?;
    let mut sigterm = signal(SignalKind::terminate()).context("handling SIGTERM")?;
    let deadline = tokio::time::sleep(duration.unwrap_or(Duration::MAX / 4));
    tokio::pin!(deadline);
    let period = interval.unwrap_or(Duration::MAX / 4);
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    let mut presence = tokio::time::interval(Duration::from_secs(1));
    on_ready();

    loop {
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard.context("waiting for events")?;
                drain(guard.get_inner_mut(), &mut pipeline)?;
                guard.clear_ready();
            }
            _ = ticks.tick(), if interval.is_some() => {
                drain(ring.get_mut(), &mut pipeline)?;
                pipeline.interval(tracer.counters())?;
            }
            _ = presence.tick(), if !targets.is_empty() => {
                let (gone, present): (Vec<Target>, Vec<Target>) = targets.into_iter().partition(|t| !t.dir.exists());
                targets = present;
                let mut any_left = true;
                for target in gone {
                    term::say(format_args!("cgroup {} was removed; its final summary follows", target.relative));
                    drain(ring.get_mut(), &mut pipeline)?;
                    any_left = pipeline.cgroup_removed(&target.relative)?;
                }
                if !any_left {
                    term::say(format_args!("no watched cgroup is left; stopping"));
                    break;
                }
            }
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            _ = &mut deadline, if duration.is_some() => break,
        }
    }
    drain(ring.get_mut(), &mut pipeline)?;

    let dropped = tracer.dropped().unwrap_or_else(|err| {
        log::warn!("reading the drop counter: {err:#}");
        0
    });
    let hooks = tracer.hooks.iter().map(ToString::to_string).collect();
    pipeline.finish(tracer.counters(), dropped, hooks)
}
