//! The demo and test tasks: both build the kernel object first, then hand
//! its path to the `tracer` build through `PATHTRACE_EBPF_OBJ`.
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::ebpf::{self, workspace_root};

fn cargo(args: &[&str], obj: &std::path::Path) -> Command {
    let mut cmd = Command::new("cargo");
    cmd.args(args)
        .current_dir(workspace_root())
        .env("PATHTRACE_EBPF_OBJ", obj);
    cmd
}

fn run(mut cmd: Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

pub fn demo(args: &[String]) -> Result<()> {
    let obj = ebpf::build()?;
    run(cargo(
        &["build", "--release", "--locked", "-p", "tracer"],
        &obj,
    ))?;
    let bin = workspace_root().join("target/release/pathtrace");
    let mut cmd = Command::new(&bin);
    cmd.arg("demo").args(args);
    let status = cmd
        .status()
        .with_context(|| format!("running {}", bin.display()))?;
    std::process::exit(status.code().unwrap_or(1));
}

pub fn test(args: &[String]) -> Result<()> {
    let obj = ebpf::build()?;
    run(cargo(&["build", "--locked", "-p", "tracer"], &obj))?;
    let bin = workspace_root().join("target/debug/pathtrace");
    let mut cmd = cargo(&["test", "--locked", "--workspace", "--no-fail-fast"], &obj);
    cmd.env("PATHTRACE_BIN", &bin)
        .arg("--")
        .arg("--test-threads=1")
        .arg("--show-output")
        .args(args);
    run(cmd)
}
