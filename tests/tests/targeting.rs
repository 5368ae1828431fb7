//! Attaching to one cgroup: the kernel filters, descendants created later count (or not, with
//! --no-descendants), a removed cgroup gets its final summary.
use std::{fs, time::Duration};

use memstall_tests::{
    CgroupVersion, MIB, MemCgroup, Memstall, assert_attached, assert_matches_freepages, k8s,
    pressure, pressure_counted, read_json_lines, run_end, run_to_oom_kill,
    taskstats::DelayacctGuard, wait_until,
};

#[test]
fn only_the_watched_cgroup_and_its_new_children_are_reported() {
    let watched = MemCgroup::create("watched", 96 * MIB).unwrap();
    let busy = MemCgroup::create("busy", 96 * MIB).unwrap();
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let json = dir.path().join("events.jsonl");
    // The relative form of the path, as a user would copy it from an event.
    let memstall = Memstall::start(&[
        "--json",
        json.to_str().unwrap(),
        "--threshold",
        "0",
        "--cgroup",
        &watched.relative,
    ])
    .unwrap();

    pressure(&busy, &dir.path().join("busy.img"), 40, 80);
    let child = watched.child("late-child", 96 * MIB).unwrap();
    pressure(&child, &dir.path().join("child.img"), 40, 80);
    let (status, stderr) = memstall.stop(libc::SIGINT).unwrap();
    assert!(status.success(), "{stderr:?}");

    let events = read_json_lines(&json).unwrap();
    assert_attached(&events, &["memcg_reclaim"]);
    let stalls: Vec<_> = events
        .iter()
        .filter(|e| e["type"] == "memcg_reclaim")
        .collect();
    assert!(
        !stalls.is_empty(),
        "the child created after start must be traced"
    );
    for stall in &stalls {
        assert_eq!(stall["cgroup"], child.relative.as_str(), "{stall}");
    }
    let end = events.last().unwrap();
    // Nothing of the busy sibling was copied out of the kernel: every record read was reported.
    assert_eq!(end["records"], end["stalls"], "{end}");
    assert!(events.iter().all(|e| e["cgroup"] != busy.relative.as_str()));
}

#[test]
fn removed_cgroup_gets_its_summary_and_the_tracer_ends() {
    let watched = MemCgroup::create("removed", 96 * MIB).unwrap();
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let json = dir.path().join("events.jsonl");
    let memstall = Memstall::start(&[
        "--json",
        json.to_str().unwrap(),
        "--cgroup",
        watched.path.to_str().unwrap(),
    ])
    .unwrap();
    pressure(&watched, &dir.path().join("cache.img"), 40, 80);
    // Page cache charged to the cgroup does not keep a v1/v2 cgroup from being removed.
    fs::remove_dir(&watched.path).unwrap();
    let (status, stderr) = memstall.wait().unwrap();
    assert!(status.success(), "{stderr:?}");
    assert!(
        stderr
            .iter()
            .any(|l| l.contains(&format!("cgroup {} was removed", watched.relative))),
        "{stderr:?}"
    );
    assert!(
        stderr
            .iter()
            .any(|l| l.contains("no watched cgroup is left")),
        "{stderr:?}"
    );
    let events = read_json_lines(&json).unwrap();
    assert_attached(&events, &["memcg_reclaim"]);
    let removed: Vec<_> = events
        .iter()
        .filter(|e| e["type"] == "summary" && e["scope"] == "removed")
        .collect();
    assert!(
        removed
            .iter()
            .all(|r| r["cgroup"] == watched.relative.as_str()),
        "{removed:#?}"
    );
    assert!(
        removed.iter().any(|r| r["kind"] == "memcg_reclaim"),
        "{removed:#?}"
    );
    assert!(wait_until(Duration::from_secs(1), || !watched
        .path
        .exists()));
}

/// A kubepods layout (cgroupfs driver) below a test cgroup, with the kubelet's files in a
/// private root: stalls carry QoS, pod uid and container id from the path, and namespace,
/// pod and container names from the kubelet's log layout.
#[test]
fn kubepods_cgroups_are_labelled() {
    let pod = k8s::Pod::create("k8s", 96 * MIB).unwrap();
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    k8s::kubelet_files(&dir.path().join("node")).unwrap();
    let json = dir.path().join("events.jsonl");
    let memstall = Memstall::start(&[
        "--json",
        json.to_str().unwrap(),
        "--threshold",
        "0",
        "--interval",
        "1",
        "--test-k8s-root",
        dir.path().join("node").to_str().unwrap(),
        "--cgroup",
        &pod.pod.relative,
    ])
    .unwrap();
    pressure(&pod.container, &dir.path().join("cache.img"), 40, 80);
    let (status, stderr) = memstall.stop(libc::SIGINT).unwrap();
    assert!(status.success(), "{stderr:?}");
    let events = read_json_lines(&json).unwrap();
    assert_attached(&events, &["memcg_reclaim"]);
    let stall = events
        .iter()
        .find(|e| e["type"] == "memcg_reclaim")
        .expect("a stall in the container");
    let labels = &stall["labels"];
    assert_eq!(labels["qos"], "burstable", "{stall}");
    assert_eq!(labels["pod_uid"], k8s::UID);
    assert_eq!(labels["container_id"], k8s::CONTAINER_ID);
    assert_eq!(
        (&labels["namespace"], &labels["pod"], &labels["container"]),
        (
            &k8s::NAMESPACE.into(),
            &k8s::POD.into(),
            &k8s::CONTAINER.into()
        ),
        "{stall}"
    );
    // Summary rows of the container carry its names too.
    let row = events
        .iter()
        .find(|e| e["type"] == "summary" && e["cgroup"] == pod.container.relative.as_str())
        .expect("a summary row of the container");
    assert_eq!(row["labels"]["pod"], k8s::POD, "{row}");
}

/// An OOM kill in a kubepods-shaped container cgroup names the victim's namespace, pod and
/// container, in JSON and in the human line; the kill is the one the kernel counted there.
#[test]
fn oom_kill_in_a_pod_carries_its_names() {
    let pod = k8s::Pod::create("k8s-oom", 32 * MIB).unwrap();
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    k8s::kubelet_files(&dir.path().join("node")).unwrap();
    let json = dir.path().join("events.jsonl");
    let human = dir.path().join("human.txt");
    let memstall = Memstall::start_with_stdout(
        &[
            "--json",
            json.to_str().unwrap(),
            "--test-k8s-root",
            dir.path().join("node").to_str().unwrap(),
            "--cgroup",
            &pod.pod.relative,
        ],
        fs::File::create(&human).unwrap(),
    )
    .unwrap();
    let victim = run_to_oom_kill(&[
        "--cgroup",
        pod.container.path.to_str().unwrap(),
        "--anon-mib",
        "128",
    ]);
    assert_eq!(pod.container.oom_kills().unwrap(), 1);
    let seen = wait_until(Duration::from_secs(10), || {
        read_json_lines(&json)
            .unwrap_or_default()
            .iter()
            .any(|e| e["type"] == "oom_kill")
    });
    let (status, stderr) = memstall.stop(libc::SIGINT).unwrap();
    assert!(seen && status.success(), "{stderr:?}");
    let events = read_json_lines(&json).unwrap();
    let kills: Vec<_> = events.iter().filter(|e| e["type"] == "oom_kill").collect();
    assert_eq!(kills.len(), 1, "{kills:#?}");
    let kill = kills[0];
    assert_eq!(kill["victim_pid"], victim, "{kill}");
    assert_eq!(kill["victim_cgroup"], pod.container.relative.as_str());
    let names = &kill["victim_labels"];
    assert_eq!(names["namespace"], k8s::NAMESPACE, "{kill}");
    assert_eq!(names["pod"], k8s::POD, "{kill}");
    assert_eq!(names["container"], k8s::CONTAINER, "{kill}");
    assert_eq!(names["container_id"], k8s::CONTAINER_ID, "{kill}");
    let lines = fs::read_to_string(&human).unwrap();
    let pod_line = format!(
        "    pod: {}/{}/{}",
        k8s::NAMESPACE,
        k8s::POD,
        k8s::CONTAINER
    );
    assert!(lines.lines().any(|l| l == pod_line), "{lines}");
}

/// `--no-descendants`: the named cgroups' own tasks only. A parent and one of its two
/// children are named: the other child's reclaim (which a tracer with descendants sees, as
/// many stalls as its task's freepages_count) never leaves the kernel; the named child's and
/// (v1) the parent's own task's stalls are all there.
#[test]
fn no_descendants_reports_only_the_named_cgroups_own_tasks() {
    let _delayacct = DelayacctGuard::enable().unwrap();
    let top = MemCgroup::create("nodesc", 128 * MIB).unwrap();
    let excluded = top.child("excluded", 96 * MIB).unwrap();
    let named = top.child("named", 96 * MIB).unwrap();
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let (json, control_json) = (
        dir.path().join("events.jsonl"),
        dir.path().join("all.jsonl"),
    );
    let memstall = Memstall::start(&[
        "--json",
        json.to_str().unwrap(),
        "--threshold",
        "0",
        "--no-descendants",
        "--cgroup",
        &top.relative,
        "--cgroup",
        named.path.to_str().unwrap(),
    ])
    .unwrap();
    assert!(
        memstall.ready_line().contains(&format!(
            "{}, {} only (filtered in the kernel)",
            top.relative, named.relative
        )),
        "{}",
        memstall.ready_line()
    );
    let control = Memstall::start(&[
        "--json",
        control_json.to_str().unwrap(),
        "--threshold",
        "0",
        "--cgroup",
        &top.relative,
    ])
    .unwrap();
    let (excluded_pid, excluded_kernel) =
        pressure_counted(&excluded, &dir.path().join("x.img"), 40, 80);
    let (named_pid, named_kernel) = pressure_counted(&named, &dir.path().join("n.img"), 40, 80);
    // cgroup v2 allows no task in a cgroup whose children have the memory controller.
    let own = (top.version == CgroupVersion::V1)
        .then(|| pressure_counted(&top, &dir.path().join("t.img"), 8, 120));
    let (status, stderr) = memstall.stop(libc::SIGINT).unwrap();
    assert!(status.success(), "{stderr:?}");
    let (status, stderr) = control.stop(libc::SIGINT).unwrap();
    assert!(status.success(), "{stderr:?}");
    let events = read_json_lines(&json).unwrap();
    assert_attached(&events, &["memcg_reclaim"]);
    let all = read_json_lines(&control_json).unwrap();
    let stalls_of = |events: &[serde_json::Value], pid: u32| {
        events
            .iter()
            .filter(|e| e["type"] == "memcg_reclaim" && e["pid"] == pid)
            .count() as u64
    };
    eprintln!(
        "no-descendants: excluded child {} stalls (tracer with descendants {}, freepages {}); named child {} (freepages {}); own task {:?}",
        stalls_of(&events, excluded_pid),
        stalls_of(&all, excluded_pid),
        excluded_kernel.freepages.count,
        stalls_of(&events, named_pid),
        named_kernel.freepages.count,
        own.as_ref()
            .map(|(pid, k)| (stalls_of(&events, *pid), k.freepages.count))
    );
    assert!(
        excluded_kernel.freepages.count > 0,
        "the excluded child reclaimed"
    );
    assert_matches_freepages(&all, "memcg_reclaim", excluded_pid, &excluded_kernel);
    assert_eq!(
        stalls_of(&events, excluded_pid),
        0,
        "a descendant leaked in"
    );
    assert!(
        events
            .iter()
            .all(|e| e["cgroup"] != excluded.relative.as_str())
    );
    assert!(named_kernel.freepages.count > 0);
    assert_matches_freepages(&events, "memcg_reclaim", named_pid, &named_kernel);
    assert_eq!(stalls_of(&events, named_pid), stalls_of(&all, named_pid));
    if let Some((pid, kernel)) = &own {
        assert!(
            kernel.freepages.count > 0,
            "the parent's own task reclaimed"
        );
        assert_matches_freepages(&events, "memcg_reclaim", *pid, kernel);
    }
    // Besides the stalls, only the SIGKILLs the test sends the named cgroups' workloads.
    let kills = events.iter().filter(|e| e["type"] == "kill").count() as u64;
    let end = run_end(&events);
    assert_eq!(
        end["records"].as_u64(),
        end["stalls"].as_u64().map(|s| s + kills),
        "nothing else left the kernel: {end}"
    );
}
