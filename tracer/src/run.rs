//! The event loop: kernel ring buffer → decode → filter → sinks, until a signal or the deadline.
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow};
use aya::maps::{MapData, RingBuf};
use tokio::{
    io::{Interest, unix::AsyncFd},
    signal::unix::{SignalKind, signal},
};

use crate::{
    cgroup::CgroupFilter,
    clock::BootClock,
    decode::DecodeContext,
    loader::Tracer,
    sink::{RunSummary, Sink},
};

/// Everything between the ring buffer and the sinks, kept apart from I/O so it can be driven
/// from tests and benchmarks.
pub struct Pipeline {
    pub decoder: DecodeContext,
    pub filter: CgroupFilter,
    pub sinks: Vec<Box<dyn Sink>>,
    pub summary: RunSummary,
}

impl Pipeline {
    pub fn record(&mut self, bytes: &[u8]) -> Result<()> {
        let event = match self.decoder.decode(bytes) {
            Ok(event) => event,
            Err(err) => {
                self.summary.malformed += 1;
                log::warn!("skipping ring-buffer record: {err}");
                return Ok(());
            }
        };
        if !self.filter.is_everything() && !event.cgroups().iter().any(|c| self.filter.matches(c)) {
            return Ok(());
        }
        self.summary.events += 1;
        for sink in &mut self.sinks {
            sink.event(&event)?;
        }
        Ok(())
    }

    pub fn finish(&mut self) -> Result<()> {
        for sink in &mut self.sinks {
            sink.finish(&self.summary)?;
        }
        Ok(())
    }
}

fn drain(ring: &mut RingBuf<MapData>, pipeline: &mut Pipeline) -> Result<()> {
    while let Some(item) = ring.next() {
        pipeline.record(&item)?;
    }
    Ok(())
}

/// Runs until SIGINT/SIGTERM or `duration`, then drains what is left and flushes every sink.
/// `on_ready` is called once the hooks are attached and signals are handled.
pub async fn run(
    mut tracer: Tracer,
    mut pipeline: Pipeline,
    duration: Option<Duration>,
    on_ready: impl FnOnce(),
) -> Result<RunSummary> {
    let started = Instant::now();
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
    on_ready();

    loop {
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard.context("waiting for events")?;
                drain(guard.get_inner_mut(), &mut pipeline)?;
                guard.clear_ready();
            }
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            _ = &mut deadline, if duration.is_some() => break,
        }
    }
    drain(ring.get_mut(), &mut pipeline)?;

    pipeline.summary.time_ns = BootClock::new().unix_ns(BootClock::now_boot_ns());
    pipeline.summary.duration_ns = started.elapsed().as_nanos() as u64;
    pipeline.summary.dropped = tracer.dropped().unwrap_or_else(|err| {
        log::warn!("reading the drop counter: {err:#}");
        0
    });
    pipeline.summary.hooks = tracer.hooks.iter().map(ToString::to_string).collect();
    pipeline.finish()?;
    Ok(pipeline.summary)
}
