//! `cargo xtask test`: installs the system packages the tests need, builds
//! the kernel object, then runs the unit tests (twice: the second time in a
//! pid namespace whose low pids are taken), the doc tests and the root
//! integration suites, handing the object's path to the `tracer` build
//! through `PATHTRACE_EBPF_OBJ`. With `--vm`, the suites run in guests
//! instead (`vm/test.rs`).
use std::{
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::{
    build::{build, cargo, Build},
    dist,
    proc::{need_root, run as run_cmd},
    sysdeps, vm,
};

#[derive(clap::Args)]
pub struct Options {
    #[command(flatten)]
    pub vm: vm::test::Options,
    /// Instead: build for arm64 (`dist --target aarch64-unknown-linux-musl`) and run
    /// the smoke suite on every tier in a Debian arm64 kernel under qemu-system-aarch64
    /// (software emulation).
    #[arg(long, conflicts_with_all = ["vm", "suite", "under_load"])]
    pub arm64: bool,
    /// Without --vm: run only this integration suite (a file of tests/, e.g.
    /// hypervisor), no unit tests; repeatable. Names after `--` filter tests.
    #[arg(long, value_name = "NAME", conflicts_with = "vm")]
    pub suite: Vec<String>,
    /// Without --vm: run the tests with every CPU kept busy by a load
    /// generator (ended with the tests, and after 2 hours at most); prints
    /// how long they took.
    #[arg(long, conflicts_with = "vm")]
    pub under_load: bool,
    /// Extra arguments passed to the integration test binaries (e.g. a test name).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

pub fn run(opts: Options) -> Result<()> {
    if opts.arm64 {
        vm::arm64::run(&opts.vm.vm_opts, &opts.args)
    } else if opts.vm.kernels.is_empty() {
        on_host(&opts)
    } else {
        vm::test::run(&opts.vm, &opts.args)
    }
}

/// Longest a `--under-load` run keeps the CPUs busy.
const LOAD_BOUND: Duration = Duration::from_secs(2 * 60 * 60);

/// Unit tests (in a pid namespace of their own), doc tests and the root
/// integration suites; only the integration suites `opts.suite`, when given.
/// `opts.under_load`: with every CPU kept busy meanwhile.
fn on_host(opts: &Options) -> Result<()> {
    need_root(
        "test",
        "its integration suites load real eBPF programs into the kernel and build network namespaces with a real dockerd",
    )?;
    sysdeps::ensure("cargo xtask test", &[sysdeps::DEMO, sysdeps::TEST])?;
    let packages = dist::build(&[])?.pop().context("dist built no packages")?;
    let built = build(&Build {
        packages: &["tracer"],
        ..Build::default()
    })?;
    let bin = built.executable("pathtrace")?;
    let obj = &built.obj;
    let test = |targets: &[&str]| {
        let mut cmd = cargo(&["test", "--locked", "--no-fail-fast"], obj);
        cmd.args(targets)
            .env("PATHTRACE_BIN", &bin)
            .env("PATHTRACE_DEB", &packages.deb)
            .env("PATHTRACE_TARBALL", &packages.tarball)
            .env("PATHTRACE_IMAGE", &packages.image)
            .env("PATHTRACE_IMAGE", &packages.image)
            .arg("--")
            .arg("--test-threads=1")
            .arg("--show-output")
            .args(&opts.args);
        cmd
    };
    let mut steps: Vec<(&str, Command)> = Vec::new();
    if opts.suite.is_empty() {
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
            obj,
        );
        doc.env("PATHTRACE_BIN", &bin);
        steps.push(("doc tests", doc));
        steps.push((
            "integration suites",
            test(&["-p", "pathtrace-tests", "--tests"]),
        ));
    } else {
        let mut targets = vec!["-p", "pathtrace-tests"];
        for suite in &opts.suite {
            targets.extend(["--test", suite.as_str()]);
        }
        steps.push(("integration suites", test(&targets)));
    }
    let load = opts
        .under_load
        .then(|| crate::load::Load::start(LOAD_BOUND))
        .transpose()?;
    let started = Instant::now();
    let mut failed = Vec::new();
    for (name, mut cmd) in steps {
        eprintln!("xtask: {name}");
        if let Err(e) = run_cmd(&mut cmd) {
            eprintln!("xtask: {name}: {e:#}");
            failed.push(name);
        }
    }
    drop(load);
    eprintln!(
        "xtask: tests {}took {} s",
        if opts.under_load { "under load " } else { "" },
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
    use crate::proc::is_root;

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
