//! Checks that need no root and no kernel: formatting, clippy (warnings are errors), and the
//! house plan of tracer/src — each stage imports only the stages upstream of it.
use std::{fs, path::Path};

use anyhow::{Context as _, Result, bail};

use crate::{cargo, run, workspace_root};

pub fn lint() -> Result<()> {
    run(cargo().args(["fmt", "--all", "--check"]))
        .context("cargo fmt --check (run `cargo fmt`)")?;
    run(cargo().args([
        "clippy",
        "--workspace",
        "--exclude",
        "memstall-ebpf",
        "--all-targets",
        "--quiet",
        "--",
        "-D",
        "warnings",
    ]))?;
    let violations = layers(&workspace_root().join("tracer").join("src"))?;
    if !violations.is_empty() {
        bail!(
            "{} import(s) against the data flow:\n  {}",
            violations.len(),
            violations.join("\n  ")
        );
    }
    eprintln!("xtask: lint: fmt, clippy and stage order hold");
    Ok(())
}

/// Each top-level module of tracer/src and its place in the flow. Rank 0 are leaves anyone may
/// use and which use no stage; a stage may use leaves, itself and stages of a lower rank.
const STAGES: &[(&str, u8)] = &[
    ("error", 0),
    ("term", 0),
    ("testing", 0),
    ("clock", 0),
    ("event", 0),
    ("EBPF_OBJECT", 0),
    ("kernel", 1),
    ("ringbuf", 2),
    ("decode", 3),
    ("cgroup", 4),
    ("enrich", 5),
    ("aggregate", 6),
    ("pipeline", 7),
    ("sink", 8),
    ("cli", 9),
    ("cmd", 10),
    ("fuzz", 10),
];

fn rank(stage: &str) -> Option<u8> {
    STAGES.iter().find(|(s, _)| *s == stage).map(|(_, r)| *r)
}

/// The top-level modules `text` names through `crate::` (paths and `use crate::{...}` groups).
fn crate_refs(text: &str) -> Vec<String> {
    let mut refs = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // Top-level items of the group: split on commas outside nested braces.
            let mut depth = 0;
            let mut item = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        refs.push(std::mem::take(&mut item));
                        continue;
                    }
                    _ => {}
                }
                item.push(c);
            }
            refs.push(item);
        } else {
            refs.push(rest.to_owned());
        }
    }
    refs.into_iter()
        .filter_map(|r| {
            let name: String = r
                .trim()
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            (!name.is_empty()).then_some(name)
        })
        .collect()
}

/// `file: stage uses other (why)` for every import against the flow.
pub fn layers(src: &Path) -> Result<Vec<String>> {
    let mut violations = Vec::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let relative = path.strip_prefix(src).unwrap_or(&path);
            let top = relative
                .components()
                .next()
                .and_then(|c| c.as_os_str().to_str())
                .unwrap_or_default()
                .trim_end_matches(".rs");
            if path.extension().is_none_or(|e| e != "rs") || matches!(top, "lib" | "main") {
                continue;
            }
            let Some(own) = rank(top) else {
                violations.push(format!(
                    "{}: module {top} has no place in the flow",
                    relative.display()
                ));
                continue;
            };
            let text = fs::read_to_string(&path)?;
            let mut refs = crate_refs(&text);
            refs.sort();
            refs.dedup();
            for used in refs.iter().filter(|r| *r != top) {
                let why = match rank(used) {
                    None => "not a known stage",
                    Some(r) if own == 0 && r != 0 => "a leaf uses a stage",
                    Some(r) if r > own => "downstream",
                    _ => continue,
                };
                violations.push(format!("{}: {top} uses {used} ({why})", relative.display()));
            }
        }
    }
    violations.sort();
    Ok(violations)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_paths_and_groups() {
        let text = "use crate::{\n    aggregate::{Scope, Summary},\n    event::Event,\n    term,\n};\nlet x = crate::clock::now();";
        let mut refs = crate_refs(text);
        refs.sort();
        assert_eq!(refs, ["aggregate", "clock", "event", "term"]);
    }

    #[test]
    fn flags_a_downstream_import() {
        let dir = std::env::temp_dir().join(format!("xtask-layers-{}", std::process::id()));
        fs::create_dir_all(dir.join("decode")).unwrap();
        fs::write(
            dir.join("decode/mod.rs"),
            "use crate::{event::Event, sink::Ms};",
        )
        .unwrap();
        fs::write(dir.join("term.rs"), "use crate::kernel::Tracer;").unwrap();
        let found = layers(&dir).unwrap();
        fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            found,
            [
                "decode/mod.rs: decode uses sink (downstream)",
                "term.rs: term uses kernel (a leaf uses a stage)"
            ]
        );
    }

    /// The real tree holds to the plan (also checked by `cargo xtask test`).
    #[test]
    fn the_tracer_follows_the_flow() {
        let found = layers(&workspace_root().join("tracer").join("src")).unwrap();
        assert!(found.is_empty(), "{found:#?}");
    }
}
