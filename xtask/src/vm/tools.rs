//! The VM's tools: Debian's `qemu-system-x86` and virtme-ng from PyPI in a
//! venv under `.tools/vng-venv`.
use std::{path::PathBuf, process::Command};

use anyhow::{bail, Context, Result};

use super::{output_of, run_quiet};
use crate::ebpf::workspace_root;

/// The virtme-ng release this was checked with.
const VNG_VERSION: &str = "1.42";

fn venv() -> PathBuf {
    workspace_root().join(".tools/vng-venv")
}

fn works(cmd: &mut Command) -> bool {
    cmd.output().map(|o| o.status.success()).unwrap_or(false)
}

fn ensure_qemu() -> Result<()> {
    if works(Command::new("qemu-system-x86_64").arg("--version")) {
        return Ok(());
    }
    eprintln!("xtask: installing Debian's qemu-system-x86");
    let install = || {
        run_quiet(
            Command::new("apt-get")
                .args(["install", "-y", "-qq", "--no-install-recommends", "qemu-system-x86"])
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )
    };
    if install().is_err() {
        run_quiet(Command::new("apt-get").args(["update", "-qq"]))
            .context("qemu-system-x86_64 is missing, and apt-get update failed")?;
        install().context("qemu-system-x86_64 is missing and `apt-get install qemu-system-x86` failed")?;
    }
    if !works(Command::new("qemu-system-x86_64").arg("--version")) {
        bail!("qemu-system-x86_64 is still missing after installing qemu-system-x86");
    }
    Ok(())
}

fn vng_ok(vng: &PathBuf) -> bool {
    output_of(Command::new(vng).arg("--version"))
        .map(|v| v.contains(VNG_VERSION))
        .unwrap_or(false)
}

/// Returns the path of `vng`, installing virtme-ng into the venv when missing.
fn ensure_vng() -> Result<PathBuf> {
    let venv = venv();
    let vng = venv.join("bin/vng");
    if vng_ok(&vng) {
        return Ok(vng);
    }
    eprintln!("xtask: installing virtme-ng {VNG_VERSION} from PyPI into {}", venv.display());
    if !venv.join("bin/pip").exists() {
        run_quiet(Command::new("python3").arg("-m").arg("venv").arg(&venv))
            .context("`python3 -m venv` failed: virtme-ng needs python3 with venv (Debian package python3-venv)")?;
    }
    run_quiet(
        Command::new(venv.join("bin/pip"))
            .args(["install", "-q", "--disable-pip-version-check"])
            .arg(format!("virtme-ng=={VNG_VERSION}")),
    )
    .with_context(|| format!("pip could not install virtme-ng=={VNG_VERSION} from PyPI"))?;
    if !vng_ok(&vng) {
        bail!("virtme-ng was installed but `{} --version` does not say {VNG_VERSION}", vng.display());
    }
    Ok(vng)
}

/// Makes sure the tools are there; returns the path of `vng`.
pub fn ensure() -> Result<PathBuf> {
    for (tool, package) in [("dpkg-deb", "dpkg"), ("depmod", "kmod"), ("apt-get", "apt")] {
        if !works(Command::new("sh").arg("-c").arg(format!("command -v {tool}"))) {
            bail!("{tool} is missing (Debian package {package}): needed to fetch and unpack VM kernels");
        }
    }
    ensure_qemu()?;
    ensure_vng()
}
