//! The kernel log (/dev/kmsg) and the OOM killer's report in it.
//!
//! The eBPF side sees the kill itself; the report adds what only the kernel prints: the OOM
//! domain, the constraint, the task table it scored and the memcg's stats. Kernel text is
//! untrusted input here: every parser returns what it could read and never panics.
mod oom_report;

pub use oom_report::{OomReport, OomReportParser, OomTask, parse_reports};

use std::{
    collections::VecDeque,
    fs::File,
    io::{self, Read as _, Seek as _, SeekFrom},
    os::unix::fs::OpenOptionsExt as _,
    time::{Duration, Instant},
};

use serde::Serialize;

const DEV_KMSG: &str = "/dev/kmsg";
/// The kernel fails a read with EINVAL when the record does not fit; records are at most
/// CONSOLE_EXT_LOG_MAX (8 KiB) including the header, so this leaves room to spare.
const READ_BUF: usize = 16 * 1024;

/// One /dev/kmsg record.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct KmsgRecord {
    pub seq: u64,
    /// Microseconds since boot (CLOCK_MONOTONIC).
    pub usec: u64,
    pub message: String,
}

/// Parses one raw read() from /dev/kmsg: `PRIO,SEQ,USEC,FLAGS[,...];MESSAGE\n`, then
/// continuation lines (` KEY=VALUE`), which are ignored. `\xNN` escapes in MESSAGE are undone.
pub fn parse_record(raw: &[u8]) -> Option<KmsgRecord> {
    let semi = raw.iter().position(|&b| b == b';')?;
    let header = std::str::from_utf8(raw.get(..semi)?).ok()?;
    let mut fields = header.split(',');
    fields.next()?.parse::<u32>().ok()?;
    let seq = fields.next()?.parse().ok()?;
    let usec = fields.next()?.parse().ok()?;
    fields.next()?;
    let body = raw.get(semi + 1..)?;
    let end = body.iter().position(|&b| b == b'\n').unwrap_or(body.len());
    let message = unescape(body.get(..end)?);
    Some(KmsgRecord { seq, usec, message })
}

fn unescape(text: &[u8]) -> String {
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while let Some(&b) = text.get(i) {
        if b == b'\\' && text.get(i + 1) == Some(&b'x') {
            let hex = text
                .get(i + 2..i + 4)
                .and_then(|h| std::str::from_utf8(h).ok());
            if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn open() -> io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(DEV_KMSG)
}

/// Reads records until the log is drained. Each read() returns exactly one record.
fn drain(file: &mut File, buf: &mut [u8]) -> io::Result<Vec<KmsgRecord>> {
    let mut records = Vec::new();
    loop {
        match file.read(buf) {
            Ok(0) => break,
            Ok(n) => records.extend(buf.get(..n).and_then(parse_record)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            // EPIPE: the records we were about to read were overwritten; the kernel has
            // already moved us to the oldest surviving one.
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => continue,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(records)
}

/// Every record currently in the kernel log.
pub fn read_all() -> io::Result<Vec<KmsgRecord>> {
    let mut file = open()?;
    drain(&mut file, &mut vec![0; READ_BUF])
}

/// Incremental, non-blocking reader of records logged after it was created.
pub struct KmsgCursor {
    file: File,
    buf: Vec<u8>,
}

impl KmsgCursor {
    pub fn at_end() -> io::Result<Self> {
        let mut file = open()?;
        file.seek(SeekFrom::End(0))?;
        Ok(Self {
            file,
            buf: vec![0; READ_BUF],
        })
    }

    /// All records logged since the last poll (possibly none).
    pub fn poll(&mut self) -> io::Result<Vec<KmsgRecord>> {
        drain(&mut self.file, &mut self.buf)
    }
}

/// How long to wait for the kernel's report of a kill while none of it is in the log: the
/// report is printed before the kill, so only a rate-limited one (just its "Killed process"
/// line, printed right after the event) is worth a short wait.
pub const REPORT_WAIT: Duration = Duration::from_millis(300);
/// How long to wait for the end of a report that has begun: its "Killed process" line comes
/// after the event, behind the rest of the report on a busy or slow console.
pub const REPORT_TAIL_WAIT: Duration = Duration::from_secs(3);
/// Reports kept for kills not yet asked about.
const REPORTS_KEPT: usize = 16;

fn take_report(reports: &mut VecDeque<OomReport>, victim_pid: u32) -> Option<OomReport> {
    let matches = |r: &OomReport| {
        r.victim_pid == Some(victim_pid) || r.killed.as_ref().is_some_and(|k| k.pid == victim_pid)
    };
    let position = reports.iter().position(matches)?;
    reports.remove(position)
}

/// Reads the log (`poll`) until `victim_pid`'s report is whole, and returns as soon as it is:
/// at most [`REPORT_WAIT`] while none of it is there, up to [`REPORT_TAIL_WAIT`] while a begun
/// report still lacks its "Killed process" line. At the deadline, what there is.
pub fn await_report(
    parser: &mut OomReportParser,
    reports: &mut VecDeque<OomReport>,
    victim_pid: u32,
    mut poll: impl FnMut() -> Vec<KmsgRecord>,
) -> Option<OomReport> {
    let started = Instant::now();
    loop {
        for record in &poll() {
            reports.extend(parser.push(record));
        }
        while reports.len() > REPORTS_KEPT {
            reports.pop_front();
        }
        if let Some(report) = take_report(reports, victim_pid) {
            return Some(report);
        }
        let bound = if parser.in_report() {
            REPORT_TAIL_WAIT
        } else {
            REPORT_WAIT
        };
        if started.elapsed() >= bound {
            // The tail never came (rate-limited log?): use what there is.
            reports.extend(parser.finish());
            return take_report(reports, victim_pid);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[cfg(test)]
mod tests;
