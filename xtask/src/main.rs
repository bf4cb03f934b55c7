//! `cargo xtask <task>`: build the kernel programs, run the demo, run the
//! tests, build the packages.
mod bench;
mod dist;
mod ebpf;
mod load;
mod oci;
mod proc;
mod sysdeps;
mod tasks;
mod vm;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "pathtrace development tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Build the eBPF object (installs the pinned nightly, rust-src and bpf-linker when missing).
    BuildEbpf,
    /// Build what users install into target/dist: a static binary, a .deb, a tarball
    /// and a container image (OCI archive, from scratch).
    Dist {
        /// The architecture to build for (x86_64-unknown-linux-musl or
        /// aarch64-unknown-linux-musl; also amd64, arm64); repeatable. Default: x86_64.
        #[arg(
            long = "target",
            visible_alias = "arch",
            value_enum,
            value_name = "TARGET"
        )]
        targets: Vec<dist::Arch>,
    },
    /// Build everything (release) and run `pathtrace demo`.
    Demo {
        /// Extra arguments for `pathtrace demo`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Build everything and run every test (unit tests, then root integration tests).
    /// With `--vm`, run the root integration tests in stock Debian kernels in QEMU instead.
    Test {
        /// Run the integration tests in a VM with this Debian kernel (5.10, 6.1, 6.12);
        /// repeat it or give a comma list.
        #[arg(long = "vm", value_name = "KERNEL")]
        vm: Vec<String>,
        /// With --vm: the pathtrace tier to test (fentry, kprobe); repeatable. Default: both.
        #[arg(long, value_name = "TIER", requires = "vm")]
        tier: Vec<String>,
        /// With --vm: the integration test binaries to run in the guest; repeatable.
        /// Default: as --vm-suites says.
        #[arg(long = "vm-test", value_name = "NAME", requires = "vm")]
        vm_test: Vec<String>,
        /// With --vm: which suites run where. matrix: the core suites and rules,
        /// diagnose, drops, pcap and hypervisor on one kernel per tier (fentry on
        /// 5.10, kprobe on 6.12),
        /// the core suites (trace_docker, hooks) on the others; all: every guest
        /// suite everywhere; trace: the core suites only.
        #[arg(long = "vm-suites", value_enum, default_value_t = vm::SuitePlan::Matrix, requires = "vm")]
        vm_suites: vm::SuitePlan,
        /// With --vm: host CPUs the guests may use at once; with more than 1, guests
        /// run side by side (their vCPUs never more than this in all). Default: 1, one
        /// guest at a time.
        #[arg(
            long = "vm-host-cpus",
            value_name = "N",
            default_value_t = 1,
            requires = "vm"
        )]
        vm_host_cpus: u32,
        #[command(flatten)]
        vm_opts: VmOpts,
        /// Instead: build for arm64 (`dist --target aarch64-unknown-linux-musl`) and run
        /// the smoke suite on every tier in a Debian arm64 kernel under qemu-system-aarch64
        /// (software emulation).
        #[arg(long, conflicts_with_all = ["vm", "suite", "under_load"])]
        arm64: bool,
        /// Without --vm: run only this integration suite (a file of tests/, e.g.
        /// hypervisor), no unit tests; repeatable. Names after `--` filter tests.
        #[arg(long, value_name = "NAME", conflicts_with = "vm")]
        suite: Vec<String>,
        /// Without --vm: run the tests with every CPU kept busy by a load
        /// generator (ended with the tests, and after 2 hours at most); prints
        /// how long they took.
        #[arg(long, conflicts_with = "vm")]
        under_load: bool,
        /// Extra arguments passed to the integration test binaries (e.g. a test name).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Build everything (release) and run the benchmark in the namespace lab (`--quick`: about a minute).
    /// With `--vm`, compare the kernel cost per packet of the tracepoint, fentry and kprobe
    /// tiers in a VM instead.
    Bench {
        /// Run in a VM with this Debian kernel (5.10, 6.1, 6.12): pathtrace's tiers
        /// take turns under the same traffic (`pathtrace-bench --tiers`); results in
        /// bench-results/vm-KERNEL/.
        #[arg(long = "vm", value_name = "KERNEL")]
        vm: Option<String>,
        #[command(flatten)]
        vm_opts: VmOpts,
        /// Arguments for `pathtrace-bench` (--quick, --docker real, --out DIR, --only LIST).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Keep every CPU busy for SECONDS (what `test --under-load` runs).
    #[command(hide = true)]
    LoadGenerator {
        #[arg(long)]
        seconds: u64,
    },
    /// Fetch a stock Debian kernel (5.10, 6.1, 6.12) for the VM, and the VM's tools.
    VmKernel {
        kernel: String,
        /// Ask apt for a newer package even when one is cached.
        #[arg(long)]
        update: bool,
    },
    /// Build pathtrace (release) and run it with ARGS in a VM booting a Debian kernel.
    Vm {
        /// The Debian kernel: 5.10, 6.1 or 6.12.
        #[arg(long, value_name = "KERNEL")]
        kernel: String,
        #[command(flatten)]
        vm_opts: VmOpts,
        /// Arguments for `pathtrace`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

#[derive(clap::Args)]
struct VmOpts {
    /// vCPUs for the guest (default: 2 for 6.1; 1 for 6.12, which oopses with 2 under emulation, and for 5.10).
    #[arg(long)]
    cpus: Option<u32>,
    /// Seconds before a VM run is killed (default: `vm` and `bench --vm` 15 minutes;
    /// `test --vm` 3 minutes plus 10 per suite the run holds).
    #[arg(long)]
    timeout: Option<u64>,
    /// Print the guest's whole serial console (kernel log included).
    #[arg(long)]
    console: bool,
}

fn main() {
    let cli = Cli::parse();
    let result: Result<()> = match cli.task {
        Task::Bench {
            vm: Some(kernel),
            vm_opts,
            args,
        } => vm::bench_task(
            &kernel,
            vm_opts.cpus,
            vm_opts.timeout.unwrap_or(vm::DEFAULT_TIMEOUT_SECS),
            vm_opts.console,
            &args,
        ),
        Task::Bench {
            vm: None,
            vm_opts,
            args,
        } => {
            if vm_opts.cpus.is_some() || vm_opts.timeout.is_some() || vm_opts.console {
                eprintln!("xtask: --cpus, --timeout and --console are for --vm runs");
                std::process::exit(2);
            }
            bench::bench(&args)
        }
        Task::BuildEbpf => ebpf::build().map(|_| ()),
        Task::Dist { targets } => dist::build(&targets).map(|_| ()),
        Task::Demo { args } => tasks::demo(&args),
        Task::Test {
            arm64: true,
            vm_opts,
            args,
            ..
        } => vm::arm64::test_task(
            vm_opts.cpus,
            vm_opts.timeout.unwrap_or(vm::arm64::DEFAULT_TIMEOUT_SECS),
            vm_opts.console,
            &args,
        ),
        Task::Test {
            vm,
            tier,
            vm_test,
            vm_suites,
            vm_host_cpus,
            vm_opts,
            args,
            ..
        } if !vm.is_empty() => vm::test_task(
            &vm,
            &tier,
            &vm_test,
            vm_suites,
            vm_opts.cpus,
            vm_host_cpus,
            vm_opts.timeout,
            vm_opts.console,
            &args,
        ),
        Task::Test {
            suite,
            under_load,
            args,
            ..
        } => tasks::test(&suite, under_load, &args),
        Task::LoadGenerator { seconds } => load::generate(seconds),
        Task::VmKernel { kernel, update } => vm::kernel_task(&kernel, update),
        Task::Vm {
            kernel,
            vm_opts,
            args,
        } => vm::run_task(
            &kernel,
            vm_opts.cpus,
            vm_opts.timeout.unwrap_or(vm::DEFAULT_TIMEOUT_SECS),
            vm_opts.console,
            &args,
        ),
    };
    if let Err(e) = result {
        eprintln!("xtask: {e:#}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bench(argv: &[&str]) -> (Option<String>, Option<u64>, Vec<String>) {
        let cli = Cli::try_parse_from(std::iter::once("xtask").chain(argv.iter().copied()))
            .expect("parses");
        match cli.task {
            Task::Bench { vm, vm_opts, args } => (vm, vm_opts.timeout, args),
            _ => panic!("not bench"),
        }
    }

    #[test]
    fn bench_takes_its_own_flags_and_passes_the_rest_on() {
        assert_eq!(
            bench(&["bench", "--quick"]),
            (None, None, vec!["--quick".into()])
        );
        assert_eq!(
            bench(&["bench", "--vm", "6.12", "--timeout", "600", "--quick"]),
            (Some("6.12".into()), Some(600), vec!["--quick".into()])
        );
        assert_eq!(
            bench(&["bench", "--vm", "6.12", "--", "--only", "cost"]),
            (
                Some("6.12".into()),
                None,
                vec!["--only".into(), "cost".into()]
            )
        );
    }
}
