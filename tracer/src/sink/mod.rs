//! Where events and summaries go: people (lines, tables, histograms, the live view) and
//! machines (JSON Lines, Prometheus, the soak report). Each sink implements the pipeline's
//! [`Sink`].
pub mod file;
pub mod human;
pub mod json;
pub mod live;
pub mod prometheus;
pub mod soak;

use std::fmt;

use anyhow::Result;

use crate::{
    aggregate::{Scope, Summary},
    event::Event,
    pipeline::{RunSummary, Sink},
};

/// Passes on only the final summaries (and the end), and events if `events`: for the sinks
/// of a run whose intervals were forced by another sink (`serve`'s metrics, `soak`'s samples,
/// the live view's refresh), not asked for; under the live view, events too are its own.
struct FinalOnly {
    inner: Box<dyn Sink>,
    events: bool,
}

impl Sink for FinalOnly {
    fn event(&mut self, event: &Event) -> Result<()> {
        if self.events {
            self.inner.event(event)?;
        }
        Ok(())
    }

    fn summary(&mut self, summary: &Summary) -> Result<()> {
        if summary.scope == Scope::Interval {
            return Ok(());
        }
        self.inner.summary(summary)
    }

    fn finish(&mut self, run: &RunSummary) -> Result<()> {
        self.inner.finish(run)
    }
}

/// Wraps each sink so it skips interval summaries (and events, unless `events`).
pub fn hide_intervals(sinks: &mut Vec<Box<dyn Sink>>, events: bool) {
    *sinks = std::mem::take(sinks)
        .into_iter()
        .map(|inner| Box::new(FinalOnly { inner, events }) as Box<dyn Sink>)
        .collect();
}

/// Milliseconds with the precision a reader needs.
pub struct Ms(pub u64);

impl fmt::Display for Ms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0 as f64 / 1e6;
        match ms {
            ms if ms >= 100.0 => write!(f, "{ms:.0} ms"),
            ms if ms >= 1.0 => write!(f, "{ms:.1} ms"),
            ms => write!(f, "{ms:.3} ms"),
        }
    }
}

/// kB as the kernel's OOM report gives them, with MiB alongside once they get large.
pub struct Kb(pub u64);

impl fmt::Display for Kb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 >= 10 * 1024 {
            write!(f, "{} kB ({:.1} MiB)", self.0, self.0 as f64 / 1024.0)
        } else {
            write!(f, "{} kB", self.0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes_read_well() {
        assert_eq!(Ms(250_000).to_string(), "0.250 ms");
        assert_eq!(Ms(12_345_678).to_string(), "12.3 ms");
        assert_eq!(Ms(1_250_000_000).to_string(), "1250 ms");
        assert_eq!(Kb(900).to_string(), "900 kB");
        assert_eq!(Kb(32_896).to_string(), "32896 kB (32.1 MiB)");
    }

    #[test]
    fn hidden_intervals_and_optionally_events() {
        use std::sync::{Arc, Mutex};
        #[derive(Default)]
        struct Seen(Vec<&'static str>);
        struct Recorder(Arc<Mutex<Seen>>);
        impl Sink for Recorder {
            fn event(&mut self, _: &Event) -> Result<()> {
                self.0.lock().unwrap().0.push("event");
                Ok(())
            }
            fn summary(&mut self, summary: &Summary) -> Result<()> {
                self.0.lock().unwrap().0.push(summary.scope.name());
                Ok(())
            }
            fn finish(&mut self, _: &RunSummary) -> Result<()> {
                self.0.lock().unwrap().0.push("finish");
                Ok(())
            }
        }
        for (events, want) in [
            (true, vec!["event", "total", "finish"]),
            (false, vec!["total", "finish"]),
        ] {
            let seen = Arc::new(Mutex::new(Seen::default()));
            let mut sinks: Vec<Box<dyn Sink>> = vec![Box::new(Recorder(seen.clone()))];
            hide_intervals(&mut sinks, events);
            let stall = Event::OomKill(Box::default());
            sinks[0].event(&stall).unwrap();
            for scope in [Scope::Interval, Scope::Total] {
                sinks[0]
                    .summary(&Summary {
                        scope,
                        ..Default::default()
                    })
                    .unwrap();
            }
            sinks[0].finish(&RunSummary::default()).unwrap();
            assert_eq!(seen.lock().unwrap().0, want);
        }
    }
}
