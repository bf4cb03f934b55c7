//! Building `tracer-ebpf`: the nightly pinned in its `rust-toolchain.toml`
//! with `rust-src`, and a bpf-linker built against that nightly's own LLVM,
//! kept in `.tools/`.
use std::{path::PathBuf, process::Command};

use anyhow::{bail, Context, Result};

use crate::{
    dist::Arch,
    proc::{output_of, run},
    workspace::workspace_root,
};

pub fn object_path() -> PathBuf {
    workspace_root().join("tracer-ebpf/target/bpfel-unknown-none/release/tracer-ebpf")
}

/// Where the object for a kernel of another architecture is built.
fn cross_target_dir(arch: Arch) -> PathBuf {
    workspace_root().join(format!("tracer-ebpf/target/{}", arch.uname()))
}

const BPF_LINKER_VERSION: &str = "0.13.0";

/// The eBPF crate's toolchain file, which pins its nightly by date.
fn toolchain_file() -> PathBuf {
    workspace_root().join("tracer-ebpf/rust-toolchain.toml")
}

/// The `channel` of a `rust-toolchain.toml`.
fn channel_of(toml: &str) -> Option<&str> {
    toml.lines().find_map(|line| {
        let value = line.trim().strip_prefix("channel")?.trim_start();
        let value = value.strip_prefix('=')?.trim();
        value.strip_prefix('"')?.split('"').next()
    })
}

/// The pinned nightly (`nightly-YYYY-MM-DD`).
fn nightly() -> Result<String> {
    let file = toolchain_file();
    let text =
        std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
    channel_of(&text)
        .map(str::to_owned)
        .with_context(|| format!("{} names no channel", file.display()))
}

/// Installs the pinned nightly with `rust-src` when either is missing.
fn ensure_nightly(nightly: &str) -> Result<()> {
    if Command::new("rustup").arg("--version").output().is_err() {
        bail!("rustup is missing: install it from rustup.rs (the eBPF build needs a nightly toolchain)");
    }
    let toolchains = output_of(Command::new("rustup").args(["toolchain", "list"]))?;
    if !toolchains.lines().any(|l| l.starts_with(nightly)) {
        eprintln!("xtask: installing the eBPF crate's toolchain {nightly} with rust-src");
        run(Command::new("rustup").args([
            "toolchain",
            "install",
            nightly,
            "--profile",
            "minimal",
            "--component",
            "rust-src",
        ]))
        .with_context(|| format!("{nightly} is missing and could not be installed"))?;
        return Ok(());
    }
    let comps = output_of(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        nightly,
    ]))?;
    if !comps.lines().any(|l| l.starts_with("rust-src")) {
        eprintln!("xtask: adding rust-src to {nightly}");
        run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", nightly]))
            .with_context(|| {
                format!("rust-src for {nightly} is missing and could not be installed")
            })?;
    }
    Ok(())
}

fn llvm_major(nightly: &str) -> Result<String> {
    let vv = output_of(Command::new("rustc").arg(format!("+{nightly}")).arg("-vV"))?;
    let version = vv
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .with_context(|| format!("`rustc +{nightly} -vV` printed no LLVM version"))?;
    Ok(version.split('.').next().unwrap_or(version).to_string())
}

/// Returns the folder holding bpf-linker, building it when missing.
fn ensure_bpf_linker(nightly: &str) -> Result<PathBuf> {
    let tools = workspace_root().join(".tools");
    let bin = tools.join("bin");
    let major = llvm_major(nightly)?;
    // Per nightly: the linker links that nightly's libLLVM by its soname.
    let stamp = tools.join(format!(
        "bpf-linker-{BPF_LINKER_VERSION}-{nightly}-llvm{major}"
    ));
    if bin.join("bpf-linker").exists() && stamp.exists() {
        return Ok(bin);
    }
    eprintln!("xtask: building bpf-linker {BPF_LINKER_VERSION} against {nightly}'s LLVM {major} (about 2 minutes, once)");
    let sysroot = output_of(
        Command::new("rustc")
            .arg(format!("+{nightly}"))
            .args(["--print", "sysroot"]),
    )?;
    let nightly_lib = PathBuf::from(sysroot.trim()).join("lib");
    let llvm = tools.join("llvm");
    let llvm_lib = llvm.join("lib");
    std::fs::create_dir_all(&llvm_lib)?;
    let mut so_name = None;
    for entry in std::fs::read_dir(&nightly_lib)? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if name.starts_with("libLLVM.so.") || name.starts_with("libLLVM-") {
            let link = llvm_lib.join(&name);
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink(nightly_lib.join(&name), &link)?;
            if name.starts_with("libLLVM.so.") {
                so_name = Some(name);
            }
        }
    }
    let so_name = so_name.with_context(|| {
        format!("no libLLVM.so.* in {}: the nightly toolchain ships no shared LLVM to build bpf-linker against", nightly_lib.display())
    })?;
    let generic = llvm_lib.join("libLLVM.so");
    let _ = std::fs::remove_file(&generic);
    std::os::unix::fs::symlink(nightly_lib.join(so_name), generic)?;
    run(Command::new("cargo")
        .args([
            "install",
            "bpf-linker",
            "--locked",
            "--version",
            BPF_LINKER_VERSION,
        ])
        .args([
            "--no-default-features",
            "--features",
            &format!("llvm-{major}"),
        ])
        .arg("--root")
        .arg(&tools)
        .env("LLVM_PREFIX", &llvm))
    .context("building bpf-linker failed (needs crates.io and a C compiler)")?;
    std::fs::write(&stamp, b"")?;
    Ok(bin)
}

/// Builds the eBPF object for this machine's kernel and returns its path.
pub fn build() -> Result<PathBuf> {
    build_for(Arch::X86_64)
}

/// Builds the eBPF object for kernels of `arch` and returns its path. The
/// bytecode is the same, but a kprobe reads its arguments from `pt_regs`,
/// whose layout is the architecture's: aya-ebpf picks it by the
/// `bpf_target_arch` cfg (the build machine's when not given).
pub fn build_for(arch: Arch) -> Result<PathBuf> {
    let nightly = nightly()?;
    ensure_nightly(&nightly)?;
    let linker_dir = ensure_bpf_linker(&nightly)?;
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut paths = vec![linker_dir];
    paths.extend(std::env::split_paths(&path));
    let root = workspace_root();
    let mut cargo = Command::new("cargo");
    cargo
        .arg(format!("+{nightly}"))
        .args(["build", "--release", "--locked"])
        .current_dir(root.join("tracer-ebpf"))
        .env("PATH", std::env::join_paths(paths)?)
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("RUSTC")
        .env_remove("RUSTC_WRAPPER")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("RUSTFLAGS");
    let obj = if arch == Arch::X86_64 {
        cargo.env_remove("CARGO_ENCODED_RUSTFLAGS");
        object_path()
    } else {
        let dir = cross_target_dir(arch);
        cargo.env("CARGO_TARGET_DIR", &dir).env(
            "CARGO_ENCODED_RUSTFLAGS",
            format!("--cfg=bpf_target_arch=\"{}\"", arch.uname()),
        );
        dir.join("bpfel-unknown-none/release/tracer-ebpf")
    };
    run(&mut cargo).with_context(|| format!("building tracer-ebpf for {} failed", arch.uname()))?;
    if !obj.exists() {
        bail!("the eBPF build finished but {} is missing", obj.display());
    }
    Ok(obj)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pinned_nightly_is_read_from_the_toolchain_file() {
        let text = std::fs::read_to_string(toolchain_file()).unwrap_or_default();
        let channel = channel_of(&text).unwrap_or_default();
        assert!(
            channel.starts_with("nightly-20"),
            "tracer-ebpf/rust-toolchain.toml must pin a dated nightly, names {channel:?}"
        );
        assert_eq!(
            channel_of("[toolchain]\nchannel = \"1.98\"\n"),
            Some("1.98")
        );
        assert_eq!(channel_of("[toolchain]\n"), None);
    }
}
