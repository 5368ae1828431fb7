//! Sends SIGKILL the ways killers do, under a chosen name: kill(2) to a process, tgkill(2) to
//! one thread, or a write to a cgroup's cgroup.kill. Tests use it to play oomd, a shell's
//! `kill -9` or systemd stopping a unit, and check who memstall says the killer was.
use std::{fs, path::PathBuf};

use anyhow::{Context as _, Result, bail};
use clap::Parser;

#[derive(Parser)]
struct Args {
    /// Call this process NAME first (prctl PR_SET_NAME), as oomd or systemd-oomd would be.
    #[arg(long, value_name = "NAME")]
    comm: Option<String>,
    /// kill(PID, SIGKILL).
    #[arg(long, value_name = "PID")]
    pid: Option<i32>,
    /// tgkill(TGID, TID, SIGKILL) instead: TGID:TID.
    #[arg(long, value_name = "TGID:TID")]
    thread: Option<String>,
    /// Write 1 to this cgroup directory's cgroup.kill (cgroup v2).
    #[arg(long, value_name = "DIR")]
    cgroup_kill: Option<PathBuf>,
    /// Send from a second thread called NAME (printing `sigkill: tid N` first), as a daemon's
    /// worker thread would: the sender thread is then not its process.
    #[arg(long, value_name = "NAME")]
    from_thread: Option<String>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    if let Some(name) = &args.comm {
        set_comm(name)?;
    }
    match args.from_thread.clone() {
        Some(name) => std::thread::spawn(move || {
            set_comm(&name)?;
            // SAFETY: gettid has no preconditions.
            println!("sigkill: tid {}", unsafe { libc::gettid() });
            send(&args)
        })
        .join()
        .map_err(|_| anyhow::anyhow!("the sending thread panicked"))?,
        None => send(&args),
    }
}

fn set_comm(name: &str) -> Result<()> {
    {
        let mut bytes = name.as_bytes().to_vec();
        bytes.truncate(15);
        bytes.push(0);
        // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
        if unsafe { libc::prctl(libc::PR_SET_NAME, bytes.as_ptr()) } != 0 {
            bail!("prctl(PR_SET_NAME): {}", std::io::Error::last_os_error());
        }
    }
    Ok(())
}

fn send(args: &Args) -> Result<()> {
    if let Some(pid) = args.pid {
        // SAFETY: kill has no memory-safety preconditions.
        if unsafe { libc::kill(pid, libc::SIGKILL) } != 0 {
            bail!("kill({pid}): {}", std::io::Error::last_os_error());
        }
    }
    if let Some(spec) = &args.thread {
        let (tgid, tid) = spec.split_once(':').context("--thread TGID:TID")?;
        let (tgid, tid): (i32, i32) = (tgid.parse()?, tid.parse()?);
        // SAFETY: a raw syscall with integer arguments.
        if unsafe { libc::syscall(libc::SYS_tgkill, tgid, tid, libc::SIGKILL) } != 0 {
            bail!("tgkill({tgid}, {tid}): {}", std::io::Error::last_os_error());
        }
    }
    if let Some(dir) = &args.cgroup_kill {
        fs::write(dir.join("cgroup.kill"), "1")
            .with_context(|| format!("writing {}/cgroup.kill", dir.display()))?;
    }
    Ok(())
}
