//! The other way to read every memory cgroup's counters: a BPF cgroup iterator (kernel 6.1+;
//! Meta's `below` reads cgroup stats this way) walking the hierarchy in the kernel, against
//! the file walk of memory.stat memstall does. Measured, not assumed: the program
//! (memcg_iter.bpf.c) is built with clang at bench time, CO-RE against this kernel's BTF.
use std::{
    collections::HashMap,
    fs::{self, File},
    io::Read as _,
    os::fd::{AsFd, AsRawFd as _, FromRawFd as _, OwnedFd},
    path::{Path, PathBuf},
    process::Command,
    ptr::NonNull,
};

use anyhow::{Context as _, Result, bail};
use aya::{Btf, Ebpf, EbpfLoader, maps::Map, programs::Iter};
use serde::{Deserialize, Serialize};

use super::{
    own_cost::thread_cpu_ms,
    stats::{Estimate, bootstrap_median, seed_of},
};

const SOURCE: &str = include_str!("memcg_iter.bpf.c");
/// `struct row` of the program: the cgroup id and 48 event counters.
const ROW_BYTES: usize = 8 + 48 * 8;

fn bpf(cmd: libc::c_long, attr: &[u8]) -> Result<OwnedFd> {
    // SAFETY: the kernel reads `attr.len()` bytes of a live buffer.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_ptr(), attr.len() as u32) };
    if fd < 0 {
        bail!("bpf({cmd}): {}", std::io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor the kernel just gave us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// The program's rows array, mapped read-only.
struct Rows {
    at: NonNull<libc::c_void>,
    len: usize,
}

impl Rows {
    fn map(fd: &impl AsFd, capacity: u32) -> Result<Self> {
        // SAFETY: the page size is always available.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })?;
        let len = (ROW_BYTES * capacity as usize).div_ceil(page) * page;
        // SAFETY: a fresh shared read-only mapping of an mmap-able array of `len` bytes.
        let at = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                fd.as_fd().as_raw_fd(),
                0,
            )
        };
        if at == libc::MAP_FAILED {
            bail!("mapping the rows: {}", std::io::Error::last_os_error());
        }
        let at = NonNull::new(at).context("mmap gave a null mapping")?;
        Ok(Self { at, len })
    }

    /// The first `rows` rows, copied out (the kernel rewrites them at the next walk).
    fn copy(&self, rows: usize) -> Vec<u8> {
        let bytes = (rows * ROW_BYTES).min(self.len);
        // SAFETY: `bytes` is within the mapping, which lives as long as self.
        unsafe { std::slice::from_raw_parts(self.at.as_ptr().cast::<u8>(), bytes) }.to_vec()
    }
}

impl Drop for Rows {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly what `map` mapped.
        unsafe { libc::munmap(self.at.as_ptr(), self.len) };
    }
}

/// The iterator, loaded and linked to one memory hierarchy.
pub struct CgroupIter {
    rows: Rows,
    link: OwnedFd,
    // Kept for the link and the map.
    _ebpf: Ebpf,
    /// The hierarchy root's memory.stat (v1 only; the v2 root has none), read before each
    /// walk: a read flushes the pending per-CPU counters of the whole tree once they exceed
    /// the kernel's threshold, as each memory.stat read of the file walk does for its cgroup.
    /// The program cannot flush by itself: `css_rstat_flush` is a sleepable kfunc that wants
    /// a trusted pointer to the memory css, and a cgroup iterator on this kernel only reaches
    /// `cgroup->subsys[]`, which the verifier calls untrusted (measured: "R1 must be
    /// referenced or trusted").
    flush_trigger: Option<PathBuf>,
}

/// Builds the program with clang against this kernel's BTF; the object's path.
fn build(build_dir: &Path) -> Result<PathBuf> {
    fs::create_dir_all(build_dir)?;
    let header = Command::new("bpftool")
        .args([
            "btf",
            "dump",
            "file",
            "/sys/kernel/btf/vmlinux",
            "format",
            "c",
        ])
        .output()
        .context("bpftool btf dump")?;
    if !header.status.success() {
        bail!("bpftool btf dump failed: {}", header.status);
    }
    fs::write(build_dir.join("vmlinux.h"), &header.stdout)?;
    fs::write(build_dir.join("memcg_iter.bpf.c"), SOURCE)?;
    let object = build_dir.join("memcg_iter.o");
    let status = Command::new("clang-22")
        .args([
            "-O2",
            "-g",
            "-target",
            "bpf",
            "-c",
            "memcg_iter.bpf.c",
            "-o",
        ])
        .arg(&object)
        .current_dir(build_dir)
        .status()
        .context("clang-22")?;
    if !status.success() {
        bail!("clang-22 failed: {status}");
    }
    Ok(object)
}

impl CgroupIter {
    /// Builds, loads and links the iterator to the hierarchy at `root` (pre-order walk), with
    /// room for `capacity` memory cgroups.
    pub fn new(root: &Path, build_dir: &Path, capacity: u32) -> Result<Self> {
        let object = build(build_dir)?;
        let mut ebpf = EbpfLoader::new()
            .map_max_entries("rows", capacity)
            .load_file(&object)
            .context("loading the iterator object")?;
        let btf = Btf::from_sys_fs().context("kernel BTF")?;
        let program: &mut Iter = ebpf
            .program_mut("memcg_stats")
            .context("program memcg_stats")?
            .try_into()
            .context("memcg_stats is not an iterator")?;
        program
            .load("cgroup", &btf)
            .context("loading iter/cgroup")?;
        let prog_fd = program
            .fd()
            .context("the iterator's fd")?
            .as_fd()
            .as_raw_fd();
        let cgroup = File::open(root).with_context(|| root.display().to_string())?;
        // union bpf_iter_link_info, cgroup member: order, cgroup_fd, cgroup_id.
        const BPF_CGROUP_ITER_DESCENDANTS_PRE: u32 = 2;
        let mut info = [0u8; 16];
        info[..4].copy_from_slice(&BPF_CGROUP_ITER_DESCENDANTS_PRE.to_ne_bytes());
        info[4..8].copy_from_slice(&(cgroup.as_raw_fd() as u32).to_ne_bytes());
        // bpf_attr.link_create: prog_fd, target_fd, attach_type, flags, iter_info, iter_info_len.
        const BPF_LINK_CREATE: libc::c_long = 28;
        const BPF_TRACE_ITER: u32 = 28;
        let mut attr = [0u8; 32];
        attr[..4].copy_from_slice(&(prog_fd as u32).to_ne_bytes());
        attr[8..12].copy_from_slice(&BPF_TRACE_ITER.to_ne_bytes());
        attr[16..24].copy_from_slice(&(info.as_ptr() as u64).to_ne_bytes());
        attr[24..28].copy_from_slice(&(info.len() as u32).to_ne_bytes());
        let link = bpf(BPF_LINK_CREATE, &attr).context("linking the cgroup iterator")?;
        let rows = match ebpf.map("rows") {
            Some(Map::Array(data)) => Rows::map(data.fd(), capacity)?,
            _ => bail!("the iterator object has no rows array"),
        };
        let stat = root.join("memory.stat");
        Ok(Self {
            rows,
            link,
            _ebpf: ebpf,
            flush_trigger: stat.exists().then_some(stat),
        })
    }

    /// One walk: the flush trigger, the walk, the rows copied out (as the file walk's reads
    /// copy the text out; neither is parsed here).
    pub fn walk(&self) -> Result<Vec<u8>> {
        const BPF_ITER_CREATE: libc::c_long = 33;
        if let Some(stat) = &self.flush_trigger {
            fs::read(stat).with_context(|| stat.display().to_string())?;
        }
        let mut attr = [0u8; 8];
        attr[..4].copy_from_slice(&(self.link.as_raw_fd() as u32).to_ne_bytes());
        let mut iter = File::from(bpf(BPF_ITER_CREATE, &attr).context("creating an iterator")?);
        // struct walked: rows, overflow; written once, when the walk ends.
        let mut walked = Vec::with_capacity(8);
        iter.read_to_end(&mut walked)
            .context("reading the iterator")?;
        let Some((rows, overflow)) = walked.get(..8).map(|w| {
            (
                u32::from_ne_bytes([w[0], w[1], w[2], w[3]]),
                w[4..].iter().any(|&b| b != 0),
            )
        }) else {
            bail!(
                "the walk ended without its row count ({} bytes)",
                walked.len()
            );
        };
        if overflow {
            bail!("more memory cgroups than the {rows} rows made for them");
        }
        Ok(self.rows.copy(rows as usize))
    }
}

/// Each row's cgroup id and event counters.
fn parse(bytes: &[u8]) -> HashMap<u64, Vec<u64>> {
    bytes
        .chunks_exact(ROW_BYTES)
        .map(|row| {
            let mut words = row
                .chunks_exact(8)
                .map(|w| u64::from_ne_bytes(w.try_into().unwrap_or_default()));
            (words.next().unwrap_or_default(), words.collect())
        })
        .collect()
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IterCost {
    pub cgroups: usize,
    pub cpu_ms: Vec<f64>,
    pub estimate: Option<Estimate>,
    /// A cgroup's pgfault as memory.stat printed it was among its iterator counters.
    pub checked: String,
}

/// CPU time of whole walks (this thread: the read syscall runs the program in the kernel).
pub fn iter_cost(iter: &CgroupIter, repeats: usize, check: Option<(u64, u64)>) -> Result<IterCost> {
    let mut cpu_ms = Vec::new();
    let mut bytes = Vec::new();
    for _ in 0..repeats {
        let began = thread_cpu_ms();
        bytes = iter.walk()?;
        cpu_ms.push(thread_cpu_ms() - began);
    }
    let rows = parse(&bytes);
    let checked = match check {
        Some((id, pgfault)) => match rows.get(&id) {
            Some(events) if events.contains(&pgfault) => {
                let slots: Vec<String> = events
                    .iter()
                    .enumerate()
                    .filter(|&(_, &v)| v == pgfault)
                    .map(|(slot, _)| slot.to_string())
                    .collect();
                format!(
                    "memory.stat pgfault {pgfault} of a test cgroup = its event slot {}",
                    slots.join(", ")
                )
            }
            Some(_) => {
                format!("**pgfault {pgfault} of a test cgroup not among its iterator counters**")
            }
            None => "**the test cgroup is missing from the walk**".into(),
        },
        None => "not checked".into(),
    };
    Ok(IterCost {
        cgroups: rows.len(),
        estimate: bootstrap_median(&cpu_ms, seed_of(&format!("iter/{}", rows.len()))),
        cpu_ms,
        checked,
    })
}
