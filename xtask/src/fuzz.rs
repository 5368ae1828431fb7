//! `cargo xtask fuzz [--seconds N]`: every fuzz target of fuzz/ (cargo-fuzz, libFuzzer, with
//! the pinned nightly) for a bounded time, each from the seeds kept in fuzz/seeds and what
//! earlier runs found (target/fuzz-corpus). A panic, a sanitizer report or an input that takes
//! over 10 s fails it; libFuzzer leaves the input in fuzz/artifacts/TARGET/.
use std::{
    fs,
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context as _, Result, bail};

use crate::{run, setup, workspace_root};

/// The targets (fuzz/fuzz_targets/NAME.rs); each has a seed directory fuzz/seeds/NAME.
pub const TARGETS: &[&str] = &[
    "ring_record",
    "kmsg",
    "memory_stat",
    "proc_files",
    "tracefs_format",
    "cgroup_spec",
    "btf",
];

pub const DEFAULT_SECONDS: u32 = 10;

const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// Installs cargo-fuzz when it is missing (about a minute).
pub fn ensure_cargo_fuzz() -> Result<()> {
    let works = Command::new("cargo")
        .args(["fuzz", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if works {
        return Ok(());
    }
    run(Command::new("cargo").args([
        "install",
        "cargo-fuzz",
        "--locked",
        "--version",
        CARGO_FUZZ_VERSION,
    ]))
}

pub fn fuzz(seconds: u32) -> Result<()> {
    ensure_cargo_fuzz()?;
    let toolchain = format!("+{}", setup::pinned_toolchain()?);
    let root = workspace_root();
    let started = Instant::now();
    run(Command::new("cargo")
        .arg(&toolchain)
        .args(["fuzz", "build"])
        .current_dir(root.join("fuzz")))
    .context("building the fuzz targets")?;
    let mut failed = Vec::new();
    for target in TARGETS {
        let corpus = root.join("target/fuzz-corpus").join(target);
        let artifacts = root.join("fuzz/artifacts").join(target);
        fs::create_dir_all(&corpus)?;
        fs::create_dir_all(&artifacts)?;
        let status = Command::new("cargo")
            .arg(&toolchain)
            .args(["fuzz", "run", target])
            .arg(&corpus)
            .arg(root.join("fuzz/seeds").join(target))
            .arg("--")
            .arg(format!("-max_total_time={seconds}"))
            .args(["-timeout=10", "-rss_limit_mb=2048", "-print_final_stats=0"])
            .arg(format!("-artifact_prefix={}/", artifacts.display()))
            .current_dir(root.join("fuzz"))
            .stderr(Stdio::piped())
            .output()
            .with_context(|| format!("running fuzz target {target}"))?;
        let log = String::from_utf8_lossy(&status.stderr);
        let runs = log
            .lines()
            .rev()
            .find(|l| l.starts_with("Done "))
            .unwrap_or("no summary");
        if status.status.success() {
            eprintln!("xtask: fuzz {target}: {runs}");
        } else {
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            eprintln!("xtask: fuzz {target} FAILED:");
            for line in tail.iter().rev() {
                eprintln!("    {line}");
            }
            failed.push(*target);
        }
    }
    eprintln!(
        "xtask: fuzz: {} target(s), {seconds} s each [{:.0} s]",
        TARGETS.len(),
        started.elapsed().as_secs_f64()
    );
    if !failed.is_empty() {
        bail!(
            "fuzz targets failed: {} (inputs in fuzz/artifacts/)",
            failed.join(", ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every target has its source, its bin entry and its seeds.
    #[test]
    fn targets_are_complete() {
        let root = workspace_root().join("fuzz");
        let manifest = fs::read_to_string(root.join("Cargo.toml")).unwrap();
        for target in TARGETS {
            assert!(
                root.join(format!("fuzz_targets/{target}.rs")).exists(),
                "{target}"
            );
            assert!(
                manifest.contains(&format!("name = \"{target}\"")),
                "{target}"
            );
            let seeds = fs::read_dir(root.join("seeds").join(target))
                .unwrap()
                .count();
            assert!(seeds > 0, "{target} has no seeds");
        }
    }
}
