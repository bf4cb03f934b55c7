//! `cargo xtask <task>`: build the kernel programs, run the demo, run the tests.
mod ebpf;
mod tasks;

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
    /// Build the eBPF object (installs nightly, rust-src and bpf-linker when missing).
    BuildEbpf,
    /// Build everything (release) and run `pathtrace demo`.
    Demo {
        /// Extra arguments for `pathtrace demo`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Build everything and run every test (unit tests, then root integration tests).
    Test {
        /// Extra arguments passed to the integration test binaries (e.g. a test name).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() {
    let cli = Cli::parse();
    let result: Result<()> = match cli.task {
        Task::BuildEbpf => ebpf::build().map(|_| ()),
        Task::Demo { args } => tasks::demo(&args),
        Task::Test { args } => tasks::test(&args),
    };
    if let Err(e) = result {
        eprintln!("xtask: {e:#}");
        std::process::exit(1);
    }
}
