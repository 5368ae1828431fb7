//! Fixtures for integration tests on the real kernel: memory cgroups that always go away, the
//! memhog workload, a running memstall, and the kernel's own log.
use std::{
    collections::HashMap,
    fs,
    io::{BufRead as _, BufReader, Read as _},
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{
        atomic::{AtomicU32, Ordering},
        mpsc,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
pub use memstall::{CgroupVersion, MemoryHierarchy};

pub mod k8s;
pub mod prometheus;
pub mod taskstats;

pub const MIB: u64 = 1 << 20;

/// A memory cgroup with a limit, removed on drop (also when a test panics): its processes are
/// killed first.
pub struct MemCgroup {
    /// Where the memory hierarchy is mounted.
    pub root: PathBuf,
    pub path: PathBuf,
    /// Path relative to the memory hierarchy root, as memstall reports it (`/name`).
    pub relative: String,
    pub version: CgroupVersion,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

impl MemCgroup {
    pub fn create(hint: &str, limit_bytes: u64) -> Result<Self> {
        let hierarchy = MemoryHierarchy::detect()?;
        Self::create_under(&hierarchy.root, "", hierarchy.version, hint, limit_bytes)
    }

    /// A child of this cgroup with its own limit.
    pub fn child(&self, hint: &str, limit_bytes: u64) -> Result<Self> {
        Self::create_under(&self.root, &self.relative, self.version, hint, limit_bytes)
    }

    /// A child with exactly this name (e.g. to mimic a kubepods layout).
    pub fn child_named(&self, name: &str, limit_bytes: u64) -> Result<Self> {
        Self::create_named(
            &self.root,
            &self.relative,
            self.version,
            name.to_owned(),
            limit_bytes,
        )
    }

    fn create_under(
        root: &Path,
        parent: &str,
        version: CgroupVersion,
        hint: &str,
        limit_bytes: u64,
    ) -> Result<Self> {
        let name = format!(
            "memstall-test-{hint}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        Self::create_named(root, parent, version, name, limit_bytes)
    }

    fn create_named(
        root: &Path,
        parent: &str,
        version: CgroupVersion,
        name: String,
        limit_bytes: u64,
    ) -> Result<Self> {
        let relative = format!("{parent}/{name}");
        let parent_dir = root.join(parent.trim_start_matches('/'));
        if version == CgroupVersion::V2 {
            // Children only get memory.* files when the parent delegates the controller.
            fs::write(parent_dir.join("cgroup.subtree_control"), "+memory")
                .context("enabling the memory controller for children")?;
        }
        let path = parent_dir.join(&name);
        fs::create_dir(&path).with_context(|| format!("creating {}", path.display()))?;
        let cgroup = Self {
            root: root.to_path_buf(),
            path,
            relative,
            version,
        };
        let limit = limit_bytes.to_string();
        match version {
            CgroupVersion::V1 => {
                cgroup.write("memory.limit_in_bytes", &limit)?;
                // No swap escape hatch, so the limit means what the test says.
                let _ = cgroup.write("memory.memsw.limit_in_bytes", &limit);
            }
            CgroupVersion::V2 => {
                cgroup.write("memory.max", &limit)?;
                let _ = cgroup.write("memory.swap.max", "0");
            }
        }
        Ok(cgroup)
    }

    pub fn write(&self, file: &str, value: &str) -> Result<()> {
        fs::write(self.path.join(file), value)
            .with_context(|| format!("writing {value} to {}", self.path.join(file).display()))
    }

    pub fn read(&self, file: &str) -> Result<String> {
        fs::read_to_string(self.path.join(file))
            .with_context(|| format!("reading {}", self.path.join(file).display()))
    }

    /// `key value` lines (memory.stat, memory.events, memory.oom_control) as a map.
    pub fn keyed(&self, file: &str) -> Result<HashMap<String, u64>> {
        Ok(self
            .read(file)?
            .lines()
            .filter_map(|line| {
                let (key, value) = line.split_once(' ')?;
                Some((key.to_owned(), value.trim().parse().ok()?))
            })
            .collect())
    }

    /// OOM kills the kernel counted for this cgroup.
    pub fn oom_kills(&self) -> Result<u64> {
        let file = match self.version {
            CgroupVersion::V1 => "memory.oom_control",
            CgroupVersion::V2 => "memory.events",
        };
        Ok(self.keyed(file)?.get("oom_kill").copied().unwrap_or(0))
    }

    pub fn pids(&self) -> Vec<i32> {
        self.read("cgroup.procs")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }
}

impl Drop for MemCgroup {
    fn drop(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let pids = self.pids();
            for pid in &pids {
                // SAFETY: kill has no memory-safety preconditions.
                unsafe { libc::kill(*pid, libc::SIGKILL) };
            }
            if pids.is_empty() && fs::remove_dir(&self.path).is_ok() {
                return;
            }
            if !self.path.exists() {
                return;
            }
            if Instant::now() > deadline {
                eprintln!("warning: could not remove {}", self.path.display());
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The test workload binary, built beside the test executables (target/<profile>/memhog).
pub fn memhog() -> Command {
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps");
    Command::new(profile_dir.join("memhog"))
}

/// The test helper that sends SIGKILL under a chosen name (target/<profile>/sigkill).
pub fn sigkill() -> Command {
    Command::new(Path::new(memhog().get_program()).with_file_name("sigkill"))
}

/// The memory cgroup of this process (relative to the memory hierarchy, as memstall names
/// cgroups), read from /proc/self/cgroup.
pub fn own_memcg(version: CgroupVersion) -> String {
    let text = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    text.lines()
        .find_map(|line| {
            let mut parts = line.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            let ours = match version {
                CgroupVersion::V1 => controllers.split(',').any(|c| c == "memory"),
                CgroupVersion::V2 => controllers.is_empty(),
            };
            ours.then(|| path.to_owned())
        })
        .unwrap_or_else(|| "/".to_owned())
}

/// The memstall binary under test: $MEMSTALL_BIN, else the workspace's debug build.
pub fn memstall_bin() -> PathBuf {
    std::env::var_os("MEMSTALL_BIN").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/memstall"),
        PathBuf::from,
    )
}

/// A memstall process that has attached its hooks (it said so on stderr).
pub struct Memstall {
    child: Child,
    stderr_lines: mpsc::Receiver<String>,
    stderr: Vec<String>,
}

impl Memstall {
    pub fn start(args: &[&str]) -> Result<Self> {
        Self::start_with_stdout(args, Stdio::null())
    }

    /// Like [`Memstall::start`], with stdout (the human lines) going to `stdout`.
    pub fn start_with_stdout(args: &[&str], stdout: impl Into<Stdio>) -> Result<Self> {
        let bin = memstall_bin();
        if !bin.exists() {
            bail!(
                "{} missing: build it first (`cargo xtask test` does)",
                bin.display()
            );
        }
        let mut child = Command::new(&bin)
            .args(args)
            .stdout(stdout)
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let stderr = child.stderr.take().context("stderr")?;
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut memstall = Self {
            child,
            stderr_lines: rx,
            stderr: Vec::new(),
        };
        let deadline = Instant::now() + Duration::from_mins(1);
        while Instant::now() < deadline {
            match memstall
                .stderr_lines
                .recv_timeout(Duration::from_millis(100))
            {
                Ok(line) => {
                    let ready = line.contains("tracing");
                    memstall.stderr.push(line);
                    if ready {
                        return Ok(memstall);
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Some(status) = memstall.child.try_wait()? {
                        bail!(
                            "memstall exited with {status} before attaching: {:?}",
                            memstall.stderr
                        );
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = memstall.child.wait()?;
                    bail!(
                        "memstall exited with {status} before attaching: {:?}",
                        memstall.stderr
                    );
                }
            }
        }
        bail!("memstall did not attach within 60 s: {:?}", memstall.stderr)
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// The stderr lines read so far (the ready line and what came before it).
    pub fn stderr(&self) -> &[String] {
        &self.stderr
    }

    /// Sends `signal` and waits for the exit; returns the status and all of stderr.
    pub fn stop(self, signal: i32) -> Result<(ExitStatus, Vec<String>)> {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(self.pid(), signal) };
        self.wait()
    }

    pub fn wait(mut self) -> Result<(ExitStatus, Vec<String>)> {
        let status = self.child.wait()?;
        self.stderr.extend(self.stderr_lines.iter());
        Ok((status, std::mem::take(&mut self.stderr)))
    }
}

impl Drop for Memstall {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// JSON Lines written by `memstall --json FILE`.
pub fn read_json_lines(path: &Path) -> Result<Vec<serde_json::Value>> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .map(|line| serde_json::from_str(line).with_context(|| format!("parsing {line}")))
        .collect()
}

/// Every record in the kernel log (/dev/kmsg), message text only.
pub fn kernel_log() -> Result<Vec<String>> {
    let mut kmsg = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("/dev/kmsg")
        .context("opening /dev/kmsg")?;
    let mut records = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match kmsg.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                let record = String::from_utf8_lossy(&buf[..n]);
                // "PRIO,SEQ,USEC,FLAGS;message\n continuation lines"
                if let Some((_, message)) = record.split_once(';') {
                    records.push(message.lines().next().unwrap_or_default().to_owned());
                }
            }
            // EPIPE: records were overwritten while reading; keep going from the next one.
            Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(e).context("reading /dev/kmsg"),
        }
    }
    Ok(records)
}

/// The kernel's "Killed process PID (comm) total-vm:…kB, anon-rss:…kB, …" figures for `pid`.
pub fn kernel_kill_report(pid: u32) -> Result<Option<HashMap<String, u64>>> {
    let needle = format!("Killed process {pid} (");
    let Some(line) = kernel_log()?
        .into_iter()
        .rev()
        .find(|l| l.contains(&needle))
    else {
        return Ok(None);
    };
    let mut figures = HashMap::new();
    for part in line.split([',', ' ']) {
        if let Some((key, value)) = part.split_once(':') {
            let digits: String = value.chars().take_while(char::is_ascii_digit).collect();
            if let Ok(n) = digits.parse() {
                figures.insert(key.to_owned(), n);
            }
        }
    }
    Ok(Some(figures))
}

/// Polls `check` every 50 ms until it returns true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        thread::sleep(Duration::from_millis(50));
    }
    check()
}

/// Installs a Debian package when `binary` is missing (CI machines start fresh, as root);
/// `apt-get update` only when the first try fails.
pub fn ensure_installed(binary: &str, package: &str) {
    if Command::new(binary).arg("--version").output().is_ok() || Path::new(binary).exists() {
        return;
    }
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends", package])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !install() {
        let updated = Command::new("apt-get")
            .args(["update", "-q"])
            .stdout(Stdio::null())
            .status();
        assert!(updated.is_ok_and(|s| s.success()), "apt-get update failed");
        assert!(install(), "apt-get install {package} failed");
    }
}

/// Page cache (`cache_mib` read from `cache_file`), then `anon_mib` of anonymous memory in
/// `cgroup`: past its limit, charge-path reclaim of its own cache.
pub fn pressure(cgroup: &MemCgroup, cache_file: &Path, cache_mib: u32, anon_mib: u32) {
    let cg = cgroup.path.to_str().expect("utf-8 cgroup path");
    let spec = format!("{}:{cache_mib}", cache_file.display());
    let anon = anon_mib.to_string();
    for args in [
        vec!["--cgroup", cg, "--page-cache", &spec],
        vec!["--cgroup", cg, "--anon-mib", &anon],
    ] {
        let status = memhog()
            .args(&args)
            .stdout(Stdio::null())
            .status()
            .expect("memhog");
        assert!(status.success(), "memhog {args:?}: {status}");
    }
}

/// Starts memhog and waits until it has touched all its memory (it then holds it).
pub fn hog_holding(args: &[&str]) -> Child {
    let mut child = memhog()
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .expect("memhog");
    let mut line = String::new();
    if let Some(stdout) = child.stdout.as_mut() {
        let _ = BufReader::new(stdout).read_line(&mut line);
    }
    assert_eq!(
        line.trim(),
        "memhog: done",
        "memhog {args:?} did not finish allocating"
    );
    child
}

/// Runs memhog until the OOM killer kills it; returns its pid.
pub fn run_to_oom_kill(args: &[&str]) -> u32 {
    let mut hog = memhog()
        .args(args)
        .stdout(Stdio::null())
        .spawn()
        .expect("memhog");
    let pid = hog.id();
    let status = hog.wait().expect("waiting for memhog");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL),
        "memhog {args:?} should be OOM-killed: {status}"
    );
    pid
}
