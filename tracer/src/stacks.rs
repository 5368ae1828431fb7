//! Turning stack ids of outlier stalls into readable frames.
use std::{collections::BTreeMap, fs};

use aya::maps::{MapData, StackTraceMap};

/// Kernel symbols from /proc/kallsyms, read on first use (only outliers need them).
#[derive(Default)]
pub struct Symbolizer {
    kernel: Option<BTreeMap<u64, String>>,
}

impl Symbolizer {
    fn kernel_symbol(&mut self, ip: u64) -> String {
        let symbols = self.kernel.get_or_insert_with(|| {
            aya::util::kernel_symbols().unwrap_or_else(|err| {
                log::warn!("reading /proc/kallsyms: {err}; kernel stacks stay as addresses");
                BTreeMap::new()
            })
        });
        match symbols.range(..=ip).next_back() {
            // Module symbols read "name\t[module]".
            Some((start, name)) => match name.split_once('\t') {
                Some((name, module)) => format!("{name}+{:#x} {module}", ip - start),
                None => format!("{name}+{:#x}", ip - start),
            },
            None => format!("{ip:#x}"),
        }
    }

    /// Reads and frees stack `id` of STACKS, symbolized, without memstall's own frames at the
    /// top; empty when not captured.
    pub fn kernel_stack(&mut self, stacks: &mut StackTraceMap<MapData>, id: i32) -> Vec<String> {
        let ips = take_stack(stacks, id);
        let frames: Vec<String> = ips.into_iter().map(|ip| self.kernel_symbol(ip)).collect();
        let ours = frames.iter().take_while(|f| is_tracing_frame(f)).count();
        frames.into_iter().skip(ours).collect()
    }

    /// User frames as `file+offset` from the process's mappings while it still exists.
    pub fn user_stack(
        &mut self,
        stacks: &mut StackTraceMap<MapData>,
        id: i32,
        tgid: u32,
    ) -> Vec<String> {
        let ips = take_stack(stacks, id);
        if ips.is_empty() {
            return Vec::new();
        }
        let maps = fs::read_to_string(format!("/proc/{tgid}/maps")).unwrap_or_default();
        let mappings = parse_maps(&maps);
        ips.into_iter()
            .map(|ip| user_frame(&mappings, ip))
            .collect()
    }
}

/// Frames of the BPF program and the tracepoint trampoline that called it.
fn is_tracing_frame(frame: &str) -> bool {
    frame.starts_with("bpf_prog_")
        || frame.starts_with("bpf_trace_run")
        || frame.starts_with("__bpf_trace_")
}

fn take_stack(stacks: &mut StackTraceMap<MapData>, id: i32) -> Vec<u64> {
    let Ok(id) = u32::try_from(id) else {
        return Vec::new();
    };
    let ips = match stacks.get(&id, 0) {
        Ok(stack) => stack.frames().iter().map(|f| f.ip).collect(),
        Err(_) => Vec::new(),
    };
    // Identical stacks share an id; freeing it early at worst loses a later duplicate's frames.
    let _ = stacks.remove(&id);
    ips
}

#[derive(Debug, PartialEq, Eq)]
pub struct Mapping {
    start: u64,
    end: u64,
    offset: u64,
    path: String,
}

/// /proc/PID/maps: "start-end perms offset dev inode path".
pub fn parse_maps(text: &str) -> Vec<Mapping> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (range, _perms, offset) = (fields.next()?, fields.next()?, fields.next()?);
            let path = fields.nth(2).unwrap_or("").to_owned();
            let (start, end) = range.split_once('-')?;
            Some(Mapping {
                start: u64::from_str_radix(start, 16).ok()?,
                end: u64::from_str_radix(end, 16).ok()?,
                offset: u64::from_str_radix(offset, 16).ok()?,
                path,
            })
        })
        .collect()
}

pub fn user_frame(mappings: &[Mapping], ip: u64) -> String {
    match mappings
        .iter()
        .find(|m| (m.start..m.end).contains(&ip) && !m.path.is_empty())
    {
        Some(m) => format!("{}+{:#x}", m.path, ip - m.start + m.offset),
        None => format!("{ip:#x}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracing_frames_are_recognised() {
        assert!(is_tracing_frame(
            "bpf_prog_b823_memcg_reclaim_end_btf [bpf]+0x1a"
        ));
        assert!(is_tracing_frame("bpf_trace_run1+0xed"));
        assert!(!is_tracing_frame("try_to_free_mem_cgroup_pages+0x1e7"));
    }

    #[test]
    fn user_frames_name_the_file_and_offset() {
        let maps = "\
55d0c0000000-55d0c0010000 r-xp 00002000 fd:00 123  /usr/bin/memhog
7f0000000000-7f0000100000 rw-p 00000000 00:00 0
7f1000000000-7f1000200000 r-xp 00028000 fd:00 456  /usr/lib/x86_64-linux-gnu/libc.so.6
garbage line";
        let mappings = parse_maps(maps);
        assert_eq!(mappings.len(), 3);
        assert_eq!(
            user_frame(&mappings, 0x55d0c0000010),
            "/usr/bin/memhog+0x2010"
        );
        assert_eq!(
            user_frame(&mappings, 0x7f1000000100),
            "/usr/lib/x86_64-linux-gnu/libc.so.6+0x28100"
        );
        assert_eq!(user_frame(&mappings, 0x7f0000000010), "0x7f0000000010");
        assert_eq!(user_frame(&mappings, 0x10), "0x10");
    }
}
