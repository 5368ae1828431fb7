//! The OOM killer's report, assembled from the kernel log records that make it up.
use std::collections::{BTreeMap, VecDeque};

use serde::Serialize;

use super::KmsgRecord;

/// One row of the "Tasks state (memory values in pages):" table.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct OomTask {
    pub pid: u32,
    pub uid: u32,
    pub tgid: u32,
    pub total_vm_pages: u64,
    pub rss_pages: u64,
    pub rss_anon_pages: Option<u64>,
    pub rss_file_pages: Option<u64>,
    pub rss_shmem_pages: Option<u64>,
    pub pgtables_bytes: u64,
    pub swapents: u64,
    pub oom_score_adj: i32,
    pub name: String,
}

/// The "...: Killed process PID (COMM) total-vm:..kB, ..." line.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct KilledProcess {
    pub pid: u32,
    pub comm: String,
    pub total_vm_kb: u64,
    pub anon_rss_kb: u64,
    pub file_rss_kb: u64,
    pub shmem_rss_kb: u64,
    pub uid: u32,
    pub pgtables_kb: u64,
    pub oom_score_adj: i32,
}

/// One OOM-killer report, as much of it as the log held.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct OomReport {
    /// kmsg timestamp of the "invoked oom-killer" record (of the Killed line if the report
    /// began before the oldest record still in the log).
    pub usec: u64,
    pub trigger_comm: String,
    pub gfp_mask: Option<String>,
    pub order: Option<i32>,
    pub trigger_oom_score_adj: Option<i32>,
    pub trigger_pid: Option<u32>,
    pub constraint: Option<String>,
    pub global_oom: bool,
    pub oom_memcg: Option<String>,
    pub task_memcg: Option<String>,
    pub victim_pid: Option<u32>,
    pub victim_comm: Option<String>,
    pub victim_uid: Option<u32>,
    pub memory_usage_kb: Option<u64>,
    pub memory_limit_kb: Option<u64>,
    pub memory_failcnt: Option<u64>,
    pub swap_usage_kb: Option<u64>,
    pub swap_limit_kb: Option<u64>,
    pub memcg_stats_path: Option<String>,
    pub memcg_stats: BTreeMap<String, u64>,
    pub tasks: Vec<OomTask>,
    pub killed: Option<KilledProcess>,
}

/// A report still being assembled, plus where in it we are.
#[derive(Default)]
struct Partial {
    report: OomReport,
    /// Numeric columns of the task table, as named by its header (between pid and name).
    columns: Option<Vec<String>>,
    in_stats: bool,
    /// "Memory cgroup stats for " arrived without its pr_cont()ed path.
    awaiting_stats_path: bool,
    /// The oom-kill line is pr_cont()ed together; a racing printk can split it.
    saw_oom_kill: bool,
}

/// Streaming parser: feed records in order, get each report once it is complete.
#[derive(Default)]
pub struct OomReportParser {
    current: Option<Partial>,
    ready: VecDeque<OomReport>,
}

impl OomReportParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// A report ends at its "Killed process" line, or, unfinished, at the next report's start.
    /// A Killed line without a report before it (memory.oom.group members, or a log that
    /// wrapped) is returned as a report of its own.
    pub fn push(&mut self, record: &KmsgRecord) -> Option<OomReport> {
        // Some kernels print the memcg stats block as one record with embedded newlines.
        for line in record.message.split('\n') {
            self.line(line.trim_end(), record.usec);
        }
        self.ready.pop_front()
    }

    /// Whether a report has begun and not yet ended (its "Killed process" line is to come).
    pub fn in_report(&self) -> bool {
        self.current.is_some()
    }

    /// What is left: reports not yet returned, then the unfinished one. Call until None.
    pub fn finish(&mut self) -> Option<OomReport> {
        self.ready
            .pop_front()
            .or_else(|| self.current.take().map(|p| p.report))
    }

    fn line(&mut self, line: &str, usec: u64) {
        if line.is_empty() {
            return;
        }
        if let Some(report) = parse_invoked(line, usec) {
            if let Some(prev) = self.current.take() {
                self.ready.push_back(prev.report);
            }
            self.current = Some(Partial {
                report,
                ..Partial::default()
            });
            return;
        }
        if let Some(killed) = parse_killed(line) {
            let mut report = match self.current.take() {
                Some(p) => p.report,
                None => OomReport {
                    usec,
                    ..OomReport::default()
                },
            };
            report.killed = Some(killed);
            self.ready.push_back(report);
            return;
        }
        let Some(p) = self.current.as_mut() else {
            return;
        };
        let r = &mut p.report;
        if let Some(rest) = line.strip_prefix("oom-kill:") {
            p.in_stats = false;
            p.saw_oom_kill = true;
            parse_oom_kill(rest, r);
        } else if p.saw_oom_kill && line.starts_with(',') {
            parse_oom_kill(line, r);
        } else if let Some(rest) = line.strip_prefix("Memory cgroup stats for") {
            // Pre-5.x v1 kernels printed one such line per descendant; the first is the domain.
            if r.memcg_stats_path.is_none() {
                let path = rest.trim().strip_suffix(':').unwrap_or(rest.trim());
                p.awaiting_stats_path = path.is_empty();
                if !path.is_empty() {
                    r.memcg_stats_path = Some(path.to_owned());
                }
                p.in_stats = true;
            }
        } else if p.awaiting_stats_path && line.starts_with('/') {
            p.awaiting_stats_path = false;
            let path = line.strip_suffix(':').unwrap_or(line);
            r.memcg_stats_path = Some(path.to_owned());
        } else if line.starts_with("Tasks state") {
            p.in_stats = false;
        } else if let Some(columns) = parse_task_header(line) {
            p.in_stats = false;
            p.columns = Some(columns);
        } else if line.starts_with('[') {
            if let Some(task) = p.columns.as_deref().and_then(|c| parse_task(line, c)) {
                r.tasks.push(task);
            }
        } else if let Some(rest) = line.strip_prefix("memory: ") {
            let (usage, limit, failcnt) = parse_counter(rest);
            r.memory_usage_kb = usage;
            r.memory_limit_kb = limit;
            r.memory_failcnt = failcnt;
        } else if let Some(rest) = line
            .strip_prefix("memory+swap: ")
            .or_else(|| line.strip_prefix("swap: "))
        {
            let (usage, limit, _) = parse_counter(rest);
            r.swap_usage_kb = usage;
            r.swap_limit_kb = limit;
        } else if line.starts_with("CPU: ") {
            // Only the dump_stack() of the task that hit the OOM, not another CPU's splat.
            if r.trigger_pid.is_none() && comm_matches(line, &r.trigger_comm) {
                r.trigger_pid = token_after(line, "PID:").and_then(|v| v.parse().ok());
            }
        } else if p.in_stats
            && let Some((key, value)) = parse_stat(line)
        {
            r.memcg_stats.insert(key.to_owned(), value);
        }
    }
}

/// Every report in `records`, complete ones and a trailing unfinished one.
pub fn parse_reports(records: &[KmsgRecord]) -> Vec<OomReport> {
    let mut parser = OomReportParser::new();
    let mut reports: Vec<OomReport> = records.iter().filter_map(|r| parser.push(r)).collect();
    while let Some(report) = parser.finish() {
        reports.push(report);
    }
    reports
}

/// `COMM invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0`
fn parse_invoked(line: &str, usec: u64) -> Option<OomReport> {
    const MARK: &str = "invoked oom-killer: ";
    let at = line.find(MARK)?;
    let comm = line.get(..at)?;
    let mut report = OomReport {
        usec,
        // The comm may itself contain spaces; only the separator is dropped.
        trigger_comm: comm.strip_suffix(' ').unwrap_or(comm).to_owned(),
        ..OomReport::default()
    };
    for (key, value) in line
        .get(at + MARK.len()..)?
        .split(", ")
        .filter_map(|kv| kv.split_once('='))
    {
        match key {
            "gfp_mask" => report.gfp_mask = Some(value.to_owned()),
            "order" => report.order = value.parse().ok(),
            "oom_score_adj" => report.trigger_oom_score_adj = value.parse().ok(),
            _ => {}
        }
    }
    Some(report)
}

/// `constraint=C,nodemask=..,cpuset=..,mems_allowed=..,(oom_memcg=P|global_oom),task_memcg=P,
/// task=COMM,pid=N,uid=N`. Paths, comms and masks may contain commas, so the trailing fields
/// are cut from the end and the memcg paths located by their keys.
pub(super) fn parse_oom_kill(text: &str, r: &mut OomReport) {
    let mut rest = text;
    if let Some((head, v)) = rest.rsplit_once(",uid=") {
        r.victim_uid = parse_uid(v);
        rest = head;
    }
    if let Some((head, v)) = rest.rsplit_once(",pid=") {
        r.victim_pid = v.parse().ok();
        rest = head;
    }
    if let Some((head, v)) = rest.rsplit_once(",task=") {
        r.victim_comm = Some(v.to_owned());
        rest = head;
    }
    if let Some((head, v)) = rest.split_once(",task_memcg=") {
        r.task_memcg = Some(v.to_owned());
        rest = head;
    }
    if let Some((head, v)) = rest.split_once(",oom_memcg=") {
        r.oom_memcg = Some(v.to_owned());
        rest = head;
    }
    if rest.split(',').any(|f| f == "global_oom") {
        r.global_oom = true;
    }
    if let Some(c) = rest.strip_prefix("constraint=") {
        r.constraint = c.split(',').next().map(str::to_owned);
    }
}

/// `PREFIX: Killed process PID (COMM) total-vm:NkB, anon-rss:NkB, file-rss:NkB,
/// shmem-rss:NkB, UID:N pgtables:NkB oom_score_adj:N`; older kernels stop after shmem-rss.
pub(super) fn parse_killed(line: &str) -> Option<KilledProcess> {
    const MARK: &str = ": Killed process ";
    let rest = line.get(line.find(MARK)? + MARK.len()..)?;
    let (pid, rest) = rest.split_once(' ')?;
    let rest = rest.strip_prefix('(')?;
    // A comm may contain ") "; the last ") total-vm:" is the real end.
    let end = rest.rfind(") total-vm:").or_else(|| rest.rfind(')'))?;
    let mut killed = KilledProcess {
        pid: pid.parse().ok()?,
        comm: rest.get(..end)?.to_owned(),
        ..KilledProcess::default()
    };
    for field in rest.get(end + 1..)?.split_whitespace() {
        let Some((key, value)) = field.trim_end_matches(',').split_once(':') else {
            continue;
        };
        let kb = || value.trim_end_matches("kB").parse::<u64>().ok();
        match key {
            "total-vm" => killed.total_vm_kb = kb().unwrap_or(0),
            "anon-rss" => killed.anon_rss_kb = kb().unwrap_or(0),
            "file-rss" => killed.file_rss_kb = kb().unwrap_or(0),
            "shmem-rss" => killed.shmem_rss_kb = kb().unwrap_or(0),
            "pgtables" => killed.pgtables_kb = kb().unwrap_or(0),
            "UID" => killed.uid = parse_uid(value).unwrap_or(0),
            "oom_score_adj" => killed.oom_score_adj = value.parse().unwrap_or(0),
            _ => {}
        }
    }
    Some(killed)
}

/// `[  pid  ]   uid  tgid total_vm      rss ... oom_score_adj name` → the columns between
/// pid and name, so rows from any kernel version can be read by name.
fn parse_task_header(line: &str) -> Option<Vec<String>> {
    let (pid, rest) = line.strip_prefix('[')?.split_once(']')?;
    if pid.trim() != "pid" {
        return None;
    }
    let mut columns: Vec<String> = rest.split_whitespace().map(str::to_owned).collect();
    (columns.pop()? == "name").then_some(columns)
}

/// `[  25018]     0 25018    33926     9022 ...             0 memhog`
pub(super) fn parse_task(line: &str, columns: &[String]) -> Option<OomTask> {
    let (pid, mut rest) = line.strip_prefix('[')?.split_once(']')?;
    let mut task = OomTask {
        pid: pid.trim().parse().ok()?,
        ..OomTask::default()
    };
    for column in columns {
        let t = rest.trim_start();
        let end = t.find(char::is_whitespace).unwrap_or(t.len());
        let (token, tail) = t.split_at(end);
        rest = tail;
        // i128 holds both the %lu and the (negative) %d/%ld columns.
        let v: i128 = token.parse().ok()?;
        let unsigned = || u64::try_from(v).ok();
        match column.as_str() {
            "uid" => task.uid = parse_uid(token)?,
            "tgid" => task.tgid = u32::try_from(v).ok()?,
            "total_vm" => task.total_vm_pages = unsigned()?,
            "rss" => task.rss_pages = unsigned()?,
            "rss_anon" => task.rss_anon_pages = unsigned(),
            "rss_file" => task.rss_file_pages = unsigned(),
            "rss_shmem" => task.rss_shmem_pages = unsigned(),
            "pgtables_bytes" => task.pgtables_bytes = unsigned().unwrap_or(0),
            "swapents" => task.swapents = unsigned()?,
            "oom_score_adj" => task.oom_score_adj = i32::try_from(v).ok()?,
            _ => {}
        }
    }
    // "%5hd %s": exactly one space before the name, which may itself hold spaces.
    task.name = rest.strip_prefix(' ').unwrap_or(rest).to_owned();
    Some(task)
}

/// `usage 32768kB, limit 32768kB, failcnt 0`
fn parse_counter(text: &str) -> (Option<u64>, Option<u64>, Option<u64>) {
    let (mut usage, mut limit, mut failcnt) = (None, None, None);
    for part in text.split(',') {
        let Some((key, value)) = part.trim().split_once(' ') else {
            continue;
        };
        let value = value.trim().trim_end_matches("kB").parse().ok();
        match key {
            "usage" => usage = value,
            "limit" => limit = value,
            "failcnt" => failcnt = value,
            _ => {}
        }
    }
    (usage, limit, failcnt)
}

/// A memory.stat line, `key value`.
fn parse_stat(line: &str) -> Option<(&str, u64)> {
    let (key, value) = line.split_once(' ')?;
    let valid_key = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    valid_key.then_some(())?;
    Some((key, value.parse().ok()?))
}

/// uids are printed with %d in some places, so the overflow uid may read as -1.
fn parse_uid(text: &str) -> Option<u32> {
    let v: i64 = text.trim().parse().ok()?;
    u32::try_from(v)
        .ok()
        .or_else(|| i32::try_from(v).ok().map(|v| v as u32))
}

fn token_after<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let mut tokens = line.split_whitespace();
    tokens.find(|t| *t == key)?;
    tokens.next()
}

fn comm_matches(line: &str, comm: &str) -> bool {
    line.split_once(" Comm: ")
        .is_none_or(|(_, rest)| rest.starts_with(comm))
}
