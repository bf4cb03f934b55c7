//! Running commands: the one place xtask spawns processes and turns their
//! failures into errors.
use std::{path::Path, process::Command};

use anyhow::{bail, Context, Result};

use crate::ebpf::workspace_root;

/// Runs `cmd` and returns its stdout; on failure, an error holding the last
/// lines of its stderr.
pub fn output_of(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = err
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        let tail = lines[lines.len().saturating_sub(3)..].join(" | ");
        bail!("{cmd:?} failed ({}): {tail}", out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `cmd`, showing its stderr only when it fails.
pub fn run_quiet(cmd: &mut Command) -> Result<()> {
    output_of(cmd).map(|_| ())
}

/// Runs `cmd` with its output on the terminal.
pub fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

/// `cargo ARGS` in the workspace, with the eBPF object and the git revision
/// that `tracer`'s build script embeds.
pub fn cargo(args: &[&str], obj: &Path) -> Command {
    let mut cmd = Command::new("cargo");
    cmd.args(args)
        .current_dir(workspace_root())
        .env("PATHTRACE_EBPF_OBJ", obj)
        .env("PATHTRACE_GIT_REV", git_revision());
    cmd
}

/// The short git revision, with `-dirty` when the tree has uncommitted
/// changes; `unknown` outside a git checkout. Read once per task, so every
/// build and test of one task names the same revision.
pub fn git_revision() -> String {
    static REVISION: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    REVISION.get_or_init(read_git_revision).clone()
}

fn read_git_revision() -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(workspace_root())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    match git(&["rev-parse", "--short=12", "HEAD"]) {
        Some(rev) if !rev.is_empty() => {
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty());
            if dirty {
                format!("{rev}-dirty")
            } else {
                rev
            }
        }
        _ => "unknown".into(),
    }
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}
