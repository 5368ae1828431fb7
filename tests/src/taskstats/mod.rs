//! Minimal taskstats client (per-task delay accounting) over generic netlink.
//!
//! * resolves the generic-netlink family "TASKSTATS" with CTRL_CMD_GETFAMILY,
//! * sends TASKSTATS_CMD_GET with TASKSTATS_CMD_ATTR_PID (or _TGID),
//! * parses `struct taskstats` version-aware (include/uapi/linux/taskstats.h).
//!
//! Layout notes (offsets checked with offsetof() against the uapi headers of
//! 6.1 = v13 / 416 bytes, 6.12 = v14 / 432 bytes, 6.18 = v16 / 560 bytes):
//! the struct is append-only except for version 15 (only in 6.15-rc kernels), which
//! inserted `*_delay_max`/`*_delay_min` in the middle; v16 moved them to the end.
//! Fields are treated as present when they lie inside the received payload, so an
//! older kernel (shorter struct) simply yields `None` for the newer fields.
//!
//! Delay fields are only non-zero while delay accounting is on
//! (`kernel.task_delayacct=1` or the `delayacct` boot parameter); see
//! [`DelayacctGuard`].
mod parse;

pub use parse::{Delay, TaskDelays, parse_taskstats};
use parse::{bad, rd_u16, rd_u32};

use std::io;
use std::mem;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

// ---- netlink / genetlink constants (include/uapi/linux/{netlink,genetlink}.h) ----
const NLMSG_HDRLEN: usize = 16;
const GENL_HDRLEN: usize = 4;
const NLM_F_REQUEST: u16 = 0x1;
const NLMSG_ERROR: u16 = 0x2;
const NLMSG_DONE: u16 = 0x3;
const GENL_ID_CTRL: u16 = 0x10;
const CTRL_CMD_GETFAMILY: u8 = 3;
const CTRL_ATTR_FAMILY_ID: u16 = 1;
const CTRL_ATTR_FAMILY_NAME: u16 = 2;
const NLA_TYPE_MASK: u16 = !(0x8000 | 0x4000); // ~(NLA_F_NESTED | NLA_F_NET_BYTEORDER)

// ---- taskstats constants (include/uapi/linux/taskstats.h) ----
pub const TASKSTATS_GENL_NAME: &str = "TASKSTATS";
const TASKSTATS_GENL_VERSION: u8 = 0x1;
const TASKSTATS_CMD_GET: u8 = 1;
const TASKSTATS_CMD_ATTR_PID: u16 = 1;
const TASKSTATS_CMD_ATTR_TGID: u16 = 2;
const TASKSTATS_TYPE_PID: u16 = 1;
const TASKSTATS_TYPE_TGID: u16 = 2;
const TASKSTATS_TYPE_STATS: u16 = 3;
const TASKSTATS_TYPE_AGGR_PID: u16 = 4;
const TASKSTATS_TYPE_AGGR_TGID: u16 = 5;

/// One delay-accounting class: number of delays and their total (ns).
fn attrs(mut b: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if b.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([b[0], b[1]]) as usize;
        let typ = u16::from_ne_bytes([b[2], b[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > b.len() {
            return None;
        }
        let payload = &b[4..len];
        let adv = (len + 3) & !3;
        b = if adv >= b.len() { &[] } else { &b[adv..] };
        Some((typ, payload))
    })
}

fn put_attr(msg: &mut Vec<u8>, typ: u16, payload: &[u8]) {
    let len = 4 + payload.len();
    msg.extend_from_slice(&(len as u16).to_ne_bytes());
    msg.extend_from_slice(&typ.to_ne_bytes());
    msg.extend_from_slice(payload);
    while !msg.len().is_multiple_of(4) {
        msg.push(0);
    }
}

/// A NETLINK_GENERIC socket.
struct GenlSocket {
    fd: OwnedFd,
    seq: u32,
    buf: Vec<u8>,
}

impl GenlSocket {
    fn open() -> io::Result<Self> {
        // SAFETY: plain syscalls on a fresh fd; results checked.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_GENERIC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut sa: libc::sockaddr_nl = unsafe { mem::zeroed() };
        sa.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&raw const sa).cast::<libc::sockaddr>(),
                size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        // Never hang forever on a missing answer.
        let tv = libc::timeval {
            tv_sec: 5,
            tv_usec: 0,
        };
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&raw const tv).cast::<libc::c_void>(),
                size_of::<libc::timeval>() as u32,
            );
        }
        Ok(GenlSocket {
            fd,
            seq: 1,
            buf: vec![0u8; 64 * 1024],
        })
    }

    /// Send one genetlink request and return the attribute area of the matching reply.
    fn request(
        &mut self,
        family: u16,
        cmd: u8,
        version: u8,
        req_attrs: &[(u16, &[u8])],
    ) -> io::Result<Vec<u8>> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let mut msg = Vec::with_capacity(64);
        msg.extend_from_slice(&[0u8; NLMSG_HDRLEN]);
        msg.extend_from_slice(&[cmd, version, 0, 0]);
        for (t, p) in req_attrs {
            put_attr(&mut msg, *t, p);
        }
        let len = msg.len() as u32;
        msg[0..4].copy_from_slice(&len.to_ne_bytes());
        msg[4..6].copy_from_slice(&family.to_ne_bytes());
        msg[6..8].copy_from_slice(&NLM_F_REQUEST.to_ne_bytes());
        msg[8..12].copy_from_slice(&seq.to_ne_bytes());
        // nlmsg_pid = 0: let the kernel fill in our port id.
        let mut dst: libc::sockaddr_nl = unsafe { mem::zeroed() };
        dst.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        let r = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                msg.as_ptr().cast::<libc::c_void>(),
                msg.len(),
                0,
                (&raw const dst).cast::<libc::sockaddr>(),
                size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        loop {
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    self.buf.as_mut_ptr().cast::<libc::c_void>(),
                    self.buf.len(),
                    libc::MSG_TRUNC,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let n = n as usize;
            if n > self.buf.len() {
                return Err(bad(format!("netlink reply truncated ({n} bytes)")));
            }
            let mut b = &self.buf[..n];
            while b.len() >= NLMSG_HDRLEN {
                let mlen = u32::from_ne_bytes(b[0..4].try_into().unwrap()) as usize;
                let mtype = u16::from_ne_bytes(b[4..6].try_into().unwrap());
                let mseq = u32::from_ne_bytes(b[8..12].try_into().unwrap());
                if mlen < NLMSG_HDRLEN || mlen > b.len() {
                    return Err(bad("malformed netlink message"));
                }
                let body = &b[NLMSG_HDRLEN..mlen];
                if mseq == seq {
                    match mtype {
                        NLMSG_ERROR => {
                            let err = body
                                .get(0..4)
                                .map_or(-libc::EIO, |s| i32::from_ne_bytes(s.try_into().unwrap()));
                            if err != 0 {
                                return Err(io::Error::from_raw_os_error(-err));
                            }
                            // an ACK without data: keep waiting (we did not ask for one)
                        }
                        NLMSG_DONE => return Err(bad("netlink: NLMSG_DONE without data")),
                        t if t == family => {
                            if body.len() < GENL_HDRLEN {
                                return Err(bad("short genetlink message"));
                            }
                            return Ok(body[GENL_HDRLEN..].to_vec());
                        }
                        _ => {}
                    }
                }
                let adv = (mlen + 3) & !3;
                b = if adv >= b.len() { &[] } else { &b[adv..] };
            }
        }
    }
}

/// Look up the id of a generic-netlink family by name.
fn resolve_family(sock: &mut GenlSocket, name: &str) -> io::Result<u16> {
    let mut n = name.as_bytes().to_vec();
    n.push(0);
    let reply = sock.request(
        GENL_ID_CTRL,
        CTRL_CMD_GETFAMILY,
        2,
        &[(CTRL_ATTR_FAMILY_NAME, &n)],
    )?;
    let id = attrs(&reply)
        .find(|(t, _)| *t == CTRL_ATTR_FAMILY_ID)
        .and_then(|(_, p)| rd_u16(p, 0));
    id.ok_or_else(|| bad("CTRL_ATTR_FAMILY_ID missing"))
}

/// A taskstats client (one netlink socket, family id resolved once).
pub struct Client {
    sock: GenlSocket,
    family: u16,
}

impl Client {
    pub fn new() -> io::Result<Client> {
        let mut sock = GenlSocket::open()?;
        let family = resolve_family(&mut sock, TASKSTATS_GENL_NAME)?;
        Ok(Client { sock, family })
    }

    /// Generic-netlink family id of TASKSTATS on this kernel.
    pub fn family_id(&self) -> u16 {
        self.family
    }

    /// Per-thread statistics of `pid` (a TID in the caller's pid namespace).
    /// Needs CAP_NET_ADMIN (TASKSTATS_CMD_GET is GENL_ADMIN_PERM). ESRCH if the task is gone.
    pub fn pid(&mut self, pid: u32) -> io::Result<TaskDelays> {
        self.get(TASKSTATS_CMD_ATTR_PID, pid)
    }

    /// Thread-group aggregate (live threads + exited threads' accumulated stats).
    pub fn tgid(&mut self, tgid: u32) -> io::Result<TaskDelays> {
        self.get(TASKSTATS_CMD_ATTR_TGID, tgid)
    }

    fn get(&mut self, attr: u16, id: u32) -> io::Result<TaskDelays> {
        let reply = self.sock.request(
            self.family,
            TASKSTATS_CMD_GET,
            TASKSTATS_GENL_VERSION,
            &[(attr, &id.to_ne_bytes())],
        )?;
        for (t, nested) in attrs(&reply) {
            if t != TASKSTATS_TYPE_AGGR_PID && t != TASKSTATS_TYPE_AGGR_TGID {
                continue;
            }
            let mut got_id = None;
            let mut stats = None;
            for (it, p) in attrs(nested) {
                match it {
                    TASKSTATS_TYPE_PID | TASKSTATS_TYPE_TGID => got_id = rd_u32(p, 0),
                    TASKSTATS_TYPE_STATS => stats = Some(p),
                    _ => {} // TASKSTATS_TYPE_NULL padding
                }
            }
            let mut td = parse_taskstats(stats.ok_or_else(|| bad("no TASKSTATS_TYPE_STATS"))?)?;
            td.id = got_id.unwrap_or(id);
            td.is_tgid = t == TASKSTATS_TYPE_AGGR_TGID;
            return Ok(td);
        }
        Err(bad("no TASKSTATS_TYPE_AGGR_* in reply"))
    }
}

/// Per-task delay accounting of one thread (opens a socket per call; use [`Client`] to reuse one).
pub fn taskstats(pid: u32) -> io::Result<TaskDelays> {
    Client::new()?.pid(pid)
}

const DELAYACCT_SYSCTL: &str = "/proc/sys/kernel/task_delayacct";

/// Current value of kernel.task_delayacct.
pub fn delayacct_enabled() -> io::Result<bool> {
    Ok(std::fs::read_to_string(DELAYACCT_SYSCTL)?.trim() == "1")
}

/// Switches kernel.task_delayacct on and restores the previous value on drop.
/// Caveat (kernel/delayacct.c): toggling the static key while a task is inside a
/// start/end pair makes that one interval wrong (stale *_start), so enable it before
/// the workload starts and restore it after the workload ends.
pub struct DelayacctGuard {
    old: String,
}

impl DelayacctGuard {
    pub fn enable() -> io::Result<DelayacctGuard> {
        let old = std::fs::read_to_string(DELAYACCT_SYSCTL)?
            .trim()
            .to_string();
        if old != "1" {
            std::fs::write(DELAYACCT_SYSCTL, "1")?;
        }
        Ok(DelayacctGuard { old })
    }
    pub fn old_value(&self) -> &str {
        &self.old
    }
}

impl Drop for DelayacctGuard {
    fn drop(&mut self) {
        if self.old != "1" {
            let _ = std::fs::write(DELAYACCT_SYSCTL, &self.old);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attr_walk() {
        let mut m = Vec::new();
        put_attr(&mut m, 1, &[1, 2, 3]);
        put_attr(&mut m, 0x8000 | 4, &[9; 8]);
        let v: Vec<_> = attrs(&m).collect();
        assert_eq!(v.len(), 2);
        assert_eq!(v[0], (1, &[1u8, 2, 3][..]));
        assert_eq!(v[1].0, 4);
    }

    /// Live query of our own thread (the tests run as root).
    #[test]
    fn live_self() {
        let pid = unsafe { libc::gettid() } as u32;
        match taskstats(pid) {
            Ok(t) => {
                assert!(t.version >= 8);
                assert_eq!(t.id, pid);
                assert!(t.cpu_run_real_total_ns > 0 || t.cpu.count > 0);
            }
            Err(e) => panic!("taskstats: {e}"),
        }
    }
}
