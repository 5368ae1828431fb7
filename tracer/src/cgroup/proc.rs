//! A task's memory cgroup from /proc, for records that do not carry it.
use std::fs;

use super::CgroupVersion;

/// The memory-cgroup path of a live process, from /proc/PID/cgroup.
pub fn memcg_of_pid(pid: u32, version: CgroupVersion) -> Option<String> {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let path = memcg_from_proc_cgroup(&text, version)?;
    // cgroup v1 shows every exiting task (an OOM victim, say) in "/". PF_EXITING never clears,
    // so a task not exiting now was not exiting when its cgroup file was read.
    if version == CgroupVersion::V1 && path == "/" {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        if task_is_exiting(&stat)? {
            return None;
        }
    }
    Some(path)
}

/// PF_EXITING in the flags field of /proc/PID/stat.
pub fn task_is_exiting(stat: &str) -> Option<bool> {
    const PF_EXITING: u64 = 0x4;
    // comm may hold spaces and parentheses: fields resume after the last ')'.
    let after_comm = &stat[stat.rfind(')')? + 1..];
    let flags: u64 = after_comm.split_whitespace().nth(6)?.parse().ok()?;
    Some(flags & PF_EXITING != 0)
}

pub fn memcg_from_proc_cgroup(text: &str, version: CgroupVersion) -> Option<String> {
    text.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (id, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let wanted = match version {
            CgroupVersion::V1 => controllers.split(',').any(|c| c == "memory"),
            CgroupVersion::V2 => id == "0" && controllers.is_empty(),
        };
        // v2 keeps a zombie in its cgroup and marks one removed since.
        wanted.then(|| path.trim_end_matches(" (deleted)").to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_memcg_from_proc_cgroup() {
        let v1 = "12:pids:/x\n4:memory:/svc/a\n0::/user.slice\n";
        assert_eq!(
            memcg_from_proc_cgroup(v1, CgroupVersion::V1).as_deref(),
            Some("/svc/a")
        );
        assert_eq!(
            memcg_from_proc_cgroup(v1, CgroupVersion::V2).as_deref(),
            Some("/user.slice")
        );
        let combined = "7:cpu,memory,blkio:/combo\n";
        assert_eq!(
            memcg_from_proc_cgroup(combined, CgroupVersion::V1).as_deref(),
            Some("/combo")
        );
        assert_eq!(memcg_from_proc_cgroup("garbage", CgroupVersion::V1), None);
        assert_eq!(
            memcg_from_proc_cgroup("0::/gone (deleted)\n", CgroupVersion::V2).as_deref(),
            Some("/gone")
        );
    }

    #[test]
    fn reads_pf_exiting_from_proc_stat() {
        let running = "42 (a) b) c) S 1 42 42 0 -1 4194560 100 0 0 0";
        assert_eq!(task_is_exiting(running), Some(false));
        let exiting = "42 (memhog) R 1 42 42 0 -1 4194564 100 0 0 0";
        assert_eq!(task_is_exiting(exiting), Some(true));
        assert_eq!(task_is_exiting("42 (x"), None);
    }
}
