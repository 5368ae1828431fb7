use std::{fmt::Write as _, path::Path, process::Command};

use anyhow::{Context as _, anyhow};
use sha2::{Digest as _, Sha256};

/// The nightly that builds the eBPF programs; its LLVM major must match bpf-linker's
/// (`cargo xtask setup` installs both).
const BPF_TOOLCHAIN: &str = include_str!("../bpf-toolchain");

fn main() -> anyhow::Result<()> {
    let cargo_metadata::Metadata { packages, .. } = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let ebpf = packages
        .into_iter()
        .find(|package| package.name.as_str() == "memstall-ebpf")
        .ok_or_else(|| anyhow!("tracer-ebpf package not found"))?;
    let root_dir = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("no parent for {}", ebpf.manifest_path))?;
    println!("cargo:rerun-if-changed=../bpf-toolchain");
    aya_build::build_ebpf(
        [aya_build::Package {
            name: ebpf.name.as_str(),
            root_dir: root_dir.as_str(),
            ..Default::default()
        }],
        aya_build::Toolchain::Custom(BPF_TOOLCHAIN.trim()),
    )?;

    // `memstall --version` names the exact eBPF object it carries and the commit it came from,
    // so a copied binary can be traced back to both.
    let out_dir = std::env::var("OUT_DIR").context("OUT_DIR")?;
    let object = Path::new(&out_dir).join("memstall-ebpf");
    let bytes = std::fs::read(&object).with_context(|| format!("reading {}", object.display()))?;
    let hash = Sha256::digest(&bytes)
        .iter()
        .fold(String::new(), |mut hex, b| {
            let _ = write!(hex, "{b:02x}");
            hex
        });
    println!("cargo:rustc-env=MEMSTALL_EBPF_SHA256={hash}");
    println!("cargo:rustc-env=MEMSTALL_GIT_REVISION={}", git_revision());
    Ok(())
}

/// The commit being built: $MEMSTALL_GIT_REVISION (a build from a source archive can say),
/// else git's HEAD, else "unknown". Rebuilds when HEAD moves.
fn git_revision() -> String {
    println!("cargo:rerun-if-env-changed=MEMSTALL_GIT_REVISION");
    if let Ok(revision) = std::env::var("MEMSTALL_GIT_REVISION")
        && !revision.trim().is_empty()
    {
        return revision.trim().to_owned();
    }
    let git = |args: &[&str]| {
        let out = Command::new("git")
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    let Some(revision) = git(&["rev-parse", "--short=12", "HEAD"]) else {
        return "unknown".to_owned();
    };
    // HEAD names a branch (or a commit); a commit moves the branch's ref, loose or packed.
    let mut watched = Vec::new();
    if let Some(head) = git(&["rev-parse", "--git-path", "HEAD"]) {
        watched.push(head);
    }
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watched.extend(git(&["rev-parse", "--git-path", &branch]));
        watched.extend(git(&["rev-parse", "--git-path", "packed-refs"]));
    }
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    // git answers relative to the directory it ran in. A missing file would rerun this
    // script at every build: a branch's ref is either loose or packed.
    for path in watched
        .iter()
        .map(|p| manifest_dir.join(p))
        .filter(|p| p.exists())
    {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    revision
}
