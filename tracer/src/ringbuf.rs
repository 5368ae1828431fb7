//! The event loop: kernel ring buffer → a [`Consumer`] (the pipeline), until a signal, the
//! deadline, or the last watched cgroup going away.
use std::{path::PathBuf, time::Duration};

use anyhow::{Context as _, Result, anyhow};
use aya::maps::{MapData, RingBuf};
use tokio::{
    io::{Interest, unix::AsyncFd},
    signal::unix::{SignalKind, signal},
};

use crate::{
    kernel::{KernelCounters, Tracer, maps},
    term,
};

/// What the loop feeds. The loop owns the interface; the pipeline implements it.
pub trait Consumer {
    /// One ring-buffer record.
    fn record(&mut self, bytes: &[u8]) -> Result<()>;
    /// An interval ended; `counters` are the kernel's aggregates now.
    fn interval(&mut self, counters: KernelCounters) -> Result<()>;
    /// Watched cgroup `relative` was removed (its events drained); false when none is left.
    fn cgroup_removed(&mut self, relative: &str) -> Result<bool>;
    /// Called every [`TICK`]: work that waits on time rather than records.
    fn tick(&mut self) -> Result<()>;
}

/// How often the consumer's time-driven work runs (a kill's aftermath, OOM risk sampling).
pub const TICK: Duration = Duration::from_millis(50);

/// A watched cgroup's directory, checked every second.
pub struct WatchedDir {
    pub relative: String,
    pub dir: PathBuf,
}

/// When to stop and when to summarize.
pub struct Schedule {
    pub duration: Option<Duration>,
    pub interval: Option<Duration>,
}

fn drain(ring: &mut RingBuf<MapData>, consumer: &mut impl Consumer) -> Result<()> {
    while let Some(item) = ring.next() {
        consumer.record(&item)?;
    }
    Ok(())
}

/// Runs until SIGINT/SIGTERM or the deadline, closing an interval every `schedule.interval`,
/// then drains what is left and hands the consumer back. `on_ready` is called once events can
/// flow.
pub async fn run<C: Consumer>(
    tracer: &mut Tracer,
    mut consumer: C,
    mut watched: Vec<WatchedDir>,
    schedule: Schedule,
    on_ready: impl FnOnce(),
) -> Result<C> {
    let ring = maps::take_events(&mut tracer.ebpf).context("opening the EVENTS ring buffer")?;
    let mut bpf_log = tracer.bpf_log.take();
    // SAFETY: the RingBuf owns its map's fd, which stays open and the same until it is dropped.
    let mut ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
        .map_err(|err| anyhow!("polling the EVENTS ring buffer: {}", err.into_parts().1))?;
    let mut sigint = signal(SignalKind::interrupt()).context("handling SIGINT")?;
    let mut sigterm = signal(SignalKind::terminate()).context("handling SIGTERM")?;
    let Schedule { duration, interval } = schedule;
    let deadline = tokio::time::sleep(duration.unwrap_or(Duration::MAX / 4));
    tokio::pin!(deadline);
    let period = interval.unwrap_or(Duration::MAX / 4);
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    let mut presence = tokio::time::interval(Duration::from_secs(1));
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    on_ready();

    loop {
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard.context("waiting for events")?;
                drain(guard.get_inner_mut(), &mut consumer)?;
                guard.clear_ready();
            }
            _ = tick.tick() => {
                drain(ring.get_mut(), &mut consumer)?;
                consumer.tick()?;
                if let Some(log) = &mut bpf_log {
                    log.flush();
                }
            }
            _ = ticks.tick(), if interval.is_some() => {
                drain(ring.get_mut(), &mut consumer)?;
                consumer.interval(tracer.counters())?;
            }
            _ = presence.tick(), if !watched.is_empty() => {
                let (gone, present): (Vec<_>, Vec<_>) = watched.into_iter().partition(|w| !w.dir.exists());
                watched = present;
                let mut any_left = true;
                for cgroup in gone {
                    term::say(format_args!("cgroup {} was removed; its final summary follows", cgroup.relative));
                    drain(ring.get_mut(), &mut consumer)?;
                    any_left = consumer.cgroup_removed(&cgroup.relative)?;
                }
                if !any_left {
                    term::say("no watched cgroup is left; stopping");
                    break;
                }
            }
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            () = &mut deadline, if duration.is_some() => break,
        }
    }
    drain(ring.get_mut(), &mut consumer)?;
    if let Some(log) = &mut bpf_log {
        log.flush();
    }
    Ok(consumer)
}
