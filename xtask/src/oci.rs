//! The container image `cargo xtask dist` builds: an OCI image from
//! `scratch` (one layer: the static binary and its licence), written as an
//! OCI image layout and packed into one tar archive, without an engine.
//!
//! The archive also holds Docker's `manifest.json`, so both
//! `podman load -i` (OCI layout) and `docker load -i` (any engine version)
//! read it.
use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::{dist::Arch, proc::run_quiet};

const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// What the image says about itself (`org.opencontainers.image.*`).
pub struct Labels<'a> {
    /// RFC 3339; the commit's time, so that one revision gives one image.
    pub created: &'a str,
    pub version: &'a str,
    pub revision: &'a str,
    pub source: &'a str,
    pub licenses: &'a str,
}

impl Labels<'_> {
    fn to_json(&self) -> Value {
        json!({
            "org.opencontainers.image.title": "pathtrace",
            "org.opencontainers.image.created": self.created,
            "org.opencontainers.image.description":
                "Follow packets through the Linux kernel, hop by hop (eBPF)",
            "org.opencontainers.image.version": self.version,
            "org.opencontainers.image.revision": self.revision,
            "org.opencontainers.image.source": self.source,
            "org.opencontainers.image.licenses": self.licenses,
            "org.opencontainers.image.base.name": "scratch",
        })
    }
}

/// The image's name once loaded: `localhost/pathtrace:VERSION`.
pub fn reference(version: &str) -> String {
    format!("localhost/pathtrace:{version}")
}

fn digest(bytes: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(bytes))
}

/// Writes `bytes` as a blob of the layout at `dir`; returns its descriptor.
fn blob(dir: &Path, media_type: &str, bytes: &[u8]) -> Result<Value> {
    let digest = digest(bytes);
    let hex = digest.trim_start_matches("sha256:");
    let path = dir.join("blobs/sha256").join(hex);
    fs::create_dir_all(dir.join("blobs/sha256"))?;
    fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
    Ok(json!({ "mediaType": media_type, "digest": digest, "size": bytes.len() }))
}

/// `tar` with fixed owners, times and order, so that the same inputs give the
/// same bytes.
fn tar_of(dir: &Path, members: &[&str], out: &Path) -> Result<()> {
    run_quiet(
        Command::new("tar")
            .args([
                "--sort=name",
                "--owner=0",
                "--group=0",
                "--numeric-owner",
                "--mtime=@0",
                "--format=posix",
                "--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime",
                "-cf",
            ])
            .arg(out)
            .arg("-C")
            .arg(dir)
            .args(members),
    )
    .with_context(|| format!("packing {}", out.display()))
}

/// What goes into an image.
pub struct Image<'a> {
    pub arch: Arch,
    /// The static binary.
    pub binary: &'a Path,
    pub licence: &'a Path,
    pub labels: &'a Labels<'a>,
}

/// Builds `image` in `work`, and writes the archive to `out`.
pub fn build(image: &Image, work: &Path, out: &Path) -> Result<PathBuf> {
    let &Image {
        arch,
        binary,
        licence,
        labels,
    } = image;
    let rootfs = work.join("oci-rootfs");
    let layout = work.join("oci-layout");
    let _ = fs::remove_dir_all(&rootfs);
    let _ = fs::remove_dir_all(&layout);
    for (from, to) in [
        (binary, "usr/bin/pathtrace"),
        (licence, "usr/share/doc/pathtrace/copyright"),
    ] {
        let to = rootfs.join(to);
        fs::create_dir_all(to.parent().context("a path in the image")?)?;
        fs::copy(from, &to).with_context(|| format!("copying {}", from.display()))?;
    }
    let layer_tar = work.join("layer.tar");
    tar_of(&rootfs, &["usr"], &layer_tar)?;
    let layer = fs::read(&layer_tar)?;
    let diff_id = digest(&layer);
    run_quiet(Command::new("gzip").args(["-9nf"]).arg(&layer_tar))?;
    let layer_gz = fs::read(work.join("layer.tar.gz"))?;

    let created = labels.created;
    let labels = labels.to_json();
    let config = json!({
        "created": created,
        "architecture": arch.oci(),
        "os": "linux",
        "config": {
            "Entrypoint": ["/usr/bin/pathtrace"],
            "Env": ["PATH=/usr/bin"],
            "Labels": labels,
        },
        "rootfs": { "type": "layers", "diff_ids": [diff_id] },
        "history": [{
            "created": created,
            "created_by": "cargo xtask dist",
            "comment": "the static binary",
        }],
    });
    let layer_desc = blob(&layout, LAYER, &layer_gz)?;
    let config_desc = blob(&layout, CONFIG, &serde_json::to_vec(&config)?)?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": config_desc,
        "layers": [layer_desc],
        "annotations": labels,
    });
    let mut manifest_desc = blob(&layout, MANIFEST, &serde_json::to_vec(&manifest)?)?;
    let version = labels["org.opencontainers.image.version"]
        .as_str()
        .unwrap_or_default();
    let name = reference(version);
    manifest_desc["platform"] = json!({ "architecture": arch.oci(), "os": "linux" });
    manifest_desc["annotations"] = json!({
        "org.opencontainers.image.ref.name": name,
        "io.containerd.image.name": name,
    });
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [manifest_desc],
    });
    fs::write(layout.join("index.json"), serde_json::to_vec(&index)?)?;
    fs::write(
        layout.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    let hex = |d: &Value| {
        d["digest"]
            .as_str()
            .unwrap_or_default()
            .trim_start_matches("sha256:")
            .to_owned()
    };
    let docker_manifest = json!([{
        "Config": format!("blobs/sha256/{}", hex(&config_desc)),
        "RepoTags": [name],
        "Layers": [format!("blobs/sha256/{}", hex(&layer_desc))],
    }]);
    fs::write(
        layout.join("manifest.json"),
        serde_json::to_vec(&docker_manifest)?,
    )?;
    tar_of(
        &layout,
        &["oci-layout", "index.json", "manifest.json", "blobs"],
        out,
    )?;
    fs::remove_dir_all(&rootfs)?;
    fs::remove_dir_all(&layout)?;
    fs::remove_file(work.join("layer.tar.gz"))?;
    Ok(out.to_path_buf())
}
