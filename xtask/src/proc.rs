//! Running commands: the one place xtask spawns processes and turns their
//! failures into errors.
use std::process::Command;

use anyhow::{bail, Context, Result};

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

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Fails unless xtask runs as root: `cargo xtask {task}` needs it for `what`.
pub fn need_root(task: &str, what: &str) -> Result<()> {
    if !is_root() {
        bail!("`cargo xtask {task}` needs root: {what}. Run it in a root shell (sudo -i).");
    }
    Ok(())
}
