//! The live view in a real terminal (tmux), and bcc-style `--interval --count` lines.
use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use memstall_tests::{MIB, MemCgroup, memhog, memstall_bin, wait_until};

fn tmux(args: &[&str]) -> String {
    let out = Command::new("tmux")
        .args(args)
        .output()
        .expect("tmux (Debian package tmux)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ensure_tmux() {
    memstall_tests::ensure_installed("tmux", "tmux");
}

/// Kills the tmux session also when the test fails.
struct Session(String);

impl Drop for Session {
    fn drop(&mut self) {
        tmux(&["kill-session", "-t", &self.0]);
    }
}

#[test]
fn live_view_shows_the_cgroup_sorts_and_quits() {
    ensure_tmux();
    let cgroup = MemCgroup::create("live", 96 * MIB).unwrap();
    let cg = cgroup.path.to_str().unwrap();
    let session = Session(format!("memstall-live-{}", std::process::id()));
    let command = format!(
        "{} --cgroup {cg}; echo MEMSTALL-EXIT=$?; sleep 30",
        memstall_bin().display()
    );
    tmux(&[
        "new-session",
        "-d",
        "-s",
        &session.0,
        "-x",
        "220",
        "-y",
        "40",
        &command,
    ]);
    let screen = || tmux(&["capture-pane", "-p", "-t", &session.0]);

    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let spec = format!("{}:40", dir.path().join("cache.img").display());
    assert!(
        wait_until(Duration::from_secs(30), || screen().contains("tracing")),
        "{}",
        screen()
    );
    for args in [
        vec!["--cgroup", cg, "--page-cache", &spec],
        vec!["--cgroup", cg, "--anon-mib", "80"],
    ] {
        assert!(
            memhog()
                .args(&args)
                .stdout(Stdio::null())
                .status()
                .unwrap()
                .success()
        );
    }
    let shown = wait_until(Duration::from_secs(10), || {
        let s = screen();
        s.contains("memstall live")
            && s.lines()
                .any(|l| l.starts_with(&cgroup.relative) && l.contains(" / <"))
    });
    assert!(
        shown,
        "the cgroup's memcg_reclaim stalls on screen:\n{}",
        screen()
    );

    tmux(&["send-keys", "-t", &session.0, "n"]);
    assert!(
        wait_until(Duration::from_secs(3), || screen()
            .contains("sorted by Name")),
        "{}",
        screen()
    );
    tmux(&["send-keys", "-t", &session.0, "Enter"]);
    assert!(
        wait_until(Duration::from_secs(3), || screen()
            .contains("memcg_reclaim:")),
        "{}",
        screen()
    );
    tmux(&["send-keys", "-t", &session.0, "q"]);
    let ended = wait_until(Duration::from_secs(10), || {
        screen().contains("MEMSTALL-EXIT=0")
    });
    let last = screen();
    assert!(ended, "q ends memstall cleanly:\n{last}");
    assert!(
        last.contains("ring buffer: 0 event(s) dropped"),
        "final summary after the live view:\n{last}"
    );
}

#[test]
fn interval_count_prints_n_summaries_then_stops() {
    let started = Instant::now();
    let out = Command::new(memstall_bin())
        .args(["--interval", "0.5", "--count", "3", "--plain"])
        .output()
        .unwrap();
    let elapsed = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout.matches("--- memstall interval summary").count(),
        3,
        "{stdout}"
    );
    assert_eq!(
        stdout.matches("--- memstall total summary").count(),
        1,
        "{stdout}"
    );
    assert!(
        elapsed < Duration::from_secs(20),
        "stopped by itself after 3 intervals: {elapsed:?}"
    );
}
