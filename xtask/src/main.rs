//! `cargo xtask <task>`: build the kernel programs, run the demo, run the
//! tests, build the packages. Each task's options and work live in its own
//! module; this file only dispatches.
mod bench;
mod build;
mod demo;
mod dist;
mod ebpf;
mod load;
mod oci;
mod proc;
mod sysdeps;
mod test;
mod vm;
mod workspace;

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
    Dist(dist::Options),
    /// Build everything (release) and run `pathtrace demo`.
    Demo(demo::Options),
    /// Build everything and run every test (unit tests, then root integration tests).
    /// With `--vm`, run the root integration tests in stock Debian kernels in QEMU instead;
    /// with `--arm64`, the smoke suite on arm64 under qemu-system-aarch64.
    Test(test::Options),
    /// Build everything (release) and run the benchmark in the namespace lab, the cost curves included (`--quick`: about four minutes; `--scale`: the cost curves alone).
    /// With `--vm`, compare the kernel cost per packet of the tracepoint, fentry and kprobe
    /// tiers in a VM instead.
    Bench(bench::Options),
    /// Keep every CPU busy for SECONDS (what `test --under-load` runs).
    #[command(hide = true)]
    LoadGenerator(load::Options),
    /// Fetch a stock Debian kernel (5.10, 6.1, 6.12) for the VM, and the VM's tools.
    VmKernel(vm::kernel::Options),
    /// Build pathtrace (release) and run it with ARGS in a VM booting a Debian kernel.
    Vm(vm::Options),
}

fn main() {
    let result = match Cli::parse().task {
        Task::BuildEbpf => ebpf::build().map(drop),
        Task::Dist(opts) => dist::run(opts),
        Task::Demo(opts) => demo::run(opts),
        Task::Test(opts) => test::run(opts),
        Task::Bench(opts) => bench::run(opts),
        Task::LoadGenerator(opts) => load::run(opts),
        Task::VmKernel(opts) => vm::kernel::run(opts),
        Task::Vm(opts) => vm::run(opts),
    };
    if let Err(e) = result {
        eprintln!("xtask: {e:#}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(argv: &[&str]) -> Task {
        match Cli::try_parse_from(std::iter::once("xtask").chain(argv.iter().copied())) {
            Ok(cli) => cli.task,
            Err(e) => panic!("{argv:?} does not parse: {e}"),
        }
    }

    fn bench(argv: &[&str]) -> (Option<String>, Option<u64>, Vec<String>) {
        match parse(argv) {
            Task::Bench(o) => (o.vm, o.vm_opts.timeout, o.args),
            _ => panic!("not bench"),
        }
    }

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
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

    #[test]
    fn test_flags_land_where_they_belong() {
        let Task::Test(o) = parse(&[
            "test",
            "--vm",
            "6.12",
            "--tier",
            "kprobe",
            "--vm-suites",
            "trace",
            "--cpus",
            "1",
            "--",
            "some_test",
        ]) else {
            panic!("not test");
        };
        assert_eq!(o.vm.kernels, ["6.12"]);
        assert_eq!(o.vm.tier, ["kprobe"]);
        assert_eq!(o.vm.vm_suites, vm::suites::SuitePlan::Trace);
        assert_eq!(o.vm.vm_opts.cpus, Some(1));
        assert_eq!(o.args, ["some_test"]);
        let Task::Test(o) = parse(&["test", "--suite", "rules", "--under-load", "--", "x"]) else {
            panic!("not test");
        };
        assert!(o.vm.kernels.is_empty() && o.under_load);
        assert_eq!((o.suite, o.args), (vec!["rules".into()], vec!["x".into()]));
        let Task::Test(o) = parse(&["test", "--arm64", "--cpus", "2", "--", "x"]) else {
            panic!("not test");
        };
        assert!(o.arm64 && o.vm.kernels.is_empty());
        assert_eq!((o.vm.vm_opts.cpus, o.args), (Some(2), vec!["x".into()]));
        // The host-only, VM-only and arm64 flags exclude each other, as before.
        for bad in [
            &["test", "--tier", "kprobe"][..],
            &["test", "--vm", "6.12", "--suite", "rules"],
            &["test", "--vm", "6.12", "--under-load"],
            &["test", "--arm64", "--vm", "6.12"],
            &["test", "--arm64", "--suite", "smoke"],
            &["test", "--arm64", "--under-load"],
        ] {
            let got = Cli::try_parse_from(std::iter::once("xtask").chain(bad.iter().copied()));
            assert!(got.is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn dist_takes_targets_by_triple_or_debian_name() {
        let targets = |argv: &[&str]| match parse(argv) {
            Task::Dist(o) => o.targets,
            _ => panic!("not dist"),
        };
        assert!(targets(&["dist"]).is_empty());
        assert_eq!(
            targets(&[
                "dist",
                "--target",
                "aarch64-unknown-linux-musl",
                "--arch",
                "amd64"
            ]),
            [dist::Arch::Aarch64, dist::Arch::X86_64]
        );
        assert!(Cli::try_parse_from(["xtask", "dist", "--target", "riscv64"]).is_err());
    }

    #[test]
    fn every_task_parses() {
        for argv in [
            &["build-ebpf"][..],
            &["dist"],
            &["demo", "--no-docker"],
            &["vm", "--kernel", "6.1", "--", "--version"],
            &["vm-kernel", "6.12", "--update"],
            &["load-generator", "--seconds", "1"],
        ] {
            parse(argv);
        }
    }
}
