//! `cargo xtask dist`: what a user installs, in `target/dist/`:
//! - `pathtrace`: a static x86_64 binary (musl) with the eBPF object inside;
//! - `pathtrace_VERSION_amd64.deb`: that binary as `/usr/bin/pathtrace`, man
//!   pages for it and each subcommand, bash, zsh and fish completions, and
//!   the drop exporter's systemd unit (not enabled);
//! - `pathtrace-VERSION-x86_64-linux-musl.tar.gz`: the same files.
use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

use crate::{
    build::{build as build_all, Build, Profile},
    proc::{output_of, run_quiet},
    sysdeps,
    workspace::workspace_root,
};

#[derive(clap::Args)]
pub struct Options {}

pub fn run(_opts: Options) -> Result<()> {
    build().map(|_| ())
}

const TARGET: &str = "x86_64-unknown-linux-musl";
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The drop exporter's unit, installed but not enabled (no maintainer
/// script enables it).
const EXPORTER_UNIT: (&str, &str) = (
    "packaging/pathtrace-drops-exporter.service",
    "lib/systemd/system/pathtrace-drops-exporter.service",
);

/// Where the installable files are put.
pub struct Packages {
    pub deb: PathBuf,
    pub tarball: PathBuf,
}

/// The installed tree, as both the `.deb` and the tarball lay it out
/// (relative to `/usr` for the package).
const TREE: &[(&str, &str)] = &[
    (
        "completions/pathtrace",
        "share/bash-completion/completions/pathtrace",
    ),
    (
        "completions/_pathtrace",
        "share/zsh/vendor-completions/_pathtrace",
    ),
    (
        "completions/pathtrace.fish",
        "share/fish/vendor_completions.d/pathtrace.fish",
    ),
];

fn ensure_musl_target() -> Result<()> {
    let installed = output_of(Command::new("rustup").args(["target", "list", "--installed"]))
        .context("rustup is needed for the musl target")?;
    if !installed.lines().any(|l| l.trim() == TARGET) {
        eprintln!("xtask: dist adds the Rust target {TARGET} (for a static binary)");
        run_quiet(Command::new("rustup").args(["target", "add", TARGET]))?;
    }
    Ok(())
}

/// Whether the ELF file at `path` asks for no program interpreter (is static).
fn is_static_elf(path: &Path) -> Result<bool> {
    let elf = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let u16_at = |o: usize| elf.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u64_at = |o: usize| {
        elf.get(o..o + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
    };
    if elf.get(..5) != Some(b"\x7fELF\x02") {
        bail!("{} is not a 64-bit ELF file", path.display());
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        bail!("{} has a truncated ELF header", path.display());
    };
    const PT_INTERP: u32 = 3;
    for i in 0..usize::from(phnum) {
        let at = usize::try_from(phoff)? + i * usize::from(phentsize);
        let ty = elf
            .get(at..at + 4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_le_bytes)
            .with_context(|| format!("{} has a truncated program header", path.display()))?;
        if ty == PT_INTERP {
            return Ok(false);
        }
    }
    Ok(true)
}

fn copy(from: &Path, to: &Path) -> Result<()> {
    if let Some(dir) = to.parent() {
        fs::create_dir_all(dir)?;
    }
    fs::copy(from, to)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    Ok(())
}

/// Lays out `prefix/bin/pathtrace`, `prefix/share/man/man1/*.1.gz`, the
/// completions and the exporter's unit under `prefix`.
fn install_tree(binary: &Path, docs: &Path, prefix: &Path) -> Result<()> {
    copy(binary, &prefix.join("bin/pathtrace"))?;
    let man1 = prefix.join("share/man/man1");
    fs::create_dir_all(&man1)?;
    let mut pages: Vec<PathBuf> = fs::read_dir(docs.join("man"))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    pages.sort();
    for page in pages {
        let name = page.file_name().context("man page without a name")?;
        let target = man1.join(name);
        copy(&page, &target)?;
        run_quiet(Command::new("gzip").args(["-9nf"]).arg(&target))?;
    }
    for (from, to) in TREE {
        copy(&docs.join(from), &prefix.join(to))?;
    }
    let (from, to) = EXPORTER_UNIT;
    copy(&workspace_root().join(from), &prefix.join(to))?;
    Ok(())
}

fn control(installed_kib: u64) -> String {
    format!(
        "Package: pathtrace\n\
         Version: {VERSION}\n\
         Architecture: amd64\n\
         Maintainer: pathtrace developers <pathtrace@example.invalid>\n\
         Installed-Size: {installed_kib}\n\
         Section: net\n\
         Priority: optional\n\
         Recommends: nftables, iptables\n\
         Homepage: https://example.invalid/pathtrace\n\
         Description: follow packets through the Linux kernel, hop by hop\n \
         pathtrace is an eBPF tracer that shows each packet's path through the\n \
         kernel: devices and namespaces crossed, netfilter verdicts, the rule\n \
         that decided, the kernel's drop reason, and a plain-language diagnosis.\n"
    )
}

fn tree_kib(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() {
            tree_kib(&entry.path())? * 1024
        } else {
            meta.len()
        };
    }
    Ok(total.div_ceil(1024))
}

/// Builds everything `dist` ships; returns where it put it.
pub fn build() -> Result<Packages> {
    sysdeps::ensure("cargo xtask dist", &[sysdeps::DIST])?;
    ensure_musl_target()?;
    let built = build_all(&Build {
        profile: Profile::Release,
        packages: &["tracer"],
        bin: Some("pathtrace"),
        target: Some(TARGET),
    })?
    .executable("pathtrace")?;
    let root = workspace_root();
    if !is_static_elf(&built)? {
        bail!("{} is not statically linked", built.display());
    }
    let out = root.join("target/dist");
    let work = out.join("work");
    let _ = fs::remove_dir_all(&out);
    fs::create_dir_all(&work)?;
    let binary = out.join("pathtrace");
    copy(&built, &binary)?;

    let docs = work.join("docs");
    run_quiet(Command::new(&binary).arg("generate-docs").arg(&docs))?;

    let deb_root = work.join("deb");
    install_tree(&binary, &docs, &deb_root.join("usr"))?;
    let doc_dir = deb_root.join("usr/share/doc/pathtrace");
    copy(&root.join("LICENSE-MIT"), &doc_dir.join("copyright"))?;
    let meta = deb_root.join("DEBIAN");
    fs::create_dir_all(&meta)?;
    let size = tree_kib(&deb_root.join("usr"))?;
    fs::write(meta.join("control"), control(size))?;
    let deb = out.join(format!("pathtrace_{VERSION}_amd64.deb"));
    run_quiet(
        Command::new("dpkg-deb")
            .args(["--root-owner-group", "-Zxz", "--build"])
            .arg(&deb_root)
            .arg(&deb),
    )?;

    let name = format!("pathtrace-{VERSION}-x86_64-linux-musl");
    let tar_root = work.join(&name);
    install_tree(&binary, &docs, &tar_root)?;
    for file in ["README.md", "LICENSE-MIT", "LICENSE-APACHE"] {
        copy(&root.join(file), &tar_root.join(file))?;
    }
    let tarball = out.join(format!("{name}.tar.gz"));
    run_quiet(
        Command::new("tar")
            .args(["--owner=0", "--group=0", "-czf"])
            .arg(&tarball)
            .arg("-C")
            .arg(&work)
            .arg(&name),
    )?;
    fs::remove_dir_all(&work)?;
    eprintln!(
        "xtask: dist: {}, {}, {}",
        binary.display(),
        deb.display(),
        tarball.display()
    );
    Ok(Packages { deb, tarball })
}
