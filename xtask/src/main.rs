//! Developer tasks: `cargo xtask setup | build | run -- ARGS | test | vmtest | dist | image`.
mod bench;
mod dist;
mod fuzz;
mod image;
mod lint;
mod musl;
mod setup;
mod tally;
mod vmtest;

use std::{
    ffi::OsString,
    fs,
    io::{BufRead as _, BufReader, Write as _},
    path::{Path, PathBuf},
    process::{Command, ExitCode, Stdio},
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
    /// Set up, build a static (musl) memstall and pack target/dist/memstall-VERSION-…tar.gz
    /// (binary, man pages, completions, README, deploy/, SHA256SUMS), then check the archive:
    /// sums, static, --version, `memstall doctor` with no toolchain on PATH (as root), docs.
    Dist {
        /// Pack an unoptimized build (…-debug.tar.gz): checked the same, built in seconds.
        #[arg(long)]
        debug: bool,
    },
    /// `dist`, then an OCI image archive of deploy/Containerfile holding its binary, built
    /// without a daemon (buildah), target/dist/memstall-VERSION-oci.tar; checked with skopeo
    /// and by running `memstall doctor` from the image's layer (as root).
    Image {
        /// From the unoptimized build of `dist --debug`.
        #[arg(long)]
        debug: bool,
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

fn profile(debug: bool) -> dist::Profile {
    if debug {
        dist::Profile::Debug
    } else {
        dist::Profile::Release
    }
}

/// Runs the tests with a fresh skip log, passing their output through, then prints the
/// tally (skips apart from the passes) and the list of skips.
fn run_counting_skips(test: &mut Command) -> Result<()> {
    let skip_log = workspace_root().join("target").join("test-skips.log");
    fs::create_dir_all(skip_log.parent().context("target dir")?)?;
    fs::write(&skip_log, "").with_context(|| format!("creating {}", skip_log.display()))?;
    let mut child = test
        .env("MEMSTALL_SKIP_LOG", &skip_log)
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {test:?}"))?;
    let mut output = String::new();
    let stdout = child.stdout.take().context("test stdout")?;
    let mut out = std::io::stdout().lock();
    for line in BufReader::new(stdout).lines() {
        let line = line.context("reading the test output")?;
        writeln!(out, "{line}")?;
        output.push_str(&line);
        output.push('\n');
    }
    drop(out);
    let status = child.wait()?;
    let skips = fs::read_to_string(&skip_log).unwrap_or_default();
    let tally = tally::tally(&output, &skips);
    if !tally.skipped.is_empty() {
        println!("xtask: skipped tests (not counted as passed):");
        for skip in &tally.skipped {
            println!("    {skip}");
        }
    }
    println!("xtask: test: {}", tally.line());
    if !status.success() {
        bail!("{test:?} failed: {status}");
    }
    Ok(())
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
            run_counting_skips(&mut test)?;
            // A filtered run is someone looking at a few tests: no fuzzing then.
            if args.is_empty() {
                fuzz::fuzz(fuzz::DEFAULT_SECONDS)?;
            }
            Ok(())
        }),
        Task::Dist { debug } => setup::setup().and_then(|()| {
            let dist = dist::dist(profile(debug))?;
            dist::check(&dist)
        }),
        Task::Image { debug } => setup::setup().and_then(|()| {
            let dist = dist::dist(profile(debug))?;
            dist::check(&dist)?;
            let archive = image::image(&dist)?;
            image::check(&archive, &dist)
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
