//! `cargo xtask bench [--quick] [ARGS]`: build everything release-mode the
//! way `demo` does (the eBPF object, then `tracer` with `PATHTRACE_EBPF_OBJ`,
//! and the `pathtrace-bench` crate), and run `pathtrace-bench` in the
//! namespace lab. Results go to
//! `bench-results/` (Markdown and JSON). Missed targets don't fail the task;
//! only a run that breaks does.
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::ebpf::{self, workspace_root};

pub fn bench(args: &[String]) -> Result<()> {
    crate::sysdeps::ensure(
        "cargo xtask bench",
        &[crate::sysdeps::DEMO, crate::sysdeps::BENCH],
    )?;
    let obj = ebpf::build()?;
    let mut build = Command::new("cargo");
    build
        .args([
            "build",
            "--release",
            "--locked",
            "-p",
            "tracer",
            "-p",
            "pathtrace-bench",
        ])
        .current_dir(workspace_root())
        .env("PATHTRACE_EBPF_OBJ", &obj);
    let status = build
        .status()
        .with_context(|| format!("running {build:?}"))?;
    if !status.success() {
        bail!("{build:?} failed with {status}");
    }
    let bin = workspace_root().join("target/release/pathtrace-bench");
    let mut cmd = Command::new(&bin);
    cmd.args(args).current_dir(workspace_root());
    let status = cmd
        .status()
        .with_context(|| format!("running {}", bin.display()))?;
    if !status.success() {
        bail!("{} failed with {status}", bin.display());
    }
    Ok(())
}
