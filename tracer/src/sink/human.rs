use std::io::Write;

use anyhow::{Context as _, Result};

use super::{RunSummary, Sink};
use crate::decode::Event;

/// One readable line per event on stdout.
pub struct HumanSink<W: Write> {
    out: W,
}

impl<W: Write> HumanSink<W> {
    pub fn new(out: W) -> Self {
        Self { out }
    }
}

impl<W: Write> Sink for HumanSink<W> {
    fn event(&mut self, event: &Event) -> Result<()> {
        writeln!(self.out, "{event}").context("writing to stdout")?;
        // Someone is watching: an OOM kill must show up now, not at the next buffer flush.
        self.out.flush().context("writing to stdout")
    }

    fn finish(&mut self, _summary: &RunSummary) -> Result<()> {
        self.out.flush().context("writing to stdout")
    }
}
