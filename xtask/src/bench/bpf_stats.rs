//! The kernel's own account of BPF programs: run count and run time per program, kept while
//! BPF_ENABLE_STATS's descriptor is open (only during the stats passes: the accounting itself
//! costs two clock reads per run, which must not land in the timed rounds).
use std::{
    collections::HashMap,
    fs,
    os::fd::{FromRawFd as _, OwnedFd},
    process::Command,
};

use anyhow::{Context as _, Result, bail};
use serde::{Deserialize, Serialize};

/// `bpf(BPF_ENABLE_STATS, { type = BPF_STATS_RUN_TIME })`; stats stay on while it is open.
pub struct StatsEnabled(#[allow(dead_code)] OwnedFd);

impl StatsEnabled {
    pub fn new() -> Result<Self> {
        const BPF_ENABLE_STATS: libc::c_long = 32;
        const BPF_STATS_RUN_TIME: u32 = 0;
        // union bpf_attr, enable_stats member: one u32; the rest must be zero.
        let mut attr = [0u8; 16];
        attr[..4].copy_from_slice(&BPF_STATS_RUN_TIME.to_ne_bytes());
        // SAFETY: the kernel reads `attr.len()` bytes of a live buffer.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_ENABLE_STATS,
                attr.as_ptr(),
                attr.len() as u32,
            )
        };
        if fd < 0 {
            bail!("BPF_ENABLE_STATS: {}", std::io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor the kernel just gave us.
        Ok(Self(unsafe { OwnedFd::from_raw_fd(fd as i32) }))
    }
}

/// Run count and total run time of one program.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub runs: u64,
    pub ns: u64,
}

/// The counters of every program process `pid` holds open, by program id (from
/// /proc/PID/fdinfo: exactly the tracer's programs, not another user's with the same name).
pub fn counters_of(pid: u32) -> Result<HashMap<u32, Counters>> {
    let mut programs = HashMap::new();
    let dir = format!("/proc/{pid}/fdinfo");
    for entry in fs::read_dir(&dir).with_context(|| dir.clone())?.flatten() {
        let Ok(text) = fs::read_to_string(entry.path()) else {
            continue;
        };
        let field = |key: &str| -> Option<u64> {
            text.lines()
                .find_map(|l| l.strip_prefix(key)?.trim().parse().ok())
        };
        if let (Some(id), Some(runs), Some(ns)) =
            (field("prog_id:"), field("run_cnt:"), field("run_time_ns:"))
        {
            programs.insert(id as u32, Counters { runs, ns });
        }
    }
    Ok(programs)
}

/// Program names by id (bpftool).
pub fn names() -> Result<HashMap<u32, String>> {
    let out = Command::new("bpftool")
        .args(["prog", "show", "--json"])
        .output()
        .context("bpftool")?;
    let progs: serde_json::Value = serde_json::from_slice(&out.stdout).context("bpftool JSON")?;
    Ok(progs
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| Some((p["id"].as_u64()? as u32, p["name"].as_str()?.to_owned())))
        .collect())
}

/// What one program cost during one storm run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ProgramCost {
    pub program: String,
    pub runs: u64,
    pub ns: u64,
}

impl ProgramCost {
    pub fn ns_per_run(&self) -> f64 {
        if self.runs == 0 {
            0.0
        } else {
            self.ns as f64 / self.runs as f64
        }
    }
}

/// Per program (by name; programs of one name summed), what ran between two readings.
pub fn delta(
    before: &HashMap<u32, Counters>,
    after: &HashMap<u32, Counters>,
    names: &HashMap<u32, String>,
) -> Vec<ProgramCost> {
    let mut by_name: HashMap<String, ProgramCost> = HashMap::new();
    for (id, end) in after {
        let start = before.get(id).copied().unwrap_or_default();
        let runs = end.runs.saturating_sub(start.runs);
        if runs == 0 {
            continue;
        }
        let name = names
            .get(id)
            .cloned()
            .unwrap_or_else(|| format!("prog {id}"));
        let cost = by_name.entry(name.clone()).or_insert(ProgramCost {
            program: name,
            runs: 0,
            ns: 0,
        });
        cost.runs += runs;
        cost.ns += end.ns.saturating_sub(start.ns);
    }
    let mut costs: Vec<ProgramCost> = by_name.into_values().collect();
    costs.sort_by(|a, b| b.ns.cmp(&a.ns).then_with(|| a.program.cmp(&b.program)));
    costs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delta_sums_by_name_and_drops_idle_programs() {
        let c = |runs, ns| Counters { runs, ns };
        let before = HashMap::from([(1, c(10, 1000)), (2, c(0, 0)), (3, c(5, 50))]);
        let after = HashMap::from([
            (1, c(110, 11_000)),
            (2, c(50, 2500)),
            (3, c(5, 50)),
            (4, c(1, 7)),
        ]);
        let names = HashMap::from([
            (1, "sched_switch_btf".to_owned()),
            (2, "sched_switch_btf".to_owned()),
            (3, "idle".to_owned()),
        ]);
        let costs = delta(&before, &after, &names);
        assert_eq!(costs.len(), 2, "{costs:?}");
        assert_eq!(costs[0].program, "sched_switch_btf");
        assert_eq!((costs[0].runs, costs[0].ns), (150, 12_500));
        assert!((costs[0].ns_per_run() - 83.33).abs() < 0.01);
        assert_eq!(costs[1].program, "prog 4");
    }
}
