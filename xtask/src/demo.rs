//! `cargo xtask demo [ARGS]`: installs the system packages the demo needs,
//! builds everything (release) and runs `pathtrace demo ARGS`.
use std::process::Command;

use anyhow::{Context, Result};

use crate::{
    build::{build, Build, Profile},
    proc::need_root,
    sysdeps,
};

#[derive(clap::Args)]
pub struct Options {
    /// Extra arguments for `pathtrace demo`.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

pub fn run(opts: Options) -> Result<()> {
    need_root(
        "demo",
        "it builds network namespaces and loads eBPF programs",
    )?;
    sysdeps::ensure("cargo xtask demo", &[sysdeps::DEMO])?;
    let bin = build(&Build {
        profile: Profile::Release,
        packages: &["tracer"],
        ..Build::default()
    })?
    .executable("pathtrace")?;
    let status = Command::new(&bin)
        .arg("demo")
        .args(&opts.args)
        .status()
        .with_context(|| format!("running {}", bin.display()))?;
    std::process::exit(status.code().unwrap_or(1));
}
