//! `cargo xtask bench [--quick] [ARGS]`: build everything release-mode the
//! way `demo` does (the eBPF object, then `tracer` with `PATHTRACE_EBPF_OBJ`,
//! and the `pathtrace-bench` crate), and run `pathtrace-bench` in the
//! namespace lab. Results go to
//! `bench-results/` (Markdown and JSON). Missed targets don't fail the task;
//! only a run that breaks does. With `--vm KERNEL` it runs in a guest
//! instead (`vm/bench.rs`).
use std::{path::PathBuf, process::Command};

use anyhow::Result;

use crate::{
    ebpf::{self, workspace_root},
    proc::{cargo, run},
};

pub fn bench(args: &[String]) -> Result<()> {
    crate::sysdeps::ensure(
        "cargo xtask bench",
        &[crate::sysdeps::DEMO, crate::sysdeps::BENCH],
    )?;
    let bin = build()?;
    run(Command::new(&bin).args(args).current_dir(workspace_root()))
}

/// Builds `pathtrace` and `pathtrace-bench` (release) and returns the
/// benchmark's path; `pathtrace` is next to it.
pub fn build() -> Result<PathBuf> {
    let obj = ebpf::build()?;
    run(&mut cargo(
        &[
            "build",
            "--release",
            "--locked",
            "-p",
            "tracer",
            "-p",
            "pathtrace-bench",
        ],
        &obj,
    ))?;
    Ok(workspace_root().join("target/release/pathtrace-bench"))
}
