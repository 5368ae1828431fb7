//! One storm per hook family, each a short workload whose CPU time (user + sys of every
//! process it ran, from wait4) and wall time are taken, with a kernel figure beside that shows
//! the storm did provoke what it is named after.
use std::{
    fs,
    os::unix::fs::FileExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context as _, Result, bail};
use serde::{Deserialize, Serialize};

use super::{
    Bins,
    cleanup::{BenchCgroup, PREFIX, quiet},
};

const MIB: u64 = 1 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Storm {
    Faults,
    MemcgReclaim,
    DirectReclaim,
    Writeback,
    ContextSwitches,
    Signals,
}

impl Storm {
    /// In the order they run under one tracer: direct reclaim last, as it leaves memory full
    /// of page cache (the fault storm that follows finds what its hogs freed).
    pub const ALL: [Storm; 6] = [
        Self::Faults,
        Self::MemcgReclaim,
        Self::Writeback,
        Self::ContextSwitches,
        Self::Signals,
        Self::DirectReclaim,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Faults => "page faults",
            Self::MemcgReclaim => "memcg reclaim",
            Self::DirectReclaim => "direct reclaim and compaction",
            Self::Writeback => "writeback throttling",
            Self::ContextSwitches => "context switches",
            Self::Signals => "signals",
        }
    }

    /// The memstall hooks the storm exercises, for the reader of the results.
    pub fn hooks(self) -> &'static str {
        match self {
            Self::Faults => {
                "none by default (faults from memory.stat); memcg_pages with --faults ebpf"
            }
            Self::MemcgReclaim => "memcg_reclaim, reclaim_passes, shrink_slab, memstall_sleeps",
            Self::DirectReclaim => {
                "direct_reclaim, kswapd, reclaim_passes, shrink_slab, memstall_sleeps; compaction (fentry)"
            }
            Self::Writeback => "dirty_throttle, memstall_sleeps",
            Self::ContextSwitches => "memstall_sleeps (sched_switch, every switch)",
            Self::Signals => {
                "kills (signal_generate: every signal, a record per SIGKILL), memstall_sleeps"
            }
        }
    }
}

/// Sizes: the full bench, or `--quick` (a smoke run: same code paths, a quarter of the work).
#[derive(Clone, Copy, Debug)]
pub struct Sizes {
    pub fault_mib_per_process: u64,
    pub page_cache_mib: u64,
    pub direct_anon_mib_per_process: u64,
    pub writeback_mib: u64,
    pub round_trips: u32,
    pub forks: u32,
}

impl Sizes {
    pub fn new(quick: bool, mem_total: u64) -> Self {
        let q = |full: u64| if quick { full / 4 } else { full };
        Self {
            fault_mib_per_process: q(1024),
            page_cache_mib: q(1024),
            // Anonymous memory far below MemTotal whatever the machine: the page cache gives.
            direct_anon_mib_per_process: q(1024).min(mem_total / MIB / 16),
            writeback_mib: q(128),
            round_trips: q(60_000) as u32,
            forks: q(1_000) as u32,
        }
    }
}

/// One run of a storm.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct Sample {
    pub cpu_s: f64,
    pub wall_s: f64,
    /// The storm's own kernel figure (see [`Env::evidence_name`]).
    pub evidence: u64,
    /// Machine-wide compaction stalls during the run (direct reclaim storm only).
    pub compact_stalls: u64,
}

/// What the storms need on the machine, made once and removed on drop.
pub struct Env {
    bins: Bins,
    sizes: Sizes,
    scratch: PathBuf,
    reclaim_cgroup: BenchCgroup,
    cache_file: PathBuf,
    sparse: fs::File,
    sparse_offset: u64,
    pub writeback: Result<WritebackFs, String>,
}

impl Env {
    pub fn new(bins: Bins, sizes: Sizes, scratch: PathBuf) -> Result<Self> {
        let reclaim_cgroup = BenchCgroup::new("reclaim", Some(64 * MIB))?;
        let sparse_path = scratch.join("sparse.img");
        let sparse = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&sparse_path)?;
        // Holes read as zero-filled page cache at memory speed and take no disk.
        sparse.set_len(1 << 40)?;
        let writeback = WritebackFs::new(&scratch.join("writeback")).map_err(|e| format!("{e:#}"));
        Ok(Self {
            cache_file: scratch.join("cycle.img"),
            bins,
            sizes,
            scratch,
            reclaim_cgroup,
            sparse,
            sparse_offset: 0,
            writeback,
        })
    }

    pub fn evidence_name(storm: Storm) -> &'static str {
        match storm {
            Storm::Faults => "page faults (rusage minflt)",
            Storm::MemcgReclaim => "charges over the limit (failcnt / events max)",
            Storm::DirectReclaim => "direct reclaims (vmstat allocstall)",
            Storm::Writeback | Storm::ContextSwitches => "voluntary switches (rusage nvcsw)",
            Storm::Signals => "children SIGKILLed",
        }
    }

    /// Why a storm cannot run here, if it cannot.
    pub fn unavailable(&self, storm: Storm) -> Option<String> {
        match (storm, &self.writeback) {
            (Storm::Writeback, Err(why)) => Some(format!("no loop-mounted file system: {why}")),
            _ => None,
        }
    }

    pub fn run(&mut self, storm: Storm) -> Result<Sample> {
        let s = self.sizes;
        let (memhog_bin, storm_bin) = (self.bins.memhog.clone(), self.bins.storm.clone());
        let memhog = || Command::new(&memhog_bin);
        let storm_bin = || Command::new(&storm_bin);
        match storm {
            Storm::Faults => {
                let mib = s.fault_mib_per_process.to_string();
                let hogs = (0..2).map(|_| {
                    let mut c = memhog();
                    c.args(["--anon-mib", &mib]);
                    c
                });
                let (mut sample, usage) = measure(hogs.collect())?;
                sample.evidence = usage.minflt;
                Ok(sample)
            }
            Storm::MemcgReclaim => {
                let spec = format!("{}:{}", self.cache_file.display(), s.page_cache_mib);
                let mut c = memhog();
                let cgroup = self.reclaim_cgroup.path.to_string_lossy().into_owned();
                c.args(["--cgroup", &cgroup, "--page-cache", &spec]);
                let before = self.reclaim_cgroup.limit_hits();
                let (mut sample, _) = measure(vec![c])?;
                sample.evidence = self.reclaim_cgroup.limit_hits() - before;
                Ok(sample)
            }
            Storm::DirectReclaim => {
                self.fill_memory_with_page_cache()?;
                let mib = s.direct_anon_mib_per_process.to_string();
                let hogs = (0..2).map(|_| {
                    let mut c = memhog();
                    c.args(["--thp", "--anon-mib", &mib, "--oom-score-adj", "1000"]);
                    c
                });
                let (stalls, compactions) =
                    (vmstat_sum("allocstall_"), vmstat_sum("compact_stall"));
                let (mut sample, _) = measure(hogs.collect())?;
                sample.evidence = vmstat_sum("allocstall_").saturating_sub(stalls);
                sample.compact_stalls = vmstat_sum("compact_stall").saturating_sub(compactions);
                Ok(sample)
            }
            Storm::Writeback => {
                let fs = self
                    .writeback
                    .as_ref()
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                let file = fs.mount.join("dirty.img");
                let spec = format!("{}:{}", file.display(), s.writeback_mib);
                let mut c = memhog();
                c.args(["--write-file", &spec]);
                let result = measure(vec![c]);
                let _ = fs::remove_file(&file);
                let (mut sample, usage) = result?;
                sample.evidence = usage.nvcsw;
                Ok(sample)
            }
            Storm::ContextSwitches => {
                let mut c = storm_bin();
                c.args(["pingpong", "--round-trips", &s.round_trips.to_string()]);
                let (mut sample, usage) = measure(vec![c])?;
                sample.evidence = usage.nvcsw;
                Ok(sample)
            }
            Storm::Signals => {
                let mut c = storm_bin();
                c.args(["forkkill", "--count", &s.forks.to_string()]);
                let (mut sample, _) = measure(vec![c])?;
                sample.evidence = u64::from(s.forks);
                Ok(sample)
            }
        }
    }

    /// Fills free memory with clean page cache (reading fresh holes of the sparse file), so
    /// the next anonymous allocations find no free pages and reclaim directly. Not timed.
    fn fill_memory_with_page_cache(&mut self) -> Result<()> {
        let free = meminfo("MemFree").context("MemFree")?;
        let want = free.saturating_sub(256 * MIB);
        let mut buf = vec![0u8; MIB as usize];
        let mut done = 0;
        while done < want {
            if self.sparse_offset + MIB > 1 << 40 {
                self.sparse_offset = 0;
            }
            let n = self.sparse.read_at(&mut buf, self.sparse_offset)? as u64;
            if n == 0 {
                bail!("reading the sparse file returned nothing");
            }
            self.sparse_offset += n;
            done += n;
        }
        Ok(())
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        // Give the page cache back before the file goes.
        // SAFETY: advice on a descriptor this File owns.
        unsafe {
            libc::posix_fadvise(
                std::os::fd::AsRawFd::as_raw_fd(&self.sparse),
                0,
                0,
                libc::POSIX_FADV_DONTNEED,
            );
        }
        if let Ok(writeback) = &mut self.writeback {
            writeback.remove();
        }
        let _ = fs::remove_dir_all(&self.scratch);
    }
}

/// CPU times and counters of every process a storm ran (its reaped children included).
#[derive(Default)]
pub struct Usage {
    pub minflt: u64,
    pub nvcsw: u64,
}

/// Starts all `commands`, waits for each with wait4, and sums their rusage.
fn measure(commands: Vec<Command>) -> Result<(Sample, Usage)> {
    let began = Instant::now();
    let mut children = Vec::new();
    for mut command in commands {
        command.stdin(Stdio::null()).stdout(Stdio::null());
        children.push(command.spawn().with_context(|| format!("{command:?}"))?);
    }
    let mut cpu_s = 0.0;
    let mut usage = Usage::default();
    let mut failed = None;
    for child in children {
        let mut status = 0;
        // SAFETY: zeroed rusage is a valid value for the kernel to overwrite.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: waiting for our own child into live locals; std's Child never waits for it
        // again (it is only dropped).
        let pid = unsafe { libc::wait4(child.id() as i32, &raw mut status, 0, &raw mut ru) };
        if pid < 0 {
            bail!("wait4: {}", std::io::Error::last_os_error());
        }
        if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
            failed = Some(status);
        }
        let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        cpu_s += secs(ru.ru_utime) + secs(ru.ru_stime);
        usage.minflt += ru.ru_minflt as u64;
        usage.nvcsw += ru.ru_nvcsw as u64;
    }
    let wall_s = began.elapsed().as_secs_f64();
    if let Some(status) = failed {
        bail!("workload failed: wait status {status}");
    }
    let sample = Sample {
        cpu_s,
        wall_s,
        ..Sample::default()
    };
    Ok((sample, usage))
}

pub fn vmstat_sum(prefix: &str) -> u64 {
    fs::read_to_string("/proc/vmstat")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            l.strip_prefix(prefix)?
                .split_whitespace()
                .nth(1)?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

/// A /proc/meminfo value in bytes.
pub fn meminfo(key: &str) -> Option<u64> {
    fs::read_to_string("/proc/meminfo")
        .ok()?
        .lines()
        .find_map(|l| {
            let rest = l.strip_prefix(key)?.strip_prefix(':')?;
            rest.split_whitespace().next()?.parse::<u64>().ok()
        })
        .map(|kb| kb * 1024)
}

/// An ext4 file system on a loop device backed by a file on its own tmpfs (no disk I/O),
/// whose backing device may hold at most 8 MiB dirty (`strict_limit`): writers past that
/// are paused in balance_dirty_pages, whatever the machine's global dirty limits. Nothing
/// else writes there, so no other writer is throttled.
pub struct WritebackFs {
    root: PathBuf,
    pub mount: PathBuf,
    backing: PathBuf,
    loop_dev: Option<String>,
    mounted: Vec<PathBuf>,
}

impl WritebackFs {
    fn new(root: &Path) -> Result<Self> {
        let mut fs = Self {
            root: root.to_owned(),
            mount: root.join("mnt"),
            backing: root.join("back"),
            loop_dev: None,
            mounted: Vec::new(),
        };
        fs::create_dir_all(&fs.mount)?;
        fs::create_dir_all(&fs.backing)?;
        run_ok(
            Command::new("mount")
                .args(["-t", "tmpfs", "-o", "size=600M", PREFIX])
                .arg(&fs.backing),
        )?;
        fs.mounted.push(fs.backing.clone());
        let image = fs.backing.join("disk.img");
        fs::File::create(&image)?.set_len(512 * MIB)?;
        let out = Command::new("losetup")
            .args(["-f", "--show"])
            .arg(&image)
            .output()
            .context("losetup")?;
        if !out.status.success() {
            bail!("losetup: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        let dev = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        fs.loop_dev = Some(dev.clone());
        run_ok(Command::new("mkfs.ext4").args([
            "-q",
            "-E",
            "lazy_itable_init=0,lazy_journal_init=0",
            &dev,
        ]))?;
        run_ok(Command::new("mount").arg(&dev).arg(&fs.mount))?;
        fs.mounted.push(fs.mount.clone());
        let name = Path::new(&dev)
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let dev_numbers = fs::read_to_string(format!("/sys/block/{name}/dev"))?;
        let bdi = PathBuf::from("/sys/class/bdi").join(dev_numbers.trim());
        fs::write(bdi.join("strict_limit"), "1").context("bdi strict_limit")?;
        fs::write(bdi.join("max_bytes"), (8 * MIB).to_string()).context("bdi max_bytes")?;
        Ok(fs)
    }

    fn remove(&mut self) {
        while let Some(mount) = self.mounted.pop() {
            if mount == self.backing
                && let Some(dev) = self.loop_dev.take()
            {
                quiet(Command::new("losetup").args(["-d", &dev]));
            }
            quiet(Command::new("umount").arg(&mount));
        }
        let _ = fs::remove_dir_all(&self.root);
    }
}

impl Drop for WritebackFs {
    fn drop(&mut self) {
        self.remove();
    }
}

fn run_ok(command: &mut Command) -> Result<()> {
    let out = command.output().with_context(|| format!("{command:?}"))?;
    if !out.status.success() {
        bail!(
            "{command:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}
