//! Bench workloads that are not about memory: a context-switch storm (every sleep and wake-up
//! passes sched_switch) and a signal storm (every kill passes signal_generate).
use anyhow::{Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    storm: Storm,
}

#[derive(Subcommand)]
enum Storm {
    /// Two processes pass one byte back and forth through two pipes, N round trips: each
    /// side blocks in read() every time, so every trip is two sleeps and two wake-ups.
    Pingpong {
        #[arg(long, default_value_t = 100_000)]
        round_trips: u32,
    },
    /// Fork a child that waits in pause(), SIGKILL it, reap it; N times.
    Forkkill {
        #[arg(long, default_value_t = 2_000)]
        count: u32,
    },
}

fn check(ret: libc::c_int, what: &str) -> Result<libc::c_int> {
    if ret < 0 {
        bail!("{what}: {}", std::io::Error::last_os_error());
    }
    Ok(ret)
}

fn pipe() -> Result<[libc::c_int; 2]> {
    let mut fds = [0; 2];
    // SAFETY: pipe writes two descriptors into a live two-element array.
    check(unsafe { libc::pipe(fds.as_mut_ptr()) }, "pipe")?;
    Ok(fds)
}

/// One byte across: write to `out`, then wait for one back on `back`.
fn trip(out: libc::c_int, back: libc::c_int) -> Result<()> {
    let mut byte = 0u8;
    // SAFETY: one byte from/to a live stack variable through descriptors this process owns.
    unsafe {
        if libc::write(out, (&raw const byte).cast(), 1) != 1 {
            bail!("write: {}", std::io::Error::last_os_error());
        }
        if libc::read(back, (&raw mut byte).cast(), 1) != 1 {
            bail!("read: {}", std::io::Error::last_os_error());
        }
    }
    Ok(())
}

fn wait_child(pid: libc::pid_t) -> Result<libc::c_int> {
    let mut status = 0;
    // SAFETY: waiting for our own child into a live integer.
    check(unsafe { libc::waitpid(pid, &raw mut status, 0) }, "waitpid")?;
    Ok(status)
}

fn pingpong(round_trips: u32) -> Result<()> {
    let [ping_read, ping_write] = pipe()?;
    let [pong_read, pong_write] = pipe()?;
    // SAFETY: the child only does pipe I/O and _exit: nothing that needs the parent's locks.
    let pid = check(unsafe { libc::fork() }, "fork")?;
    if pid == 0 {
        let mut byte = 0u8;
        for _ in 0..round_trips {
            // SAFETY: as in `trip`.
            unsafe {
                if libc::read(ping_read, (&raw mut byte).cast(), 1) != 1
                    || libc::write(pong_write, (&raw const byte).cast(), 1) != 1
                {
                    libc::_exit(1);
                }
            }
        }
        // SAFETY: leaving the forked child without running the parent's destructors.
        unsafe { libc::_exit(0) };
    }
    for _ in 0..round_trips {
        trip(ping_write, pong_read)?;
    }
    let status = wait_child(pid)?;
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        bail!("pingpong child failed: status {status}");
    }
    Ok(())
}

fn forkkill(count: u32) -> Result<()> {
    for _ in 0..count {
        let [ready_read, ready_write] = pipe()?;
        // SAFETY: the child only writes one byte and pauses until killed.
        let pid = check(unsafe { libc::fork() }, "fork")?;
        if pid == 0 {
            // SAFETY: one byte to the parent, then sleep until the signal arrives.
            unsafe {
                libc::write(ready_write, [0u8].as_ptr().cast(), 1);
                loop {
                    libc::pause();
                }
            }
        }
        // Kill a child that is running, not one still being set up by fork.
        let mut byte = 0u8;
        // SAFETY: one byte into a live stack variable; then our own descriptors closed.
        unsafe {
            libc::read(ready_read, (&raw mut byte).cast(), 1);
            libc::close(ready_read);
            libc::close(ready_write);
        }
        // SAFETY: signalling our own child.
        check(unsafe { libc::kill(pid, libc::SIGKILL) }, "kill")?;
        let status = wait_child(pid)?;
        if !libc::WIFSIGNALED(status) || libc::WTERMSIG(status) != libc::SIGKILL {
            bail!("forkkill child ended otherwise: status {status}");
        }
    }
    Ok(())
}

fn main() -> Result<()> {
    match Args::parse().storm {
        Storm::Pingpong { round_trips } => pingpong(round_trips)?,
        Storm::Forkkill { count } => forkkill(count)?,
    }
    Ok(())
}
