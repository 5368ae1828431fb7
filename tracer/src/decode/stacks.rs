//! Turning stack ids of outlier stalls into readable frames.
use std::{
    collections::{BTreeMap, HashMap},
    fs,
};

use aya::maps::{MapData, StackTraceMap};
use blazesym::{
    Pid,
    symbolize::{
        self, Input, Symbolized,
        source::{Elf, Process, Source},
    },
};

/// Processes whose mappings are remembered, for stalls decoded after their process exited.
const MAPPINGS_KEPT: usize = 256;
/// Stack ids read before the kernel's map is emptied (it holds 4096; more fill it with
/// colliding buckets).
const STACKS_KEPT: usize = 1024;

/// Kernel symbols from /proc/kallsyms, read on first use (only outliers need them); user
/// symbols from the process's ELF files (and perf map, for JITs) through blazesym, which
/// caches each file it parsed.
#[derive(Default)]
pub struct Symbolizer {
    kernel: Option<BTreeMap<u64, String>>,
    user: symbolize::Symbolizer,
    /// The last /proc/PID/maps read per tgid.
    mappings: HashMap<u32, Vec<Mapping>>,
    /// Frames of the stack ids read so far. Ids stay in the kernel's map, where their frames
    /// cannot change, so every stall of a burst that shares a stack gets it.
    seen_stacks: HashMap<u32, Vec<u64>>,
}

impl Symbolizer {
    /// `name+0xoff` of a kernel address (kallsyms, read on first use).
    pub fn kernel_symbol(&mut self, ip: u64) -> String {
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

    fn stack_ips(&mut self, stacks: &mut StackTraceMap<MapData>, id: i32) -> Vec<u64> {
        let Ok(id) = u32::try_from(id) else {
            return Vec::new();
        };
        if let Some(ips) = self.seen_stacks.get(&id) {
            return ips.clone();
        }
        if self.seen_stacks.len() >= STACKS_KEPT {
            // Everything, including stacks of stalls that never reached us (dropped, or not
            // watched): a stall of this instant whose stack goes with them shows none.
            let ids: Vec<u32> = stacks.stack_ids().filter_map(Result::ok).collect();
            for id in ids {
                let _ = stacks.remove(&id);
            }
            self.seen_stacks.clear();
        }
        let ips: Vec<u64> = match stacks.get(&id, 0) {
            Ok(stack) => stack.frames().iter().map(|f| f.ip).collect(),
            Err(_) => Vec::new(),
        };
        if !ips.is_empty() {
            self.seen_stacks.insert(id, ips.clone());
        }
        ips
    }

    /// Stack `id` of STACKS, symbolized, without memstall's own frames at the
    /// top; empty when not captured.
    pub fn kernel_stack(&mut self, stacks: &mut StackTraceMap<MapData>, id: i32) -> Vec<String> {
        let ips = self.stack_ips(stacks, id);
        let frames: Vec<String> = ips.into_iter().map(|ip| self.kernel_symbol(ip)).collect();
        let ours = frames.iter().take_while(|f| is_tracing_frame(f)).count();
        frames.into_iter().skip(ours).collect()
    }

    /// Reads the mappings of `tgid` once, so a later stack of it can be named after it exits:
    /// a task that stalls in reclaim is the likeliest to trigger an OOM kill and die of it
    /// before its record is decoded. Called for every reclaim, so a task without mappings (a
    /// kernel thread, or one gone already) is remembered as such rather than read again.
    pub fn remember_mappings(&mut self, tgid: u32) {
        if tgid != 0 && !self.mappings.contains_key(&tgid) {
            let mappings = read_maps(tgid);
            self.keep_mappings(tgid, mappings);
        }
    }

    /// The mappings of `tgid` now, kept for after it exits (a gone process keeps what was
    /// read last).
    fn read_mappings(&mut self, tgid: u32) {
        let mappings = read_maps(tgid);
        if !mappings.is_empty() {
            self.keep_mappings(tgid, mappings);
        }
    }

    fn keep_mappings(&mut self, tgid: u32, mappings: Vec<Mapping>) {
        if self.mappings.len() >= MAPPINGS_KEPT {
            self.mappings.clear();
        }
        self.mappings.insert(tgid, mappings);
    }

    /// User frames as `function+offset (file)` while the process still exists; `file+offset`
    /// where its files carry no symbols.
    pub fn user_stack(
        &mut self,
        stacks: &mut StackTraceMap<MapData>,
        id: i32,
        tgid: u32,
    ) -> Vec<String> {
        let ips = self.stack_ips(stacks, id);
        if ips.is_empty() {
            return Vec::new();
        }
        self.read_mappings(tgid);
        // While the process lives, blazesym reads its files through /proc/PID/map_files, which
        // also works for a container's mount namespace and for files deleted since.
        let source = Source::Process(Process::new(Pid::from(tgid)));
        let symbols = self
            .user
            .symbolize(&source, Input::AbsAddr(&ips))
            .unwrap_or_default();
        let mappings = self.mappings.get(&tgid).map_or(&[][..], Vec::as_slice);
        ips.iter()
            .enumerate()
            .map(|(i, &ip)| match symbols.get(i) {
                Some(Symbolized::Sym(sym)) => {
                    let file = sym.module.as_deref().map(|m| m.to_string_lossy());
                    symbol_frame(&sym.name, sym.offset, file.as_deref())
                }
                // Gone already: its files by path, from the mappings seen last.
                _ => symbolize_in_file(&self.user, mappings, ip)
                    .unwrap_or_else(|| user_frame(mappings, ip)),
            })
            .collect()
    }
}

/// Frames of the BPF program and the tracepoint trampoline that called it.
fn is_tracing_frame(frame: &str) -> bool {
    frame.starts_with("bpf_prog_")
        || frame.starts_with("bpf_trace_run")
        || frame.starts_with("__bpf_trace_")
}

#[derive(Debug, PartialEq, Eq)]
pub struct Mapping {
    start: u64,
    end: u64,
    offset: u64,
    path: String,
}

/// /proc/PID/maps of `tgid`; empty when it has none or is gone.
fn read_maps(tgid: u32) -> Vec<Mapping> {
    parse_maps(&fs::read_to_string(format!("/proc/{tgid}/maps")).unwrap_or_default())
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

/// The symbol at `ip` from the ELF file mapped there, by file offset.
fn symbolize_in_file(
    symbolizer: &symbolize::Symbolizer,
    mappings: &[Mapping],
    ip: u64,
) -> Option<String> {
    let m = mapping_of(mappings, ip)?;
    let source = Source::Elf(Elf::new(&m.path));
    let offset = ip - m.start + m.offset;
    match symbolizer.symbolize_single(&source, Input::FileOffset(offset)) {
        Ok(Symbolized::Sym(sym)) => Some(symbol_frame(&sym.name, sym.offset, Some(&m.path))),
        _ => None,
    }
}

fn mapping_of(mappings: &[Mapping], ip: u64) -> Option<&Mapping> {
    mappings
        .iter()
        .find(|m| (m.start..m.end).contains(&ip) && m.path.starts_with('/'))
}

/// `function+0x1f (/usr/bin/app)`.
pub fn symbol_frame(name: &str, offset: usize, file: Option<&str>) -> String {
    match file {
        Some(file) => format!("{name}+{offset:#x} ({file})"),
        None => format!("{name}+{offset:#x}"),
    }
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

    #[inline(never)]
    fn a_function_to_find() -> u64 {
        std::hint::black_box(42)
    }

    #[test]
    fn symbolizes_by_file_offset_from_remembered_mappings() {
        let maps = fs::read_to_string("/proc/self/maps").unwrap();
        let mappings = parse_maps(&maps);
        let ip = a_function_to_find as *const () as u64 + 1;
        let frame = symbolize_in_file(&symbolize::Symbolizer::new(), &mappings, ip)
            .expect("the test binary has symbols");
        assert!(frame.contains("a_function_to_find+0x1 ("), "{frame}");
        assert!(frame.ends_with(')'), "{frame}");
        assert_eq!(
            symbolize_in_file(&symbolize::Symbolizer::new(), &[], ip),
            None
        );
    }
}
