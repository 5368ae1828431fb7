//! Debian kernels for `cargo xtask vmtest`, cached under target/vmtest/kernels/VERSION/: the
//! uncompressed vmlinux (QEMU boots it through the PVH entry, much faster than a bzImage under
//! TCG) and a base initramfs (busybox, util-linux setpriv with its libraries, the modules the
//! guest needs, decompressed, with their load order).
use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};

use crate::run;

/// Modules the guest loads (with their dependencies): the virtio disk and ext4 on it.
const MODULES: &[&str] = &["virtio_pci", "virtio_blk", "ext4", "crc32c_generic"];
/// Host binaries copied into the guest with their shared libraries. util-linux setpriv: the
/// busybox one has no --reuid, which the cli tests use.
const HOST_BINARIES: &[&str] = &["/usr/bin/setpriv"];

pub struct Kernel {
    /// `6.1.0-56-amd64`, `6.12.117+deb12-amd64`: the package name without `linux-image-`.
    pub version: String,
    pub vmlinux: PathBuf,
    pub base_initramfs: PathBuf,
}

/// The newest cached kernel of `series` (`6.1`, `6.12`), else the newest Debian offers,
/// downloaded and prepared once.
pub fn ensure(series: &str, cache: &Path) -> Result<Kernel> {
    let kernels = cache.join("kernels");
    let cached = fs::read_dir(&kernels)
        .into_iter()
        .flatten()
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|version| kernels.join(version).join("complete").exists());
    if let Some(version) = newest(series, cached) {
        return Ok(Kernel::cached(&kernels, version));
    }
    // The newest the apt lists know; when they know none, or it cannot be downloaded any more,
    // refresh them once.
    if let Some(version) = newest(series, apt_kernels(series)?) {
        match prepare(&version, cache, &kernels.join(&version)) {
            Ok(()) => return Ok(Kernel::cached(&kernels, version)),
            Err(err) => eprintln!("vmtest: {err:#}; refreshing the apt lists"),
        }
    }
    run(Command::new("apt-get").args(["update", "-qq"]))?;
    let version = newest(series, apt_kernels(series)?)
        .with_context(|| format!("Debian offers no linux-image-{series}.*-amd64"))?;
    prepare(&version, cache, &kernels.join(&version))?;
    Ok(Kernel::cached(&kernels, version))
}

impl Kernel {
    fn cached(kernels: &Path, version: String) -> Self {
        let dir = kernels.join(&version);
        Self {
            vmlinux: dir.join("vmlinux"),
            base_initramfs: dir.join("base.cpio"),
            version,
        }
    }
}

/// Versions of the generic amd64 flavour (`6.1.0-56-amd64`) the apt lists know.
fn apt_kernels(series: &str) -> Result<Vec<String>> {
    let out = Command::new("apt-cache")
        .args(["search", "--names-only"])
        .arg(format!("^linux-image-{}\\.", series.replace('.', "\\.")))
        .output()
        .context("apt-cache search")?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| line.split(' ').next()?.strip_prefix("linux-image-"))
        .map(str::to_owned)
        .collect())
}

/// The highest `SERIES.*-amd64` version (compared number by number), other flavours left out.
fn newest(series: &str, versions: impl IntoIterator<Item = String>) -> Option<String> {
    let numbers = |v: &str| -> Vec<u64> {
        v.split(|c: char| !c.is_ascii_digit())
            .filter_map(|n| n.parse().ok())
            .collect()
    };
    versions
        .into_iter()
        .filter(|v| v.starts_with(&format!("{series}.")))
        .filter(|v| {
            v.ends_with("-amd64") && !v.ends_with("-cloud-amd64") && !v.ends_with("-rt-amd64")
        })
        .max_by_key(|v| numbers(v))
}

fn prepare(version: &str, cache: &Path, dir: &Path) -> Result<()> {
    eprintln!("vmtest: downloading and preparing linux-image-{version}");
    let debs = cache.join("debs");
    fs::create_dir_all(&debs)?;
    let package = format!("linux-image-{version}");
    let find_deb = || -> Option<PathBuf> {
        fs::read_dir(&debs)
            .ok()?
            .filter_map(|e| Some(e.ok()?.path()))
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&format!("{package}_")) && n.ends_with(".deb"))
            })
    };
    if find_deb().is_none() {
        // Owned by root, the download directory is not the _apt user's: say so to apt.
        run(Command::new("apt-get")
            .args(["download", "-qq", "-o", "APT::Sandbox::User=root", &package])
            .current_dir(&debs))?;
    }
    let deb = find_deb().context("apt-get download left no .deb")?;
    let tree = cache.join("extract");
    let _ = fs::remove_dir_all(&tree);
    let _ = fs::remove_dir_all(dir);
    fs::create_dir_all(dir)?;
    if let Err(err) = run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&tree)) {
        let _ = fs::remove_file(&deb); // a truncated download: fetch it again next time
        return Err(err);
    }

    let bzimage = fs::read(tree.join(format!("boot/vmlinuz-{version}")))?;
    let vmlinux = extract_vmlinux(&bzimage, &dir.join("payload"))?;
    fs::write(dir.join("vmlinux"), vmlinux)?;
    fs::copy(
        tree.join(format!("boot/config-{version}")),
        dir.join("config"),
    )?;

    let root = dir.join("initramfs");
    let modules_dir = root.join("lib/modules");
    fs::create_dir_all(&modules_dir)?;
    fs::create_dir_all(root.join("bin"))?;
    fs::copy("/bin/busybox", root.join("bin/busybox")).context("busybox-static")?;
    for binary in HOST_BINARIES {
        copy_with_libraries(Path::new(binary), &root)?;
    }
    let order = modules(&tree, version, &modules_dir)?;
    fs::write(modules_dir.join("load-order"), order.join("\n") + "\n")?;
    cpio(&root, &dir.join("base.cpio"))?;
    fs::remove_dir_all(&root)?;
    fs::remove_dir_all(&tree)?;
    fs::write(dir.join("complete"), "")?;
    Ok(())
}

/// The ELF kernel inside a bzImage: the setup header gives the compressed payload, whose last 4
/// bytes are the uncompressed size.
fn extract_vmlinux(bzimage: &[u8], scratch: &Path) -> Result<Vec<u8>> {
    let le32 = |at: usize| -> Result<usize> {
        let bytes = bzimage.get(at..at + 4).context("bzImage too short")?;
        Ok(u32::from_le_bytes(bytes.try_into()?) as usize)
    };
    if bzimage.get(0x202..0x206) != Some(b"HdrS") {
        bail!("not a bzImage (no HdrS setup header)");
    }
    let setup_sects = match bzimage[0x1f1] {
        0 => 4,
        n => n as usize,
    };
    let start = (setup_sects + 1) * 512 + le32(0x248)?;
    let payload = bzimage
        .get(start..start + le32(0x24c)?)
        .context("payload outside the bzImage")?;
    let tool = match payload {
        [0x28, 0xb5, 0x2f, 0xfd, ..] => "zstd",
        [0xfd, b'7', b'z', b'X', b'Z', 0, ..] => "xz",
        [0x02, 0x21, 0x4c, 0x18, ..] => "lz4",
        [0x1f, 0x8b, ..] => "gzip",
        _ => bail!("unknown kernel compression {:02x?}", &payload[..6]),
    };
    let size = le32(start + payload.len() - 4)?;
    fs::write(scratch, payload)?;
    // The size trailer makes the decompressors complain about trailing garbage: the size check
    // below is what tells success.
    let out = Command::new(tool)
        .args(["-d", "-c"])
        .stdin(fs::File::open(scratch)?)
        .stderr(Stdio::null())
        .output()
        .with_context(|| format!("running {tool}"))?;
    fs::remove_file(scratch)?;
    let mut vmlinux = out.stdout;
    if vmlinux.len() < size || !vmlinux.starts_with(b"\x7fELF") {
        bail!(
            "{tool} gave {} bytes, not the {size}-byte ELF vmlinux",
            vmlinux.len()
        );
    }
    vmlinux.truncate(size);
    Ok(vmlinux)
}

/// Copies MODULES and their dependencies, decompressed, into `into`; returns their load order.
fn modules(tree: &Path, version: &str, into: &Path) -> Result<Vec<String>> {
    // The debs ship no modules.dep.
    run(Command::new("depmod").arg("-b").arg(tree).arg(version))?;
    let out = Command::new("modprobe")
        .arg("-d")
        .arg(tree)
        .args(["-S", version, "--show-depends", "-a"])
        .args(MODULES)
        .output()
        .context("modprobe --show-depends")?;
    if !out.status.success() {
        bail!(
            "modprobe --show-depends: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut order = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(path) = line.strip_prefix("insmod ").map(str::trim) else {
            continue; // `builtin NAME`
        };
        let (stem, tool) = match path.rsplit_once(".ko") {
            Some((stem, ".xz")) => (stem, Some("xz")),
            Some((stem, ".zst")) => (stem, Some("zstd")),
            Some((stem, "")) => (stem, None),
            _ => bail!("unexpected module path {path}"),
        };
        let name = format!("{}.ko", stem.rsplit('/').next().unwrap_or(stem));
        if order.contains(&name) {
            continue;
        }
        let bytes = match tool {
            Some(tool) => {
                let out = Command::new(tool).args(["-d", "-c", path]).output()?;
                if !out.status.success() {
                    bail!("{tool} -d {path} failed");
                }
                out.stdout
            }
            None => fs::read(path)?,
        };
        fs::write(into.join(&name), bytes)?;
        order.push(name);
    }
    Ok(order)
}

/// Copies a dynamically linked host binary and the libraries `ldd` names to the same paths.
fn copy_with_libraries(binary: &Path, root: &Path) -> Result<()> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .with_context(|| format!("ldd {}", binary.display()))?;
    let mut files = vec![binary.to_path_buf()];
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)" or "/lib64/ld-linux-x86-64.so.2 (0x…)"
        let path = line.split("=>").last().unwrap_or_default().trim();
        if let Some(path) = path.split(" (").next().filter(|p| p.starts_with('/')) {
            files.push(path.into());
        }
    }
    for file in files {
        let to = root.join(file.strip_prefix("/")?);
        fs::create_dir_all(to.parent().context("path")?)?;
        fs::copy(&file, &to).with_context(|| format!("copying {}", file.display()))?;
    }
    Ok(())
}

/// An uncompressed newc cpio of everything below `dir`, owned by root.
pub fn cpio(dir: &Path, archive: &Path) -> Result<()> {
    let status = Command::new("sh")
        .args([
            "-c",
            "find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0 > \"$0\"",
        ])
        .arg(archive)
        .current_dir(dir)
        .status()
        .context("running cpio")?;
    if !status.success() {
        bail!("cpio of {} failed: {status}", dir.display());
    }
    Ok(())
}
