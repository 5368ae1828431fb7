//! `cargo xtask setup`: what building the eBPF side needs, installed only where missing.
//!
//! - Debian's llvm-22-dev (+ libpolly-22-dev), which bpf-linker links against at run time;
//! - the pinned nightly (file `bpf-toolchain`) with rust-src, for `-Z build-std=core`;
//! - bpf-linker built against LLVM 22, the same major as the nightly's LLVM.
use std::{
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context as _, Result, bail};

use crate::{is_root, run, workspace_root};

const LLVM_MAJOR: &str = "22";
const APT_PACKAGES: &[&str] = &["llvm-22-dev", "libpolly-22-dev"];
const BPF_LINKER_VERSION: &str = "0.13.0";

fn output(command: &mut Command) -> Option<String> {
    let out = command.stderr(Stdio::null()).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn pinned_toolchain() -> Result<String> {
    let path = workspace_root().join("bpf-toolchain");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text.trim().to_owned())
}

fn apt_missing(packages: &[&'static str]) -> Vec<&'static str> {
    packages
        .iter()
        .copied()
        .filter(|pkg| {
            output(Command::new("dpkg-query").args(["-W", "-f=${Status}", pkg]))
                .is_none_or(|status| !status.contains("install ok installed"))
        })
        .collect()
}

/// Installs the Debian packages that are missing; says which, if any.
pub fn apt_ensure(packages: &[&'static str]) -> Result<Option<String>> {
    let missing = apt_missing(packages);
    if missing.is_empty() {
        return Ok(None);
    }
    apt_install(&missing)?;
    Ok(Some(format!("installed {}", missing.join(" "))))
}

fn apt_install(packages: &[&str]) -> Result<()> {
    if !is_root() {
        bail!(
            "missing Debian packages {}: run `cargo xtask setup` as root",
            packages.join(" ")
        );
    }
    run(Command::new("apt-get").args(["update", "-qq"]))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(packages)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

fn llvm_major_of(toolchain: &str) -> Option<String> {
    let version = output(
        Command::new("rustc")
            .arg(format!("+{toolchain}"))
            .arg("-vV"),
    )?;
    let llvm = version
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))?;
    llvm.split('.').next().map(str::to_owned)
}

fn toolchain_installed(toolchain: &str) -> bool {
    output(Command::new("rustup").args(["toolchain", "list"])).is_some_and(|list| {
        list.lines()
            .any(|l| l.starts_with(&format!("{toolchain}-")) || l == toolchain)
    })
}

/// Installs the pinned nightly; where rustup cannot download it, an installed `nightly` of the
/// same LLVM major is linked under the pinned name.
fn ensure_toolchain(toolchain: &str, did: &mut Vec<String>) -> Result<()> {
    if !toolchain_installed(toolchain) {
        let installed = Command::new("rustup")
            .args([
                "toolchain",
                "install",
                toolchain,
                "--profile",
                "minimal",
                "--component",
                "rust-src",
            ])
            .status()
            .is_ok_and(|s| s.success());
        if installed {
            did.push(format!("installed {toolchain} with rust-src"));
        } else if llvm_major_of("nightly").as_deref() == Some(LLVM_MAJOR) {
            let sysroot = output(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))
                .context("locating the installed nightly")?;
            run(Command::new("rustup").args(["toolchain", "link", toolchain, sysroot.trim()]))?;
            did.push(format!(
                "linked the installed nightly (LLVM {LLVM_MAJOR}) as {toolchain}"
            ));
        } else {
            bail!("cannot install {toolchain} and no nightly with LLVM {LLVM_MAJOR} is installed");
        }
    }
    let components = output(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        toolchain,
    ]))
    .unwrap_or_default();
    if !components.lines().any(|c| c.starts_with("rust-src")) {
        run(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            toolchain,
        ]))?;
        did.push(format!("added rust-src to {toolchain}"));
    }
    match llvm_major_of(toolchain) {
        Some(major) if major == LLVM_MAJOR => Ok(()),
        other => bail!(
            "{toolchain} uses LLVM {}, bpf-linker needs LLVM {LLVM_MAJOR}: fix the pin in bpf-toolchain",
            other.unwrap_or_else(|| "?".into())
        ),
    }
}

fn bpf_linker_ok() -> bool {
    output(Command::new("bpf-linker").arg("--version"))
        .is_some_and(|v| v.trim() == format!("bpf-linker {BPF_LINKER_VERSION}"))
}

fn ensure_bpf_linker(did: &mut Vec<String>) -> Result<()> {
    if bpf_linker_ok() {
        return Ok(());
    }
    run(
        Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .args(["install", "bpf-linker", "--locked", "--force", "--version"])
            .arg(BPF_LINKER_VERSION)
            .args([
                "--no-default-features",
                "--features",
                &format!("llvm-{LLVM_MAJOR}"),
            ])
            .env("LLVM_PREFIX", format!("/usr/lib/llvm-{LLVM_MAJOR}")),
    )?;
    if !bpf_linker_ok() {
        bail!(
            "bpf-linker {BPF_LINKER_VERSION} installed but `bpf-linker --version` fails: is ~/.cargo/bin on PATH?"
        );
    }
    did.push(format!(
        "built bpf-linker {BPF_LINKER_VERSION} against LLVM {LLVM_MAJOR}"
    ));
    Ok(())
}

pub fn setup() -> Result<()> {
    let started = Instant::now();
    let mut did = Vec::new();
    if let Some(installed) = apt_ensure(APT_PACKAGES)? {
        did.push(installed);
    }
    let toolchain = pinned_toolchain()?;
    ensure_toolchain(&toolchain, &mut did)?;
    ensure_bpf_linker(&mut did)?;
    let elapsed = started.elapsed().as_secs_f64();
    if did.is_empty() {
        eprintln!(
            "setup: nothing to do ({}, {toolchain} + rust-src, bpf-linker {BPF_LINKER_VERSION}) [{elapsed:.1} s]",
            APT_PACKAGES.join(" ")
        );
    } else {
        eprintln!("setup: {} [{elapsed:.1} s]", did.join("; "));
    }
    Ok(())
}
