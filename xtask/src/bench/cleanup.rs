//! What the bench makes on the machine (memory cgroups, a loop-mounted file system, big
//! files) and how it goes away: on drop, on Ctrl-C (SIGINT only sets a flag the bench checks
//! between steps, so the drops run), and at the next start for whatever a SIGKILL left.
use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::atomic::{AtomicBool, Ordering},
    thread,
    time::Duration,
};

use anyhow::{Context as _, Result, bail};

/// Everything the bench creates is named with this prefix.
pub const PREFIX: &str = "memstall-bench";

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// From now on Ctrl-C asks the bench to stop at the next step instead of killing it.
pub fn catch_interrupts() {
    let handler = on_sigint as extern "C" fn(libc::c_int);
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, handler as libc::sighandler_t);
        libc::signal(libc::SIGTERM, handler as libc::sighandler_t);
    }
}

/// Fails once Ctrl-C was pressed, so `?` unwinds through the guards.
pub fn check_interrupted() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted: the bench's cgroups, mounts and files were removed");
    }
    Ok(())
}

/// The memory controller's hierarchy root and whether it is cgroup v1.
pub fn memory_root() -> Result<(PathBuf, bool)> {
    if Path::new("/sys/fs/cgroup/memory/memory.limit_in_bytes").exists() {
        Ok(("/sys/fs/cgroup/memory".into(), true))
    } else if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        fs::write("/sys/fs/cgroup/cgroup.subtree_control", "+memory").ok();
        Ok(("/sys/fs/cgroup".into(), false))
    } else {
        bail!("no memory cgroup hierarchy found")
    }
}

/// A memory cgroup made for the bench, removed with its children on drop.
pub struct BenchCgroup {
    pub path: PathBuf,
    pub v1: bool,
}

impl BenchCgroup {
    pub fn new(name: &str, limit: Option<u64>) -> Result<Self> {
        let (root, v1) = memory_root()?;
        let path = root.join(format!("{PREFIX}-{name}"));
        remove_cgroup_tree(&path);
        fs::create_dir(&path).with_context(|| format!("creating {}", path.display()))?;
        if let Some(limit) = limit {
            let file = if v1 {
                "memory.limit_in_bytes"
            } else {
                "memory.max"
            };
            fs::write(path.join(file), limit.to_string()).context("setting the limit")?;
        }
        if !v1 {
            fs::write(path.join("cgroup.subtree_control"), "+memory").ok();
        }
        Ok(Self { path, v1 })
    }

    /// The cgroup's path below the hierarchy root, as `--cgroup` takes it.
    pub fn relative(&self) -> String {
        format!(
            "/{}",
            self.path.file_name().unwrap_or_default().to_string_lossy()
        )
    }

    /// Charges that hit the limit (v1 memory.failcnt; v2 memory.events `max`).
    pub fn limit_hits(&self) -> u64 {
        let read = |file: &str| fs::read_to_string(self.path.join(file)).unwrap_or_default();
        if self.v1 {
            read("memory.failcnt").trim().parse().unwrap_or(0)
        } else {
            read("memory.events")
                .lines()
                .find_map(|l| l.strip_prefix("max ")?.trim().parse().ok())
                .unwrap_or(0)
        }
    }
}

impl Drop for BenchCgroup {
    fn drop(&mut self) {
        remove_cgroup_tree(&self.path);
    }
}

/// Removes a cgroup and its descendants, deepest first; a cgroup whose last task is still
/// exiting refuses rmdir for a moment, so each is retried for up to 5 s.
pub fn remove_cgroup_tree(path: &Path) {
    if !path.is_dir() {
        return;
    }
    for entry in fs::read_dir(path).into_iter().flatten().flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            remove_cgroup_tree(&entry.path());
        }
    }
    for _ in 0..50 {
        if fs::remove_dir(path).is_ok() || !path.exists() {
            return;
        }
        thread::sleep(Duration::from_millis(100));
    }
    eprintln!("bench: could not remove {}", path.display());
}

/// A scratch directory under /var/tmp (a real file system: page cache, writeback).
pub fn scratch_dir() -> Result<PathBuf> {
    let dir = PathBuf::from(format!("/var/tmp/{PREFIX}-{}", std::process::id()));
    fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Removes what an earlier, killed run left: cgroups, mounts, loop devices, scratch files.
pub fn remove_leftovers() {
    if let Ok((root, _)) = memory_root() {
        for entry in fs::read_dir(&root).into_iter().flatten().flatten() {
            if entry.file_name().to_string_lossy().starts_with(PREFIX) {
                eprintln!("bench: removing leftover {}", entry.path().display());
                remove_cgroup_tree(&entry.path());
            }
        }
    }
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let mut ours: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter(|m| m.contains(PREFIX))
        .collect();
    // Inner mounts first.
    ours.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for mount in ours {
        let loop_dev = mounts
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(mount))
            .and_then(|l| l.split_whitespace().next())
            .filter(|dev| dev.starts_with("/dev/loop"))
            .map(str::to_owned);
        eprintln!("bench: unmounting leftover {mount}");
        quiet(Command::new("umount").arg(mount));
        if let Some(dev) = loop_dev {
            quiet(Command::new("losetup").args(["-d", &dev]));
        }
    }
    for entry in fs::read_dir("/var/tmp").into_iter().flatten().flatten() {
        if entry.file_name().to_string_lossy().starts_with(PREFIX) {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// Runs a clean-up command whose failure is only worth a note.
pub fn quiet(command: &mut Command) {
    match command.stdout(Stdio::null()).stderr(Stdio::null()).status() {
        Ok(status) if status.success() => {}
        other => eprintln!("bench: {command:?}: {other:?}"),
    }
}

/// tracefs at /sys/kernel/tracing for bpftrace, which finds no tracepoint without it (a fresh
/// machine mounts it only when something asks); unmounted on drop if the bench mounted it.
pub struct Tracefs {
    mounted_here: bool,
}

const TRACEFS: &str = "/sys/kernel/tracing";

impl Tracefs {
    pub fn ensure() -> Result<Self> {
        if Path::new(TRACEFS).join("events").exists() {
            return Ok(Self {
                mounted_here: false,
            });
        }
        let status = Command::new("mount")
            .args(["-t", "tracefs", "tracefs", TRACEFS])
            .status()
            .context("running mount")?;
        if !status.success() {
            bail!("mounting tracefs at {TRACEFS} for bpftrace: mount {status}");
        }
        Ok(Self { mounted_here: true })
    }
}

impl Drop for Tracefs {
    fn drop(&mut self) {
        if self.mounted_here {
            let _ = Command::new("umount").arg(TRACEFS).status();
        }
    }
}
