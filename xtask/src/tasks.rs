//! The demo and test tasks: both install the system packages they need,
//! build the kernel object, then hand its path to the `tracer` build through
//! `PATHTRACE_EBPF_OBJ`.
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::{
    dist, ebpf,
    ebpf::workspace_root,
    proc::{cargo, is_root, run},
    sysdeps,
};

fn need_root(task: &str, what: &str) -> Result<()> {
    if !is_root() {
        bail!("`cargo xtask {task}` needs root: {what}. Run it in a root shell (sudo -i).");
    }
    Ok(())
}

pub fn demo(args: &[String]) -> Result<()> {
    need_root(
        "demo",
        "it builds network namespaces and loads eBPF programs",
    )?;
    sysdeps::ensure("cargo xtask demo", &[sysdeps::DEMO])?;
    let obj = ebpf::build()?;
    run(&mut cargo(
        &["build", "--release", "--locked", "-p", "tracer"],
        &obj,
    ))?;
    let bin = workspace_root().join("target/release/pathtrace");
    let status = Command::new(&bin)
        .arg("demo")
        .args(args)
        .status()
        .with_context(|| format!("running {}", bin.display()))?;
    std::process::exit(status.code().unwrap_or(1));
}

/// Unit tests and the root integration suites (only `suites`, when given).
pub fn test(suites: &[String], args: &[String]) -> Result<()> {
    need_root(
        "test",
        "its integration suites load real eBPF programs into the kernel and build network namespaces with a real dockerd",
    )?;
    sysdeps::ensure("cargo xtask test", &[sysdeps::DEMO, sysdeps::TEST])?;
    let packages = dist::build()?;
    let obj = ebpf::build()?;
    run(&mut cargo(&["build", "--locked", "-p", "tracer"], &obj))?;
    let bin = workspace_root().join("target/debug/pathtrace");
    let mut cmd = cargo(&["test", "--locked", "--no-fail-fast"], &obj);
    if suites.is_empty() {
        cmd.arg("--workspace");
    } else {
        cmd.args(["-p", "pathtrace-tests"]);
        for suite in suites {
            cmd.args(["--test", suite]);
        }
    }
    cmd.env("PATHTRACE_BIN", &bin)
        .env("PATHTRACE_DEB", &packages.deb)
        .env("PATHTRACE_TARBALL", &packages.tarball)
        .arg("--")
        .arg("--test-threads=1")
        .arg("--show-output")
        .args(args);
    run(&mut cmd)
}
