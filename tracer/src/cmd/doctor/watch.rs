//! `doctor -v`: the hooks left running a while with the programs' log on, and what they ran
//! into.
use std::time::{Duration, Instant};

use super::{
    Check, CheckKind,
    Status::{Ok as Good, Warn},
    new,
};
use crate::{
    kernel::{Tracer, maps::Diagnostics},
    ringbuf::TICK,
};

/// Lets the attached hooks run for `period`, printing the programs' log as it comes; their
/// diagnostics counts then.
pub fn hooks(tracer: &mut Tracer, period: Duration) -> Option<Diagnostics> {
    let started = Instant::now();
    let mut log = tracer.bpf_log.take();
    while started.elapsed() < period {
        std::thread::sleep(TICK.min(period));
        if let Some(log) = &mut log {
            log.flush();
        }
    }
    tracer.counters().diagnostics
}

pub fn diagnostics_check(seen: Option<&Diagnostics>, period: Duration) -> Check {
    let secs = period.as_secs_f64();
    let (status, detail) = match seen {
        None => (
            Warn,
            "the DIAGNOSTICS counters could not be read".to_owned(),
        ),
        Some(d) if d.counts.iter().all(|(_, n)| *n == 0) => (
            Good,
            format!("no unexpected state in the programs in {secs:.1} s with every hook attached"),
        ),
        Some(d) => {
            let counts: Vec<String> = d
                .counts
                .iter()
                .filter(|(_, n)| *n > 0)
                .map(|(kind, n)| format!("{} {n}", kind.name()))
                .collect();
            let why = "the programs' warnings are on stderr";
            (
                Warn,
                format!("in {secs:.1} s: {} ({why})", counts.join(", ")),
            )
        }
    };
    new(CheckKind::Probe, "diagnostics", status, detail)
}
