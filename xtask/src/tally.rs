//! What a test run came to. libtest prints `ok` for a test that found its feature missing and
//! returned; such a test records `test: reason` in the skip log (memstall_tests::skip), and
//! here it counts as skipped, never as passed.
use std::collections::BTreeMap;

/// How each test ended, by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Ok,
    Failed,
    Ignored,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub passed: usize,
    pub failed: usize,
    pub ignored: usize,
    /// `test: reason` of every test that skipped (and did not fail).
    pub skipped: Vec<String>,
}

/// `test NAME ... ok` (also `test NAME - should panic ... ok`, `... ignored, reason`).
fn outcome_line(line: &str) -> Option<(&str, Outcome)> {
    let rest = line.strip_prefix("test ")?;
    let (name, result) = rest.rsplit_once(" ... ")?;
    let name = name.split(" - ").next().unwrap_or(name);
    let outcome = match result.trim() {
        "ok" => Outcome::Ok,
        "FAILED" => Outcome::Failed,
        r if r.starts_with("ignored") => Outcome::Ignored,
        _ => return None,
    };
    Some((name, outcome))
}

/// Counts libtest's per-test lines in `output`, moving the tests named in `skip_log` (one
/// `test: reason` a line) from passed to skipped. Unit tests of different crates may share a
/// name: each line counts once.
pub fn tally(output: &str, skip_log: &str) -> Tally {
    let mut outcomes: Vec<(&str, Outcome)> = output.lines().filter_map(outcome_line).collect();
    let mut skips: BTreeMap<&str, &str> = BTreeMap::new();
    for line in skip_log.lines().filter(|l| !l.trim().is_empty()) {
        let name = line.split_once(": ").map_or(line, |(name, _)| name);
        skips.entry(name).or_insert(line);
    }
    let mut tally = Tally::default();
    for (name, outcome) in &mut outcomes {
        match outcome {
            Outcome::Failed => tally.failed += 1,
            Outcome::Ignored => tally.ignored += 1,
            Outcome::Ok => match skips.remove(name) {
                Some(line) => tally.skipped.push(line.to_owned()),
                None => tally.passed += 1,
            },
        }
    }
    // A skip whose test line was not seen (output of another binary) still is no pass.
    tally.skipped.extend(
        skips
            .into_iter()
            .filter(|(name, _)| outcomes.iter().all(|(n, _)| n != name))
            .map(|(_, line)| line.to_owned()),
    );
    tally
}

impl Tally {
    /// `N passed, M skipped, K failed` (and ignored, when any).
    pub fn line(&self) -> String {
        let ignored = if self.ignored > 0 {
            format!(", {} ignored", self.ignored)
        } else {
            String::new()
        };
        format!(
            "{} passed, {} skipped, {} failed{ignored}",
            self.passed,
            self.skipped.len(),
            self.failed
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUTPUT: &str = "\
running 4 tests
test cli::bad_flags_exit_2 ... ok
test reclaim::memory_high ... ok
test oom::exempt ... FAILED
test slow::one ... ignored, takes an hour
test lib::panics - should panic ... ok

test result: FAILED. 3 passed; 1 failed; 1 ignored; 0 measured; 0 filtered out
";

    #[test]
    fn skipped_tests_are_not_passes() {
        let log = "reclaim::memory_high: memory.high is cgroup v2\n\
                   oom::exempt: needs CAP_SYS_RESOURCE\n";
        let tally = tally(OUTPUT, log);
        assert_eq!(
            tally,
            Tally {
                passed: 2,
                failed: 1,
                ignored: 1,
                skipped: vec!["reclaim::memory_high: memory.high is cgroup v2".into()],
            }
        );
        assert_eq!(
            tally.line(),
            "2 passed, 1 skipped, 1 failed, 1 ignored",
            "a failure that skipped first is a failure"
        );
    }

    #[test]
    fn no_skip_log_means_no_skips() {
        let tally = tally(OUTPUT, "");
        assert_eq!((tally.passed, tally.skipped.len()), (3, 0));
        let unseen = super::tally("", "other::binary: no BTF\n");
        assert_eq!(unseen.skipped, ["other::binary: no BTF"]);
        assert_eq!(unseen.passed, 0);
    }
}
