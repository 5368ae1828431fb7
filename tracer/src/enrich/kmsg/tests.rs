//! Parser tests on real and synthetic kernel logs.
use super::{
    oom_report::{KilledProcess, parse_killed, parse_oom_kill, parse_task},
    *,
};

/// One record per line, timestamps 1 µs apart starting at `usec`.
fn records(usec: u64, text: &str) -> Vec<KmsgRecord> {
    text.lines()
        .enumerate()
        .map(|(i, line)| KmsgRecord {
            seq: i as u64,
            usec: usec + i as u64,
            message: line.to_owned(),
        })
        .collect()
}

const REAL_V1: &str = "\
memhog invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0
CPU: 0 UID: 0 PID: 25018 Comm: memhog Not tainted 6.18.44-fc-v669 #1 PREEMPT(none) 
Call Trace:
 <TASK>
 dump_stack_lvl+0x57/0x80
 dump_header+0x43/0x1c0
 asm_exc_page_fault+0x22/0x30
RIP: 0033:0x55675272c38b
 </TASK>
memory: usage 32768kB, limit 32768kB, failcnt 0
memory+swap: usage 32768kB, limit 32768kB, failcnt 0
kmem: usage 68kB, limit 9007199254740988kB, failcnt 0
Memory cgroup stats for /memstall-test-oom-25006-0:
cache 0
rss 33484800
shmem 0
mapped_file 0
swap 0
inactive_anon 33382400
active_anon 0
inactive_file 0
active_file 0
unevictable 0
hierarchical_memory_limit 33554432
total_inactive_anon 33382400
Tasks state (memory values in pages):
[  pid  ]   uid  tgid total_vm      rss rss_anon rss_file rss_shmem pgtables_bytes swapents oom_score_adj name
[  25018]     0 25018    33926     9022     8224      798         0   114688        0             0 memhog
oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/memstall-test-oom-25006-0,task_memcg=/memstall-test-oom-25006-0,task=memhog,pid=25018,uid=0
Memory cgroup out of memory: Killed process 25018 (memhog) total-vm:135704kB, anon-rss:32896kB, file-rss:3192kB, shmem-rss:0kB, UID:0 pgtables:112kB oom_score_adj:0";

fn real_v1_expected() -> OomReport {
    let stats = [
        ("cache", 0),
        ("rss", 33484800),
        ("shmem", 0),
        ("mapped_file", 0),
        ("swap", 0),
        ("inactive_anon", 33382400),
        ("active_anon", 0),
        ("inactive_file", 0),
        ("active_file", 0),
        ("unevictable", 0),
        ("hierarchical_memory_limit", 33554432),
        ("total_inactive_anon", 33382400),
    ];
    OomReport {
        usec: 1_508_728_069,
        trigger_comm: "memhog".into(),
        gfp_mask: Some("0xcc0(GFP_KERNEL)".into()),
        order: Some(0),
        trigger_oom_score_adj: Some(0),
        trigger_pid: Some(25018),
        constraint: Some("CONSTRAINT_MEMCG".into()),
        global_oom: false,
        oom_memcg: Some("/memstall-test-oom-25006-0".into()),
        task_memcg: Some("/memstall-test-oom-25006-0".into()),
        victim_pid: Some(25018),
        victim_comm: Some("memhog".into()),
        victim_uid: Some(0),
        memory_usage_kb: Some(32768),
        memory_limit_kb: Some(32768),
        memory_failcnt: Some(0),
        swap_usage_kb: Some(32768),
        swap_limit_kb: Some(32768),
        memcg_stats_path: Some("/memstall-test-oom-25006-0".into()),
        memcg_stats: stats.iter().map(|&(k, v)| (k.to_owned(), v)).collect(),
        tasks: vec![OomTask {
            pid: 25018,
            uid: 0,
            tgid: 25018,
            total_vm_pages: 33926,
            rss_pages: 9022,
            rss_anon_pages: Some(8224),
            rss_file_pages: Some(798),
            rss_shmem_pages: Some(0),
            pgtables_bytes: 114688,
            swapents: 0,
            oom_score_adj: 0,
            name: "memhog".into(),
        }],
        killed: Some(KilledProcess {
            pid: 25018,
            comm: "memhog".into(),
            total_vm_kb: 135704,
            anon_rss_kb: 32896,
            file_rss_kb: 3192,
            shmem_rss_kb: 0,
            uid: 0,
            pgtables_kb: 112,
            oom_score_adj: 0,
        }),
    }
}

#[test]
fn real_v1_memcg_report() {
    let recs = records(1_508_728_069, REAL_V1);
    let mut parser = OomReportParser::new();
    let mut out = Vec::new();
    for (i, r) in recs.iter().enumerate() {
        let got = parser.push(r);
        // Complete exactly at the Killed line, not before.
        assert_eq!(got.is_some(), i + 1 == recs.len(), "record {i}");
        out.extend(got);
    }
    assert_eq!(parser.finish(), None);
    assert_eq!(out, vec![real_v1_expected()]);
    assert!(serde_json::to_string(&out[0]).is_ok());
}

#[test]
fn stats_block_as_one_escaped_record() {
    // Older kernels: the whole memory.stat text in one record after the "stats for" line.
    let mut raw: Vec<String> = Vec::new();
    let mut in_stats = false;
    for (i, line) in REAL_V1.lines().enumerate() {
        if in_stats
            && !line.starts_with("Tasks")
            && let Some(prev) = raw.last_mut()
        {
            prev.push_str("\\x0a");
            prev.push_str(line);
            continue;
        }
        in_stats = false;
        raw.push(format!("6,{i},{},-;{line}", 1_508_728_069 + i));
        if line.starts_with("Memory cgroup stats for") {
            in_stats = true;
            raw.push(format!("6,{i},{},-;", 1_508_728_069 + i));
        }
    }
    assert!(
        raw.iter()
            .any(|r| r.contains(";\\x0acache 0\\x0arss 33484800\\x0a"))
    );
    let recs: Vec<KmsgRecord> = raw
        .iter()
        .map(|r| parse_record(format!("{r}\n SUBSYSTEM=memory\n").as_bytes()))
        .collect::<Option<_>>()
        .expect("all records parse");
    assert_eq!(parse_reports(&recs), vec![real_v1_expected()]);
}

#[test]
fn old_task_table_without_rss_split_and_names_with_spaces() {
    let text = "\
Web Content invoked oom-killer: gfp_mask=0x140cca(GFP_HIGHUSER_MOVABLE|__GFP_COMP), order=0, oom_score_adj=300
CPU: 3 PID: 4242 Comm: Web Content Not tainted 6.1.0-18-amd64 #1 Debian 6.1.76-1
Tasks state (memory values in pages):
[  pid  ]   uid  tgid total_vm      rss pgtables_bytes swapents oom_score_adj name
[    812]  1000   812   612345   123456  2400000        7           300 Web Content
[    900]  1000   900    10000      500    65536        0          -900 sd-pam
[  12345] 65534 12345     1000       10     4096        0         -1000 (sd-pam) x
[  bogus]     0     0        0        0        0        0             0 skipped
oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),cpuset=/,mems_allowed=0,global_oom,task_memcg=/user.slice,task=Web Content,pid=812,uid=1000
Out of memory: Killed process 812 (Web Content) total-vm:2449380kB, anon-rss:493824kB, file-rss:0kB, shmem-rss:0kB, UID:1000 pgtables:2343kB oom_score_adj:300";
    let reports = parse_reports(&records(5, text));
    assert_eq!(reports.len(), 1);
    let r = &reports[0];
    assert_eq!(r.trigger_comm, "Web Content");
    assert_eq!(r.trigger_pid, Some(4242));
    assert_eq!(r.trigger_oom_score_adj, Some(300));
    assert_eq!(
        r.gfp_mask.as_deref(),
        Some("0x140cca(GFP_HIGHUSER_MOVABLE|__GFP_COMP)")
    );
    assert_eq!(r.victim_comm.as_deref(), Some("Web Content"));
    assert_eq!(r.tasks.len(), 3);
    assert_eq!(
        r.tasks[0],
        OomTask {
            pid: 812,
            uid: 1000,
            tgid: 812,
            total_vm_pages: 612345,
            rss_pages: 123456,
            rss_anon_pages: None,
            rss_file_pages: None,
            rss_shmem_pages: None,
            pgtables_bytes: 2400000,
            swapents: 7,
            oom_score_adj: 300,
            name: "Web Content".into(),
        }
    );
    assert_eq!(r.tasks[1].oom_score_adj, -900);
    assert_eq!(r.tasks[2].uid, 65534);
    assert_eq!(r.tasks[2].name, "(sd-pam) x");
    let killed = r.killed.as_ref().expect("killed");
    assert_eq!((killed.pid, killed.comm.as_str()), (812, "Web Content"));
    assert_eq!(
        (killed.uid, killed.pgtables_kb, killed.oom_score_adj),
        (1000, 2343, 300)
    );
}

#[test]
fn cgroup_v2_memcg_report_with_stats_in_one_record() {
    let stats = "anon 33280000\nfile 4096\nkernel 512000\nshmem 0\nfile_mapped 0\n\
                 inactive_anon 33000000\nactive_file 0\ninactive_file 4096\nslab 20000\npgfault 8000\n";
    let mut recs = records(
        100,
        "\
python3 invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0
CPU: 1 UID: 1000 PID: 777 Comm: python3 Not tainted 6.8.0 #1
memory: usage 32768kB, limit 32768kB, failcnt 12
swap: usage 0kB, limit 0kB, failcnt 0
Memory cgroup stats for /a/b:",
    );
    recs.push(KmsgRecord {
        seq: 9,
        usec: 200,
        message: stats.to_owned(),
    });
    recs.extend(records(
        300,
        "\
Tasks state (memory values in pages):
[  pid  ]   uid  tgid total_vm      rss rss_anon rss_file rss_shmem pgtables_bytes swapents oom_score_adj name
[    777]  1000   777    20000     8200     8125       75         0    98304        0             0 python3
oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0-1,oom_memcg=/a/b,task_memcg=/a/b/c,task=python3,pid=777,uid=1000
Memory cgroup out of memory: Killed process 777 (python3) total-vm:80000kB, anon-rss:32500kB, file-rss:300kB, shmem-rss:0kB, UID:1000 pgtables:96kB oom_score_adj:0",
    ));
    let reports = parse_reports(&recs);
    assert_eq!(reports.len(), 1);
    let r = &reports[0];
    assert_eq!(r.usec, 100);
    assert_eq!(r.trigger_pid, Some(777));
    assert_eq!(
        (r.memory_usage_kb, r.memory_limit_kb, r.memory_failcnt),
        (Some(32768), Some(32768), Some(12))
    );
    assert_eq!((r.swap_usage_kb, r.swap_limit_kb), (Some(0), Some(0)));
    assert_eq!(r.memcg_stats_path.as_deref(), Some("/a/b"));
    assert_eq!(r.memcg_stats.len(), 10);
    assert_eq!(r.memcg_stats.get("anon"), Some(&33280000));
    assert_eq!(r.memcg_stats.get("pgfault"), Some(&8000));
    assert_eq!(r.constraint.as_deref(), Some("CONSTRAINT_MEMCG"));
    assert!(!r.global_oom);
    assert_eq!(r.oom_memcg.as_deref(), Some("/a/b"));
    assert_eq!(r.task_memcg.as_deref(), Some("/a/b/c"));
    assert_eq!((r.victim_pid, r.victim_uid), (Some(777), Some(1000)));
    assert_eq!(r.tasks.len(), 1);
    assert_eq!(r.tasks[0].rss_anon_pages, Some(8125));
}

const GLOBAL: &str = "\
java invoked oom-killer: gfp_mask=0x140dca(GFP_HIGHUSER_MOVABLE|__GFP_COMP|__GFP_ZERO), order=0, oom_score_adj=0
CPU: 2 UID: 1000 PID: 1240 Comm: java Not tainted 6.18.0 #1
Call Trace:
 <TASK>
 dump_stack_lvl+0x57/0x80
 </TASK>
Mem-Info:
active_anon:1200 inactive_anon:6000000 isolated_anon:0
Node 0 active_anon:4800kB inactive_anon:24000000kB active_file:0kB
Node 0 DMA free:13312kB boost:0kB min:64kB low:80kB high:96kB
lowmem_reserve[]: 0 2915 23910 23910 23910
Node 0 DMA: 0*4kB 0*8kB 0*16kB 0*32kB 0*64kB 0*128kB = 0kB
0 total pagecache pages
Free swap  = 0kB
Total swap = 0kB
6160384 pages RAM
0 pages HighMem/MovableOnly
Tasks state (memory values in pages):
[  pid  ]   uid  tgid total_vm      rss rss_anon rss_file rss_shmem pgtables_bytes swapents oom_score_adj name
[    501]     0   501    12000      300      100      200         0    65536        0         -1000 systemd-udevd
[   1234]  1000  1234  9000000  5900000  5899000     1000         0 48000000        0             0 java
oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),cpuset=/,mems_allowed=0,global_oom,task_memcg=/user.slice/x.service,task=java,pid=1234,uid=1000";

#[test]
fn global_oom_ignores_mem_info() {
    let text = format!(
        "{GLOBAL}\nOut of memory: Killed process 1234 (java) total-vm:36000000kB, anon-rss:23596000kB, file-rss:4000kB, shmem-rss:0kB, UID:1000 pgtables:46875kB oom_score_adj:0"
    );
    let reports = parse_reports(&records(7, &text));
    assert_eq!(reports.len(), 1);
    let r = &reports[0];
    assert_eq!(r.trigger_pid, Some(1240));
    assert_eq!(r.constraint.as_deref(), Some("CONSTRAINT_NONE"));
    assert!(r.global_oom);
    assert_eq!(r.oom_memcg, None);
    assert_eq!(r.task_memcg.as_deref(), Some("/user.slice/x.service"));
    assert_eq!(
        (r.victim_pid, r.victim_comm.as_deref(), r.victim_uid),
        (Some(1234), Some("java"), Some(1000))
    );
    assert_eq!(
        (
            r.memory_usage_kb,
            r.swap_usage_kb,
            r.memcg_stats_path.as_deref()
        ),
        (None, None, None)
    );
    assert!(r.memcg_stats.is_empty());
    assert_eq!(r.tasks.len(), 2);
    assert_eq!(r.tasks[1].pgtables_bytes, 48000000);
    assert_eq!(r.killed.as_ref().map(|k| k.anon_rss_kb), Some(23596000));
}

#[test]
fn killed_line_prefixes() {
    for prefix in [
        "Memory cgroup out of memory",
        "Out of memory",
        "Out of memory (oom_kill_allocating_task)",
    ] {
        let line = format!(
            "{prefix}: Killed process 1234 (a) b) total-vm:8kB, anon-rss:4kB, file-rss:2kB, shmem-rss:1kB, UID:4294967295 pgtables:3kB oom_score_adj:-17"
        );
        let killed = parse_killed(&line);
        assert_eq!(
            killed,
            Some(KilledProcess {
                pid: 1234,
                comm: "a) b".into(),
                total_vm_kb: 8,
                anon_rss_kb: 4,
                file_rss_kb: 2,
                shmem_rss_kb: 1,
                uid: u32::MAX,
                pgtables_kb: 3,
                oom_score_adj: -17,
            }),
            "{prefix}"
        );
    }
    // Pre-5.x kernels stop after shmem-rss.
    let old = parse_killed(
        "Killed process 9 (x) total-vm:8kB, anon-rss:4kB, file-rss:2kB, shmem-rss:1kB",
    );
    assert_eq!(old, None, "needs the ': ' before 'Killed'");
    let old = parse_killed(
        "Out of memory: Killed process 9 (x) total-vm:8kB, anon-rss:4kB, file-rss:2kB, shmem-rss:1kB",
    );
    assert_eq!(
        old.map(|k| (k.pid, k.shmem_rss_kb, k.pgtables_kb)),
        Some((9, 1, 0))
    );
}

#[test]
fn interleaved_records_and_report_boundaries() {
    let mut lines: Vec<String> = Vec::new();
    for line in REAL_V1.lines() {
        lines.push(line.to_owned());
        lines.push("e1000e 0000:00:1f.6 eno1: NIC Link is Up 1000 Mbps Full Duplex".into());
        lines.push("audit: type=1400 audit(1700000000.123:42): apparmor=\"DENIED\"".into());
        lines.push("[drm] GPU HANG: ecode 9:1:85dffffb".into());
        lines.push("CPU: 5 PID: 1 Comm: systemd Not tainted 6.18.44".into());
    }
    let text = lines.join("\n");
    let reports = parse_reports(&records(1_508_728_069, &text));
    assert_eq!(
        reports,
        vec![OomReport {
            ..real_v1_expected()
        }]
    );

    // An unfinished report is closed, as it is, by the next one; the last stays partial.
    let cut: Vec<&str> = REAL_V1.lines().take(12).collect();
    let text = format!("{}\n{REAL_V1}\n{}", cut.join("\n"), cut.join("\n"));
    let reports = parse_reports(&records(0, &text));
    assert_eq!(reports.len(), 3);
    assert_eq!(reports[0].killed, None);
    assert_eq!(reports[0].memory_usage_kb, Some(32768));
    assert_eq!(reports[1].killed, real_v1_expected().killed);
    assert_eq!(reports[1].usec, 12);
    assert_eq!(reports[2].killed, None);

    // A Killed line with no report before it still records the kill.
    let orphan = parse_reports(&records(
        3,
        "Memory cgroup out of memory: Killed process 5 (w) total-vm:1kB, anon-rss:1kB, file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:4kB oom_score_adj:0",
    ));
    assert_eq!(orphan.len(), 1);
    assert_eq!(
        (orphan[0].usec, orphan[0].killed.as_ref().map(|k| k.pid)),
        (3, Some(5))
    );
}

#[test]
fn oom_kill_line_with_commas_and_split_continuation() {
    let mut r = OomReport::default();
    parse_oom_kill(
        "constraint=CONSTRAINT_CPUSET,nodemask=0-1,3,cpuset=/a,b,mems_allowed=0,2,oom_memcg=/x,y,task_memcg=/x,y/z,task=a,b,pid=7,uid=-1",
        &mut r,
    );
    assert_eq!(r.constraint.as_deref(), Some("CONSTRAINT_CPUSET"));
    assert_eq!(r.oom_memcg.as_deref(), Some("/x,y"));
    assert_eq!(r.task_memcg.as_deref(), Some("/x,y/z"));
    assert_eq!(r.victim_comm.as_deref(), Some("a,b"));
    assert_eq!((r.victim_pid, r.victim_uid), (Some(7), Some(u32::MAX)));

    let text = "\
m invoked oom-killer: gfp_mask=0x0(), order=-1, oom_score_adj=0
oom-kill:constraint=CONSTRAINT_MEMORY_POLICY,nodemask=1,cpuset=/,mems_allowed=0-1
usb 1-1: new high-speed USB device number 3 using xhci_hcd
,global_oom,task_memcg=/,task=m,pid=3,uid=0";
    let reports = parse_reports(&records(0, text));
    assert_eq!(reports.len(), 1);
    let r = &reports[0];
    assert_eq!(r.order, Some(-1));
    assert_eq!(r.constraint.as_deref(), Some("CONSTRAINT_MEMORY_POLICY"));
    assert!(r.global_oom);
    assert_eq!(
        (r.task_memcg.as_deref(), r.victim_pid),
        (Some("/"), Some(3))
    );
}

#[test]
fn parse_record_raw() {
    let raw =
        b"6,1234,1508728519,-;memory: usage 32768kB, limit 32768kB, failcnt 0\n SUBSYSTEM=memory\n";
    assert_eq!(
        parse_record(raw),
        Some(KmsgRecord {
            seq: 1234,
            usec: 1508728519,
            message: "memory: usage 32768kB, limit 32768kB, failcnt 0".into(),
        })
    );
    let raw = b"6,7,8,c,caller=T12;cache 0\\x0arss 1\\x0a\\x5cx41 \\xzz \\x4\n";
    let rec = parse_record(raw).expect("record");
    assert_eq!(rec.message, "cache 0\nrss 1\n\\x41 \\xzz \\x4");
    // Escaped UTF-8 bytes come back as the character.
    let rec = parse_record(b"4,1,2,-;caf\\xc3\\xa9 \\xff").expect("record");
    assert_eq!(rec.message, "caf\u{e9} \u{fffd}");
    assert_eq!(
        parse_record(b"4,1,2,-;").map(|r| r.message),
        Some(String::new())
    );
}

#[test]
fn parse_record_garbage() {
    for raw in [
        &b""[..],
        b";",
        b"\n",
        b"hello world",
        b"6,1234;x",
        b"6,1234,99;x",
        b"x,1,2,-;msg",
        b"6,-1,2,-;msg",
        b"6,1,2\xff,-;msg",
        b"\xff\xfe;\\x",
        b"6,99999999999999999999999,1,-;x",
    ] {
        assert_eq!(parse_record(raw), None, "{raw:?}");
    }
    // Every truncation of a valid record must be handled without panicking.
    let raw = b"6,1,2,-;a\\xc3\\xa9\\x0ab\n K=V\n";
    for end in 0..=raw.len() {
        let _ = parse_record(&raw[..end]);
    }
}

#[test]
fn truncated_lines_never_panic() {
    let mut parser = OomReportParser::new();
    for line in REAL_V1.lines().chain(GLOBAL.lines()) {
        for (end, _) in line.char_indices().chain([(line.len(), ' ')]) {
            for text in [&line[..end], &line[end..]] {
                let _ = parser.push(&KmsgRecord {
                    seq: 0,
                    usec: 0,
                    message: text.into(),
                });
            }
        }
    }
    while parser.finish().is_some() {}
    let mut r = OomReport::default();
    parse_oom_kill("", &mut r);
    parse_oom_kill(",uid=,pid=,task=,task_memcg=,oom_memcg=", &mut r);
    assert_eq!(parse_task("[", &["uid".into()]), None);
    assert_eq!(parse_task("[1] -5", &["uid".into(), "tgid".into()]), None);
}

/// Exercises the real device when this process may read it (root, or dmesg_restrict=0).
#[test]
fn live_kmsg() {
    let records = match read_all() {
        Ok(records) => records,
        Err(e) => {
            crate::testing::skip(&format!("cannot read {DEV_KMSG}: {e}"));
            return;
        }
    };
    assert!(records.windows(2).all(|w| w[0].seq < w[1].seq));
    for report in parse_reports(&records) {
        assert!(serde_json::to_string(&report).is_ok());
    }
    let mut cursor = KmsgCursor::at_end().expect("cursor");
    let last = records.last().map_or(0, |r| r.seq);
    assert!(cursor.poll().expect("poll").iter().all(|r| r.seq > last));
}

const HEAD: &str = "\
memhog invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0
memory: usage 32768kB, limit 32768kB, failcnt 0
Tasks state (memory values in pages):
[  pid  ]   uid  tgid total_vm      rss rss_anon rss_file rss_shmem pgtables_bytes swapents oom_score_adj name
[  25018]     0 25018    33926     9022     8224      798         0   114688        0             0 memhog
oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/a,task_memcg=/a,task=memhog,pid=25018,uid=0";
const KILLED: &str = "Memory cgroup out of memory: Killed process 25018 (memhog) total-vm:135704kB, anon-rss:32896kB, file-rss:3192kB, shmem-rss:0kB, UID:0 pgtables:112kB oom_score_adj:0";

/// Waits for pid 25018's report in a log that holds `head` at once and `tail` from
/// `tail_after` on: (the report, how long it took).
fn wait(head: &str, tail: &str, tail_after: Duration) -> (Option<OomReport>, Duration) {
    let started = Instant::now();
    let (mut head, mut tail) = (Some(records(0, head)), Some(records(100, tail)));
    let report = await_report(
        &mut OomReportParser::new(),
        &mut VecDeque::new(),
        25018,
        || {
            let mut out = head.take().unwrap_or_default();
            if started.elapsed() >= tail_after {
                out.extend(tail.take().unwrap_or_default());
            }
            out
        },
    );
    (report, started.elapsed())
}

#[test]
fn a_begun_report_is_waited_for_past_the_short_bound() {
    // The Killed line comes well after the short wait: the whole report still counts.
    let (report, took) = wait(HEAD, KILLED, REPORT_WAIT * 3);
    let report = report.expect("the report");
    assert_eq!(report.killed.map(|k| k.total_vm_kb), Some(135704));
    assert_eq!(report.tasks.len(), 1);
    assert!(
        took >= REPORT_WAIT * 3 && took < REPORT_TAIL_WAIT,
        "{took:?}"
    );
}

#[test]
fn a_whole_report_returns_at_once_and_a_missing_one_after_the_short_bound() {
    let (report, took) = wait(&format!("{HEAD}\n{KILLED}"), "", Duration::ZERO);
    assert!(report.is_some_and(|r| r.killed.is_some()));
    assert!(took < Duration::from_millis(100), "{took:?}");
    // Nothing of this victim in the log: a snapshot it will be, after the short wait.
    let (report, took) = wait("", "", Duration::ZERO);
    assert!(report.is_none());
    assert!(took >= REPORT_WAIT && took < REPORT_WAIT * 2, "{took:?}");
    // A rate-limited report: the Killed line alone, a little after the event.
    let (report, _) = wait("", KILLED, REPORT_WAIT / 3);
    assert!(report.is_some_and(|r| r.killed.is_some() && r.tasks.is_empty()));
}

/// A report begun whose tail never comes: what there is, after the long bound.
#[test]
fn an_unfinished_report_is_used_at_the_long_bound() {
    let (report, took) = wait(HEAD, "", Duration::MAX);
    let report = report.expect("the unfinished report");
    assert!(report.killed.is_none() && report.tasks.len() == 1);
    assert!(took >= REPORT_TAIL_WAIT, "{took:?}");
}
