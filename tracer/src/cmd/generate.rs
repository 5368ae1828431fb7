//! `memstall generate man | completions SHELL`: documents built from the same clap
//! definitions that parse the command line, so they cannot drift from it.
use std::io::{self, Write as _};

use anyhow::{Context as _, Result};
use clap::{Command, CommandFactory as _};

use crate::{
    cli::{Cli, Generate},
    error::UserError,
    term,
};

pub fn run(what: &Generate) -> Result<()> {
    let mut out = io::stdout().lock();
    match what {
        Generate::Man { subcommand } => clap_mangen::Man::new(man_page(subcommand.as_deref())?)
            .render(&mut out)
            .context("writing the man page")?,
        Generate::Completions { shell } => {
            clap_complete::generate(*shell, &mut visible(&Cli::command()), "memstall", &mut out);
        }
    }
    out.flush().context("writing to stdout")
}

/// The command a page documents: memstall itself, or one of its visible subcommands, named
/// as its page is (`memstall-serve`); memstall(1) lists those pages, not a `help` one.
fn man_page(subcommand: Option<&str>) -> Result<Command> {
    let mut command = Cli::command()
        .disable_help_subcommand(true)
        .propagate_version(true);
    command.build();
    let Some(name) = subcommand else {
        return Ok(command);
    };
    let found = command
        .get_subcommands()
        .find(|sub| sub.get_name() == name && !sub.is_hide_set())
        .cloned();
    found.ok_or_else(|| {
        let names: Vec<&str> = command
            .get_subcommands()
            .filter(|sub| !sub.is_hide_set())
            .map(Command::get_name)
            .collect();
        UserError::input(format!(
            "no subcommand `{}` (one of {})",
            term::escape(name),
            names.join(", ")
        ))
        .into()
    })
}

/// The command line without its hidden flags and subcommands (tests' knobs, `generate`):
/// clap_complete would offer them, clap_mangen already leaves them out.
fn visible(command: &Command) -> Command {
    let mut shown = Command::new(command.get_name().to_owned()).args(
        command
            .get_arguments()
            .filter(|arg| !arg.is_hide_set())
            .cloned(),
    );
    if let Some(about) = command.get_about() {
        shown = shown.about(about.clone());
    }
    if let Some(version) = command.get_version() {
        shown = shown.version(version.to_owned());
    }
    shown.subcommands(
        command
            .get_subcommands()
            .filter(|sub| !sub.is_hide_set())
            .map(visible),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn man(subcommand: Option<&str>) -> String {
        let mut page = Vec::new();
        clap_mangen::Man::new(man_page(subcommand).unwrap())
            .render(&mut page)
            .unwrap();
        String::from_utf8(page).unwrap()
    }

    fn completions(shell: clap_complete::Shell) -> String {
        let mut script = Vec::new();
        clap_complete::generate(
            shell,
            &mut visible(&Cli::command()),
            "memstall",
            &mut script,
        );
        String::from_utf8(script).unwrap()
    }

    #[test]
    fn man_page_names_the_subcommands_and_flags() {
        let page = man(None);
        assert!(page.starts_with(".ie \\n(.g .ds Aq"), "{}", &page[..200]);
        assert!(page.contains(".TH memstall 1"), "{page}");
        for word in [
            "doctor",
            "serve",
            "soak",
            "oom",
            "\\-\\-cgroup",
            "\\-\\-threshold",
        ] {
            assert!(page.contains(word), "{word} missing from the man page");
        }
        assert!(
            !page.contains("generate"),
            "the hidden subcommand stays hidden"
        );
        assert!(!page.contains("\\-\\-test\\-"), "hidden flags stay hidden");
        assert!(
            page.contains(env!("MEMSTALL_EBPF_SHA256")),
            "version in the footer"
        );
        assert!(!page.contains("memstall\\-help(1)"), "no page for `help`");
        let serve = man(Some("serve"));
        assert!(serve.contains(".TH memstall-serve 1"), "{serve}");
        assert!(serve.contains(env!("MEMSTALL_EBPF_SHA256")), "{serve}");
        assert!(serve.contains("\\-\\-listen"), "{serve}");
        let unknown = man_page(Some("generate")).unwrap_err().to_string();
        assert!(
            unknown.starts_with("no subcommand `generate` (one of oom, serve"),
            "{unknown}"
        );
    }

    #[test]
    fn completions_for_each_shell_offer_the_subcommands() {
        use clap_complete::Shell;
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let script = completions(shell);
            // fish names long flags without their dashes (`-l cgroup`).
            for word in [
                "doctor", "serve", "soak", "oom", "cgroup", "listen", "max-p99",
            ] {
                assert!(script.contains(word), "{shell}: {word} missing");
            }
            assert!(
                !script.contains("generate"),
                "{shell}: hidden subcommand offered"
            );
            assert!(
                !script.contains("test-ring-bytes"),
                "{shell}: hidden flag offered"
            );
        }
    }
}
