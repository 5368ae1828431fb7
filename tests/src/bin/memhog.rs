//! Test workload: joins a cgroup, then fills memory of the kinds reclaim and the OOM killer
//! treat differently (anonymous, page cache, tmpfs, SysV shm), touching every page; or reads a
//! mapped file whose page cache it dropped first (major faults).
use std::{
    fs,
    io::{Read as _, Write as _},
    path::PathBuf,
    thread,
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use clap::Parser;

const MIB: usize = 1 << 20;

#[derive(Parser)]
struct Args {
    /// Join this cgroup (absolute cgroupfs path) before allocating.
    #[arg(long)]
    cgroup: Option<PathBuf>,
    /// Set /proc/self/oom_score_adj (raising it needs no privilege; lowering needs CAP_SYS_RESOURCE).
    #[arg(long, allow_hyphen_values = true)]
    oom_score_adj: Option<i32>,
    /// Read FILE (creating it with MIB MiB if missing) into the page cache first: FILE:MIB.
    #[arg(long, value_name = "FILE:MIB")]
    page_cache: Option<String>,
    /// Write MIB MiB to FILE, e.g. on tmpfs: FILE:MIB. The file is left for the caller to remove.
    #[arg(long, value_name = "FILE:MIB")]
    write_file: Option<String>,
    /// With --write-file: fdatasync after every N MiB (short reclaims, no dirty-page throttling).
    #[arg(long, value_name = "N", default_value_t = 0)]
    sync_every_mib: usize,
    /// Read FILE (created with MIB MiB if missing) at COUNT random 4 KiB offsets: FILE:MIB:COUNT.
    /// Through a cgroup smaller than the file, pages come back while still in use: refaults.
    #[arg(long, value_name = "FILE:MIB:COUNT")]
    random_reads: Option<String>,
    /// Allocate and touch MIB MiB of SysV shared memory (removed when the process exits).
    #[arg(long, value_name = "MIB", default_value_t = 0)]
    shm_mib: usize,
    /// Keep the --shm-mib segment after exit, as a database's shared buffers outlive a killed
    /// backend (the caller removes it: ipcrm, or shmctl IPC_RMID on the id in
    /// /proc/sysvipc/shm).
    #[arg(long)]
    shm_keep: bool,
    /// Anonymous memory to allocate and touch, in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 0)]
    anon_mib: usize,
    /// Ask for transparent huge pages (MADV_HUGEPAGE): order-9 faults that compact and reclaim
    /// directly when no free 2 MiB block is left.
    #[arg(long)]
    thp: bool,
    /// Touch anonymous memory in steps of this many MiB, pausing `--step-ms` between steps.
    #[arg(long, default_value_t = 0)]
    step_mib: usize,
    #[arg(long, default_value_t = 0)]
    step_ms: u64,
    /// Rename this process (prctl PR_SET_NAME, any bytes, 15 at most); `\xNN` writes a byte,
    /// so a test can choose names with escape sequences in them.
    #[arg(long, value_name = "NAME")]
    comm: Option<String>,
    /// Fragment free memory first: touch MIB MiB of small pages, then free every other one,
    /// so a huge page has nowhere whole to come from without compaction.
    #[arg(long, value_name = "MIB", default_value_t = 0)]
    fragment_mib: usize,
    /// Touch the anonymous memory this many times (a second pass reads back what was
    /// swapped out).
    #[arg(long, value_name = "N", default_value_t = 1)]
    passes: usize,
    /// Map FILE (created with MIB MiB if missing), drop its page cache (fsync, then
    /// POSIX_FADV_DONTNEED) and read every page through the mapping with MADV_RANDOM: one
    /// major fault per page, no readahead.
    #[arg(long, value_name = "FILE:MIB")]
    map_file: Option<String>,
    /// Allocate from a second thread (its tid printed first as `memhog: tid N`), so the task
    /// that allocates is not the thread-group leader.
    #[arg(long)]
    in_thread: bool,
    /// Print `memhog: faults minor=N major=M` before `memhog: done`: this process's faults
    /// (getrusage) from joining the cgroup to the end of the work.
    #[arg(long)]
    report_faults: bool,
    /// Seconds to hold the memory before exiting.
    #[arg(long, default_value_t = 0.0)]
    hold_secs: f64,
}

fn split_spec(spec: &str) -> Result<(PathBuf, usize)> {
    let (path, mib) = spec.rsplit_once(':').context("expected FILE:MIB")?;
    Ok((path.into(), mib.parse().context("MiB count")?))
}

/// A fresh anonymous mapping of `len` bytes with `advice`.
fn map_anon(len: usize, advice: i32) -> Result<*mut u8> {
    // SAFETY: an anonymous private mapping, never unmapped while used.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        bail!(
            "mmap {} MiB: {}",
            len / MIB,
            std::io::Error::last_os_error()
        );
    }
    // SAFETY: advising our own fresh mapping.
    if unsafe { libc::madvise(ptr, len, advice) } != 0 {
        bail!("madvise: {}", std::io::Error::last_os_error());
    }
    Ok(ptr.cast())
}

fn touch(ptr: *mut u8, len: usize) {
    for offset in (0..len).step_by(4096) {
        // SAFETY: ptr..ptr+len is a live writable mapping owned by this process.
        unsafe { ptr.add(offset).write_volatile(1) };
    }
}

fn fill_file(path: &PathBuf, mib: usize, sync_every_mib: usize) -> Result<()> {
    let mut file =
        fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let chunk = vec![0x5au8; MIB];
    for written in 1..=mib {
        file.write_all(&chunk)?;
        if sync_every_mib > 0 && written % sync_every_mib == 0 {
            file.sync_data()?;
        }
    }
    Ok(())
}

/// COUNT reads of 4 KiB at pseudo-random offsets (a fixed LCG: runs are alike).
fn random_reads(spec: &str) -> Result<()> {
    use std::os::unix::fs::FileExt as _;
    let (rest, count) = spec.rsplit_once(':').context("expected FILE:MIB:COUNT")?;
    let (path, mib) = split_spec(rest)?;
    let count: u64 = count.parse().context("read count")?;
    use std::os::fd::AsRawFd as _;
    if fs::metadata(&path).map_or(0, |m| m.len() as usize) < mib * MIB {
        fill_file(&path, mib, 0)?;
    }
    let file = fs::File::open(&path)?;
    file.sync_all()?;
    // Start cold, and read only what is asked: no readahead, so pages read twice are
    // activated and come back as workingset refaults once evicted.
    // SAFETY: advice on a descriptor this File owns.
    unsafe {
        libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED);
        libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_RANDOM);
    }
    let pages = (mib * MIB / 4096) as u64;
    let mut buf = [0u8; 4096];
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    for _ in 0..count {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        file.read_exact_at(&mut buf, (state >> 33) % pages * 4096)?;
    }
    Ok(())
}

/// `a\x1bb` → the bytes `a`, 0x1b, `b`.
fn unescape_bytes(text: &str) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut rest = text.as_bytes();
    while let Some((&byte, tail)) = rest.split_first() {
        if byte == b'\\' && tail.first() == Some(&b'x') {
            let hex = tail.get(1..3).context("\\x needs two hex digits")?;
            out.push(u8::from_str_radix(std::str::from_utf8(hex)?, 16)?);
            rest = &tail[3..];
        } else {
            out.push(byte);
            rest = tail;
        }
    }
    Ok(out)
}

fn set_comm(name: &str) -> Result<()> {
    let mut bytes = unescape_bytes(name)?;
    bytes.truncate(15);
    bytes.push(0);
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes from a live buffer.
    if unsafe { libc::prctl(libc::PR_SET_NAME, bytes.as_ptr()) } != 0 {
        bail!("prctl(PR_SET_NAME): {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// (minor, major) faults of this process so far.
fn faults() -> (i64, i64) {
    // SAFETY: getrusage fills the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &raw mut usage) };
    (usage.ru_minflt, usage.ru_majflt)
}

/// Reads every page of FILE through a mapping, its page cache dropped first.
fn read_mapped(spec: &str) -> Result<()> {
    let (path, mib) = split_spec(spec)?;
    if fs::metadata(&path).map_or(0, |m| m.len() as usize) < mib * MIB {
        fill_file(&path, mib, 0)?;
    }
    let file = fs::File::open(&path)?;
    let len = mib * MIB;
    let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
    // SAFETY: plain syscalls on our own fd; the mapping is read-only, never written, and
    // unmapped at exit.
    unsafe {
        if libc::fsync(fd) != 0 || libc::posix_fadvise(fd, 0, 0, libc::POSIX_FADV_DONTNEED) != 0 {
            bail!("dropping the page cache of {}", path.display());
        }
        let ptr = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            fd,
            0,
        );
        if ptr == libc::MAP_FAILED {
            bail!(
                "mmap {}: {}",
                path.display(),
                std::io::Error::last_os_error()
            );
        }
        if libc::madvise(ptr, len, libc::MADV_RANDOM) != 0 {
            bail!("madvise: {}", std::io::Error::last_os_error());
        }
        let mut sum = 0u64;
        for offset in (0..len).step_by(4096) {
            sum += u64::from(ptr.cast::<u8>().add(offset).read_volatile());
        }
        std::hint::black_box(sum);
    }
    Ok(())
}

fn main() -> Result<()> {
    let args = Args::parse();
    if let Some(name) = &args.comm {
        set_comm(name)?;
    }
    if let Some(cgroup) = &args.cgroup {
        fs::write(cgroup.join("cgroup.procs"), std::process::id().to_string())
            .with_context(|| format!("joining {}", cgroup.display()))?;
    }
    let faults_at_start = faults();
    if let Some(adj) = args.oom_score_adj {
        fs::write("/proc/self/oom_score_adj", adj.to_string()).context("setting oom_score_adj")?;
    }
    if args.in_thread {
        let worker = thread::spawn(move || {
            // SAFETY: gettid has no preconditions.
            println!("memhog: tid {}", unsafe { libc::gettid() });
            std::io::stdout().flush()?;
            work(&args, faults_at_start)
        });
        return worker
            .join()
            .map_err(|_| anyhow::anyhow!("worker panicked"))?;
    }
    work(&args, faults_at_start)
}

fn work(args: &Args, faults_at_start: (i64, i64)) -> Result<()> {
    if let Some(spec) = &args.map_file {
        read_mapped(spec)?;
    }
    if let Some(spec) = &args.page_cache {
        let (path, mib) = split_spec(spec)?;
        if fs::metadata(&path).map_or(0, |m| m.len() as usize) < mib * MIB {
            fill_file(&path, mib, 0)?;
        }
        let mut buf = vec![0u8; MIB];
        let mut file = fs::File::open(&path)?;
        while file.read(&mut buf)? > 0 {}
    }
    if let Some(spec) = &args.write_file {
        let (path, mib) = split_spec(spec)?;
        fill_file(&path, mib, args.sync_every_mib)?;
    }
    if let Some(spec) = &args.random_reads {
        random_reads(spec)?;
    }
    if args.shm_mib > 0 {
        let len = args.shm_mib * MIB;
        // SAFETY: plain SysV calls; the segment is marked for removal right after attaching
        // unless the caller keeps it.
        unsafe {
            let id = libc::shmget(libc::IPC_PRIVATE, len, libc::IPC_CREAT | 0o600);
            if id < 0 {
                bail!("shmget: {}", std::io::Error::last_os_error());
            }
            let addr = libc::shmat(id, std::ptr::null(), 0);
            if !args.shm_keep {
                libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut());
            }
            if addr as isize == -1 {
                bail!("shmat: {}", std::io::Error::last_os_error());
            }
            touch(addr.cast(), len);
        }
    }
    if args.fragment_mib > 0 {
        let len = args.fragment_mib * MIB;
        let ptr = map_anon(len, libc::MADV_NOHUGEPAGE)?;
        touch(ptr, len);
        for offset in (0..len).step_by(8192) {
            // SAFETY: one page inside the live mapping; the other half stays allocated.
            unsafe { libc::madvise(ptr.add(offset).cast(), 4096, libc::MADV_DONTNEED) };
        }
    }
    if args.anon_mib > 0 {
        let len = args.anon_mib * MIB;
        // SAFETY: anonymous private mapping; never unmapped while touched.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            bail!(
                "mmap {} MiB: {}",
                args.anon_mib,
                std::io::Error::last_os_error()
            );
        }
        // One fault per 4 KiB page unless huge pages are asked for: tests count faults and
        // pages, and kernels differ in their THP default.
        let advice = if args.thp {
            libc::MADV_HUGEPAGE
        } else {
            libc::MADV_NOHUGEPAGE
        };
        // SAFETY: advising our own fresh mapping.
        if unsafe { libc::madvise(ptr, len, advice) } != 0 {
            bail!("madvise: {}", std::io::Error::last_os_error());
        }
        let step = if args.step_mib > 0 {
            args.step_mib * MIB
        } else {
            len
        };
        let mut done = 0;
        while done < len {
            let n = step.min(len - done);
            // SAFETY: done + n <= len.
            touch(unsafe { ptr.cast::<u8>().add(done) }, n);
            done += n;
            if args.step_ms > 0 {
                thread::sleep(Duration::from_millis(args.step_ms));
            }
        }
        // Later passes read back what reclaim pushed out (to swap, where there is swap).
        for _ in 1..args.passes {
            touch(ptr.cast(), len);
        }
    }
    if args.report_faults {
        let (minor, major) = faults();
        println!(
            "memhog: faults minor={} major={}",
            minor - faults_at_start.0,
            major - faults_at_start.1
        );
    }
    println!("memhog: done");
    std::io::stdout().flush()?;
    thread::sleep(Duration::from_secs_f64(args.hold_secs));
    Ok(())
}
