//! `cargo xtask bench --vm KERNEL [ARGS]`: `pathtrace-bench --tiers` in a
//! guest, for the tiers the host kernel refuses. pathtrace on the tracepoint,
//! fentry and kprobe tiers takes turns under the same non-matching stream,
//! and the kernel's own run-time statistics give each tier's cost per
//! forwarded packet, split into the `nf_hook_slow` programs and the
//! tracepoint programs. Under software emulation only the ratios mean
//! something. Results go to `bench-results/vm-KERNEL/` (Markdown and JSON),
//! written by the guest through a read-write share.
use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{bail, Context, Result};

use super::{
    guest::{Guest, GuestStep},
    kernel, tools, VmOpts,
};
use crate::workspace::workspace_root;

/// The tiers compared in the guest; the first is the baseline of the ratios.
pub const TIERS: &str = "tracepoint,fentry,kprobe";

/// The stream's rate in the guest: one emulated vCPU forwards far fewer
/// packets than the host, and packets the sink's socket drops would count
/// program runs without a packet delivered.
pub const PPS: u64 = 2_000;

/// Time kept for booting, the lab and the teardown out of the VM's limit:
/// the benchmark's own limit (`--max-secs`) is the rest.
const OUTSIDE_SECS: u64 = 240;

/// The guest's `pathtrace-bench` command line: the tier comparison at the
/// guest's rate into `out`, stopped in time for the VM's `timeout`, then
/// `args`. A flag `args` gives itself is not given twice.
pub fn guest_argv(
    bench: &Path,
    pathtrace: &Path,
    out: &Path,
    timeout_secs: u64,
    args: &[String],
) -> Vec<String> {
    let given = |flag: &str| {
        args.iter()
            .any(|a| a == flag || a.starts_with(&format!("{flag}=")))
    };
    let mut argv = vec![bench.display().to_string()];
    let defaults = [
        ("--tiers", TIERS.to_string()),
        ("--cost-pps", PPS.to_string()),
        ("--out", out.display().to_string()),
        ("--pathtrace", pathtrace.display().to_string()),
        (
            "--max-secs",
            timeout_secs
                .saturating_sub(OUTSIDE_SECS)
                .max(60)
                .to_string(),
        ),
    ];
    for (flag, value) in defaults {
        if !given(flag) {
            argv.extend([flag.to_string(), value]);
        }
    }
    argv.extend(args.iter().cloned());
    argv
}

/// Where the guest writes the results of a run on `series`.
fn out_dir(series: &str) -> PathBuf {
    workspace_root().join(format!("bench-results/vm-{series}"))
}

/// The Markdown and JSON files a run with `args` writes into `out`
/// (`pathtrace-bench` names them after its mode).
fn result_files(out: &Path, args: &[String]) -> [PathBuf; 2] {
    let mode = if args.iter().any(|a| a == "--quick") {
        "quick"
    } else {
        "full"
    };
    ["md", "json"].map(|ext| out.join(format!("bench-tiers-{mode}.{ext}")))
}

/// `cargo xtask bench --vm KERNEL [ARGS]`.
pub fn run(series: &str, opts: &VmOpts, args: &[String]) -> Result<()> {
    let timeout = opts.timeout.unwrap_or(super::DEFAULT_TIMEOUT_SECS);
    let vng = tools::ensure()?;
    // The guest's root is the host's: the lab's tools and bpftool must be installed here.
    crate::sysdeps::ensure(
        "cargo xtask bench --vm",
        &[crate::sysdeps::DEMO, crate::sysdeps::BENCH],
    )?;
    let k = kernel::ensure(series, false)?;
    let bench = crate::build::bench()?;
    let out = out_dir(series);
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    // A broken run must not leave the last run's results looking like its own.
    let files = result_files(&out, args);
    for f in &files {
        if f.exists() {
            std::fs::remove_file(f).with_context(|| format!("removing {}", f.display()))?;
        }
    }
    let argv = guest_argv(
        &bench,
        &bench.with_file_name("pathtrace"),
        &out,
        timeout,
        args,
    );
    let guest = Guest {
        vng: &vng,
        kernel: &k,
        cpus: opts.cpus.unwrap_or_else(|| k.default_cpus()),
        timeout: Duration::from_secs(timeout),
        echo_console: opts.console,
        rwdir: Some(&out),
    };
    let step = GuestStep {
        name: "pathtrace-bench".into(),
        env: Vec::new(),
        argv,
    };
    let code = super::run_command(&guest, &format!("bench-{series}"), step)?;
    if code != 0 {
        bail!("pathtrace-bench exited {code} in the VM");
    }
    for f in &files {
        if !f.is_file() {
            bail!(
                "pathtrace-bench finished in the VM but {} is missing",
                f.display()
            );
        }
        eprintln!("xtask: wrote {}", f.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_guest_compares_the_tiers_unless_told_otherwise() {
        let (b, p, o) = (
            Path::new("/w/target/release/pathtrace-bench"),
            Path::new("/w/target/release/pathtrace"),
            Path::new("/w/bench-results/vm-6.12"),
        );
        let argv = guest_argv(b, p, o, 900, &strings(&["--quick"]));
        assert_eq!(
            argv,
            strings(&[
                "/w/target/release/pathtrace-bench",
                "--tiers",
                "tracepoint,fentry,kprobe",
                "--cost-pps",
                "2000",
                "--out",
                "/w/bench-results/vm-6.12",
                "--pathtrace",
                "/w/target/release/pathtrace",
                "--max-secs",
                "660",
                "--quick",
            ])
        );
        let argv = guest_argv(
            b,
            p,
            o,
            100,
            &strings(&["--tiers", "tracepoint,kprobe", "--cost-pps=500"]),
        );
        assert_eq!(argv.iter().filter(|a| *a == "--tiers").count(), 1);
        assert!(!argv.contains(&"--cost-pps".to_string()));
        assert!(argv.ends_with(&strings(&[
            "--tiers",
            "tracepoint,kprobe",
            "--cost-pps=500"
        ])));
        // A limit shorter than the boot still leaves the benchmark a minute.
        let at = argv.iter().position(|a| a == "--max-secs").expect("limit");
        assert_eq!(argv[at + 1], "60");
    }

    #[test]
    fn a_run_replaces_only_the_results_of_its_own_mode() {
        let out = Path::new("/o");
        assert_eq!(
            result_files(out, &strings(&["--quick"])),
            [
                PathBuf::from("/o/bench-tiers-quick.md"),
                PathBuf::from("/o/bench-tiers-quick.json")
            ]
        );
        assert_eq!(
            result_files(out, &[])[1],
            PathBuf::from("/o/bench-tiers-full.json")
        );
    }
}
