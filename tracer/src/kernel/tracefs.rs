//! tracefs: mounting it when a classic tracepoint needs it, and reading record formats.
use std::{
    ffi::CString,
    fs,
    path::{Path, PathBuf},
};

use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context as _, Result, bail};
use memstall_common::MarkVictimFormat;

const TRACEFS: &str = "/sys/kernel/tracing";
const DEBUGFS_TRACING: &str = "/sys/kernel/debug/tracing";

/// The tracefs directory, mounting tracefs at /sys/kernel/tracing if nothing is mounted.
pub fn ensure_mounted() -> Result<PathBuf> {
    for dir in [TRACEFS, DEBUGFS_TRACING] {
        if Path::new(dir).join("events").is_dir() {
            return Ok(dir.into());
        }
    }
    let target = CString::new(TRACEFS)?;
    let fstype = CString::new("tracefs")?;
    // SAFETY: all pointers are valid NUL-terminated strings; data may be null.
    let rc = unsafe {
        libc::mount(
            fstype.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        bail!("mounting tracefs at {TRACEFS}: {err}");
    }
    MOUNTED_HERE.store(true, Ordering::SeqCst);
    Ok(TRACEFS.into())
}

/// Whether this process mounted tracefs (and so takes it away again on a clean exit).
static MOUNTED_HERE: AtomicBool = AtomicBool::new(false);

/// Undoes the mount [`ensure_mounted`] made, if it made one: memstall leaves the machine as it
/// found it. Lazily (MNT_DETACH): a reader elsewhere keeps its view until it is done.
pub fn unmount_ours() {
    if !MOUNTED_HERE.swap(false, Ordering::SeqCst) {
        return;
    }
    let Ok(target) = CString::new(TRACEFS) else {
        return;
    };
    // SAFETY: a valid NUL-terminated path; MNT_DETACH takes no other argument.
    if unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) } != 0 {
        log::warn!(
            "unmounting the tracefs memstall mounted at {TRACEFS}: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// One `field:TYPE NAME; offset:N; size:N; signed:N;` line of a format file.
#[derive(Debug, PartialEq, Eq)]
pub struct FormatField {
    pub name: String,
    pub offset: u32,
    pub size: u32,
}

pub fn parse_format(text: &str) -> Vec<FormatField> {
    text.lines()
        .filter_map(|line| {
            let mut name = None;
            let mut offset = None;
            let mut size = None;
            for part in line.trim().split(';') {
                let part = part.trim();
                if let Some(decl) = part.strip_prefix("field:") {
                    // "int pid", "char comm[16]", "__data_loc char[] comm"
                    let last = decl.split_whitespace().last().unwrap_or_default();
                    name = last
                        .split('[')
                        .next()
                        .filter(|n| !n.is_empty())
                        .map(str::to_owned);
                } else if let Some(v) = part.strip_prefix("offset:") {
                    offset = v.parse().ok();
                } else if let Some(v) = part.strip_prefix("size:") {
                    size = v.parse().ok();
                }
            }
            Some(FormatField {
                name: name?,
                offset: offset?,
                size: size?,
            })
        })
        .collect()
}

/// Offsets of oom/mark_victim's fields, marking which this kernel's record has (6.1 only has
/// `pid`). Sizes are checked so the program's fixed-width reads stay right.
pub fn mark_victim_format(fields: &[FormatField]) -> MarkVictimFormat {
    let mut format = MarkVictimFormat::default();
    type Slot = fn(&mut MarkVictimFormat) -> &mut u32;
    let wanted: [(&str, u32, &[u32], Slot); 9] = [
        ("pid", MarkVictimFormat::PID, &[4], |f| &mut f.pid),
        ("comm", MarkVictimFormat::COMM, &[4], |f| {
            &mut f.comm_data_loc
        }),
        ("total_vm", MarkVictimFormat::TOTAL_VM, &[8], |f| {
            &mut f.total_vm
        }),
        ("anon_rss", MarkVictimFormat::ANON_RSS, &[8], |f| {
            &mut f.anon_rss
        }),
        ("file_rss", MarkVictimFormat::FILE_RSS, &[8], |f| {
            &mut f.file_rss
        }),
        ("shmem_rss", MarkVictimFormat::SHMEM_RSS, &[8], |f| {
            &mut f.shmem_rss
        }),
        ("uid", MarkVictimFormat::UID, &[4], |f| &mut f.uid),
        ("pgtables", MarkVictimFormat::PGTABLES, &[8], |f| {
            &mut f.pgtables
        }),
        (
            "oom_score_adj",
            MarkVictimFormat::OOM_SCORE_ADJ,
            &[2],
            |f| &mut f.oom_score_adj,
        ),
    ];
    for (name, bit, sizes, slot) in wanted {
        if let Some(field) = fields
            .iter()
            .find(|f| f.name == name && sizes.contains(&f.size))
        {
            *slot(&mut format) = field.offset;
            format.present |= bit;
        }
    }
    format
}

pub fn read_mark_victim_format(tracefs: &Path) -> Result<MarkVictimFormat> {
    let path = tracefs.join("events/oom/mark_victim/format");
    let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let format = mark_victim_format(&parse_format(&text));
    if format.present & MarkVictimFormat::PID == 0 {
        bail!("{} has no pid field", path.display());
    }
    Ok(format)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MARK_VICTIM_6_18: &str = "name: mark_victim
ID: 609
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:int pid;\toffset:8;\tsize:4;\tsigned:1;
\tfield:__data_loc char[] comm;\toffset:12;\tsize:4;\tsigned:0;
\tfield:unsigned long total_vm;\toffset:16;\tsize:8;\tsigned:0;
\tfield:unsigned long anon_rss;\toffset:24;\tsize:8;\tsigned:0;
\tfield:unsigned long file_rss;\toffset:32;\tsize:8;\tsigned:0;
\tfield:unsigned long shmem_rss;\toffset:40;\tsize:8;\tsigned:0;
\tfield:uid_t uid;\toffset:48;\tsize:4;\tsigned:0;
\tfield:unsigned long pgtables;\toffset:56;\tsize:8;\tsigned:0;
\tfield:short oom_score_adj;\toffset:64;\tsize:2;\tsigned:1;

print fmt: \"pid=%d\", REC->pid
";

    #[test]
    fn parses_full_record() {
        let f = mark_victim_format(&parse_format(MARK_VICTIM_6_18));
        assert_eq!(f.present, (1 << 9) - 1);
        assert_eq!(
            (f.pid, f.comm_data_loc, f.anon_rss, f.uid, f.oom_score_adj),
            (8, 12, 24, 48, 64)
        );
    }

    #[test]
    fn old_kernels_have_pid_only() {
        let old = "format:\n\tfield:int pid;\toffset:8;\tsize:4;\tsigned:1;\n";
        let f = mark_victim_format(&parse_format(old));
        assert_eq!(f.present, MarkVictimFormat::PID);
    }

    #[test]
    fn ignores_fields_of_unexpected_size() {
        let odd = "\tfield:int anon_rss;\toffset:24;\tsize:4;\tsigned:0;\n";
        assert_eq!(mark_victim_format(&parse_format(odd)).present, 0);
        assert!(parse_format("garbage\nfield:;offset:x;").is_empty());
    }
}
