//! `cargo xtask image [--debug]`: target/dist/memstall-VERSION-oci.tar, an OCI image archive of
//! deploy/Containerfile (FROM scratch, the dist archive's static binary), built without a
//! daemon: Debian's buildah with its own vfs storage under target/image (removed after), chroot
//! isolation (the Containerfile runs nothing). `--timestamp` is the commit's time, so the same
//! binary gives the same image digest.
//!
//! Then the archive is checked without buildah's help: `skopeo inspect` reads it (platform,
//! labels, entrypoint, command, port); every blob of the OCI layout matches its digest; the one
//! layer holds exactly /usr/local/bin/memstall, byte for byte the dist binary; and, as root,
//! that layer unpacked as a root file system runs `memstall doctor` in a private mount
//! namespace with only the host's /proc, /sys and /dev mounted in, as a container would.
use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use crate::{
    dist::{self, Dist, VERSION},
    is_root, run,
    setup::apt_ensure,
    workspace_root,
};

const APT_PACKAGES: &[&str] = &["buildah", "skopeo"];
const BINARY: &str = "usr/local/bin/memstall";
const ENTRYPOINT: &[&str] = &["/usr/local/bin/memstall"];
const COMMAND: &[&str] = &["serve", "--listen", "0.0.0.0:9464"];
const PORT: &str = "9464/tcp";

pub fn image(dist: &Dist) -> Result<PathBuf> {
    if let Some(installed) = apt_ensure(APT_PACKAGES)? {
        eprintln!("image: {installed}");
    }
    let work = workspace_root().join("target/image");
    let _ = fs::remove_dir_all(&work);
    let context = work.join("context");
    fs::create_dir_all(&context)?;
    fs::copy(&dist.binary, context.join("memstall"))?;
    let tag = format!("memstall:{VERSION}");
    let storage = [
        "--storage-driver".to_owned(),
        "vfs".into(),
        "--root".into(),
        work.join("storage").to_string_lossy().into_owned(),
        "--runroot".into(),
        work.join("run").to_string_lossy().into_owned(),
    ];
    let buildah = || {
        let mut command = Command::new("buildah");
        command.args(&storage);
        command
    };
    run(buildah()
        .args(["bud", "--quiet", "--isolation", "chroot", "--format", "oci"])
        .arg(format!("--timestamp={}", dist.epoch))
        .arg(format!("--build-arg=VERSION={VERSION}"))
        .arg(format!("--build-arg=REVISION={}", dist.revision))
        .arg("--file")
        .arg(workspace_root().join("deploy/Containerfile"))
        .args(["--tag", &tag])
        .arg(&context)
        // It prints the image id; the digest that matters is the archive's, said below.
        .stdout(std::process::Stdio::null()))
    .context("buildah bud")?;
    let stem = dist
        .archive
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_suffix(".tar.gz"))
        .context("archive name")?
        .replace(&format!("-{}", crate::musl::TARGET), "");
    let archive = dist.archive.with_file_name(format!("{stem}-oci.tar"));
    let _ = fs::remove_file(&archive);
    run(buildah()
        .args(["push", "--quiet", &tag])
        .arg(format!("oci-archive:{}:{tag}", archive.display())))
    .context("buildah push")?;
    let _ = buildah().args(["rmi", "--all", "--force"]).output();
    fs::remove_dir_all(&work)?;
    dist::record_sum(archive.parent().context("dist dir")?, &archive)?;
    Ok(archive)
}

/// Checks the image archive (see the module documentation).
pub fn check(archive: &Path, dist: &Dist) -> Result<()> {
    let reference = format!("oci-archive:{}", archive.display());
    let inspect: Value = json(Command::new("skopeo").args(["inspect", &reference]))?;
    let config: Value = json(Command::new("skopeo").args(["inspect", "--config", &reference]))?;
    let expect = |what: &str, got: &Value, want: &Value| {
        if got == want {
            Ok(())
        } else {
            bail!("image {what}: {got}, expected {want}")
        }
    };
    expect("architecture", &inspect["Architecture"], &"amd64".into())?;
    expect("os", &inspect["Os"], &"linux".into())?;
    let labels = &inspect["Labels"];
    expect(
        "version label",
        &labels["org.opencontainers.image.version"],
        &VERSION.into(),
    )?;
    expect(
        "revision label",
        &labels["org.opencontainers.image.revision"],
        &dist.revision.as_str().into(),
    )?;
    expect(
        "entrypoint",
        &config["config"]["Entrypoint"],
        &ENTRYPOINT.into(),
    )?;
    expect("command", &config["config"]["Cmd"], &COMMAND.into())?;
    if config["config"]["ExposedPorts"].get(PORT).is_none() {
        bail!(
            "image exposes {}, not {PORT}",
            config["config"]["ExposedPorts"]
        );
    }
    let daemonset = fs::read_to_string(workspace_root().join("deploy/daemonset.yaml"))?;
    if !daemonset.contains(&format!("/memstall:{VERSION}\n")) {
        bail!("deploy/daemonset.yaml does not run memstall:{VERSION}");
    }
    let layers = inspect["Layers"].as_array().map_or(0, Vec::len);
    if layers != 1 {
        bail!("image has {layers} layers, expected the binary's one");
    }

    let work = workspace_root().join("target/image-check");
    let _ = fs::remove_dir_all(&work);
    let layout = work.join("layout");
    fs::create_dir_all(&layout)?;
    run(Command::new("tar")
        .arg("-xf")
        .arg(archive)
        .arg("-C")
        .arg(&layout))?;
    verify_blobs(&layout)?;
    let layer = inspect["Layers"][0]
        .as_str()
        .and_then(|d| d.strip_prefix("sha256:"))
        .context("layer digest")?;
    let rootfs = work.join("rootfs");
    fs::create_dir_all(&rootfs)?;
    run(Command::new("tar")
        .arg("-xzf")
        .arg(layout.join("blobs/sha256").join(layer))
        .arg("-C")
        .arg(&rootfs))?;
    let files: Vec<String> = walk(&rootfs)?;
    if files != [BINARY] {
        bail!("the layer holds {files:?}, expected only {BINARY}");
    }
    let (inside, packed) = (
        dist::sha256(&rootfs.join(BINARY))?,
        dist::sha256(&dist.binary)?,
    );
    if inside != packed {
        bail!("the image's memstall ({inside}) is not the dist binary ({packed})");
    }
    let doctor = if is_root() {
        run_from_scratch(&rootfs)?
    } else {
        "doctor skipped (not root)".to_owned()
    };
    eprintln!(
        "image: {} ({:.1} MiB), digest {}: skopeo inspects it (linux/amd64, {} {}, port {PORT}), blobs match their digests, one layer holding the dist binary, {doctor}",
        archive.display(),
        fs::metadata(archive)?.len() as f64 / f64::from(1 << 20),
        inspect["Digest"].as_str().unwrap_or("?"),
        ENTRYPOINT.join(" "),
        COMMAND.join(" "),
    );
    fs::remove_dir_all(&work)?;
    Ok(())
}

fn json(command: &mut Command) -> Result<Value> {
    let out = command
        .output()
        .with_context(|| format!("running {command:?}"))?;
    if !out.status.success() {
        bail!(
            "{command:?}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    serde_json::from_slice(&out.stdout)
        .with_context(|| format!("parsing the output of {command:?}"))
}

/// An OCI image layout: oci-layout, index.json, and blobs named by their SHA-256.
fn verify_blobs(layout: &Path) -> Result<()> {
    let marker: Value = serde_json::from_str(&fs::read_to_string(layout.join("oci-layout"))?)?;
    if marker["imageLayoutVersion"] != "1.0.0" {
        bail!("not an OCI image layout: {marker}");
    }
    let index: Value = serde_json::from_str(&fs::read_to_string(layout.join("index.json"))?)?;
    if index["manifests"].as_array().map_or(0, Vec::len) != 1 {
        bail!("index.json: {index}");
    }
    let blobs = layout.join("blobs/sha256");
    let mut count = 0;
    for entry in fs::read_dir(&blobs)? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if dist::sha256(&path)? != name {
            bail!("blob {name} does not match its digest");
        }
        count += 1;
    }
    // A manifest, a config and a layer.
    if count != 3 {
        bail!("{count} blobs in the layout, expected 3");
    }
    Ok(())
}

/// Files (not directories) below `dir`, relative.
fn walk(dir: &Path) -> Result<Vec<String>> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(at) = stack.pop() {
        for entry in fs::read_dir(&at)? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                found.push(path.strip_prefix(dir)?.to_string_lossy().into_owned());
            }
        }
    }
    found.sort();
    Ok(found)
}

/// `memstall doctor` from the layer alone, as a container runtime would run it: a private
/// mount namespace (nothing leaks to the host), the host's /proc, /sys and /dev bound in,
/// chroot into the layer, an empty environment.
fn run_from_scratch(rootfs: &Path) -> Result<String> {
    for dir in ["proc", "sys", "dev"] {
        fs::create_dir_all(rootfs.join(dir))?;
    }
    let script = "set -e; for d in proc sys dev; do mount --rbind /$d \"$1/$d\"; done; \
                  exec chroot \"$1\" /usr/local/bin/memstall doctor";
    let out = Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "--",
            "sh",
            "-c",
            script,
            "sh",
        ])
        .arg(rootfs)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .output()
        .context("running unshare")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || !text.lines().any(|l| l.starts_with("ok    oom_kill")) {
        bail!(
            "memstall doctor from the image's root file system failed ({}):\n{text}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(format!(
        "doctor ok from the layer as root file system ({} checks)",
        text.lines().count()
    ))
}
