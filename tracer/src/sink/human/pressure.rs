//! The PRESSURE table: each cgroup's stall time with the share of each cause, the kernel's
//! PSI beside it.
use std::io::{self, Write};

use crate::{aggregate::Summary, sink::Ms, term::escape};

pub fn write_pressure(out: &mut impl Write, summary: &Summary) -> io::Result<()> {
    if summary.pressure.is_empty() {
        return Ok(());
    }
    writeln!(
        out,
        "{:<40} {:>11} {:>6}  {:<44} {:>11} {:>11}",
        "CGROUP (PRESSURE)",
        "STALL",
        "TASKS",
        "CAUSES (share of the stall)",
        "PSI SOME",
        "PSI FULL"
    )?;
    let psi = |ns: Option<u64>| ns.map_or("-".to_owned(), |ns| Ms(ns).to_string());
    for row in &summary.pressure {
        let mut causes: Vec<(&str, u64)> = row.by_cause.iter().map(|(k, v)| (*k, *v)).collect();
        causes.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        let causes: Vec<String> = causes
            .iter()
            .map(|(kind, ns)| {
                format!(
                    "{kind} {:.0} %",
                    *ns as f64 * 100.0 / row.stall_ns.max(1) as f64
                )
            })
            .collect();
        writeln!(
            out,
            "{:<40} {:>11} {:>6}  {:<44} {:>11} {:>11}",
            escape(&row.cgroup),
            Ms(row.stall_ns).to_string(),
            row.tasks,
            if causes.is_empty() {
                "-".to_owned()
            } else {
                causes.join(", ")
            },
            psi(row.psi_some_ns),
            psi(row.psi_full_ns),
        )?;
        if !row.shrinkers.is_empty() {
            let shrinkers: Vec<String> = row
                .shrinkers
                .iter()
                .map(|(name, ns)| format!("{} {}", escape(name), Ms(*ns)))
                .collect();
            writeln!(out, "    shrinkers: {}", shrinkers.join(", "))?;
        }
    }
    if summary.pressure.iter().any(|r| r.psi_some_ns.is_some()) {
        writeln!(
            out,
            "(PSI weighs each CPU's stall time by how busy the CPU was: read it beside STALL, not as the same figure)"
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::aggregate::PressureRow;

    #[test]
    fn shares_add_up_and_psi_sits_beside() {
        let summary = Summary {
            pressure: vec![PressureRow {
                cgroup: "/svc".into(),
                stall_ns: 200_000_000,
                by_cause: BTreeMap::from([
                    ("memcg_reclaim", 150_000_000),
                    ("throttled", 50_000_000),
                ]),
                tasks: 1,
                shrinkers: BTreeMap::from([("super_cache_scan".into(), 1_000_000)]),
                psi_some_ns: Some(120_000_000),
                psi_full_ns: None,
                psi_source: Some("memory.pressure"),
            }],
            ..Summary::default()
        };
        let mut out = Vec::new();
        write_pressure(&mut out, &summary).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("memcg_reclaim 75 %, throttled 25 %"),
            "{text}"
        );
        assert!(text.contains("200 ms") && text.contains("120 ms"), "{text}");
        assert!(
            text.contains("shrinkers: super_cache_scan 1.0 ms"),
            "{text}"
        );
        assert!(text.contains("PSI weighs"), "{text}");
    }
}
