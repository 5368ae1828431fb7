//! The tracer settings a storm runs under: none, memstall as a user runs it, memstall counting
//! faults in the kernel, and bpftrace with the nearest equivalent of each hook family.
use std::{
    io::{BufRead as _, BufReader, Read},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex, PoisonError, mpsc},
    thread,
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use serde::{Deserialize, Serialize};

use super::Bins;

/// The nearest bpftrace equivalent of memstall's hooks, all attached at once as memstall
/// attaches all of its own: reclaim and compaction windows as per-cgroup latency histograms,
/// kswapd, LRU passes, dirty-throttle pauses, sleeps marked in_memstall (timed from
/// sched_switch out to sched_switch in), signals, OOM kills and per-memcg event counts (what
/// `--faults ebpf` counts; it runs on every page fault).
pub const BPFTRACE_SCRIPT: &str = r#"
tracepoint:vmscan:mm_vmscan_direct_reclaim_begin,
tracepoint:vmscan:mm_vmscan_memcg_reclaim_begin,
tracepoint:compaction:mm_compaction_begin { @start[tid] = nsecs; }
tracepoint:vmscan:mm_vmscan_direct_reclaim_end,
tracepoint:vmscan:mm_vmscan_memcg_reclaim_end,
tracepoint:compaction:mm_compaction_end /@start[tid]/ {
  @stall_us[cgroup, probe] = hist((nsecs - @start[tid]) / 1000); delete(@start[tid]);
}
tracepoint:vmscan:mm_vmscan_kswapd_wake { @kswapd_wakes = count(); }
tracepoint:vmscan:mm_vmscan_lru_shrink_inactive {
  @scanned[cgroup] = sum(args->nr_scanned); @reclaimed[cgroup] = sum(args->nr_reclaimed);
}
tracepoint:writeback:balance_dirty_pages { @dirty_pause_ms[cgroup] = hist(args->pause); }
tracepoint:sched:sched_switch {
  if (curtask->in_memstall) { @memstall_since[args->prev_pid] = nsecs; }
  $since = @memstall_since[args->next_pid];
  if ($since) {
    @memstall_sleep_us = hist((nsecs - $since) / 1000);
    delete(@memstall_since[args->next_pid]);
  }
}
tracepoint:signal:signal_generate { @signals[args->sig, args->result] = count(); }
tracepoint:oom:mark_victim { @oom_kills = count(); }
tracepoint:memcg:count_memcg_events { @memcg_events[args->id, args->item] = sum(args->val); }
BEGIN { printf("memstall-bench: attached\n"); }
"#;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Setting {
    Off,
    Memstall,
    MemstallFaultsEbpf,
    Bpftrace,
}

impl Setting {
    pub const ALL: [Setting; 4] = [
        Self::Off,
        Self::Memstall,
        Self::MemstallFaultsEbpf,
        Self::Bpftrace,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Memstall => "memstall (defaults, --interval 1)",
            Self::MemstallFaultsEbpf => "memstall --faults ebpf",
            Self::Bpftrace => "bpftrace, nearest equivalent",
        }
    }

    /// Starts the tracer and waits until every program is attached.
    pub fn start(self, bins: &Bins) -> Result<Option<Running>> {
        let command = match self {
            Self::Off => return Ok(None),
            Self::Memstall | Self::MemstallFaultsEbpf => {
                let mut c = Command::new(&bins.memstall);
                c.args(["--json", "-", "--interval", "1"]);
                if self == Self::MemstallFaultsEbpf {
                    c.args(["--faults", "ebpf"]);
                }
                c
            }
            Self::Bpftrace => {
                let mut c = Command::new("bpftrace");
                c.args(["-e", BPFTRACE_SCRIPT]);
                c
            }
        };
        // memstall says it is tracing on stderr once attached; bpftrace runs BEGIN (stdout)
        // after attaching its probes.
        spawn_until_ready(command, self.name(), self != Self::Bpftrace).map(Some)
    }
}

/// Starts a tracer and waits for the line that says it is attached (memstall's on stderr,
/// the bench script's BEGIN on stdout); both pipes are drained from then on.
pub fn spawn_until_ready(
    mut command: Command,
    name: &str,
    ready_on_stderr: bool,
) -> Result<Running> {
    command.stdin(Stdio::null());
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .with_context(|| format!("starting {name}"))?;
    let stdout = child.stdout.take().context("stdout")?;
    let stderr = child.stderr.take().context("stderr")?;
    let (ready_pipe, other): (Box<dyn Read + Send>, Box<dyn Read + Send>) = if ready_on_stderr {
        (Box::new(stderr), Box::new(stdout))
    } else {
        (Box::new(stdout), Box::new(stderr))
    };
    // The other pipe's last lines go into the error if the tracer never attaches (bpftrace
    // says why on stderr).
    let other_tail = Arc::new(Mutex::new(Vec::<String>::new()));
    let tail = Arc::clone(&other_tail);
    thread::spawn(move || {
        for line in BufReader::new(other).lines() {
            let Ok(line) = line else { break };
            let mut tail = tail.lock().unwrap_or_else(PoisonError::into_inner);
            if tail.len() == 5 {
                tail.remove(0);
            }
            tail.push(line);
        }
    });
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut last = String::new();
        let mut lines = BufReader::new(ready_pipe).lines();
        for line in lines.by_ref() {
            let Ok(line) = line else { break };
            if line.contains("memstall: tracing") || line.contains("memstall-bench: attached") {
                let _ = tx.send(Ok(line));
                for _ in lines {}
                return;
            }
            last = line;
        }
        let _ = tx.send(Err(last));
    });
    let mut running = Running {
        child,
        ready_line: String::new(),
    };
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(Ok(line)) => {
            running.ready_line = line;
            Ok(running)
        }
        Ok(Err(last)) => {
            // The other pipe's reader may still be at its last lines.
            thread::sleep(Duration::from_millis(200));
            let tail = other_tail
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .join(" | ");
            bail!("{name} exited before attaching: {last} {tail}")
        }
        Err(_) => bail!("{name} did not attach within 60 s"),
    }
}

/// A tracer running in the background, stopped with SIGINT when dropped.
pub struct Running {
    child: Child,
    /// memstall's "tracing ..." line: which hooks attached.
    pub ready_line: String,
}

impl Running {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        for _ in 0..100 {
            if self.child.try_wait().is_ok_and(|s| s.is_some()) {
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
