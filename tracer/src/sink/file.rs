//! Files memstall writes as root (`--json`, `--report`, `--report-json`), often in a directory
//! other users can write to (/tmp): never through a symbolic link someone planted, never into
//! a file someone else owns or hard-linked elsewhere; created 0640, truncated only when it is
//! memstall's own. Lines are committed whole: when the disk fills, the file keeps every line
//! written before, and the error says so.
use std::{
    fs::{File, OpenOptions},
    io::{self, Seek as _, SeekFrom, Write},
    os::unix::fs::{MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
};

use crate::error::UserError;

/// Mode of a file memstall creates: the owner writes, its group reads, nobody else.
pub const MODE: u32 = 0o640;

/// Opens `path` for `flag` (as the user typed it) the safe way, empty and ready to write.
pub fn create(flag: &str, path: &Path) -> Result<File, UserError> {
    let refuse =
        |why: String| UserError::input(format!("cannot write {flag} {}: {why}", path.display()));
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .mode(MODE)
        // The last component only: a planted link to /etc/shadow must not be followed. A FIFO
        // must not block the open (it is refused below).
        .custom_flags(libc::O_NOFOLLOW | libc::O_NOCTTY | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|err| {
            let existing = std::fs::symlink_metadata(path).map(|m| m.file_type());
            match existing {
                Ok(kind) if kind.is_symlink() => refuse(
                    "it is a symbolic link; memstall does not follow links it did not make".into(),
                ),
                // A FIFO without a reader (ENXIO), a socket, a device.
                Ok(kind) if !kind.is_file() => refuse("not a regular file".into()),
                _ => refuse(err.to_string()),
            }
        })?;
    let meta = file.metadata().map_err(|err| refuse(err.to_string()))?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if !meta.file_type().is_file() {
        return Err(refuse("not a regular file".into()));
    }
    if meta.uid() != euid {
        return Err(refuse(format!(
            "it belongs to uid {}; memstall only overwrites its own files",
            meta.uid()
        )));
    }
    if meta.nlink() > 1 {
        return Err(refuse(format!(
            "it has {} hard links; memstall only overwrites files with one",
            meta.nlink()
        )));
    }
    file.set_permissions(std::fs::Permissions::from_mode(MODE))
        .and_then(|()| file.set_len(0))
        .and_then(|()| clear_nonblocking(&file))
        .map_err(|err| refuse(err.to_string()))?;
    Ok(file)
}

fn clear_nonblocking(file: &File) -> io::Result<()> {
    use std::os::fd::AsRawFd as _;
    let fd = file.as_raw_fd();
    // SAFETY: fcntl on a descriptor this File owns; F_GETFL/F_SETFL take no pointers.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    // SAFETY: as above.
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A file written in whole lines: writes gather until `flush`, which appends them at once; a
/// failed append (ENOSPC, EIO) is cut back to the last whole line, so what was written
/// before stays readable, and the error names the file.
pub struct Lines {
    file: File,
    path: PathBuf,
    flag: &'static str,
    pending: Vec<u8>,
    committed: u64,
    lines: u64,
}

impl Lines {
    pub fn new(flag: &'static str, path: &Path, file: File) -> Self {
        Self {
            file,
            path: path.to_path_buf(),
            flag,
            pending: Vec::new(),
            committed: 0,
            lines: 0,
        }
    }
}

impl Write for Lines {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.pending.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        match self.file.write_all(&self.pending) {
            Ok(()) => {
                self.committed += self.pending.len() as u64;
                self.lines += self.pending.iter().filter(|&&b| b == b'\n').count() as u64;
                self.pending.clear();
                Ok(())
            }
            Err(err) => {
                self.pending.clear();
                // Whatever part of the last append reached the disk goes: no half line.
                let cut = self
                    .file
                    .set_len(self.committed)
                    .and_then(|()| self.file.seek(SeekFrom::Start(self.committed)).map(drop));
                let kept = match cut {
                    Ok(()) => format!("the {} line(s) written before are intact", self.lines),
                    Err(cut) => format!("the last line may be cut short ({cut})"),
                };
                Err(io::Error::new(
                    err.kind(),
                    format!(
                        "cannot write {} {}: {err}; {kept}",
                        self.flag,
                        self.path.display()
                    ),
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{fs, os::unix::fs::symlink};

    use super::*;

    #[test]
    fn refuses_links_and_other_owners_files_and_creates_0640() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("precious");
        fs::write(&target, "keep me").unwrap();
        let link = dir.path().join("out.jsonl");
        symlink(&target, &link).unwrap();
        let err = create("--json", &link).unwrap_err().to_string();
        assert!(err.contains("symbolic link"), "{err}");
        assert_eq!(fs::read_to_string(&target).unwrap(), "keep me");

        let hard = dir.path().join("hard.jsonl");
        fs::hard_link(&target, &hard).unwrap();
        let err = create("--json", &hard).unwrap_err().to_string();
        assert!(err.contains("2 hard links"), "{err}");
        assert_eq!(fs::read_to_string(&target).unwrap(), "keep me");

        let fifo = dir.path().join("fifo");
        let name = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o600) }, 0);
        let err = create("--json", &fifo).unwrap_err().to_string();
        assert!(err.contains("not a regular file"), "{err}");

        let fresh = dir.path().join("fresh.jsonl");
        drop(create("--json", &fresh).unwrap());
        let mode = fs::metadata(&fresh).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & !0o640, 0, "{mode:o}");

        // Its own earlier output is emptied and made private again.
        fs::write(&fresh, "old run").unwrap();
        fs::set_permissions(&fresh, fs::Permissions::from_mode(0o666)).unwrap();
        drop(create("--json", &fresh).unwrap());
        assert_eq!(fs::read_to_string(&fresh).unwrap(), "");
        assert_eq!(
            fs::metadata(&fresh).unwrap().permissions().mode() & 0o777,
            0o640
        );
    }

    #[test]
    fn a_failed_append_leaves_whole_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let mut lines = Lines::new("--json", &path, create("--json", &path).unwrap());
        lines.write_all(b"{\"a\":1}\n").unwrap();
        lines.flush().unwrap();
        // /dev/full stands in for a full disk (the integration test fills a real tmpfs).
        lines.file = OpenOptions::new().write(true).open("/dev/full").unwrap();
        lines.write_all(b"{\"b\":2}\n").unwrap();
        let err = lines.flush().unwrap_err();
        assert_eq!(err.raw_os_error(), None, "the message names the file");
        assert_eq!(err.kind(), io::ErrorKind::StorageFull, "{err}");
        let text = err.to_string();
        assert!(text.starts_with("cannot write --json "), "{text}");
        assert!(text.contains("No space left on device"), "{text}");
        assert_eq!(fs::read_to_string(&path).unwrap(), "{\"a\":1}\n");
    }
}
