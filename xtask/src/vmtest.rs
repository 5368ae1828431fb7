//! `cargo xtask vmtest [--kernel 6.1,6.12]`: the integration tests inside QEMU on Debian's
//! kernels, on pure cgroup v2, one result line per kernel.
//!
//! QEMU runs under TCG (this machine kind's /dev/kvm cannot run real kernels) and boots the
//! uncompressed vmlinux through the PVH entry. The initramfs is an uncompressed cpio of this
//! run's static (musl) test binaries and `vm/init.sh`, followed by the kernel's cached base
//! initramfs (busybox, modules); /var/tmp is ext4 on a fresh virtio disk so page cache is
//! reclaimable file cache. Everything downloaded or derived is cached under target/vmtest/; each
//! kernel's console log is kept in target/vmtest/VERSION.log.
//!
//! MEMSTALL_VMTEST_TIMEOUT (seconds, default 1200) bounds each VM: QEMU is killed past it. A
//! test binary gets a third of that.
mod kernel;

use std::{
    fmt::Write as _,
    fs,
    io::{BufRead as _, BufReader, Write as _},
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::{
    musl::{self, strip},
    run,
    setup::apt_ensure,
    workspace_root,
};

const DEFAULT_KERNELS: &str = "6.1,6.12";
const APT_PACKAGES: &[&str] = &[
    "qemu-system-x86",
    "busybox-static",
    "cpio",
    "zstd",
    "xz-utils",
    "lz4",
    "kmod",
    "e2fsprogs",
    "binutils",
];
/// Which of the run's kernels a module runs on.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kernels {
    Each,
    Oldest,
    Newest,
}

/// What the VMs are for: what differs between kernels. Which hooks load and attach (the
/// verifier, BTF layouts, fentry, tp_btf or the classic tracepoint), the signal and OOM paths,
/// the stall causes each kernel has, and the kernel's own counters to reconcile with. Each
/// entry is a module of the integration-test binary (tests/tests/NAME.rs), the kernels it runs
/// on and the tests it runs there (none listed: all of them); a module may have an entry per
/// set of kernels. Tests the host cannot run (cgroup v2 only, fentry, CAP_SYS_RESOURCE, a swap
/// file) run on one kernel at least. memstall's own logic (parsing, targeting, outputs, soak
/// verdicts) is the same on every kernel and runs on the host's. CI boots both kernels one
/// after the other under TCG, where a test takes 10 to 50 times longer than on the host (a
/// memstall start alone, verifying every program, 10 to 15 s): the list is kept to about seven
/// minutes a kernel. The guest sets MEMSTALL_EXPECT_FENTRY=1: these kernels allow trampolines,
/// so the fentry hooks must attach.
const TESTS: &[(&str, Kernels, &[&str])] = &[
    ("fentry", Kernels::Each, &[]),
    (
        "oom_kill",
        Kernels::Each,
        &["oom_kill_via_tp_btf_matches_the_kernel"],
    ),
    (
        "diagnostics",
        Kernels::Each,
        &[
            "every_tracepoint_hook_loads_as_tp_btf",
            "none_at_the_default_sizes",
        ],
    ),
    (
        "kills",
        Kernels::Each,
        &[
            "a_shell_kill_and_a_tgkill_are_a_process_kill",
            "an_oom_kill_is_one_record_with_its_triggers_stacks",
        ],
    ),
    // The swap-in hook is swap_readpage on 6.1, swap_read_folio later.
    (
        "pressure",
        Kernels::Each,
        &[
            "compaction_matches_compact_stall",
            "memory_high_penalty_is_its_own_cause",
            "swapin_matches_pswpin",
        ],
    ),
    (
        "reclaim",
        Kernels::Each,
        &["memcg_reclaim_stalls_reconcile_with_the_cgroup"],
    ),
    (
        "oom_kill",
        Kernels::Newest,
        &["oom_kill_via_classic_tracepoint_matches_the_kernel"],
    ),
    ("kills", Kernels::Oldest, &["cgroup_kill_names_the_writer"]),
    (
        "oom_postmortem",
        Kernels::Newest,
        &["exempt_task_is_marked_and_spared"],
    ),
    // 6.1's balance_dirty_pages has 12 arguments (the host's and 6.12's, 8).
    (
        "pressure",
        Kernels::Oldest,
        &[
            "many_short_reclaims_match_delay_accounting",
            "dirty_throttling_matches_the_tracepoint",
        ],
    ),
    (
        "pressure",
        Kernels::Newest,
        &["refault_waits_match_thrashing"],
    ),
    (
        "reclaim",
        Kernels::Newest,
        &["memory_high_reclaim_matches_memory_events_high"],
    ),
    (
        "faults",
        Kernels::Newest,
        &["faults_from_memory_stat_reconcile"],
    ),
];
/// Modules left out, and why.
const NOT_IN_VM: &[(&str, &str)] = &[
    ("prometheus", "needs Debian's prometheus server"),
    ("dashboard", "needs Debian's prometheus server"),
    ("live", "needs tmux"),
    (
        "hardening",
        "links, full disks and the exporter behave alike on every kernel; its 20 000-cgroup churn takes too long under TCG",
    ),
    ("cli", SAME_ON_EVERY_KERNEL),
    ("doctor", SAME_ON_EVERY_KERNEL),
    ("targeting", SAME_ON_EVERY_KERNEL),
    ("threshold", SAME_ON_EVERY_KERNEL),
    ("untrusted", SAME_ON_EVERY_KERNEL),
    ("contract", SAME_ON_EVERY_KERNEL),
    ("oom_scores", SAME_ON_EVERY_KERNEL),
    ("soak", SAME_ON_EVERY_KERNEL),
    ("stall_kinds", SAME_ON_EVERY_KERNEL),
];
const SAME_ON_EVERY_KERNEL: &str =
    "memstall's own logic over hooks the other modules check per kernel; the host runs it";
const INIT: &str = include_str!("../vm/init.sh");
/// Counts the guest's results (skips apart from passes) and prints the marker.
const TALLY: &str = include_str!("../vm/tally.sh");
const MARKER: &str = "MEMSTALL-VMTEST-RESULT:";
const DEFAULT_TIMEOUT_SECS: u64 = 1200;
const DISK_BYTES: u64 = 1 << 30;

/// The guest's last word: `passed=N skipped=S failed=M exit=E` (exit: the status of the last
/// failing test binary).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Marker {
    passed: u64,
    skipped: u64,
    failed: u64,
    exit: i64,
}

/// What one VM run came to.
#[derive(Default)]
struct Outcome {
    result: Option<Marker>,
    boot: Option<Duration>,
    tests: Option<Duration>,
    failed_tests: Vec<String>,
    /// `module: test: reason` of each test that skipped.
    skips: Vec<String>,
    /// Why there is no marker (timeout, QEMU's exit status).
    ended: String,
}

pub fn vmtest(kernels: Option<&str>) -> Result<()> {
    let started = Instant::now();
    if let Some(installed) = apt_ensure(APT_PACKAGES)? {
        eprintln!("vmtest: {installed}");
    }
    let cache = workspace_root().join("target").join("vmtest");
    fs::create_dir_all(&cache)?;
    let kernels = kernels
        .unwrap_or(DEFAULT_KERNELS)
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|series| kernel::ensure(series, &cache))
        .collect::<Result<Vec<_>>>()?;
    // MEMSTALL_VMTEST_ONLY=kills,pressure::refault_waits_match_thrashing: those modules, or
    // tests of them, only (on the kernels they run on).
    let only = std::env::var("MEMSTALL_VMTEST_ONLY").ok();
    let only: Option<Vec<&str>> = only
        .as_deref()
        .map(|o| o.split(',').map(str::trim).collect());
    let payload = build_payload(&cache, kernels.len(), only.as_deref())?;
    eprintln!(
        "vmtest: kernels and test binaries ready [{:.1} s]",
        started.elapsed().as_secs_f64()
    );
    let timeout = std::env::var("MEMSTALL_VMTEST_TIMEOUT")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(
            Duration::from_secs(DEFAULT_TIMEOUT_SECS),
            Duration::from_secs,
        );

    let mut failed = Vec::new();
    let mut all = Marker::default();
    for (index, kernel) in kernels.iter().enumerate() {
        let name = kernel.version.trim_end_matches("-amd64");
        let log = cache.join(format!("{name}.log"));
        let outcome = boot(kernel, index, &payload, &cache, &log, timeout)?;
        if let Some(marker) = outcome.result {
            all.passed += marker.passed;
            all.skipped += marker.skipped;
            all.failed += marker.failed;
        }
        if !outcome.report(name) {
            print_tail(&log, 40);
            failed.push(name.to_owned());
        }
    }
    eprintln!("vmtest: done [{:.1} s]", started.elapsed().as_secs_f64());
    // The closing line CI reads: all kernels' tests together.
    println!(
        "vmtest: {} passed, {} skipped, {} failed",
        all.passed, all.skipped, all.failed
    );
    if !failed.is_empty() {
        bail!(
            "vmtest failed on {} (logs in {})",
            failed.join(", "),
            cache.display()
        );
    }
    Ok(())
}

/// Builds the static test binaries and packs them with /init into target/vmtest/payload.cpio.
fn build_payload(cache: &Path, kernels: usize, only: Option<&[&str]>) -> Result<PathBuf> {
    musl::ensure_target()?;
    let tests = musl::executables(
        &musl::cargo_messages(&["test", "--no-run", "-p", "memstall-tests"])?,
        "test",
    );
    let bins = musl::executables(
        &musl::cargo_messages(&[
            "build",
            "-p",
            "memstall",
            "--bin",
            "memstall",
            "-p",
            "memstall-tests",
            "--bin",
            "memhog",
            "--bin",
            "sigkill",
        ])?,
        "bin",
    );
    let root = cache.join("payload");
    let _ = fs::remove_dir_all(&root);
    fs::create_dir_all(root.join("memstall/deps"))?;
    fs::write(root.join("init"), INIT)?;
    fs::set_permissions(root.join("init"), fs::Permissions::from_mode(0o755))?;
    fs::write(root.join("memstall/tally.sh"), TALLY)?;
    // The tests find their helpers beside current_exe()/../.. and memstall through MEMSTALL_BIN.
    for bin in ["memstall", "memhog", "sigkill"] {
        let (_, exe) = bins
            .iter()
            .find(|(name, _)| name == bin)
            .with_context(|| format!("cargo built no {bin}"))?;
        strip(exe, &root.join("memstall").join(bin))?;
    }
    for name in test_modules()? {
        if !TESTS.iter().any(|(test, _, _)| *test == name) {
            let why = NOT_IN_VM.iter().find(|(test, _)| *test == name);
            let why = why.map_or("not in vmtest's TESTS", |(_, why)| why);
            eprintln!("vmtest: note: tests/tests/{name}.rs not run in the VMs ({why})");
        }
    }
    let (_, exe) = tests
        .iter()
        .find(|(name, _)| name == "integration")
        .context("cargo built no integration test binary")?;
    let file = exe
        .file_name()
        .context("test executable name")?
        .to_string_lossy()
        .into_owned();
    strip(exe, &root.join("memstall/deps").join(&file))?;
    // One list per kernel of the run (tests.INDEX), the guest told which is its own.
    for index in 0..kernels {
        let mut list = String::new();
        for (module, tests) in kernel_tests(index, kernels) {
            if let Some(tests) = only_these(only, module, &tests) {
                writeln!(list, "{module} {file} {}", libtest_filter(module, &tests))?;
            }
        }
        fs::write(root.join(format!("memstall/tests.{index}")), list)?;
    }
    let archive = cache.join("payload.cpio");
    kernel::cpio(&root, &archive)?;
    fs::remove_dir_all(&root)?;
    Ok(archive)
}

/// The modules kernel `index` of `kernels` runs, each with its tests (empty: all), in TESTS's
/// order.
fn kernel_tests(index: usize, kernels: usize) -> Vec<(&'static str, Vec<&'static str>)> {
    let mut modules: Vec<(&str, Vec<&str>)> = Vec::new();
    for (module, on, tests) in TESTS {
        let runs_here = match on {
            Kernels::Each => true,
            Kernels::Oldest => index == 0,
            Kernels::Newest => index + 1 == kernels,
        };
        if !runs_here {
            continue;
        }
        match modules.iter_mut().find(|(name, _)| name == module) {
            // An entry of the whole module already runs these.
            Some((_, listed)) if listed.is_empty() => {}
            Some((_, listed)) if tests.is_empty() => listed.clear(),
            Some((_, listed)) => listed.extend_from_slice(tests),
            None => modules.push((module, tests.to_vec())),
        }
    }
    modules
}

/// What MEMSTALL_VMTEST_ONLY (`module` or `module::test` items) leaves of `module`'s `tests`
/// (empty: all); `None` when nothing.
fn only_these(only: Option<&[&str]>, module: &str, tests: &[&str]) -> Option<Vec<String>> {
    let all = || tests.iter().map(ToString::to_string).collect();
    let Some(only) = only else {
        return Some(all());
    };
    if only.contains(&module) {
        return Some(all());
    }
    let picked: Vec<String> = only
        .iter()
        .filter_map(|item| item.strip_prefix(module)?.strip_prefix("::"))
        .filter(|test| tests.is_empty() || tests.contains(test))
        .map(ToString::to_string)
        .collect();
    (!picked.is_empty()).then_some(picked)
}

/// libtest's arguments for `tests` of `module`: the module path (`cli::` runs
/// tests/tests/cli.rs), or each test's full name, exactly.
fn libtest_filter(module: &str, tests: &[String]) -> String {
    if tests.is_empty() {
        return format!("{module}::");
    }
    let names: Vec<String> = tests
        .iter()
        .map(|test| format!("{module}::{test}"))
        .collect();
    format!("--exact {}", names.join(" "))
}

/// The modules tests/tests/main.rs declares.
fn test_modules() -> Result<Vec<String>> {
    let main = workspace_root().join("tests/tests/main.rs");
    let text = fs::read_to_string(&main).with_context(|| format!("reading {}", main.display()))?;
    Ok(text
        .lines()
        .filter_map(|l| l.strip_prefix("mod ")?.strip_suffix(';'))
        .map(str::to_owned)
        .collect())
}

fn boot(
    kernel: &kernel::Kernel,
    index: usize,
    payload: &Path,
    cache: &Path,
    log: &Path,
    timeout: Duration,
) -> Result<Outcome> {
    let name = kernel.version.trim_end_matches("-amd64");
    let work = cache.join("run");
    fs::create_dir_all(&work)?;
    let initrd = work.join("initrd.cpio");
    let mut image = fs::read(payload)?;
    image.extend(fs::read(&kernel.base_initramfs)?);
    fs::write(&initrd, image)?;
    let disk = work.join("var-tmp.img");
    let _ = fs::remove_file(&disk);
    fs::File::create(&disk)?.set_len(DISK_BYTES)?;
    let mke2fs = "-q -F -t ext4 -E lazy_itable_init=0,lazy_journal_init=0";
    run(Command::new("mke2fs").args(mke2fs.split(' ')).arg(&disk))?;

    // Unknown `key=value` parameters reach /init as environment variables.
    let append = format!(
        "console=ttyS0 panic=-1 oops=panic cgroup_no_v1=all VMTEST_BINARY_TIMEOUT={} VMTEST_LIST=/memstall/tests.{index}",
        timeout.as_secs() / 3
    );
    let machine = "-accel tcg,thread=multi -cpu max -m 1G -smp 2 -nodefaults -display none";
    let drive = format!(
        "file={},format=raw,if=none,id=vartmp,cache=unsafe",
        disk.display()
    );
    let mut qemu = Command::new("qemu-system-x86_64");
    qemu.args(machine.split(' '))
        .args(["-serial", "stdio", "-no-reboot", "-kernel"])
        .arg(&kernel.vmlinux)
        .arg("-initrd")
        .arg(&initrd)
        .args(["-append", &append, "-drive", &drive])
        .args(["-device", "virtio-blk-pci,drive=vartmp"]);
    let mut log_file = fs::File::create(log)?;
    let started = Instant::now();
    let mut child = qemu
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log_file.try_clone()?)
        .spawn()
        .context("starting qemu-system-x86_64")?;
    eprintln!("vmtest {name}: booting (log {})", log.display());
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().context("qemu stdout")?;
    thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut buf = Vec::new();
        while reader.read_until(b'\n', &mut buf).is_ok_and(|n| n > 0) {
            let line = String::from_utf8_lossy(&buf)
                .trim_end_matches(['\r', '\n'])
                .to_owned();
            let _ = writeln!(log_file, "{line}");
            if tx.send(line).is_err() {
                break;
            }
            buf.clear();
        }
    });

    let mut outcome = Outcome::default();
    let mut deadline = started + timeout;
    let mut tests_started = None;
    loop {
        let line = match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => line,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if outcome.result.is_none() {
                    outcome.ended = format!("timed out after {} s, QEMU killed", timeout.as_secs());
                }
                let _ = child.kill();
                break;
            }
        };
        if let Some(message) = line.strip_prefix("vmtest: ") {
            eprintln!("vmtest {name}: {message}");
            if let Some(skip) = message.strip_prefix("skipped ") {
                outcome.skips.push(skip.to_owned());
            }
            if line.starts_with("vmtest: init") && outcome.boot.is_none() {
                outcome.boot = Some(started.elapsed());
            }
            if line == "vmtest: tests start" {
                tests_started = Some(Instant::now());
            }
        }
        if let Some(test) = line
            .strip_prefix("test ")
            .and_then(|t| t.split_once(" ... FAILED"))
            .map(|(test, _)| test)
        {
            outcome.failed_tests.push(test.to_owned());
        }
        if let Some(result) = line
            .split_once(MARKER)
            .and_then(|(_, rest)| parse_marker(rest))
        {
            outcome.result = Some(result);
            outcome.tests = tests_started.map(|t| t.elapsed());
            // The guest powers off next; do not wait long for it.
            deadline = deadline.min(Instant::now() + Duration::from_secs(30));
        }
    }
    let status = child.wait()?;
    let _ = fs::remove_file(&disk);
    if outcome.tests.is_none() {
        outcome.tests = tests_started.map(|t| t.elapsed());
    }
    if outcome.ended.is_empty() {
        outcome.ended = format!("QEMU exited with {status} before the result marker");
    }
    Ok(outcome)
}

impl Outcome {
    /// Prints the result line (and the failed tests); true when the kernel passed.
    fn report(&self, name: &str) -> bool {
        let secs =
            |d: Option<Duration>| d.map_or("?".into(), |d| format!("{:.1}", d.as_secs_f64()));
        let tests = self.tests.map_or(0.0, |d| d.as_secs_f64());
        let times = format!("boot {} s, tests {tests:.0} s", secs(self.boot));
        let Some(Marker {
            passed,
            skipped,
            failed,
            exit,
        }) = self.result
        else {
            println!("vmtest {name}: no result ({}; {times})", self.ended);
            return false;
        };
        let exit_note = if exit == 0 {
            String::new()
        } else {
            format!(", exit {exit}")
        };
        println!(
            "vmtest {name}: {passed} passed, {skipped} skipped, {failed} failed ({times}){exit_note}"
        );
        for skip in &self.skips {
            println!("    skipped {skip}");
        }
        for test in &self.failed_tests {
            println!("    FAILED {test}");
        }
        failed == 0 && exit == 0 && passed > 0
    }
}

/// `passed=N skipped=S failed=M exit=E`
fn parse_marker(rest: &str) -> Option<Marker> {
    let value = |key: &str| {
        rest.split_whitespace()
            .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=')?.parse::<i64>().ok())
    };
    Some(Marker {
        passed: value("passed")? as u64,
        skipped: value("skipped")? as u64,
        failed: value("failed")? as u64,
        exit: value("exit")?,
    })
}

fn print_tail(log: &Path, lines: usize) {
    let text = fs::read_to_string(log).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    println!("---- last {lines} lines of {} ----", log.display());
    for line in &all[all.len().saturating_sub(lines)..] {
        println!("{line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A module neither run in the VMs nor excluded with a reason is a gap nobody sees.
    #[test]
    fn every_test_module_is_run_in_the_vms_or_excluded_with_a_reason() {
        for module in test_modules().unwrap() {
            assert!(
                TESTS.iter().any(|(name, _, _)| *name == module)
                    || NOT_IN_VM.iter().any(|(name, _)| *name == module),
                "tests/tests/{module}.rs: add it to vmtest's TESTS, or to NOT_IN_VM with the reason"
            );
        }
    }

    /// `--exact` with a name that no longer exists runs nothing and passes: every listed test
    /// must be a test function of its module.
    #[test]
    fn every_listed_test_exists() {
        for (module, _, tests) in TESTS {
            let path = workspace_root().join(format!("tests/tests/{module}.rs"));
            let source = fs::read_to_string(&path).unwrap();
            for test in *tests {
                assert!(
                    source.contains(&format!("#[test]\nfn {test}()")),
                    "vmtest's TESTS lists {module}::{test}, which tests/tests/{module}.rs has no test of that name"
                );
            }
        }
    }

    /// A module with entries for several kernels runs, on each, the tests of every entry
    /// that includes that kernel, once.
    #[test]
    fn a_kernel_runs_the_tests_of_every_entry_for_it() {
        let tests = |index| {
            kernel_tests(index, 2)
                .into_iter()
                .find(|(module, _)| *module == "kills")
                .unwrap()
                .1
        };
        assert!(tests(0).contains(&"cgroup_kill_names_the_writer"));
        assert!(!tests(1).contains(&"cgroup_kill_names_the_writer"));
        assert!(tests(1).contains(&"a_shell_kill_and_a_tgkill_are_a_process_kill"));
        for index in 0..2 {
            let modules: Vec<_> = kernel_tests(index, 2).into_iter().map(|(m, _)| m).collect();
            let mut unique = modules.clone();
            unique.sort_unstable();
            unique.dedup();
            assert_eq!(modules.len(), unique.len(), "{modules:?}");
        }
    }

    /// The guest's tally on made-up results: a skipped test is no pass, a binary without a
    /// result line is a failure.
    #[test]
    fn guest_tally_counts_skips_apart() {
        let dir = std::env::temp_dir().join(format!("xtask-tally-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let write = |name: &str, text: &str| fs::write(dir.join(name), text).unwrap();
        write(
            "list",
            "cli integration-x cli::\nreclaim integration-x reclaim:: --skip direct\nfentry integration-x fentry::\n",
        );
        write(
            "out.cli",
            "test cli::a ... ok\ntest cli::b ... ok\n\ntest result: ok. 2 passed; 0 failed\n",
        );
        write("rc.cli", "0\n");
        write(
            "out.reclaim",
            "test reclaim::high ... ok <1.201s>\ntest reclaim::memcg ... ok <30.000s>\ntest reclaim::kswapd ... FAILED <2.5s>\n\nfailures:\n\ntest result: FAILED. 2 passed; 1 failed\n",
        );
        write("rc.reclaim", "101\n");
        write(
            "skips.reclaim",
            "reclaim::high: memory.high is cgroup v2\nreclaim::high: and twice\nreclaim::kswapd: no kswapd here\n",
        );
        write("out.fentry", "thread 'main' panicked\n");
        write("rc.fentry", "124\n");
        let out = Command::new("sh")
            .arg(workspace_root().join("xtask/vm/tally.sh"))
            .arg(dir.join("list"))
            .arg(&dir)
            .output()
            .unwrap();
        fs::remove_dir_all(&dir).unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{stdout}");
        let marker = stdout
            .lines()
            .last()
            .and_then(|l| l.split_once(MARKER))
            .and_then(|(_, rest)| parse_marker(rest));
        assert_eq!(
            marker,
            Some(Marker {
                passed: 3,
                skipped: 1,
                failed: 2,
                exit: 124
            }),
            "{stdout}"
        );
        assert!(
            stdout.contains("vmtest: skipped reclaim: reclaim::high: memory.high is cgroup v2"),
            "{stdout}"
        );
        assert!(
            !stdout.contains("skipped reclaim: reclaim::kswapd"),
            "{stdout}"
        );
    }
}
