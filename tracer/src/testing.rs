//! For unit tests: a skip the test runner counts (memstall_tests::skip's twin; this crate
//! cannot depend on the test crate).

/// Records that the running test could not run here, and why: `test: reason` appended to
/// $MEMSTALL_SKIP_LOG (`cargo xtask test` counts it as skipped, not passed) and printed. The
/// caller returns right after.
pub fn skip(reason: &str) {
    use std::io::Write as _;
    let test = std::thread::current()
        .name()
        .unwrap_or("unnamed test")
        .to_owned();
    let line = format!("{test}: {reason}\n");
    eprint!("SKIPPED {line}");
    if let Some(log) = std::env::var_os("MEMSTALL_SKIP_LOG") {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .and_then(|mut file| file.write_all(line.as_bytes()))
            .unwrap_or_else(|err| panic!("recording that {test} skipped: {err}"));
    }
}
