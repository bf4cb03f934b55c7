//! Stock Debian kernels in QEMU, for the tiers the machine's own kernel refuses
//! (fentry/fexit, kprobes): `cargo xtask vm-kernel`, `cargo xtask vm` and
//! `cargo xtask test --vm`.
//!
//! The guest runs under software emulation (TCG; KVM crashes guests on these
//! machines) with virtme-ng, which shares the host's filesystem as the guest's
//! root, so the binaries built here run inside as they are.
pub mod arm64;
pub mod bench;
mod guest;
pub mod kernel;
mod report;
pub mod suites;
pub mod test;
mod tools;

use std::time::Duration;

use anyhow::{bail, Result};

use crate::build::{build, Build, Profile};
use guest::{Guest, GuestStep};
use report::Mark;

/// Limit for one VM run.
pub const DEFAULT_TIMEOUT_SECS: u64 = 15 * 60;

/// How a guest runs, for `vm`, `test --vm` and `bench --vm`.
#[derive(clap::Args)]
pub struct VmOpts {
    /// vCPUs for the guest (default: 2 for 6.1; 1 for 6.12, which oopses with 2 under emulation, and for 5.10).
    #[arg(long)]
    pub cpus: Option<u32>,
    /// Seconds before a VM run is killed (default: `vm` and `bench --vm` 15 minutes;
    /// `test --vm` 3 minutes plus 10 per suite the run holds).
    #[arg(long)]
    pub timeout: Option<u64>,
    /// Print the guest's whole serial console (kernel log included).
    #[arg(long)]
    pub console: bool,
}

impl VmOpts {
    /// Whether any of these options was given.
    pub fn is_set(&self) -> bool {
        self.cpus.is_some() || self.timeout.is_some() || self.console
    }
}

/// `cargo xtask vm --kernel KERNEL -- ARGS`.
#[derive(clap::Args)]
pub struct Options {
    /// The Debian kernel: 5.10, 6.1 or 6.12.
    #[arg(long, value_name = "KERNEL")]
    pub kernel: String,
    #[command(flatten)]
    pub vm_opts: VmOpts,
    /// Arguments for `pathtrace`.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

/// Splits `--vm 6.1,6.12 --vm 6.1` style values, keeping the first occurrence.
pub fn split_list(values: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for v in values.iter().flat_map(|v| v.split(',')) {
        let v = v.trim();
        if !v.is_empty() && !out.iter().any(|o| o == v) {
            out.push(v.to_string());
        }
    }
    out
}

/// `cargo xtask vm --kernel KERNEL -- ARGS`: `target/release/pathtrace ARGS` in the guest.
pub fn run(opts: Options) -> Result<()> {
    let vng = tools::ensure()?;
    let k = kernel::ensure(&opts.kernel, false)?;
    let bin = build(&Build {
        profile: Profile::Release,
        packages: &["tracer"],
        bin: Some("pathtrace"),
        ..Build::default()
    })?
    .executable("pathtrace")?;
    let mut argv = vec![bin.display().to_string()];
    argv.extend(opts.args.iter().cloned());
    let guest = Guest {
        vng: &vng,
        kernel: &k,
        cpus: opts.vm_opts.cpus.unwrap_or_else(|| k.default_cpus()),
        timeout: Duration::from_secs(opts.vm_opts.timeout.unwrap_or(DEFAULT_TIMEOUT_SECS)),
        echo_console: opts.vm_opts.console,
        rwdir: None,
    };
    let step = GuestStep {
        name: "pathtrace".into(),
        env: Vec::new(),
        argv,
    };
    let code = run_command(&guest, &format!("run-{}", opts.kernel), step)?;
    std::process::exit(code)
}

/// Boots `guest` and runs one command in it (the script `target/vm/NAME.sh`):
/// its output goes to stdout, the guest's checks to stderr. Returns its exit
/// code; a run that never got to its end is an error, with the console's tail.
fn run_command(guest: &Guest, name: &str, step: GuestStep) -> Result<i32> {
    let what = step.name.clone();
    let script = guest::write_script(name, &[step])?;
    let log = crate::workspace::workspace_root().join(format!("target/vm/{name}.log"));
    let k = guest.kernel;
    eprintln!(
        "xtask: booting {} ({} vCPU, software emulation) to run {what}",
        k.release, guest.cpus
    );
    let mut rc = None;
    let mut in_checks = false;
    let out = guest::boot(guest, &script, &log, |mark, _| match mark {
        Mark::Begin(step) => in_checks = step == "guest-checks",
        Mark::Output(line) if in_checks => eprintln!("[guest] {line}"),
        Mark::Output(line) => println!("{line}"),
        Mark::End(step, code) if step == what => rc = Some(code),
        _ => {}
    })?;
    eprintln!(
        "xtask: VM {} ran {:.1} s (boot {:.1} s); console log: {}",
        k.release,
        out.wall.as_secs_f64(),
        out.boot.map(|b| b.as_secs_f64()).unwrap_or(f64::NAN),
        out.log.display()
    );
    match rc {
        Some(code) => Ok(code),
        None => {
            for l in guest::console_tail(&out.log, 40) {
                eprintln!("console: {l}");
            }
            bail!(
                "{what} did not finish in the VM ({}; vng exit {:?})",
                if out.timed_out {
                    "timed out"
                } else {
                    "no exit mark"
                },
                out.vng_status
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_split_on_commas() {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(split_list(&v(&["6.1,6.12", "6.1"])), v(&["6.1", "6.12"]));
    }
}
