//! The one build step: the eBPF object, then the Rust crates that embed it
//! (`tracer`'s build script reads its path from `PATHTRACE_EBPF_OBJ`). Which
//! executables a build made is read from cargo's JSON messages.
use std::{
    io::BufReader,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{bail, Context, Result};
use cargo_metadata::{Message, TargetKind};

use crate::{
    dist::Arch,
    ebpf,
    workspace::{git_revision, workspace_root},
};

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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Profile {
    #[default]
    Debug,
    Release,
}

/// What to build after the eBPF object.
#[derive(Debug, Default)]
pub struct Build<'a> {
    pub profile: Profile,
    /// Packages (`-p`).
    pub packages: &'a [&'a str],
    /// Only this binary (`--bin`).
    pub bin: Option<&'a str>,
    /// The architecture to build for (`--target`, the eBPF object's
    /// `bpf_target_arch` and the cross linker); the host's when unset.
    pub target: Option<Arch>,
}

/// What a build made.
pub struct Built {
    /// The eBPF object; later cargo commands of the same task need it too.
    pub obj: PathBuf,
    executables: Vec<Executable>,
}

impl Built {
    /// The path of the executable `name` this build made.
    pub fn executable(&self, name: &str) -> Result<PathBuf> {
        self.executables
            .iter()
            .find(|e| e.name == name)
            .map(|e| e.path.clone())
            .with_context(|| format!("the build made no `{name}` executable"))
    }
}

/// An executable cargo made, as its messages name it.
pub struct Executable {
    /// The target's name (the binary's, or the test file's).
    pub name: String,
    pub kind: Vec<TargetKind>,
    pub path: PathBuf,
}

/// Builds the eBPF object, then `what`; stops at the first failure.
pub fn build(what: &Build) -> Result<Built> {
    let obj = match what.target {
        Some(arch) => ebpf::build_for(arch)?,
        None => ebpf::build()?,
    };
    let mut args = vec!["build", "--locked"];
    if what.profile == Profile::Release {
        args.push("--release");
    }
    for p in what.packages {
        args.extend(["-p", p]);
    }
    if let Some(bin) = what.bin {
        args.extend(["--bin", bin]);
    }
    if let Some(arch) = what.target {
        args.extend(["--target", arch.target()]);
    }
    let mut cmd = cargo(&args, &obj);
    if let Some((var, linker)) = what.target.and_then(Arch::linker_env) {
        cmd.env(var, linker);
    }
    let executables = executables(&mut cmd)?;
    Ok(Built { obj, executables })
}

/// Builds `pathtrace` and `pathtrace-bench` (release) and returns the
/// benchmark's path; `pathtrace` is next to it.
pub fn bench() -> Result<PathBuf> {
    build(&Build {
        profile: Profile::Release,
        packages: &["tracer", "pathtrace-bench"],
        ..Build::default()
    })?
    .executable("pathtrace-bench")
}

/// The integration test executables of `pathtrace-tests`, built with `obj`.
pub fn integration_tests(obj: &Path) -> Result<Vec<Executable>> {
    let mut cmd = cargo(
        &["test", "--no-run", "--locked", "-p", "pathtrace-tests"],
        obj,
    );
    Ok(executables(&mut cmd)?
        .into_iter()
        .filter(|e| e.kind.contains(&TargetKind::Test))
        .collect())
}

/// The integration test executable `name` of `pathtrace-tests`, built with
/// `obj` for `arch`.
pub fn integration_test_for(obj: &Path, arch: Arch, name: &str) -> Result<PathBuf> {
    let mut cmd = cargo(
        &[
            "test",
            "--no-run",
            "--locked",
            "-p",
            "pathtrace-tests",
            "--test",
            name,
            "--target",
            arch.target(),
        ],
        obj,
    );
    if let Some((var, linker)) = arch.linker_env() {
        cmd.env(var, linker);
    }
    executables(&mut cmd)?
        .into_iter()
        .find(|e| e.name == name && e.kind.contains(&TargetKind::Test))
        .map(|e| e.path)
        .with_context(|| {
            format!(
                "cargo built no `{name}` test executable for {}",
                arch.target()
            )
        })
}

/// Runs the cargo command `cmd` (diagnostics and progress on the terminal)
/// and returns the executables its messages name.
fn executables(cmd: &mut Command) -> Result<Vec<Executable>> {
    cmd.arg("--message-format=json-render-diagnostics")
        .stdout(Stdio::piped());
    let mut child = cmd.spawn().with_context(|| format!("running {cmd:?}"))?;
    let stdout = child.stdout.take().context("cargo's stdout")?;
    let mut found = Vec::new();
    for message in Message::parse_stream(BufReader::new(stdout)) {
        match message.context("reading cargo's messages")? {
            Message::CompilerArtifact(a) => {
                if let Some(path) = a.executable {
                    found.push(Executable {
                        name: a.target.name,
                        kind: a.target.kind,
                        path: path.into_std_path_buf(),
                    });
                }
            }
            Message::TextLine(line) => println!("{line}"),
            _ => {}
        }
    }
    let status = child.wait().context("waiting for cargo")?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(found)
}
