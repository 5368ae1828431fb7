use std::io::Write;

use anyhow::{Context as _, Result};
use serde::Serialize;

use super::{RunSummary, Sink};
use crate::decode::Event;

/// JSON Lines: one object per event, then a `run_end` object.
pub struct JsonSink<W: Write> {
    out: W,
}

impl<W: Write> JsonSink<W> {
    pub fn new(out: W) -> Self {
        Self { out }
    }

    fn line(&mut self, value: &impl Serialize) -> Result<()> {
        serde_json::to_writer(&mut self.out, value).context("writing JSON")?;
        self.out.write_all(b"\n").context("writing JSON")?;
        // Events are rare; a line per write keeps `tail -f` and crash post-mortems useful.
        self.out.flush().context("writing JSON")
    }
}

#[derive(Serialize)]
#[serde(tag = "type", rename = "run_end")]
struct RunEnd<'a> {
    #[serde(flatten)]
    summary: &'a RunSummary,
}

impl<W: Write> Sink for JsonSink<W> {
    fn event(&mut self, event: &Event) -> Result<()> {
        self.line(event)
    }

    fn finish(&mut self, summary: &RunSummary) -> Result<()> {
        self.line(&RunEnd { summary })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oom::OomKill;

    #[test]
    fn writes_the_contract_fields() {
        let kill = OomKill {
            time_ns: 1,
            cgroup: Some("/a".into()),
            pid: 10,
            tgid: 10,
            comm: "alloc".into(),
            victim_pid: 11,
            victim_tgid: 11,
            victim_comm: "hog".into(),
            victim_cgroup: Some("/a/b".into()),
            victim_uid: Some(0),
            anon_rss_kb: 32000,
            file_rss_kb: 4,
            shmem_rss_kb: 0,
            pgtables_kb: 100,
            total_vm_kb: 140000,
            swap_entries: Some(0),
            oom_score_adj: 500,
            source: "tp_btf",
        };
        let mut sink = JsonSink::new(Vec::new());
        sink.event(&Event::OomKill(kill)).unwrap();
        sink.finish(&RunSummary {
            dropped: 3,
            ..Default::default()
        })
        .unwrap();
        let text = String::from_utf8(sink.out).unwrap();
        let mut lines = text.lines();
        let event: serde_json::Value = serde_json::from_str(lines.next().unwrap()).unwrap();
        for (key, want) in [
            ("type", serde_json::json!("oom_kill")),
            ("time_ns", 1.into()),
            ("cgroup", "/a".into()),
            ("pid", 10.into()),
            ("comm", "alloc".into()),
            ("victim_pid", 11.into()),
            ("victim_comm", "hog".into()),
            ("victim_cgroup", "/a/b".into()),
            ("anon_rss_kb", 32000.into()),
            ("file_rss_kb", 4.into()),
            ("shmem_rss_kb", 0.into()),
            ("pgtables_kb", 100.into()),
            ("oom_score_adj", 500.into()),
        ] {
            assert_eq!(event[key], want, "{key}");
        }
        let end: serde_json::Value = serde_json::from_str(lines.next().unwrap()).unwrap();
        assert_eq!(end["type"], "run_end");
        assert_eq!(end["dropped"], 3);
    }
}
