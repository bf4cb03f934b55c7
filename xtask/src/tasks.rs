//! The demo and test tasks: both install the system packages they need,
//! build the kernel object, then hand its path to the `tracer` build through
//! `PATHTRACE_EBPF_OBJ`.
use std::{
    process::Command,
    time::{Duration, Instant},
};

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

/// Longest a `--under-load` run keeps the CPUs busy.
const LOAD_BOUND: Duration = Duration::from_secs(2 * 60 * 60);

/// Unit tests (in a pid namespace of their own), doc tests and the root
/// integration suites; only the integration suites `suites`, when given.
/// `under_load`: with every CPU kept busy meanwhile.
pub fn test(suites: &[String], under_load: bool, args: &[String]) -> Result<()> {
    need_root(
        "test",
        "its integration suites load real eBPF programs into the kernel and build network namespaces with a real dockerd",
    )?;
    sysdeps::ensure("cargo xtask test", &[sysdeps::DEMO, sysdeps::TEST])?;
    let packages = dist::build(&[])?.pop().context("dist built no packages")?;
    let obj = ebpf::build()?;
    run(&mut cargo(&["build", "--locked", "-p", "tracer"], &obj))?;
    let bin = workspace_root().join("target/debug/pathtrace");
    let test = |targets: &[&str]| {
        let mut cmd = cargo(&["test", "--locked", "--no-fail-fast"], &obj);
        cmd.args(targets)
            .env("PATHTRACE_BIN", &bin)
            .env("PATHTRACE_DEB", &packages.deb)
            .env("PATHTRACE_TARBALL", &packages.tarball)
            .env("PATHTRACE_IMAGE", &packages.image)
            .arg("--")
            .arg("--test-threads=1")
            .arg("--show-output")
            .args(args);
        cmd
    };
    let mut steps: Vec<(&str, Command)> = Vec::new();
    if suites.is_empty() {
        let unit = || test(&["--workspace", "--lib", "--bins"]);
        steps.push(("unit tests", unit()));
        // Again in another pid layout, so that a test that assumes some pid
        // is free or taken can't pass by luck on either.
        steps.push((
            "unit tests, in a new pid namespace whose low pids are taken",
            in_new_pid_namespace(unit()),
        ));
        let mut doc = cargo(
            &["test", "--locked", "--no-fail-fast", "--workspace", "--doc"],
            &obj,
        );
        doc.env("PATHTRACE_BIN", &bin);
        steps.push(("doc tests", doc));
        steps.push((
            "integration suites",
            test(&["-p", "pathtrace-tests", "--tests"]),
        ));
    } else {
        let mut targets = vec!["-p", "pathtrace-tests"];
        for suite in suites {
            targets.extend(["--test", suite.as_str()]);
        }
        steps.push(("integration suites", test(&targets)));
    }
    let load = under_load
        .then(|| crate::load::Load::start(LOAD_BOUND))
        .transpose()?;
    let started = Instant::now();
    let mut failed = Vec::new();
    for (name, mut cmd) in steps {
        eprintln!("xtask: {name}");
        if let Err(e) = run(&mut cmd) {
            eprintln!("xtask: {name}: {e:#}");
            failed.push(name);
        }
    }
    drop(load);
    eprintln!(
        "xtask: tests {}took {} s",
        if under_load { "under load " } else { "" },
        started.elapsed().as_secs()
    );
    if !failed.is_empty() {
        bail!("failed: {}", failed.join(", "));
    }
    Ok(())
}

/// Processes that hold the low pids of the new pid namespace, as kernel
/// workers hold a fresh machine's.
const LOW_PIDS_TAKEN: u32 = 64;

/// `cmd` in a new pid namespace (`unshare --pid --fork --mount-proc`: its
/// own /proc, in a private mount namespace) whose pids 2 to 65 belong to
/// `sleep`s; they end with the namespace's first process, after `cmd`.
fn in_new_pid_namespace(cmd: Command) -> Command {
    let mut wrapped = Command::new("unshare");
    wrapped.args(["--pid", "--fork", "--mount-proc", "--", "sh", "-c"]);
    wrapped.arg(format!(
        "i=0; while [ $i -lt {LOW_PIDS_TAKEN} ]; do sleep 7200 & i=$((i+1)); done; \"$@\""
    ));
    wrapped.arg("sh");
    wrapped.arg(cmd.get_program()).args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => wrapped.env(k, v),
            None => wrapped.env_remove(k),
        };
    }
    if let Some(dir) = cmd.get_current_dir() {
        wrapped.current_dir(dir);
    }
    wrapped
}

#[cfg(test)]
mod tests {
    use super::*;

    /// In the unit tests' pid layout, pid 12 is alive and is no pathtrace
    /// (as on a fresh machine, where it is a kernel worker), and the
    /// processes holding the low pids end with the command.
    #[test]
    fn the_new_pid_layout_has_low_pids_taken() {
        if !is_root() {
            panic!("the_new_pid_layout_has_low_pids_taken needs root (unshare --pid)");
        }
        let mut probe = Command::new("sh");
        probe.args(["-c", "cat /proc/12/comm; echo $$"]);
        let out = in_new_pid_namespace(probe).output().expect("runs unshare");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{out:?}");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.first(), Some(&"sleep"), "{text}");
        let pid: u32 = lines.get(1).and_then(|p| p.parse().ok()).expect("its pid");
        assert!(pid > LOW_PIDS_TAKEN, "the command got pid {pid}");
    }
}
