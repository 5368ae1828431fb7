use anyhow::{Context as _, anyhow};

/// The nightly that builds the eBPF programs; its LLVM major must match bpf-linker's
/// (`cargo xtask setup` installs both).
const BPF_TOOLCHAIN: &str = include_str!("../bpf-toolchain");

fn main() -> anyhow::Result<()> {
    let cargo_metadata::Metadata { packages, .. } = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let ebpf = packages
        .into_iter()
        .find(|package| package.name.as_str() == "memstall-ebpf")
        .ok_or_else(|| anyhow!("tracer-ebpf package not found"))?;
    let root_dir = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("no parent for {}", ebpf.manifest_path))?;
    println!("cargo:rerun-if-changed=../bpf-toolchain");
    aya_build::build_ebpf(
        [aya_build::Package {
            name: ebpf.name.as_str(),
            root_dir: root_dir.as_str(),
            ..Default::default()
        }],
        aya_build::Toolchain::Custom(BPF_TOOLCHAIN.trim()),
    )
}
