//! The BPF cgroup iterator against the file walk, and which path the measurement picks.
use std::fmt::Write as _;

use super::{BenchRun, amount};

/// Why memstall does not read its counters through the iterator yet, whatever it costs.
const ITERATOR_NOT_YET: &str = "memstall does not use it yet, for reasons the figures do not change: (1) the iterator hands over memcg's event array, and which slot holds pgfault or pgscan is a static table in mm/memcontrol.c (`memcg_vm_event_stat[]`) that BTF does not describe, /proc/kallsyms does not list on this kernel, and that changes with kernel version and config: memstall would have to find the slots by matching memory.stat at start-up; (2) the program cannot flush the per-CPU counters itself: `css_rstat_flush` is a sleepable kfunc that wants a trusted pointer to the memory css, and the verifier calls `cgroup->subsys[]` untrusted (\"R1 must be referenced or trusted\"), so a walk here first reads the root's memory.stat to let the kernel flush, which the v2 root does not have (a walk there lags by up to the kernel's 2 s periodic flush); (3) aya-ebpf 0.2 has neither an iterator program nor CO-RE, and aya 0.14 links iterators without a target cgroup: memstall's program would be written by hand with offsets from its BTF reader, linked by a raw BPF_LINK_CREATE; (4) such a path must pass the VM tests on 6.1 and 6.12 (pure v2). Until then memstall keeps the file walk and does not walk big hierarchies: above 2000 memory cgroups without `--cgroup`, `--faults auto` counts faults in the kernel (the default rows above); `--cgroup` reads only the watched cgroups' files. The iterator is the path to take next: it would let `auto` drop the per-fault hook on big hosts and make the walk below 2000 cgroups nearly free.";

/// Which path the measurement picks, at the largest hierarchy both walked.
fn decision(run: &BenchRun) -> String {
    let pair = run.iter.iter().zip(&run.walk).filter_map(|(it, walk)| {
        Some((it.cgroups, it.estimate.as_ref()?, walk.estimate.as_ref()?))
    });
    let Some((cgroups, iter, walk)) = pair.max_by_key(|(cgroups, ..)| *cgroups) else {
        return "Decision: memstall keeps the file walk; the iterator was not measured here."
            .into();
    };
    if iter.high < walk.low {
        format!(
            "Decision: the measurement picks the iterator, {:.0}× less CPU than the file walk over {cgroups} memory cgroups ({:.2} ms against {:.1} ms). {ITERATOR_NOT_YET}",
            walk.median / iter.median.max(1e-9),
            iter.median,
            walk.median
        )
    } else if walk.high < iter.low {
        "Decision: the file walk is cheaper here, so memstall keeps it.".into()
    } else {
        format!(
            "Decision: undecided (the intervals overlap over {cgroups} memory cgroups), so memstall keeps the file walk."
        )
    }
}

pub(super) fn section(out: &mut String, run: &BenchRun) {
    let _ = writeln!(
        out,
        "\n### BPF cgroup iterator vs the file walk\n\nThe same hierarchy walked in the kernel by an `iter/cgroup` program (xtask/src/bench/memcg_iter.bpf.c, CO-RE, built by clang at bench time) that stores each memory cgroup's id and memcg event counters (what memory.stat prints as pgfault, pgmajfault, pgscan_*, ...) in an mmap-able array; one walk = the root's memory.stat read (the kernel's flush), one read() of the iterator (which runs the program) and the rows copied out. CPU of the walking thread. (The rows cannot stream through the read: a cgroup iterator refuses to resume a walk in a second read(), EOPNOTSUPP, and one read holds 32 KiB.)"
    );
    if let Some(why) = &run.iter_error {
        let _ = writeln!(out, "\nNot measured here: {why}.");
    }
    if !run.iter.is_empty() {
        let _ = writeln!(
            out,
            "\n| memory cgroups walked | iterator CPU [95 % CI] | file walk CPU (above) | check against memory.stat |\n| --- | --- | --- | --- |"
        );
        for (i, it) in run.iter.iter().enumerate() {
            let walk = run
                .walk
                .get(i)
                .map_or("–".into(), |w| amount(w.estimate.as_ref(), "ms", 1));
            let _ = writeln!(
                out,
                "| {} | {} | {walk} | {} |",
                it.cgroups,
                amount(it.estimate.as_ref(), "ms", 2),
                it.checked
            );
        }
    }
    let _ = writeln!(out, "\n{}", decision(run));
}
