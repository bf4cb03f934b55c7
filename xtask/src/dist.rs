//! `cargo xtask dist`: what a user installs, in `target/dist/`, for each
//! architecture asked for (x86_64 by default; `--target
//! aarch64-unknown-linux-musl` or `--arch arm64` for arm64):
//! - a static binary (musl) with the eBPF object, built for that
//!   architecture, inside: `pathtrace` (x86_64), `pathtrace-aarch64`;
//! - `pathtrace_VERSION_{amd64,arm64}.deb`: that binary as
//!   `/usr/bin/pathtrace`, man pages for it and each subcommand, bash, zsh
//!   and fish completions, and the drop exporter's systemd unit (not enabled);
//! - `pathtrace-VERSION-{x86_64,aarch64}-linux-musl.tar.gz`: the same files;
//! - `pathtrace-VERSION-linux-{amd64,arm64}.oci.tar`: a container image from
//!   `scratch` holding the binary (`oci.rs`).
use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

use crate::{
    build::{build as build_all, Build, Profile},
    oci,
    proc::{output_of, run_quiet},
    sysdeps,
    workspace::{git_revision, workspace_root},
};

#[derive(clap::Args)]
pub struct Options {
    /// The architecture to build for (x86_64-unknown-linux-musl or
    /// aarch64-unknown-linux-musl; also amd64, arm64); repeatable. Default: x86_64.
    #[arg(
        long = "target",
        visible_alias = "arch",
        value_enum,
        value_name = "TARGET"
    )]
    pub targets: Vec<Arch>,
}

pub fn run(opts: Options) -> Result<()> {
    build(&opts.targets).map(drop)
}

/// An architecture `dist` builds for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Arch {
    #[value(name = "x86_64-unknown-linux-musl", alias = "amd64", alias = "x86_64")]
    X86_64,
    #[value(
        name = "aarch64-unknown-linux-musl",
        alias = "arm64",
        alias = "aarch64"
    )]
    Aarch64,
}

impl Arch {
    /// Rust's target triple.
    pub fn target(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64-unknown-linux-musl",
            Arch::Aarch64 => "aarch64-unknown-linux-musl",
        }
    }

    /// The kernel's name (`uname -m`), and aya-ebpf's `bpf_target_arch`.
    pub fn uname(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        }
    }

    /// Debian's and OCI's name.
    pub fn debian(self) -> &'static str {
        match self {
            Arch::X86_64 => "amd64",
            Arch::Aarch64 => "arm64",
        }
    }

    pub fn oci(self) -> &'static str {
        self.debian()
    }

    /// The static binary's name in `target/dist/`.
    fn binary_name(self) -> &'static str {
        match self {
            Arch::X86_64 => "pathtrace",
            Arch::Aarch64 => "pathtrace-aarch64",
        }
    }

    /// Cargo's environment for the cross link: rustup's own `rust-lld`,
    /// with musl's start files and libc from the target's self-contained
    /// set, so no cross C toolchain is needed.
    pub fn linker_env(self) -> Option<(&'static str, &'static str)> {
        match self {
            Arch::X86_64 => None,
            Arch::Aarch64 => Some(("CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER", "rust-lld")),
        }
    }
}

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The drop exporter's unit, installed but not enabled (no maintainer
/// script enables it).
const EXPORTER_UNIT: (&str, &str) = (
    "packaging/pathtrace-drops-exporter.service",
    "lib/systemd/system/pathtrace-drops-exporter.service",
);

/// Where the installable files of one architecture are put.
pub struct Packages {
    pub binary: PathBuf,
    pub deb: PathBuf,
    pub tarball: PathBuf,
    pub image: PathBuf,
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

fn ensure_musl_target(arch: Arch) -> Result<()> {
    let target = arch.target();
    let installed = output_of(Command::new("rustup").args(["target", "list", "--installed"]))
        .context("rustup is needed for the musl target")?;
    if !installed.lines().any(|l| l.trim() == target) {
        eprintln!("xtask: dist adds the Rust target {target} (for a static binary)");
        run_quiet(Command::new("rustup").args(["target", "add", target]))?;
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

fn control(arch: Arch, installed_kib: u64) -> String {
    let deb_arch = arch.debian();
    format!(
        "Package: pathtrace\n\
         Version: {VERSION}\n\
         Architecture: {deb_arch}\n\
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

/// When HEAD was committed (RFC 3339), or the epoch outside a git checkout.
fn commit_time() -> String {
    output_of(
        Command::new("git")
            .args(["show", "-s", "--format=%cI", "HEAD"])
            .current_dir(workspace_root()),
    )
    .map(|t| t.trim().to_owned())
    .ok()
    .filter(|t| !t.is_empty())
    .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_owned())
}

/// The static binary for `arch`, built with the eBPF object built for it;
/// returns its path under `target/`.
pub fn static_binary(arch: Arch) -> Result<PathBuf> {
    ensure_musl_target(arch)?;
    let built = build_all(&Build {
        profile: Profile::Release,
        packages: &["tracer"],
        bin: Some("pathtrace"),
        target: Some(arch),
    })?
    .executable("pathtrace")?;
    if !is_static_elf(&built)? {
        bail!("{} is not statically linked", built.display());
    }
    Ok(built)
}

/// Builds everything `dist` ships for each of `arches` (x86_64 when none is
/// given); returns where it put each architecture's files. Files of other
/// architectures already in `target/dist/` stay.
pub fn build(arches: &[Arch]) -> Result<Vec<Packages>> {
    sysdeps::ensure("cargo xtask dist", &[sysdeps::DIST])?;
    let arches = if arches.is_empty() {
        &[Arch::X86_64][..]
    } else {
        arches
    };
    let mut built = Vec::new();
    for &arch in arches {
        built.push(build_one(arch)?);
    }
    for p in &built {
        eprintln!(
            "xtask: dist: {}, {}, {}, {}",
            p.binary.display(),
            p.deb.display(),
            p.tarball.display(),
            p.image.display()
        );
    }
    Ok(built)
}

fn build_one(arch: Arch) -> Result<Packages> {
    let built = static_binary(arch)?;
    let root = workspace_root();
    let out = root.join("target/dist");
    let work = out.join(format!("work-{}", arch.debian()));
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work)?;
    let binary = out.join(arch.binary_name());
    copy(&built, &binary)?;

    // The documents come from the host's build of the same sources (the
    // target's binary may not run here).
    let docs = work.join("docs");
    let host_binary = match arch {
        Arch::X86_64 => binary.clone(),
        Arch::Aarch64 => static_binary(Arch::X86_64)?,
    };
    run_quiet(Command::new(&host_binary).arg("generate-docs").arg(&docs))?;

    let deb_root = work.join("deb");
    install_tree(&binary, &docs, &deb_root.join("usr"))?;
    let doc_dir = deb_root.join("usr/share/doc/pathtrace");
    copy(&root.join("LICENSE-MIT"), &doc_dir.join("copyright"))?;
    let meta = deb_root.join("DEBIAN");
    fs::create_dir_all(&meta)?;
    let size = tree_kib(&deb_root.join("usr"))?;
    fs::write(meta.join("control"), control(arch, size))?;
    let deb = out.join(format!("pathtrace_{VERSION}_{}.deb", arch.debian()));
    run_quiet(
        Command::new("dpkg-deb")
            .args(["--root-owner-group", "-Zxz", "--build"])
            .arg(&deb_root)
            .arg(&deb),
    )?;

    let name = format!("pathtrace-{VERSION}-{}-linux-musl", arch.uname());
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

    let revision = git_revision();
    let created = commit_time();
    let labels = oci::Labels {
        created: &created,
        version: VERSION,
        revision: &revision,
        source: env!("CARGO_PKG_REPOSITORY"),
        licenses: env!("CARGO_PKG_LICENSE"),
    };
    let image = out.join(format!("pathtrace-{VERSION}-linux-{}.oci.tar", arch.oci()));
    let licence = root.join("LICENSE-MIT");
    let contents = oci::Image {
        arch,
        binary: &binary,
        licence: &licence,
        labels: &labels,
    };
    oci::build(&contents, &work, &image)?;
    fs::remove_dir_all(&work)?;
    Ok(Packages {
        binary,
        deb,
        tarball,
        image,
    })
}
