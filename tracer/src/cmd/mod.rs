//! The `memstall` command: parse, dispatch, and the one place an outcome becomes an exit code.
mod doctor;
mod generate;
mod oom;
mod trace;

use std::{fs, io, process::ExitCode};

use anyhow::Result;
use clap::Parser as _;

use crate::{
    cgroup::{CgroupFilter, MemoryHierarchy, Resolver, Target, cgroup_mounts},
    cli::{Cli, Command},
    error::{Failure, UserError},
    term,
};

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => return usage_error(&err),
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .format(|out, record| {
            use std::io::Write as _;
            let level = record.level().as_str().to_ascii_lowercase();
            // aya-log names the programs' records after their module (--bpf-log).
            let source = if record.target().starts_with("memstall_ebpf") {
                "bpf: "
            } else {
                ""
            };
            writeln!(
                out,
                "memstall: {level}: {source}{}",
                term::escape(&record.args().to_string())
            )
        })
        .init();
    let result = match &cli.command {
        Some(Command::Oom(args)) => oom::run(args),
        Some(Command::Doctor(args)) => doctor::run(args),
        Some(Command::Serve(args)) => trace::run(&args.trace, trace::Mode::Serve(args.listen)),
        Some(Command::Soak(args)) => trace::run(&args.trace, trace::Mode::Soak(args)),
        Some(Command::Generate(what)) => generate::run(what),
        None => trace::run(&cli.trace, trace::Mode::Trace),
    };
    exit_code(result)
}

/// The outcome as an exit code, with its one line on stderr: 0 success (or a reader that
/// went away: `memstall | head`), 1 environment, 2 input, 3 soak breach.
fn exit_code(result: Result<()>) -> ExitCode {
    let Err(err) = result else {
        return ExitCode::SUCCESS;
    };
    if let Some(user) = err.downcast_ref::<UserError>() {
        term::say(user);
        return ExitCode::from(user.failure as u8);
    }
    let broken_pipe = err.chain().any(|cause| {
        cause
            .downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
    });
    if broken_pipe {
        return ExitCode::SUCCESS;
    }
    term::say(format_args!("{err:#}"));
    ExitCode::from(Failure::Environment as u8)
}

/// clap's errors span lines (usage, a hint); memstall's errors are one line each. Help and
/// version go to stdout as clap writes them.
fn usage_error(err: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        err.kind(),
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion
    ) {
        let _ = err.print();
        return ExitCode::SUCCESS;
    }
    term::say(format_args!(
        "{} (see memstall --help)",
        one_line(&err.render().to_string())
    ));
    ExitCode::from(Failure::Input as u8)
}

/// clap's message without the usage block: its lines joined, tips kept.
fn one_line(rendered: &str) -> String {
    let parts: Vec<&str> = rendered
        .lines()
        .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
        .map(|l| l.trim().trim_start_matches("error: "))
        .filter(|l| !l.is_empty())
        .collect();
    match parts.as_slice() {
        [] => "invalid arguments".to_owned(),
        [first, rest @ ..] => {
            let mut line = (*first).to_owned();
            for (i, part) in rest.iter().enumerate() {
                line.push_str(if i == 0 && first.ends_with(':') {
                    " "
                } else {
                    "; "
                });
                line.push_str(part);
            }
            line
        }
    }
}

fn detect_hierarchy() -> Result<MemoryHierarchy> {
    Ok(MemoryHierarchy::detect().map_err(|err| UserError::environment(format!("{err:#}")))?)
}

/// `--cgroup` specs resolved to memory cgroups.
fn resolve_targets(hierarchy: &MemoryHierarchy, specs: &[String]) -> Result<Vec<Target>> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let resolver = Resolver {
        hierarchy,
        other_mounts: cgroup_mounts(&mountinfo)
            .into_iter()
            .filter(|m| *m != hierarchy.root)
            .collect(),
    };
    specs
        .iter()
        .map(|spec| {
            resolver
                .resolve(spec)
                .map_err(|why| UserError::input(format!("--cgroup {why}")).into())
        })
        .collect()
}

fn filter_for(targets: &[Target], descendants: bool) -> CgroupFilter {
    let paths = targets.iter().map(|t| t.relative.clone()).collect();
    if descendants {
        CgroupFilter::new(paths)
    } else {
        CgroupFilter::exact(paths)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clap_errors_become_one_line() {
        let rendered = "error: the following required arguments were not provided:\n  --duration <SECS>\n\nUsage: memstall soak --duration <SECS>\n\nFor more information, try '--help'.\n";
        assert_eq!(
            one_line(rendered),
            "the following required arguments were not provided: --duration <SECS>"
        );
        let tip = "error: unexpected argument '--durat' found\n\n  tip: a similar argument exists: '--duration'\n\nUsage: memstall [OPTIONS]\n";
        assert_eq!(
            one_line(tip),
            "unexpected argument '--durat' found; tip: a similar argument exists: '--duration'"
        );
    }
}
