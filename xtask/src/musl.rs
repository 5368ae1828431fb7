//! Static (musl) builds, shared by `dist` and `vmtest`: binaries that run on any x86_64
//! Linux, without the toolchain, in a busybox initramfs or a scratch image.
use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use crate::{cargo, run};

pub const TARGET: &str = "x86_64-unknown-linux-musl";

/// Adds the musl target to the stable toolchain when it is missing.
pub fn ensure_target() -> Result<()> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output();
    if !installed.is_ok_and(|out| {
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .any(|t| t == TARGET)
    }) {
        run(Command::new("rustup").args(["target", "add", TARGET]))?;
    }
    Ok(())
}

/// Runs `cargo ARGS --target musl` with JSON messages; returns them.
pub fn cargo_messages(args: &[&str]) -> Result<Vec<Value>> {
    let out = cargo()
        .args(args)
        .args([
            "--target",
            TARGET,
            "--message-format=json-render-diagnostics",
        ])
        .stderr(Stdio::inherit())
        .output()
        .context("running cargo")?;
    if !out.status.success() {
        bail!(
            "cargo {} --target {TARGET} failed: {}",
            args.join(" "),
            out.status
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .collect())
}

/// (target name, executable) of the artifacts of `kind` (`bin`, `test`) in `messages`.
pub fn executables(messages: &[Value], kind: &str) -> Vec<(String, PathBuf)> {
    messages
        .iter()
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["kind"][0] == kind)
        .filter_map(|m| {
            Some((
                m["target"]["name"].as_str()?.to_owned(),
                m["executable"].as_str()?.into(),
            ))
        })
        .collect()
}

/// Debug info makes the binaries ~50 MB each (and far more unoptimized); symbols stay for
/// backtraces.
pub fn strip(from: &Path, to: &Path) -> Result<()> {
    run(Command::new("strip")
        .arg("--strip-debug")
        .arg("-o")
        .arg(to)
        .arg(from))
}
