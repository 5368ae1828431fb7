//! `cargo xtask dist [--debug]`: target/dist/memstall-VERSION-x86_64-unknown-linux-musl.tar.gz,
//! a file anyone can copy to a host and run, no toolchain needed:
//!
//! ```text
//! memstall-VERSION-x86_64-unknown-linux-musl/
//!   memstall                       static (musl), eBPF object inside
//!   man/man1/memstall.1, memstall-SUBCOMMAND.1
//!   completions/memstall.bash, _memstall (zsh), memstall.fish
//!   README.md, deploy/             systemd unit, DaemonSet, Containerfile, Grafana dashboard
//!   SHA256SUMS                     of every other file (`sha256sum -c SHA256SUMS`)
//! ```
//!
//! Man page and completions come from the binary itself (`memstall generate`), so they describe
//! the command line it parses. The archive is reproducible: sorted entries, owner root, every
//! mtime the commit's time, gzip without a timestamp. target/dist/SHA256SUMS holds the archive's
//! hash. `--debug` packs an unoptimized build (memstall-VERSION-…-debug.tar.gz), which CI
//! checks at the price of a link instead of a release build.
//!
//! Then the archive is checked as a user would meet it (`check`): unpacked elsewhere, sums
//! verified, the binary static (no ELF interpreter), `--version` naming this commit and the
//! SHA-256 of the eBPF object build.rs made (hashed here by `sha256sum`, not by memstall),
//! `memstall doctor` passing with nothing but /usr/bin:/bin on PATH (as root), man pages and
//! completions naming the real subcommands.
use std::{
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use crate::{musl, run, workspace_root};

pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The subcommands a user must find in the man pages and completions.
const SUBCOMMANDS: &[&str] = &["oom", "serve", "doctor", "soak"];
/// Completion scripts: (shell, file name, how the script starts).
const COMPLETIONS: &[(&str, &str, &str)] = &[
    ("bash", "memstall.bash", "_memstall() {"),
    ("zsh", "_memstall", "#compdef memstall"),
    ("fish", "memstall.fish", "complete -c memstall"),
];
/// What a toolchain would put on PATH: none of it may be reachable when the archive is checked.
const TOOLCHAIN: &[&str] = &["cargo", "rustc", "rustup", "bpf-linker"];
/// PATH for the archive's binary: the base system only.
const BASE_PATH: &str = "/usr/bin:/bin";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    Release,
    Debug,
}

/// A packed archive and what it must hold.
pub struct Dist {
    pub archive: PathBuf,
    /// The static binary, as packed.
    pub binary: PathBuf,
    /// `--version`'s revision and eBPF hash, computed here.
    pub revision: String,
    pub ebpf_sha256: String,
    /// The commit's time (Unix seconds): every mtime in the archive and the image.
    pub epoch: u64,
}

/// Builds memstall for musl and packs the archive.
pub fn dist(profile: Profile) -> Result<Dist> {
    musl::ensure_target()?;
    let mut args = vec!["build", "-p", "memstall", "--bin", "memstall"];
    if profile == Profile::Release {
        args.push("--release");
    }
    let messages = musl::cargo_messages(&args)?;
    let (_, built) = musl::executables(&messages, "bin")
        .into_iter()
        .find(|(name, _)| name == "memstall")
        .context("cargo built no memstall")?;
    // build.rs leaves the eBPF object it embeds in its OUT_DIR.
    let out_dir = messages
        .iter()
        .filter(|m| m["reason"] == "build-script-executed")
        .filter(|m| {
            m["package_id"]
                .as_str()
                .is_some_and(|id| id.contains("#memstall@"))
        })
        .find_map(|m| m["out_dir"].as_str())
        .context("no build-script output of memstall")?;
    let ebpf_sha256 = sha256(&Path::new(out_dir).join("memstall-ebpf"))?;

    let dist_dir = workspace_root().join("target/dist");
    let name = archive_stem(profile);
    let stage = dist_dir.join("stage");
    let _ = fs::remove_dir_all(&stage);
    let top = stage.join(&name);
    fs::create_dir_all(top.join("man/man1"))?;
    fs::create_dir_all(top.join("completions"))?;
    let binary = top.join("memstall");
    musl::strip(&built, &binary)?;

    let page = generate(&binary, &["man"])?;
    for sub in subcommand_pages(&page) {
        let text = generate(&binary, &["man", &sub])?;
        fs::write(top.join(format!("man/man1/memstall-{sub}.1")), text)?;
    }
    fs::write(top.join("man/man1/memstall.1"), page)?;
    for (shell, file, _) in COMPLETIONS {
        let script = generate(&binary, &["completions", shell])?;
        fs::write(top.join("completions").join(file), script)?;
    }
    let root = workspace_root();
    fs::copy(root.join("README.md"), top.join("README.md"))?;
    copy_tree(&root.join("deploy"), &top.join("deploy"))?;

    let epoch = commit_epoch();
    write_sums(&top)?;
    let archive = dist_dir.join(format!("{name}.tar.gz"));
    run(Command::new("tar")
        .args(["--sort=name", "--owner=0", "--group=0", "--numeric-owner"])
        .arg(format!("--mtime=@{epoch}"))
        .args(["--use-compress-program=gzip -n -9", "-cf"])
        .arg(&archive)
        .arg("-C")
        .arg(&stage)
        .arg(&name))?;
    record_sum(&dist_dir, &archive)?;
    Ok(Dist {
        archive,
        binary,
        revision: git_revision(),
        ebpf_sha256,
        epoch,
    })
}

fn archive_stem(profile: Profile) -> String {
    let suffix = match profile {
        Profile::Release => "",
        Profile::Debug => "-debug",
    };
    format!("memstall-{VERSION}-{}{suffix}", musl::TARGET)
}

/// `memstall generate ARGS`, from the binary being packed.
fn generate(binary: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new(binary)
        .arg("generate")
        .args(args)
        .output()
        .with_context(|| format!("running {} generate", binary.display()))?;
    if !out.status.success() || out.stdout.is_empty() {
        bail!(
            "memstall generate {}: {} {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// The pages memstall(1) refers to (`memstall\-serve(1)` → `serve`).
fn subcommand_pages(page: &str) -> Vec<String> {
    page.lines()
        .filter_map(|l| l.strip_prefix("memstall\\-")?.strip_suffix("(1)"))
        .map(str::to_owned)
        .collect()
}

fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    fs::create_dir_all(to)?;
    for entry in fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// Every file below `dir`, relative, sorted.
fn files(dir: &Path) -> Result<Vec<String>> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(at) = stack.pop() {
        for entry in fs::read_dir(&at)? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let relative = path.strip_prefix(dir)?.to_string_lossy().into_owned();
                found.push(relative);
            }
        }
    }
    found.sort();
    Ok(found)
}

/// SHA256SUMS of every file of the tree, in `sha256sum -c` format.
fn write_sums(top: &Path) -> Result<()> {
    let mut sums = String::new();
    for file in files(top)?.iter().filter(|f| *f != "SHA256SUMS") {
        writeln!(sums, "{}  {file}", sha256(&top.join(file))?)?;
    }
    fs::write(top.join("SHA256SUMS"), sums)?;
    Ok(())
}

/// Adds (or replaces) `file`'s line in DIR/SHA256SUMS, beside the archives.
pub fn record_sum(dir: &Path, file: &Path) -> Result<()> {
    let name = file
        .file_name()
        .context("file name")?
        .to_string_lossy()
        .into_owned();
    let path = dir.join("SHA256SUMS");
    let mut lines: Vec<String> = fs::read_to_string(&path)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.split_once("  ").is_some_and(|(_, f)| f != name))
        .map(str::to_owned)
        .collect();
    lines.push(format!("{}  {name}", sha256(file)?));
    lines.sort_by_key(|l| l.split_once("  ").map(|(_, f)| f.to_owned()));
    fs::write(&path, lines.join("\n") + "\n")?;
    Ok(())
}

/// The hex SHA-256 of a file, by coreutils' sha256sum.
pub fn sha256(file: &Path) -> Result<String> {
    let out = Command::new("sha256sum")
        .arg(file)
        .output()
        .context("running sha256sum")?;
    let text = String::from_utf8_lossy(&out.stdout);
    match text.split_whitespace().next() {
        Some(hash) if out.status.success() && hash.len() == 64 => Ok(hash.to_owned()),
        _ => bail!("sha256sum {}: {}", file.display(), out.status),
    }
}

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(workspace_root())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// The revision build.rs names (same rules: $MEMSTALL_GIT_REVISION, git, "unknown").
fn git_revision() -> String {
    std::env::var("MEMSTALL_GIT_REVISION")
        .ok()
        .map(|r| r.trim().to_owned())
        .filter(|r| !r.is_empty())
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".into())
}

/// The commit's time, or 0 outside a git checkout (SOURCE_DATE_EPOCH wins, as usual).
fn commit_epoch() -> u64 {
    std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .or_else(|| git(&["log", "-1", "--format=%ct"]))
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// Checks the archive as a user meets it (see the module documentation).
pub fn check(dist: &Dist) -> Result<()> {
    let unpacked = workspace_root().join("target/dist/check");
    let _ = fs::remove_dir_all(&unpacked);
    fs::create_dir_all(&unpacked)?;
    run(Command::new("tar")
        .arg("-xzf")
        .arg(&dist.archive)
        .arg("-C")
        .arg(&unpacked))?;
    let stem = dist
        .archive
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_suffix(".tar.gz"))
        .context("archive name")?;
    let top = unpacked.join(stem);
    let base = |program: &str| {
        let mut command = Command::new(program);
        command.env_clear().env("PATH", BASE_PATH).current_dir(&top);
        command
    };

    // Sums: they verify, and they cover every file.
    run(base("sha256sum").args(["--check", "--quiet", "--strict", "SHA256SUMS"]))
        .context("SHA256SUMS does not verify")?;
    let listed: Vec<String> = fs::read_to_string(top.join("SHA256SUMS"))?
        .lines()
        .filter_map(|l| Some(l.split_once("  ")?.1.to_owned()))
        .collect();
    let present: Vec<String> = files(&top)?
        .into_iter()
        .filter(|f| f != "SHA256SUMS")
        .collect();
    if listed != present {
        bail!("SHA256SUMS lists {listed:?}, the archive holds {present:?}");
    }

    let binary = top.join("memstall");
    if let Some(interpreter) = elf_interpreter(&fs::read(&binary)?)? {
        bail!("memstall is dynamically linked (interpreter {interpreter})");
    }
    let reachable: Vec<&str> = TOOLCHAIN
        .iter()
        .copied()
        .filter(|tool| {
            BASE_PATH
                .split(':')
                .any(|dir| Path::new(dir).join(tool).exists())
        })
        .collect();
    if !reachable.is_empty() {
        bail!("{BASE_PATH} holds toolchain programs {reachable:?}: the check would prove nothing");
    }

    let version = output(base("./memstall").arg("--version"))?;
    let want = format!(
        "memstall {VERSION} (git {}, eBPF object sha256 {})",
        dist.revision, dist.ebpf_sha256
    );
    if version.trim() != want {
        bail!("memstall --version said {version:?}, expected {want:?}");
    }

    let doctor = if crate::is_root() {
        let out = base("./memstall")
            .arg("doctor")
            .output()
            .context("running memstall doctor")?;
        let text = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() || !text.lines().any(|l| l.starts_with("ok    oom_kill")) {
            bail!(
                "memstall doctor from the archive failed ({}):\n{text}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        format!("doctor ok ({} checks)", text.lines().count())
    } else {
        "doctor skipped (not root)".to_owned()
    };

    check_docs(&top)?;
    let size = |p: &Path| fs::metadata(p).map(|m| m.len() as f64 / f64::from(1 << 20));
    eprintln!(
        "dist: {} ({:.1} MiB, binary {:.1} MiB): sums verify, static, {}, {doctor}, man pages and completions name {}",
        dist.archive.display(),
        size(&dist.archive)?,
        size(&binary)?,
        version.trim(),
        SUBCOMMANDS.join(", ")
    );
    fs::remove_dir_all(&unpacked)?;
    Ok(())
}

fn output(command: &mut Command) -> Result<String> {
    let out = command
        .output()
        .with_context(|| format!("running {command:?}"))?;
    if !out.status.success() {
        bail!(
            "{command:?}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Man pages: memstall(1) refers to a page per subcommand, each there and about it;
/// completions: each shell's script, naming every subcommand (bash's also parses).
fn check_docs(top: &Path) -> Result<()> {
    let man = top.join("man/man1");
    let page = fs::read_to_string(man.join("memstall.1"))?;
    if !page.contains(".TH memstall 1") {
        bail!("memstall.1 has no title: {page:.200}");
    }
    let mut subs = subcommand_pages(&page);
    subs.sort();
    let mut want: Vec<String> = SUBCOMMANDS.iter().map(|s| (*s).to_owned()).collect();
    want.sort();
    if subs != want {
        bail!("memstall.1 refers to pages {subs:?}, expected {want:?}");
    }
    for sub in &subs {
        let text = fs::read_to_string(man.join(format!("memstall-{sub}.1")))?;
        if !text.contains(&format!(".TH memstall-{sub} 1")) || !text.contains(".SH OPTIONS") {
            bail!("memstall-{sub}.1 is not its page: {text:.200}");
        }
    }
    for (shell, file, start) in COMPLETIONS {
        let script = fs::read_to_string(top.join("completions").join(file))?;
        if !script.contains(start) {
            bail!("{file} is not a {shell} completion script: {script:.200}");
        }
        if let Some(missing) = SUBCOMMANDS.iter().find(|s| !script.contains(*s)) {
            bail!("{file} does not offer `{missing}`");
        }
    }
    run(Command::new("bash")
        .arg("-n")
        .arg(top.join("completions/memstall.bash")))
    .context("the bash completion does not parse")
}

/// The ELF program interpreter (PT_INTERP) of a 64-bit little-endian executable: `None` for a
/// static one, which the kernel runs without ld.so or any shared library.
pub fn elf_interpreter(elf: &[u8]) -> Result<Option<String>> {
    let u16_at = |at: usize| {
        elf.get(at..at + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u32_at = |at: usize| {
        elf.get(at..at + 4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap_or_default()))
    };
    let u64_at = |at: usize| {
        elf.get(at..at + 8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default()) as usize)
    };
    if elf.get(..6) != Some(b"\x7fELF\x02\x01") {
        bail!("not a 64-bit little-endian ELF file");
    }
    let malformed = || anyhow::anyhow!("truncated ELF header");
    let phoff = u64_at(0x20).ok_or_else(malformed)?;
    let phentsize = usize::from(u16_at(0x36).ok_or_else(malformed)?);
    let phnum = usize::from(u16_at(0x38).ok_or_else(malformed)?);
    for i in 0..phnum {
        let header = phoff + i * phentsize;
        const PT_INTERP: u32 = 3;
        if u32_at(header).ok_or_else(malformed)? != PT_INTERP {
            continue;
        }
        let offset = u64_at(header + 0x08).ok_or_else(malformed)?;
        let size = u64_at(header + 0x20).ok_or_else(malformed)?;
        let path = elf.get(offset..offset + size).ok_or_else(malformed)?;
        return Ok(Some(
            String::from_utf8_lossy(path)
                .trim_end_matches('\0')
                .to_owned(),
        ));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_interpreter_of_a_dynamic_executable() {
        let sh = fs::read("/bin/sh").unwrap();
        let interpreter = elf_interpreter(&sh).unwrap().unwrap();
        assert!(interpreter.starts_with("/lib"), "{interpreter}");
        assert!(elf_interpreter(b"#!/bin/sh\n").is_err());
        assert!(elf_interpreter(b"\x7fELF\x02\x01\x01").is_err());
    }

    #[test]
    fn subcommand_pages_from_the_main_page() {
        let page =
            ".SH SUBCOMMANDS\n.TP\nmemstall\\-oom(1)\nOOM kills\n.TP\nmemstall\\-serve(1)\nTrace\n";
        assert_eq!(subcommand_pages(page), ["oom", "serve"]);
    }

    #[test]
    fn archive_names() {
        assert_eq!(
            archive_stem(Profile::Release),
            format!("memstall-{VERSION}-x86_64-unknown-linux-musl")
        );
        assert!(archive_stem(Profile::Debug).ends_with("-musl-debug"));
    }
}
