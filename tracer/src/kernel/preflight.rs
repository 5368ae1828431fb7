//! Checks that turn the usual set-up problems into one clear line before anything is loaded.
use std::{fs, path::Path};

use crate::error::UserError;

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Effective capabilities from /proc/self/status (`CapEff:` as hex).
pub fn effective_caps(status: &str) -> Option<u64> {
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))?
        .trim();
    u64::from_str_radix(hex, 16).ok()
}

pub fn can_trace(caps: u64) -> bool {
    let has = |cap: u32| caps & (1 << cap) != 0;
    has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON))
}

pub fn check_privileges() -> Result<(), UserError> {
    let caps = fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| effective_caps(&s));
    match caps {
        Some(caps) if can_trace(caps) => Ok(()),
        _ => Err(UserError::environment(
            "loading eBPF programs needs root (or CAP_BPF and CAP_PERFMON): run memstall with sudo",
        )),
    }
}

pub fn check_btf(path: &Path) -> Result<(), UserError> {
    match fs::File::open(path) {
        Ok(_) => Ok(()),
        Err(err) => Err(UserError::environment(format!(
            "kernel BTF not readable at {} ({err}): memstall needs a kernel built with \
             CONFIG_DEBUG_INFO_BTF=y, or --btf FILE with this kernel's BTF",
            path.display()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_capabilities() {
        let root = "Name:\tx\nCapEff:\t000001ffffffffff\n";
        assert!(can_trace(effective_caps(root).unwrap()));
        let nobody = "CapEff:\t0000000000000000\n";
        assert!(!can_trace(effective_caps(nobody).unwrap()));
        let bpf_only = format!("CapEff:\t{:016x}\n", 1u64 << CAP_BPF);
        assert!(!can_trace(effective_caps(&bpf_only).unwrap()));
        let bpf_perfmon = format!(
            "CapEff:\t{:016x}\n",
            (1u64 << CAP_BPF) | (1u64 << CAP_PERFMON)
        );
        assert!(can_trace(effective_caps(&bpf_perfmon).unwrap()));
        assert_eq!(effective_caps("nothing"), None);
    }

    #[test]
    fn missing_btf_is_a_clear_error() {
        let err = check_btf(Path::new("/nonexistent/vmlinux")).unwrap_err();
        assert!(err.to_string().contains("CONFIG_DEBUG_INFO_BTF"), "{err}");
    }
}
