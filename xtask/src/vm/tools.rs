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

fn have(tool: &str) -> bool {
    works(
        Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {tool}")),
    )
}

/// Installs the Debian packages whose tools are missing (`(tool, package)`).
fn ensure_debian_tools(wanted: &[(&str, &str)]) -> Result<()> {
    let missing: Vec<&str> = wanted
        .iter()
        .filter(|(tool, _)| !have(tool))
        .map(|(_, package)| *package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask: installing Debian's {}", missing.join(" "));
    let install = || {
        run_quiet(
            Command::new("apt-get")
                .args(["install", "-y", "-qq", "--no-install-recommends"])
                .args(&missing)
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )
    };
    if install().is_err() {
        run_quiet(Command::new("apt-get").args(["update", "-qq"])).with_context(|| {
            format!("{} missing, and apt-get update failed", missing.join(", "))
        })?;
        install().with_context(|| format!("`apt-get install {}` failed", missing.join(" ")))?;
    }
    for (tool, package) in wanted {
        if !have(tool) {
            bail!("{tool} is still missing after installing Debian's {package}");
        }
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
    eprintln!(
        "xtask: installing virtme-ng {VNG_VERSION} from PyPI into {}",
        venv.display()
    );
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
        bail!(
            "virtme-ng was installed but `{} --version` does not say {VNG_VERSION}",
            vng.display()
        );
    }
    Ok(vng)
}

/// Makes sure the tools are there; returns the path of `vng`.
pub fn ensure() -> Result<PathBuf> {
    for (tool, package) in [("dpkg-deb", "dpkg"), ("apt-get", "apt")] {
        if !have(tool) {
            bail!("{tool} is missing (Debian package {package}): needed to fetch and unpack VM kernels");
        }
    }
    // depmod indexes the kernel's modules on the host; the guest, whose `/` is the
    // host's, loads them (veth, bridge, nf_tables…) with the same kmod's modprobe.
    ensure_debian_tools(&[
        ("qemu-system-x86_64", "qemu-system-x86"),
        ("depmod", "kmod"),
    ])?;
    ensure_vng()
}
