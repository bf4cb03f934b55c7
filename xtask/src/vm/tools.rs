//! The VM's tools: Debian's `qemu-system-x86` and virtme-ng from PyPI in a
//! venv under `.tools/vng-venv`.
use std::{path::PathBuf, process::Command};

use anyhow::{bail, Context, Result};

use crate::proc::{output_of, run_quiet};
use crate::workspace::workspace_root;

/// The virtme-ng release this was checked with.
const VNG_VERSION: &str = "1.42";

fn venv() -> PathBuf {
    workspace_root().join(".tools/vng-venv")
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
    // A venv moved or made through another path has scripts whose `#!` points
    // elsewhere: make it anew (`--clear`) unless its own pip runs.
    if output_of(Command::new(venv.join("bin/pip")).arg("--version")).is_err() {
        run_quiet(Command::new("python3").args(["-m", "venv", "--clear"]).arg(&venv))
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
    if !crate::sysdeps::on_path("apt-get") {
        bail!("apt-get is missing: the VM kernels are Debian's packages, fetched with apt-get");
    }
    // depmod indexes the kernel's modules on the host; the guest, whose `/` is the
    // host's, loads them (veth, bridge, nf_tables…) with the same kmod's modprobe.
    crate::sysdeps::ensure("the VM kernel matrix", &[crate::sysdeps::VM])?;
    ensure_vng()
}
