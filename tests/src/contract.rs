//! The JSON contract (README "JSON contract"): one typed struct per record type memstall
//! writes. Every documented field is required (a key that may be `null` is [`Nullable`], not
//! a missing-means-`None` `Option`); fields memstall leaves out when empty are `#[serde(default)]`;
//! closed sets are enums, so a renamed value fails as a renamed key does. Unknown keys are
//! allowed: fields are added, never renamed.
use std::collections::BTreeMap;

use anyhow::{Context as _, Result, bail};
use memstall_common::StallKind;
use serde::{Deserialize, Deserializer, de::DeserializeOwned};
use serde_json::Value;

/// A key that is always there and may be `null`. (serde takes a missing `Option` field for
/// `None`; this type makes a missing key an error.)
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Nullable<T>(pub Option<T>);

impl<'de, T: DeserializeOwned> Deserialize<'de> for Nullable<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Through a Value: a missing key reaches deserialize_any and fails, where
        // Option::deserialize would have been handed a None.
        let value = Value::deserialize(deserializer)?;
        if value.is_null() {
            return Ok(Self(None));
        }
        T::deserialize(value)
            .map(|v| Self(Some(v)))
            .map_err(serde::de::Error::custom)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Interval,
    Total,
    Removed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KillSource {
    TpBtf,
    Tracepoint,
    KernelLog,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReportSource {
    KernelLog,
    Snapshot,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Constraint {
    Memcg,
    Global,
    Cpuset,
    Mempolicy,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ThrottleReason {
    Writeback,
    Isolated,
    Noprogress,
    Congested,
    Unknown,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LatencyKind {
    Charge,
    PageFault,
}

/// The kinds of kernel-side diagnostic (`run_end.diagnostics` keys).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Diagnostic {
    EndWithoutBegin,
    InFlightFull,
    TasksFull,
    TaskReadFailed,
    StackIdFailed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    Containerd,
    Crio,
    Docker,
}

/// `labels`, `victim_labels`: empty fields are left out.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct Labels {
    #[serde(default)]
    pub qos: Option<String>,
    #[serde(default)]
    pub pod_uid: Option<String>,
    #[serde(default)]
    pub pod: Option<String>,
    #[serde(default)]
    pub container_id: Option<String>,
    #[serde(default)]
    pub runtime: Option<Runtime>,
    #[serde(default)]
    pub unit: Option<String>,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub container: Option<String>,
}

/// A stall; its `type` is the kind (`direct_reclaim`, `memcg_reclaim`, ...).
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct Stall {
    pub time_ns: u64,
    pub latency_ns: u64,
    pub cgroup: Nullable<String>,
    pub pid: u32,
    pub tgid: u32,
    pub comm: String,
    pub pages: u64,
    pub pages_scanned: u64,
    pub passes: u32,
    #[serde(default)]
    pub order: Option<i32>,
    pub gfp_flags: u64,
    #[serde(default)]
    pub nid: Option<i32>,
    #[serde(default)]
    pub reason: Option<ThrottleReason>,
    #[serde(default)]
    pub shrinker: Option<String>,
    #[serde(default)]
    pub retries: Option<u32>,
    #[serde(default)]
    pub kernel_stack: Vec<String>,
    #[serde(default)]
    pub user_stack: Vec<String>,
    #[serde(default)]
    pub labels: Option<Labels>,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct ReclaimBefore {
    pub window_ns: u64,
    pub stalls: u64,
    pub stall_ns: u64,
    pub pages_scanned: u64,
    pub pages_reclaimed: u64,
}

/// One scoreboard row.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct Candidate {
    pub pid: u32,
    pub comm: String,
    pub points: Nullable<i64>,
    pub exempt: bool,
    pub oom_score_adj: i32,
    pub rss_kb: u64,
    pub anon_kb: Nullable<u64>,
    pub file_kb: Nullable<u64>,
    pub shmem_kb: Nullable<u64>,
    pub swap_kb: u64,
    pub pgtables_kb: u64,
    pub victim: bool,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct OomKill {
    pub time_ns: u64,
    pub cgroup: Nullable<String>,
    pub pid: u32,
    pub tgid: u32,
    pub comm: String,
    pub victim_pid: u32,
    pub victim_tgid: u32,
    pub victim_comm: String,
    pub victim_cgroup: Nullable<String>,
    pub victim_uid: Nullable<u32>,
    pub anon_rss_kb: u64,
    pub file_rss_kb: u64,
    pub shmem_rss_kb: u64,
    pub pgtables_kb: u64,
    pub total_vm_kb: u64,
    pub swap_entries: Nullable<u64>,
    pub oom_score_adj: i32,
    pub source: KillSource,
    pub constraint: Nullable<Constraint>,
    pub oom_cgroup: Nullable<String>,
    pub points: Nullable<i64>,
    pub oom_score: Nullable<i64>,
    pub exact: bool,
    pub totalpages: Nullable<u64>,
    pub limit_kb: Nullable<u64>,
    pub usage_kb: Nullable<u64>,
    /// kB per memory.stat item (`anon`, `file`, `shmem`, ...).
    pub breakdown: BTreeMap<String, u64>,
    pub reclaimable_kb: u64,
    pub unreclaimable_kb: u64,
    pub culprit: String,
    pub scoreboard: Vec<Candidate>,
    pub report: ReportSource,
    pub reclaim_before: Nullable<ReclaimBefore>,
    pub killer: Killer,
    pub trigger_kernel_stack: Vec<String>,
    pub trigger_user_stack: Vec<String>,
    pub freed_kb: Nullable<u64>,
    #[serde(default)]
    pub freed_note: Option<String>,
    #[serde(default)]
    pub labels: Option<Labels>,
    #[serde(default)]
    pub victim_labels: Option<Labels>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Killer {
    KernelOom,
    Oomd,
    SystemdOomd,
    Kubelet,
    Earlyoom,
    CgroupKill,
    Process,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Confidence {
    Certain,
    High,
    Inferred,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KillMethod {
    OomKiller,
    Kill,
    ThreadKill,
    CgroupKill,
    Kernel,
}

/// `type: "kill"`: a SIGKILL to a watched task and who sent it.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct Kill {
    pub time_ns: u64,
    pub cgroup: Nullable<String>,
    pub pid: u32,
    pub tgid: u32,
    pub comm: String,
    pub sender_pid: u32,
    pub sender_tgid: u32,
    pub sender_comm: String,
    pub sender_process: String,
    pub sender_cgroup: Nullable<String>,
    #[serde(default)]
    pub sender_exe: Option<String>,
    pub signal: u32,
    pub killer: Killer,
    pub confidence: Confidence,
    pub method: KillMethod,
    pub evidence: Vec<String>,
    pub anon_rss_kb: u64,
    pub file_rss_kb: u64,
    pub shmem_rss_kb: u64,
    pub swap_entries: u64,
    pub usage_kb: Nullable<u64>,
    pub freed_kb: Nullable<u64>,
    #[serde(default)]
    pub freed_note: Option<String>,
    #[serde(default)]
    pub labels: Option<Labels>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RiskReason {
    Eta,
    Headroom,
    Cleared,
}

/// `type: "oom_risk"`: a watched cgroup heading for its limit.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct OomRisk {
    pub cgroup: String,
    pub time_ns: u64,
    pub eta_s: Nullable<f64>,
    pub headroom_kb: u64,
    pub reason: RiskReason,
    pub usage_kb: u64,
    pub limit_kb: u64,
    pub reclaimable_kb: u64,
    pub growth_kb_per_s: f64,
    pub signals: Vec<String>,
    pub next_victim_pid: Nullable<u32>,
    pub next_victim_comm: Nullable<String>,
    pub next_victim_points: Nullable<i64>,
    pub next_victim_freeable_kb: Nullable<u64>,
    pub next_victim_shmem_kb: Nullable<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub enum PsiSource {
    #[serde(rename = "memory.pressure")]
    MemoryPressure,
    #[serde(rename = "/proc/pressure/memory")]
    ProcPressureMemory,
}

/// `type: "pressure"`: a cgroup's stall time by cause over a period, PSI beside it.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct Pressure {
    pub scope: Scope,
    pub time_ns: u64,
    pub period_ns: u64,
    pub dropped: u64,
    pub incomplete: bool,
    pub cgroup: String,
    pub stall_ns: u64,
    /// Stall kind name → ns.
    pub by_cause: BTreeMap<String, u64>,
    pub tasks: u64,
    #[serde(default)]
    pub shrinkers: BTreeMap<String, u64>,
    pub psi_some_ns: Nullable<u64>,
    pub psi_full_ns: Nullable<u64>,
    pub psi_source: Nullable<PsiSource>,
    #[serde(default)]
    pub labels: Option<Labels>,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct Bucket {
    pub low_us: u64,
    pub high_us: u64,
    pub count: u64,
}

/// `type: "summary"`: one cgroup and stall kind over a period.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct Summary {
    pub scope: Scope,
    pub time_ns: u64,
    pub period_ns: u64,
    pub dropped: u64,
    pub incomplete: bool,
    pub cgroup: String,
    pub kind: String,
    pub count: u64,
    pub total_ns: u64,
    pub p50_ns: u64,
    pub p90_ns: u64,
    pub p99_ns: u64,
    pub p999_ns: u64,
    pub max_ns: u64,
    pub pages_reclaimed: u64,
    pub pages_scanned: u64,
    #[serde(default)]
    pub retries: Option<u64>,
    pub buckets: Vec<Bucket>,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct Faults {
    pub scope: Scope,
    pub time_ns: u64,
    pub period_ns: u64,
    pub dropped: u64,
    pub incomplete: bool,
    pub cgroup: String,
    pub minor: u64,
    pub major: u64,
    pub minor_per_s: f64,
    pub major_per_s: f64,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct MemcgPages {
    pub scope: Scope,
    pub time_ns: u64,
    pub period_ns: u64,
    pub dropped: u64,
    pub incomplete: bool,
    pub cgroup: String,
    pub scanned_direct: u64,
    pub reclaimed_direct: u64,
    pub scanned_kswapd: u64,
    pub reclaimed_kswapd: u64,
    pub efficiency: Nullable<f64>,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct KswapdWakeups {
    pub scope: Scope,
    pub time_ns: u64,
    pub period_ns: u64,
    pub dropped: u64,
    pub incomplete: bool,
    pub cgroup: String,
    pub count: u64,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct Kswapd {
    pub scope: Scope,
    pub time_ns: u64,
    pub period_ns: u64,
    pub dropped: u64,
    pub incomplete: bool,
    pub awake_ns: u64,
    pub wakes: u64,
    pub runs: u64,
    pub pages_scanned: u64,
    pub pages_reclaimed: u64,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct LatencyBucket {
    pub low_ns: u64,
    pub high_ns: u64,
    pub count: u64,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct Latency {
    pub scope: Scope,
    pub time_ns: u64,
    pub period_ns: u64,
    pub dropped: u64,
    pub incomplete: bool,
    pub cgroup: String,
    pub kind: LatencyKind,
    pub count: u64,
    pub total_ns: u64,
    pub failed: u64,
    pub p50_ns: u64,
    pub p99_ns: u64,
    pub max_ns: u64,
    pub buckets: Vec<LatencyBucket>,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct RunEnd {
    pub time_ns: u64,
    pub duration_ns: u64,
    pub records: u64,
    pub events: u64,
    pub stalls: u64,
    pub dropped: u64,
    /// Stalls lost per kind (the histograms miss them).
    pub dropped_stalls: BTreeMap<String, u64>,
    pub malformed: u64,
    pub hooks: Vec<String>,
    /// Every kind with its count, zeros included (empty without a kernel side).
    pub diagnostics: BTreeMap<Diagnostic, u64>,
    /// Stall windows the kernel lost, per kind that lost any.
    pub lost_windows: BTreeMap<String, u64>,
}

/// Every record type of the contract but the stall kinds (one `Stall` each; see
/// [`is_stall_kind`]).
pub const RECORD_TYPES: &[&str] = &[
    "oom_kill",
    "kill",
    "oom_risk",
    "pressure",
    "summary",
    "faults",
    "memcg_pages",
    "kswapd_wakeups",
    "kswapd",
    "latency",
    "run_end",
];

pub fn is_stall_kind(name: &str) -> bool {
    StallKind::ALL.iter().any(|k| k.name() == name)
}

fn typed<T: DeserializeOwned>(value: &Value) -> Result<T> {
    Ok(T::deserialize(value)?)
}

/// Whether `value` is a record of the contract, typed; `Ok(false)` for a type the contract
/// does not know (the contract test fails on those; other tests let them by).
pub fn check_known(value: &Value) -> Result<bool> {
    let kind = value["type"].as_str().context("no string `type`")?;
    match kind {
        "oom_kill" => {
            let kill: OomKill = typed(value)?;
            if kill.scoreboard.iter().filter(|c| c.victim).count() > 1 {
                bail!("more than one victim on the scoreboard");
            }
        }
        "kill" => {
            let kill: Kill = typed(value)?;
            if kill.signal != 9 {
                bail!("a kill record of signal {}", kill.signal);
            }
        }
        "oom_risk" => {
            typed::<OomRisk>(value)?;
        }
        "pressure" => {
            let row: Pressure = typed(value)?;
            if let Some(cause) = row.by_cause.keys().find(|c| !is_stall_kind(c)) {
                bail!("pressure of an unknown cause {cause}");
            }
            let sum = row
                .by_cause
                .values()
                .fold(0u64, |a, b| a.saturating_add(*b));
            if sum != row.stall_ns {
                bail!("by_cause adds up to {sum}, stall_ns is {}", row.stall_ns);
            }
        }
        "summary" => {
            let row: Summary = typed(value)?;
            if !is_stall_kind(&row.kind) {
                bail!("summary of an unknown stall kind {}", row.kind);
            }
        }
        "faults" => {
            typed::<Faults>(value)?;
        }
        "memcg_pages" => {
            typed::<MemcgPages>(value)?;
        }
        "kswapd_wakeups" => {
            typed::<KswapdWakeups>(value)?;
        }
        "kswapd" => {
            typed::<Kswapd>(value)?;
        }
        "latency" => {
            typed::<Latency>(value)?;
        }
        "run_end" => {
            let end: RunEnd = typed(value)?;
            let by_kind = [
                ("dropped_stalls", &end.dropped_stalls),
                ("lost_windows", &end.lost_windows),
            ];
            for (field, map) in by_kind {
                if let Some(kind) = map.keys().find(|k| !is_stall_kind(k)) {
                    bail!("{field} of an unknown stall kind {kind}");
                }
            }
        }
        stall if is_stall_kind(stall) => {
            let stall_record: Stall = typed(value)?;
            if (stall == "throttled") != stall_record.reason.is_some() {
                bail!("`reason` belongs to throttled stalls, and they always carry one");
            }
        }
        _ => return Ok(false),
    }
    Ok(true)
}

/// [`check_known`], letting records of types the contract does not know by.
pub fn check(value: &Value) -> Result<()> {
    check_known(value).map(|_| ())
}

/// Every struct of the contract by the README bullet that documents it: record types by
/// their `type` (`stall` for the stall kinds), nested objects by the record they sit in.
pub fn documented_structs() -> Vec<(&'static str, &'static [&'static str])> {
    vec![
        ("oom_kill", field_names::<OomKill>()),
        ("oom_kill", field_names::<Candidate>()),
        ("oom_kill", field_names::<ReclaimBefore>()),
        ("kill", field_names::<Kill>()),
        ("oom_risk", field_names::<OomRisk>()),
        ("pressure", field_names::<Pressure>()),
        ("stall", field_names::<Stall>()),
        ("summary", field_names::<Summary>()),
        ("summary", field_names::<Bucket>()),
        ("faults", field_names::<Faults>()),
        ("memcg_pages", field_names::<MemcgPages>()),
        ("kswapd_wakeups", field_names::<KswapdWakeups>()),
        ("kswapd", field_names::<Kswapd>()),
        ("latency", field_names::<Latency>()),
        ("latency", field_names::<LatencyBucket>()),
        ("run_end", field_names::<RunEnd>()),
        ("labels", field_names::<Labels>()),
    ]
}

/// The record types whose every field must be there; the rest may be left out when empty.
pub fn required_fields(record_type: &str) -> Vec<&'static str> {
    let (fields, optional): (&[&str], &[&str]) = match record_type {
        "oom_kill" => (
            field_names::<OomKill>(),
            &["labels", "victim_labels", "freed_note"],
        ),
        "kill" => (
            field_names::<Kill>(),
            &["sender_exe", "freed_note", "labels"],
        ),
        "oom_risk" => (field_names::<OomRisk>(), &[]),
        "pressure" => (field_names::<Pressure>(), &["shrinkers", "labels"]),
        "summary" => (field_names::<Summary>(), &["retries"]),
        "faults" => (field_names::<Faults>(), &[]),
        "memcg_pages" => (field_names::<MemcgPages>(), &[]),
        "kswapd_wakeups" => (field_names::<KswapdWakeups>(), &[]),
        "kswapd" => (field_names::<Kswapd>(), &[]),
        "latency" => (field_names::<Latency>(), &[]),
        "run_end" => (field_names::<RunEnd>(), &[]),
        stall if is_stall_kind(stall) => (
            field_names::<Stall>(),
            &[
                "order",
                "nid",
                "reason",
                "shrinker",
                "retries",
                "kernel_stack",
                "user_stack",
                "labels",
            ],
        ),
        _ => (&[], &[]),
    };
    fields
        .iter()
        .copied()
        .filter(|f| !optional.contains(f))
        .collect()
}

/// The field names a derived `Deserialize` struct asks for (serde hands them to
/// `deserialize_struct`): the README must document each.
pub fn field_names<T: DeserializeOwned>() -> &'static [&'static str] {
    struct Grab(Option<&'static [&'static str]>);
    #[derive(Debug)]
    struct Stop;
    impl std::fmt::Display for Stop {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("field names taken")
        }
    }
    impl std::error::Error for Stop {}
    impl serde::de::Error for Stop {
        fn custom<M: std::fmt::Display>(_: M) -> Self {
            Stop
        }
    }
    impl<'de> Deserializer<'de> for &mut Grab {
        type Error = Stop;
        fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
            Err(Stop)
        }
        fn deserialize_struct<V: serde::de::Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Stop> {
            self.0 = Some(fields);
            Err(Stop)
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
            option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
            ignored_any
        }
    }
    let mut grab = Grab(None);
    let _ = T::deserialize(&mut grab);
    grab.0.expect("a struct with named fields")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn stall() -> Value {
        json!({"type": "memcg_reclaim", "time_ns": 1, "latency_ns": 2, "cgroup": null, "pid": 3,
               "tgid": 3, "comm": "x", "pages": 4, "pages_scanned": 5, "passes": 1,
               "gfp_flags": 0, "order": 0})
    }

    #[test]
    fn a_missing_nullable_key_fails_where_null_passes() {
        check(&stall()).unwrap();
        let mut missing = stall();
        missing.as_object_mut().unwrap().remove("cgroup");
        let err = format!("{:#}", check(&missing).unwrap_err());
        assert!(err.contains("missing field `cgroup`"), "{err}");
        let mut renamed = stall();
        renamed["latency"] = renamed["latency_ns"].take();
        renamed.as_object_mut().unwrap().remove("latency_ns");
        assert!(check(&renamed).is_err());
    }

    #[test]
    fn closed_sets_and_unknown_types() {
        let mut throttled = stall();
        throttled["type"] = "throttled".into();
        assert!(check(&throttled).is_err(), "throttled without a reason");
        throttled["reason"] = "isolated".into();
        check(&throttled).unwrap();
        throttled["reason"] = "bored".into();
        assert!(check(&throttled).is_err());
        assert!(!check_known(&json!({"type": "something_new"})).unwrap());
        assert!(check(&json!({"no_type": 1})).is_err());
    }

    #[test]
    fn field_names_come_from_the_structs() {
        assert_eq!(
            field_names::<Bucket>(),
            ["low_us", "high_us", "count"].as_slice()
        );
        assert!(field_names::<OomKill>().contains(&"reclaim_before"));
    }
}
