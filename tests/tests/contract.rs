//! The JSON contract as a whole: real runs produce every record type, each holds to the typed
//! contract (tests/src/contract.rs, which every other test's JSON goes through too), taking
//! away or renaming any documented field of a real record breaks it, and the README lists
//! every field the contract holds memstall to.
use std::{collections::BTreeMap, fs, io::Read as _, path::Path, process::Command};

use memstall_tests::{
    MIB, MemCgroup, Memstall, contract, hook_attached, meminfo_kb, memstall_bin, parse_json_lines,
    pressure, run_to_oom_kill, wait_for,
};
use serde_json::Value;

/// Memory cgroup reclaim, an OOM kill, and page cache past the machine's free memory (kswapd
/// wakes): every record type this kernel can produce, from one unfiltered run.
#[test]
fn every_record_type_of_a_real_run_holds_to_the_contract() {
    let reclaim = MemCgroup::create("contract-reclaim", 96 * MIB).unwrap();
    let oom = MemCgroup::create("contract-oom", 32 * MIB).unwrap();
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let json = dir.path().join("events.jsonl");
    let memstall = Memstall::start(&[
        "--json",
        json.to_str().unwrap(),
        "--threshold",
        "0",
        "--interval",
        "1",
        "--memcg-events",
        "--latency",
    ])
    .unwrap();
    pressure(&reclaim, &dir.path().join("cache.img"), 40, 80);
    run_to_oom_kill(&["--cgroup", oom.path.to_str().unwrap(), "--anon-mib", "128"]);
    wait_for(
        "the kernel counts the OOM kill",
        std::time::Duration::from_secs(5),
        || oom.oom_kills().unwrap() >= 1,
    );
    // Page cache past free memory (holes of a sparse file: no disk I/O): kswapd wakes.
    let holes = dir.path().join("holes.img");
    fs::File::create(&holes)
        .unwrap()
        .set_len((meminfo_kb("MemFree") / 1024 + 512) * MIB)
        .unwrap();
    let mut file = fs::File::open(&holes).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    while file.read(&mut buf).unwrap() > 0 {}
    // A kswapd run is a record once kswapd sleeps again.
    wait_for(
        "kswapd back to sleep (a kswapd_wake record)",
        std::time::Duration::from_secs(60),
        || {
            fs::read_to_string(&json)
                .unwrap_or_default()
                .contains("\"type\":\"kswapd_wake\"")
        },
    );
    let (status, stderr) = memstall.stop(libc::SIGINT).unwrap();
    assert!(status.success(), "{stderr:?}");

    let text = fs::read_to_string(&json).unwrap();
    let events = parse_json_lines(&text).unwrap();
    let mut unknown = Vec::new();
    let mut examples: BTreeMap<String, &Value> = BTreeMap::new();
    for event in &events {
        if contract::check_known(event).unwrap() {
            examples
                .entry(event["type"].as_str().unwrap().to_owned())
                .or_insert(event);
        } else {
            unknown.push(event);
        }
    }
    assert!(
        unknown.is_empty(),
        "record types the contract does not know: document them in the README and tests/src/contract.rs: {unknown:#?}"
    );
    let mut wanted = vec![
        "oom_kill",
        "memcg_reclaim",
        "kswapd_wake",
        "summary",
        "faults",
        "memcg_pages",
        "kswapd",
        "kswapd_wakeups",
        "run_end",
    ];
    // Latency records need fentry: where it is refused (this project's dev host), they are
    // held to the contract by fentry.rs in the VMs, whose kernels allow it.
    if hook_attached(&events, "charge_latency") {
        wanted.push("latency");
    }
    let missing: Vec<&&str> = wanted
        .iter()
        .filter(|t| !examples.contains_key(**t))
        .collect();
    eprintln!(
        "contract: {} records of types {:?}",
        events.len(),
        examples.keys().collect::<Vec<_>>()
    );
    assert!(missing.is_empty(), "no {missing:?} records in this run");

    // A real record of each type without any one of its documented fields, or with it renamed,
    // breaks the contract.
    for (record_type, example) in &examples {
        for field in contract::required_fields(record_type) {
            let mut without = (*example).clone();
            let value = without
                .as_object_mut()
                .unwrap()
                .remove(field)
                .unwrap_or_else(|| panic!("{record_type} has no `{field}`: {example}"));
            assert!(
                contract::check(&without).is_err(),
                "{record_type} passes without `{field}`"
            );
            without[format!("{field}_renamed")] = value;
            assert!(
                contract::check(&without).is_err(),
                "{record_type}: `{field}` renamed"
            );
        }
    }
}

/// `memstall oom --json` writes the same records: the contract holds for them too.
#[test]
fn memstall_oom_records_hold_to_the_contract() {
    let oom = MemCgroup::create("contract-postmortem", 32 * MIB).unwrap();
    run_to_oom_kill(&["--cgroup", oom.path.to_str().unwrap(), "--anon-mib", "128"]);
    let out = Command::new(memstall_bin())
        .args(["oom", "--json", "-", "--cgroup", oom.path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let records = parse_json_lines(&String::from_utf8_lossy(&out.stdout)).unwrap();
    let kills: Vec<&Value> = records.iter().filter(|r| r["type"] == "oom_kill").collect();
    assert_eq!(kills.len(), 1, "{records:#?}");
    assert_eq!(kills[0]["source"], "kernel_log");
    assert_eq!(records.last().unwrap()["type"], "run_end");
}

/// The README's "JSON contract" section, one bullet per record type.
fn contract_bullets(readme: &Path) -> Vec<String> {
    let text = fs::read_to_string(readme).unwrap();
    let start = text
        .find("### JSON contract")
        .expect("a JSON contract section");
    let section = &text[start..];
    let section = &section[..section[3..].find("\n#").map_or(section.len(), |at| at + 3)];
    let mut bullets: Vec<String> = Vec::new();
    for line in section.lines() {
        if let Some(item) = line.strip_prefix("- ") {
            bullets.push(item.to_owned());
        } else if let (Some(last), true) = (bullets.last_mut(), line.starts_with("  ")) {
            last.push(' ');
            last.push_str(line.trim());
        }
    }
    bullets
}

/// Every field of every contract struct is named in the README bullet of its record type
/// (fields of every summary record may be in the bullet that covers them all).
#[test]
fn readme_lists_every_contract_field() {
    let bullets = contract_bullets(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"));
    let bullet = |prefix: &str| -> &str {
        bullets
            .iter()
            .find(|b| b.starts_with(prefix))
            .unwrap_or_else(|| panic!("no README bullet starting {prefix:?}: {bullets:#?}"))
    };
    let period = bullet("Every summary record");
    let mut undocumented = Vec::new();
    for (owner, fields) in contract::documented_structs() {
        let text = match owner {
            "stall" => bullet("stalls, `type` = the kind").to_owned(),
            "labels" => bullet("`labels`").to_owned(),
            "oom_kill" | "run_end" | "kill" | "oom_risk" => {
                bullet(&format!("`type: \"{owner}\"`")).to_owned()
            }
            summary => format!("{} {period}", bullet(&format!("`type: \"{summary}\"`"))),
        };
        for field in fields {
            if !text.contains(&format!("`{field}`")) {
                undocumented.push(format!("{owner}.{field}"));
            }
        }
    }
    assert!(
        undocumented.is_empty(),
        "fields the contract holds memstall to, missing from the README: {undocumented:?}"
    );
    for record_type in contract::RECORD_TYPES {
        assert!(
            period.contains(&format!("`{record_type}`"))
                || bullets
                    .iter()
                    .any(|b| b.starts_with(&format!("`type: \"{record_type}\"`"))),
            "{record_type} has no README bullet"
        );
    }
}
