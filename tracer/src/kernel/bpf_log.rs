//! The programs' own log (`--bpf-log`, `doctor -v`): aya-log records from the AYA_LOGS ring
//! buffer, printed through the `log` crate like memstall's own warnings (escaped there, as the
//! text comes from the kernel side).
use std::panic::{self, AssertUnwindSafe};

use anyhow::{Context as _, Result};
use aya::Ebpf;
use aya_log::EbpfLogger;

/// Reads AYA_LOGS; [`BpfLog::flush`] prints what is waiting. The programs log at most once a
/// second per kind and CPU, so flushing on the event loop's tick keeps up.
pub struct BpfLog {
    logger: Option<EbpfLogger<&'static dyn log::Log>>,
}

impl BpfLog {
    /// Takes AYA_LOGS out of the object; records go to the `log` crate's logger (set up
    /// before loading).
    pub fn init(ebpf: &mut Ebpf) -> Result<Self> {
        let logger = EbpfLogger::init(ebpf).context("opening the programs' log (AYA_LOGS)")?;
        Ok(Self {
            logger: Some(logger),
        })
    }

    /// Prints every waiting record. aya-log panics on a record it cannot parse; only
    /// memstall's programs write AYA_LOGS, so that would be a bug, and it ends the log, not
    /// the run (the counters in `run_end` go on).
    pub fn flush(&mut self) {
        let Some(logger) = &mut self.logger else {
            return;
        };
        if panic::catch_unwind(AssertUnwindSafe(|| logger.flush())).is_err() {
            log::warn!("the programs' log had a record aya-log could not parse; it stops here");
            self.logger = None;
        }
    }
}
