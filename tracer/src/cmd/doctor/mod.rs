//! `memstall doctor`: can this machine run memstall, and what does each missing piece cost? One
//! line per check; the hooks are really loaded and attached as the tracer does, then dropped.
use std::{
    ffi::CStr,
    fs,
    io::{self, Write as _},
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Result, bail};
use serde::Serialize;

use crate::{
    EBPF_OBJECT,
    cgroup::{MemoryHierarchy, unescape_mountinfo},
    cli::DoctorArgs,
    enrich::kmsg::KmsgCursor,
    error::UserError,
    kernel::{
        KernelInfo, LoadOptions, Tracer,
        attach::{Hook, HookStatus},
        preflight,
    },
    term::escape,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Note,
    Warn,
    Fail,
}
use Status::{Fail, Note, Ok as Good, Warn};

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Check {
    pub name: String,
    pub kind: CheckKind,
    pub status: Status,
    pub detail: String,
}

/// What a check looked at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckKind {
    /// The machine: kernel, BTF, cgroups, tracefs, privileges, the kernel log.
    System,
    /// One of memstall's hooks, really loaded and attached.
    Hook,
    /// A kernel feature tried on its own (fentry trampolines).
    Probe,
}

fn new(kind: CheckKind, name: &str, status: Status, detail: impl AsRef<str>) -> Check {
    let (name, detail) = (name.to_owned(), one_line(detail.as_ref()));
    Check {
        name,
        kind,
        status,
        detail,
    }
}

fn sys(name: &str, status: Status, detail: impl AsRef<str>) -> Check {
    new(CheckKind::System, name, status, detail)
}

/// Kernel messages (verifier logs) can span lines: one line of at most 400 characters.
pub fn one_line(text: &str) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let line = lines.join(" / ");
    match line.char_indices().nth(400) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line,
    }
}

pub fn human_line(c: &Check) -> String {
    let tag = ["ok", "note", "warn", "FAIL"][c.status as usize];
    format!("{tag:<5} {}: {}", escape(&c.name), escape(&c.detail))
}

/// The checks that stop tracing: every failure, else the OOM hook when it did not attach.
pub fn failing(checks: &[Check]) -> Vec<String> {
    let mut failing: Vec<String> = checks
        .iter()
        .filter(|c| c.status == Fail)
        .map(|c| c.name.clone())
        .collect();
    let oom = Hook::OomKill.name();
    let attached = |c: &Check| c.kind == CheckKind::Hook && c.name == oom && c.status == Good;
    if failing.is_empty() && !checks.iter().any(attached) {
        failing.push(oom.into());
    }
    failing
}

/// What each hook gives, and for opt-in hooks the flag and what it costs.
const HOOK_ROLES: &[(Hook, &str, &str)] = &[
    (
        Hook::OomKill,
        "live OOM kill reports (`memstall oom` still reads the kernel log)",
        "",
    ),
    (
        Hook::OomContext,
        "exact OOM scores from the kernel's oom_control (reconstructed otherwise)",
        "",
    ),
    (Hook::DirectReclaim, "direct reclaim stalls", ""),
    (Hook::MemcgReclaim, "memcg limit reclaim stalls", ""),
    (Hook::SoftlimitReclaim, "v1 soft-limit reclaim stalls", ""),
    (Hook::NodeReclaim, "node reclaim stalls", ""),
    (Hook::Kswapd, "kswapd wake/sleep and who woke it", ""),
    (Hook::Throttled, "reclaim throttling stalls", ""),
    (Hook::ReclaimPasses, "pages scanned per stall", ""),
    (
        Hook::MemcgPages,
        "per-cgroup LRU pages on cgroup v1, kernel fault counts",
        MEMCG_COST,
    ),
    (
        Hook::ShrinkSlab,
        "slab shrinker time inside reclaim, by shrinker",
        "",
    ),
    (
        Hook::MemstallSleeps,
        "refault (thrashing) waits and memory.high penalty sleeps",
        "",
    ),
    (Hook::DirtyThrottle, "dirty-page throttling pauses", ""),
    (Hook::Compaction, "direct compaction stalls", ""),
    (Hook::Swapin, "swap-in stalls", ""),
    (
        Hook::Kills,
        "who sent each SIGKILL (oomd, systemd-oomd, kubelet, cgroup.kill, kill -9)",
        "",
    ),
    (
        Hook::ChargeLatency,
        "charge latency per cgroup",
        "--latency; runs on every charge",
    ),
    (
        Hook::FaultLatency,
        "page-fault latency per cgroup",
        "--latency; runs on every fault",
    ),
];
const MEMCG_COST: &str = "--memcg-events or --faults ebpf; costs ~110 ns per page fault";

pub fn hook_check(hook: &HookStatus) -> Check {
    let full = hook.to_string();
    let text = full
        .strip_prefix(&format!("{}: ", hook.hook))
        .unwrap_or(&full);
    let role = HOOK_ROLES.iter().find(|r| r.0 == hook.hook);
    let (gives, opt_in) = role.map_or(("", ""), |r| (r.1, r.2));
    let (status, detail) = match &hook.attached {
        Ok(_) if opt_in.is_empty() => (Good, text.to_owned()),
        Ok(_) => (Good, format!("{text} (off by default: {opt_in})")),
        Err(_) if gives.is_empty() => (Warn, text.to_owned()),
        Err(_) => (Warn, format!("{text}; without it: no {gives}")),
    };
    let status = if hook.hook == Hook::OomKill && status == Warn {
        Fail
    } else {
        status
    };
    new(CheckKind::Hook, hook.hook.name(), status, detail)
}

/// (filesystem type, mount point) of every mount.
fn mounts(mountinfo: &str) -> impl Iterator<Item = (&str, PathBuf)> {
    mountinfo.lines().filter_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        Some((
            right.split(' ').next()?,
            unescape_mountinfo(left.split(' ').nth(4)?),
        ))
    })
}

fn mounted(mountinfo: &str, fstype: &str) -> Vec<String> {
    let all = mounts(mountinfo).filter(|(t, _)| *t == fstype);
    all.map(|(_, p)| p.display().to_string()).collect()
}

pub fn cgroup_check(mountinfo: &str, memory: Option<&MemoryHierarchy>) -> Check {
    let v1 = mounted(mountinfo, "cgroup");
    let v2 = mounted(mountinfo, "cgroup2").join(", ");
    let layout = match (v1.len(), v2.is_empty()) {
        (0, true) => "no cgroup filesystem mounted".to_owned(),
        (0, false) => format!("v2 at {v2}"),
        (n, true) => format!("v1 ({n} hierarchies)"),
        (n, false) => format!("hybrid ({n} v1 hierarchies, cgroup2 at {v2})"),
    };
    let (status, memory) = match memory {
        Some(h) => (
            Good,
            format!("{} at {}", h.version_name(), h.root.display()),
        ),
        None => (Fail, "none (no hierarchy has it)".to_owned()),
    };
    sys(
        "cgroups",
        status,
        format!("{layout}; memory controller: {memory}"),
    )
}

pub fn tracefs_check(mountinfo: &str) -> Check {
    let at = mounted(mountinfo, "tracefs");
    if at.is_empty() {
        let why = "not mounted (only the classic oom/mark_victim fallback needs it; memstall \
                   then mounts it at /sys/kernel/tracing, which needs CAP_SYS_ADMIN)";
        return sys("tracefs", Note, why);
    }
    sys("tracefs", Good, format!("mounted at {}", at.join(", ")))
}

/// Capabilities worth naming: the two ways to load eBPF, then what optional steps need.
const CAPS: [(u32, &str, &str); 4] = [
    (21, "CAP_SYS_ADMIN", "mounting tracefs"),
    (39, "CAP_BPF", ""),
    (38, "CAP_PERFMON", ""),
    (34, "CAP_SYSLOG", "/dev/kmsg when kernel.dmesg_restrict=1"),
];

pub fn privileges_check(uid: u32, caps: Option<u64>) -> Check {
    let Some(caps) = caps else {
        let why = "cannot read CapEff from /proc/self/status";
        return sys("privileges", Fail, why);
    };
    let who = match uid {
        0 => "root".to_owned(),
        uid => format!("uid {uid}"),
    };
    if !preflight::can_trace(caps) {
        let why = "without CAP_SYS_ADMIN or CAP_BPF+CAP_PERFMON: loading eBPF needs root";
        return sys("privileges", Fail, format!("{who} {why} (run with sudo)"));
    }
    let has = |cap: u32| caps & (1 << cap) != 0;
    let held: Vec<&str> = CAPS.iter().filter(|c| has(c.0)).map(|c| c.1).collect();
    let missing = CAPS.iter().filter(|c| !has(c.0) && !c.2.is_empty());
    let missing: Vec<String> = missing.map(|c| format!("{} ({})", c.1, c.2)).collect();
    let mut detail = format!("{who} with {}", held.join(", "));
    if !missing.is_empty() {
        detail = format!("{detail}; without {}", missing.join(", "));
    }
    sys(
        "privileges",
        if missing.is_empty() { Good } else { Warn },
        detail,
    )
}

pub fn fentry_check(probe: Option<Result<bool, String>>) -> Check {
    let (status, detail) = match probe {
        None => (Note, "not probed (needs the privileges above)".to_owned()),
        Some(Ok(true)) => (Good, "fentry programs load and attach".to_owned()),
        Some(Ok(false)) => (Note, "this kernel has no fentry/fexit support".into()),
        Some(Err(why)) => (Note, format!("fentry programs cannot load here ({why})")),
    };
    new(CheckKind::Probe, "fentry", status, detail)
}

fn uname() -> Result<String, String> {
    // SAFETY: utsname is plain old data that uname fills with NUL-terminated strings.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    if unsafe { libc::uname(&raw mut uts) } != 0 {
        return Err(io::Error::last_os_error().to_string());
    }
    // SAFETY: every field is NUL-terminated (see above).
    let field = |f: &[libc::c_char]| unsafe { CStr::from_ptr(f.as_ptr()) }.to_string_lossy();
    Ok(format!("{} ({})", field(&uts.release), field(&uts.machine)))
}

/// Every check, in the order an on-call engineer reads them; `watch`: keep the hooks
/// attached a while with the programs' log on (`-v`).
pub fn collect(btf: &Path, watch: Option<Duration>) -> Vec<Check> {
    let mut checks = vec![match uname() {
        Ok(release) => sys("kernel", Good, release),
        Err(why) => sys("kernel", Warn, format!("uname failed: {why}")),
    }];
    let btf_size = preflight::check_btf(btf).map(|()| fs::metadata(btf).map_or(0, |m| m.len()));
    checks.push(match &btf_size {
        Ok(size) => {
            let (at, mib) = (btf.display(), *size as f64 / f64::from(1 << 20));
            sys("btf", Good, format!("present at {at} ({mib:.1} MiB)"))
        }
        Err(why) => sys("btf", Fail, why.to_string()),
    });
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let memory = MemoryHierarchy::detect().ok();
    checks.push(cgroup_check(&mountinfo, memory.as_ref()));
    checks.push(tracefs_check(&mountinfo));
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    let privileges = privileges_check(uid, preflight::effective_caps(&status));
    let privileged = privileges.status != Fail;
    checks.push(privileges);
    checks.push(match KmsgCursor::at_end() {
        Ok(_) => sys("kernel_log", Good, "/dev/kmsg readable"),
        Err(err) => {
            let cost = "OOM kills are explained from a cgroupfs and /proc snapshot instead, \
                        and `memstall oom` cannot work";
            sys("kernel_log", Warn, format!("/dev/kmsg: {err}; {cost}"))
        }
    });
    match (privileged, &btf_size) {
        (true, Ok(_)) => checks.extend(hook_checks(btf, watch)),
        (false, _) => checks.push(new(
            CheckKind::Hook,
            "hooks",
            Note,
            "not probed (needs privileges)",
        )),
        (true, Err(_)) => checks.push(new(
            CheckKind::Hook,
            "hooks",
            Note,
            "not probed (needs BTF)",
        )),
    }
    let probe = privileged.then(|| {
        let supported = aya::sys::is_program_supported(aya::programs::ProgramType::Tracing);
        supported.map_err(|e| format!("{:#}", anyhow::Error::new(e)))
    });
    checks.push(fentry_check(probe));
    checks
}

/// Loads the object and attaches every hook, opt-in ones included, as `memstall` would;
/// with `watch`, keeps them attached that long, the programs' log on, and counts what they
/// ran into.
fn hook_checks(btf: &Path, watch: Option<Duration>) -> Vec<Check> {
    let fail = |why: String| new(CheckKind::Hook, "hooks", Fail, why);
    let kernel = match KernelInfo::read(btf, false) {
        Ok(kernel) => kernel,
        Err(err) => return vec![fail(format!("reading kernel BTF: {err:#}"))],
    };
    let mut checks = vec![match &kernel.layout {
        Ok(_) => sys("layout", Good, "task → memcg offsets resolved from BTF"),
        Err(why) => sys("layout", Warn, format!("{why}; memcg attribution needs it")),
    }];
    let options = LoadOptions {
        memcg_events: true,
        latency: true,
        bpf_log: watch.is_some(),
        ..LoadOptions::default()
    };
    match Tracer::load(EBPF_OBJECT, &kernel, &options) {
        Ok(mut tracer) => {
            checks.extend(tracer.hooks.iter().map(hook_check));
            if let Some(period) = watch {
                let seen = watch::hooks(&mut tracer, period);
                checks.push(watch::diagnostics_check(seen.as_ref(), period));
            }
        }
        Err(err) => checks.push(fail(format!("the eBPF object did not load: {err:#}"))),
    }
    checks
}

#[derive(Serialize)]
struct Report<'a> {
    ok: bool,
    failing: &'a [String],
    checks: &'a [Check],
}

/// How long `doctor -v` lets the hooks run.
const WATCH: Duration = Duration::from_secs(1);

pub fn run(args: &DoctorArgs) -> Result<()> {
    let checks = collect(&args.btf, args.verbose.then_some(WATCH));
    let failing = failing(&checks);
    let mut out = String::new();
    if args.json {
        let (ok, failing, checks) = (failing.is_empty(), &failing, &checks);
        let report = Report {
            ok,
            failing,
            checks,
        };
        out = serde_json::to_string(&report)? + "\n";
    } else {
        for check in &checks {
            out += &(human_line(check) + "\n");
        }
        if failing.is_empty() {
            out += "memstall doctor: tracing can work here\n";
        }
    }
    // A reader that went away (`| head`) is not an error worth a panic or a message.
    match io::stdout().lock().write_all(out.as_bytes()) {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => bail!("writing the report: {e}"),
        _ => {}
    }
    if failing.is_empty() {
        return Ok(());
    }
    let failing = failing.join(", ");
    let why = format!("doctor: tracing cannot work here; failing: {failing}");
    Err(UserError::environment(why).into())
}

#[cfg(test)]
mod tests;
mod watch;
