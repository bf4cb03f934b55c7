//! `cargo xtask bench [--quick] [ARGS]`: build everything release-mode the
//! way `demo` does (the eBPF object, then `tracer` and the `pathtrace-bench`
//! crate), and run `pathtrace-bench`: the namespace lab's sections, then
//! the cost curves. Results go to `bench-results/` (one Markdown report,
//! its JSON, and the curves as PNG). Missed targets don't fail the task;
//! only a run that breaks does. With `--vm KERNEL` it runs in a guest
//! instead (`vm/bench.rs`).
use std::process::Command;

use anyhow::Result;

use crate::{build, proc::run as run_cmd, sysdeps, vm, workspace::workspace_root};

#[derive(clap::Args)]
pub struct Options {
    /// Run in a VM with this Debian kernel (5.10, 6.1, 6.12): pathtrace's tiers
    /// take turns under the same traffic (`pathtrace-bench --tiers`); results in
    /// bench-results/vm-KERNEL/.
    #[arg(long = "vm", value_name = "KERNEL")]
    pub vm: Option<String>,
    #[command(flatten)]
    pub vm_opts: vm::VmOpts,
    /// Arguments for `pathtrace-bench` (--quick, --docker real, --out DIR, --only LIST, --scale).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

pub fn run(opts: Options) -> Result<()> {
    if let Some(kernel) = &opts.vm {
        return vm::bench::run(kernel, &opts.vm_opts, &opts.args);
    }
    if opts.vm_opts.is_set() {
        eprintln!("xtask: --cpus, --timeout and --console are for --vm runs");
        std::process::exit(2);
    }
    sysdeps::ensure("cargo xtask bench", &[sysdeps::DEMO, sysdeps::BENCH])?;
    let bin = build::bench()?;
    run_cmd(
        Command::new(&bin)
            .args(&opts.args)
            .current_dir(workspace_root()),
    )
}
