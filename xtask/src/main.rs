//! Developer tasks: `cargo xtask setup | build | run -- ARGS | test | vmtest`.
mod bench;
mod fuzz;
mod lint;
mod setup;
mod vmtest;

use std::{
    ffi::OsString,
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what building memstall needs (idempotent; fast when everything is there).
    Setup,
    /// Set up, then build memstall.
    Build {
        #[arg(long)]
        release: bool,
    },
    /// Set up, build (release) and run memstall as root: `cargo xtask run -- --json -`.
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// Overhead benchmark (tracer on vs off, against bpftrace, with intervals); writes
    /// bench/results.md and compares with the previous run.
    Bench {
        /// A smoke run: a quarter of the work, 5 rounds; results go to target/bench.
        #[arg(long)]
        quick: bool,
    },
    /// Formatting, clippy (warnings are errors) and the stage order of tracer/src.
    Lint,
    /// Every fuzz target for a bounded time (cargo-fuzz with the pinned nightly).
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = fuzz::DEFAULT_SECONDS)]
        seconds: u32,
    },
    /// Set up, lint, build, and run the unit and integration tests on the real kernel (as root).
    Test {
        /// Extra arguments for `cargo test` (e.g. a test name filter).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// Set up, then run the integration tests in QEMU VMs on Debian kernels (pure cgroup v2).
    Vmtest {
        /// Kernel series, comma-separated.
        #[arg(long, value_name = "6.1,6.12")]
        kernel: Option<String>,
    },
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .into()
}

/// Runs `command`, failing with its rendering if it does not succeed.
pub fn run(command: &mut Command) -> Result<()> {
    let status = command
        .status()
        .with_context(|| format!("starting {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed: {status}");
    }
    Ok(())
}

pub fn cargo() -> Command {
    let mut command = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command.current_dir(workspace_root());
    command
}

fn build(release: bool) -> Result<PathBuf> {
    let mut command = cargo();
    command.args(["build", "--package", "memstall", "--bin", "memstall"]);
    if release {
        command.arg("--release");
    }
    run(&mut command)?;
    let profile = if release { "release" } else { "debug" };
    Ok(workspace_root()
        .join("target")
        .join(profile)
        .join("memstall"))
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Task::Setup => setup::setup(),
        Task::Build { release } => setup::setup().and_then(|()| build(release).map(drop)),
        Task::Run { args } => setup::setup().and_then(|()| {
            let binary = build(true)?;
            let mut command = if is_root() {
                Command::new(&binary)
            } else {
                let mut sudo = Command::new("sudo");
                sudo.arg("-E").arg(&binary);
                sudo
            };
            let status = command.args(&args).status().context("starting memstall")?;
            std::process::exit(status.code().unwrap_or(1));
        }),
        Task::Bench { quick } => setup::setup().and_then(|()| bench::bench(quick)),
        Task::Lint => setup::setup().and_then(|()| lint::lint()),
        Task::Fuzz { seconds } => setup::setup().and_then(|()| fuzz::fuzz(seconds)),
        Task::Test { args } => setup::setup().and_then(|()| {
            if !is_root() {
                bail!("the tests load eBPF programs and create memory cgroups: run them as root");
            }
            lint::lint()?;
            let binary = build(false)?;
            let mut test = cargo();
            test.args(["test", "--workspace", "--exclude", "memstall-ebpf"])
                .args(&args)
                .env("MEMSTALL_BIN", binary);
            // One test at a time: the integration tests share one machine, its page cache and
            // its global counters (allocstall, pgsteal), and one binary now holds them all.
            if std::env::var_os("RUST_TEST_THREADS").is_none() {
                test.env("RUST_TEST_THREADS", "1");
            }
            run(&mut test)?;
            // A filtered run is someone looking at a few tests: no fuzzing then.
            if args.is_empty() {
                fuzz::fuzz(fuzz::DEFAULT_SECONDS)?;
            }
            Ok(())
        }),
        Task::Vmtest { kernel } => setup::setup().and_then(|()| vmtest::vmtest(kernel.as_deref())),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: {err:#}");
            ExitCode::FAILURE
        }
    }
}
