//! Stock Debian kernels in QEMU, for the tiers the machine's own kernel refuses
//! (fentry/fexit, kprobes): `cargo xtask vm-kernel`, `cargo xtask vm` and
//! `cargo xtask test --vm`.
//!
//! The guest runs under software emulation (TCG; KVM crashes guests on these
//! machines) with virtme-ng, which shares the host's filesystem as the guest's
//! root, so the binaries built here run inside as they are.
mod guest;
mod kernel;
mod report;
mod tools;

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{bail, Context, Result};

use crate::ebpf::{self, workspace_root};
use crate::proc::{cargo, run};
pub(crate) use crate::proc::{output_of, run_quiet};
use guest::GuestStep;
use report::{Mark, Outcome, Step};

/// The tiers `test --vm` runs by default: those the host kernel can't.
pub const TIERS: &[&str] = &["fentry", "kprobe"];

/// The integration test binaries run in the guest by default: those whose
/// results depend on the tier (`cli` doesn't, and costs a minute under emulation).
const GUEST_TESTS: &[&str] = &["trace_docker"];

/// Limit for one VM run.
pub const DEFAULT_TIMEOUT_SECS: u64 = 15 * 60;

/// `cargo xtask vm-kernel KERNEL`: the kernel and the tools, ready.
pub fn kernel_task(series: &str, update: bool) -> Result<()> {
    tools::ensure()?;
    let k = kernel::ensure(series, update)?;
    println!("{}", k.vmlinuz.display());
    eprintln!(
        "xtask: kernel {} ({}) in {}",
        k.series,
        k.release,
        k.dir.display()
    );
    Ok(())
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
pub fn run_task(
    series: &str,
    cpus: Option<u32>,
    timeout: u64,
    console: bool,
    args: &[String],
) -> Result<()> {
    let vng = tools::ensure()?;
    let k = kernel::ensure(series, false)?;
    let obj = ebpf::build()?;
    run(&mut cargo(
        &[
            "build",
            "--release",
            "--locked",
            "-p",
            "tracer",
            "--bin",
            "pathtrace",
        ],
        &obj,
    ))?;
    let bin = workspace_root().join("target/release/pathtrace");
    let mut argv = vec![bin.display().to_string()];
    argv.extend(args.iter().cloned());
    let name = format!("run-{series}");
    let script = guest::write_script(
        &name,
        &[GuestStep {
            name: "pathtrace".into(),
            env: Vec::new(),
            argv,
        }],
    )?;
    let log = workspace_root().join(format!("target/vm/{name}.log"));
    let cpus = cpus.unwrap_or_else(|| k.default_cpus());
    eprintln!(
        "xtask: booting {} ({cpus} vCPU, software emulation)",
        k.release
    );
    let mut rc = None;
    let mut in_checks = false;
    let out = guest::boot(
        &vng,
        &k,
        cpus,
        &script,
        &log,
        Duration::from_secs(timeout),
        console,
        |mark, _| match mark {
            Mark::Begin(step) => in_checks = step == "guest-checks",
            Mark::Output(line) if in_checks => eprintln!("[guest] {line}"),
            Mark::Output(line) => println!("{line}"),
            Mark::End(step, code) if step == "pathtrace" => rc = Some(code),
            _ => {}
        },
    )?;
    eprintln!(
        "xtask: VM {} ran {:.1} s (boot {:.1} s); console log: {}",
        k.release,
        out.wall.as_secs_f64(),
        out.boot.map(|b| b.as_secs_f64()).unwrap_or(f64::NAN),
        out.log.display()
    );
    match rc {
        Some(code) => std::process::exit(code),
        None => {
            for l in guest::console_tail(&out.log, 40) {
                eprintln!("console: {l}");
            }
            bail!(
                "pathtrace did not finish in the VM ({}; vng exit {:?})",
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

/// The integration test executables, from `cargo test --no-run --message-format=json`.
fn test_executables(obj: &Path) -> Result<Vec<(String, PathBuf)>> {
    let mut cmd = cargo(
        &[
            "test",
            "--no-run",
            "--locked",
            "-p",
            "pathtrace-tests",
            "--message-format=json",
        ],
        obj,
    );
    cmd.stderr(std::process::Stdio::inherit());
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("building the integration tests failed");
    }
    let mut found = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if !line.contains("\"reason\":\"compiler-artifact\"")
            || !line.contains("\"kind\":[\"test\"]")
        {
            continue;
        }
        let (Some(exe), Some(name)) = (json_string(line, "executable"), target_name(line)) else {
            continue;
        };
        found.push((name, PathBuf::from(exe)));
    }
    Ok(found)
}

/// The string value of the first `"key":"…"` in a JSON line (cargo's messages
/// are flat enough for this; escapes are decoded).
fn json_string(line: &str, key: &str) -> Option<String> {
    let pat = format!("\"{key}\":\"");
    let start = line.find(&pat)? + pat.len();
    let mut out = String::new();
    let mut chars = line[start..].chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(out),
            '\\' => match chars.next()? {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                'u' => {
                    let hex: String = chars.by_ref().take(4).collect();
                    out.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
                }
                other => out.push(other),
            },
            c => out.push(c),
        }
    }
    None
}

fn target_name(line: &str) -> Option<String> {
    let target = &line[line.find("\"target\":{")?..];
    json_string(target, "name")
}

/// The result of one (kernel, tier) run.
struct RunResult {
    label: String,
    steps: Vec<Step>,
    ok: bool,
    summary: String,
}

/// `cargo xtask test --vm KERNEL… [--tier TIER…] [-- TEST ARGS]`.
pub fn test_task(
    kernels: &[String],
    tiers: &[String],
    test_names: &[String],
    cpus: Option<u32>,
    timeout: u64,
    console: bool,
    args: &[String],
) -> Result<()> {
    let kernels = split_list(kernels);
    let tiers = if tiers.is_empty() {
        TIERS.iter().map(|t| t.to_string()).collect()
    } else {
        split_list(tiers)
    };
    for t in &tiers {
        if !["fentry", "kprobe", "tracepoint"].contains(&t.as_str()) {
            bail!("unknown tier {t:?}: choose fentry, kprobe or tracepoint");
        }
    }
    let vng = tools::ensure()?;
    let mut ks = Vec::new();
    for series in &kernels {
        ks.push(kernel::ensure(series, false)?);
    }
    let obj = ebpf::build()?;
    run(&mut cargo(
        &["build", "--locked", "-p", "tracer", "--bin", "pathtrace"],
        &obj,
    ))?;
    let bin = workspace_root().join("target/debug/pathtrace");
    let exes = test_executables(&obj)?;
    let test_names = if test_names.is_empty() {
        GUEST_TESTS.iter().map(|t| t.to_string()).collect()
    } else {
        split_list(test_names)
    };
    let mut chosen = Vec::new();
    for want in &test_names {
        let (_, exe) = exes.iter().find(|(n, _)| n == want).with_context(|| {
            let known: Vec<&str> = exes.iter().map(|(n, _)| n.as_str()).collect();
            format!(
                "no `{want}` integration test (there are: {})",
                known.join(", ")
            )
        })?;
        chosen.push((want.clone(), exe.clone()));
    }

    let mut results = Vec::new();
    for k in &ks {
        for tier in &tiers {
            results.push(test_one(
                &vng, k, tier, cpus, timeout, console, &bin, &chosen, args,
            )?);
        }
    }

    println!();
    println!("VM test summary:");
    let (mut passed, mut failed, mut skipped) = (0, 0, 0);
    for r in &results {
        for s in &r.steps {
            for (name, o, took) in s.results() {
                match o {
                    Outcome::Passed => passed += 1,
                    Outcome::Failed => failed += 1,
                    Outcome::Skipped | Outcome::Ignored => skipped += 1,
                }
                println!(
                    "  {} {}::{name} ... {} ({:.1} s)",
                    r.label,
                    s.name,
                    o.label(),
                    took.as_secs_f64()
                );
            }
        }
    }
    for r in &results {
        println!("{}", r.summary);
    }
    let broken = results.iter().filter(|r| !r.ok).count();
    println!("vm: {passed} passed, {failed} failed, {skipped} skipped");
    if broken > 0 {
        bail!("{broken} of {} VM runs did not pass", results.len());
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn test_one(
    vng: &Path,
    k: &kernel::Kernel,
    tier: &str,
    cpus: Option<u32>,
    timeout: u64,
    console: bool,
    bin: &Path,
    tests: &[(String, PathBuf)],
    args: &[String],
) -> Result<RunResult> {
    let label = format!("[{}/{tier}]", k.series);
    let env = vec![
        ("PATHTRACE_BIN".to_string(), bin.display().to_string()),
        ("PATHTRACE_TEST_TIER".to_string(), tier.to_string()),
        ("PATHTRACE_TEST_DOCKER".to_string(), "emulated".to_string()),
        // Software emulation is several times slower than the host.
        ("PATHTRACE_TEST_TIMEOUT_SCALE".to_string(), "6".to_string()),
    ];
    let steps: Vec<GuestStep> = tests
        .iter()
        .map(|(name, exe)| {
            let mut argv = vec![
                exe.display().to_string(),
                "--test-threads=1".into(),
                "--show-output".into(),
            ];
            argv.extend(args.iter().cloned());
            GuestStep {
                name: name.clone(),
                env: env.clone(),
                argv,
            }
        })
        .collect();
    let name = format!("test-{}-{tier}", k.series);
    let script = guest::write_script(&name, &steps)?;
    let log = workspace_root().join(format!("target/vm/{name}.log"));
    let cpus = cpus.unwrap_or_else(|| k.default_cpus());
    println!(
        "{label} booting {} ({cpus} vCPU, software emulation), tier {tier}",
        k.release
    );
    let mut done_steps: Vec<Step> = Vec::new();
    let mut current: Option<Step> = None;
    let out = guest::boot(
        vng,
        k,
        cpus,
        &script,
        &log,
        Duration::from_secs(timeout),
        console,
        |mark, at| match mark {
            Mark::Begin(step) => {
                println!("{label} {:>6.1}s ---- {step}", at.as_secs_f64());
                current = (step != "guest-checks").then(|| Step::new(&step, at));
            }
            Mark::Output(line) => {
                println!("{label} {line}");
                if let Some(s) = current.as_mut() {
                    s.feed(&line, at);
                }
            }
            Mark::End(step, rc) => {
                println!("{label} {:>6.1}s ---- {step} exited {rc}", at.as_secs_f64());
                if let Some(mut s) = current.take() {
                    s.rc = Some(rc);
                    done_steps.push(s);
                }
            }
            Mark::Done => {}
        },
    )?;
    if let Some(s) = current.take() {
        done_steps.push(s);
    }
    let mut problems = Vec::new();
    if out.timed_out {
        problems.push(format!("timed out after {timeout} s"));
    } else if !out.done {
        problems.push(format!(
            "the guest script did not finish (vng exit {:?})",
            out.vng_status
        ));
    }
    for (want, _) in tests {
        match done_steps.iter().find(|s| &s.name == want) {
            None => problems.push(format!("{want} did not run")),
            Some(s) => {
                if s.rc != Some(0) {
                    problems.push(format!("{want} exited {:?}", s.rc));
                }
                if s.tests.is_empty() && args.is_empty() {
                    problems.push(format!("{want} ran no test"));
                }
            }
        }
    }
    if !problems.is_empty() && !out.done {
        for l in guest::console_tail(&out.log, 40) {
            println!("{label} console: {l}");
        }
    }
    let count = |o: Outcome| {
        done_steps
            .iter()
            .flat_map(|s| s.results())
            .filter(|(_, r, _)| *r == o)
            .count()
    };
    let ok = problems.is_empty() && count(Outcome::Failed) == 0;
    let summary = format!(
        "{label} {} tier {tier}: {} passed, {} failed, {} skipped; VM {:.1} s (boot {:.1} s){}{}",
        k.release,
        count(Outcome::Passed),
        count(Outcome::Failed),
        count(Outcome::Skipped) + count(Outcome::Ignored),
        out.wall.as_secs_f64(),
        out.boot.map(|b| b.as_secs_f64()).unwrap_or(f64::NAN),
        if ok { "" } else { " — FAILED: " },
        problems.join("; ")
    );
    println!("{summary}; console log {}", out.log.display());
    Ok(RunResult {
        label,
        steps: done_steps,
        ok,
        summary,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cargo_messages_give_test_executables() {
        let line = r#"{"reason":"compiler-artifact","package_id":"x","target":{"kind":["test"],"crate_types":["bin"],"name":"trace_docker","src_path":"/w/tests/trace_docker.rs"},"profile":{},"features":[],"filenames":["/w/target/debug/deps/trace_docker-1a2b"],"executable":"/w/target/debug/deps/trace_docker-1a2b","fresh":true}"#;
        assert_eq!(
            json_string(line, "executable").as_deref(),
            Some("/w/target/debug/deps/trace_docker-1a2b")
        );
        assert_eq!(target_name(line).as_deref(), Some("trace_docker"));
        assert_eq!(
            json_string(r#"{"a":"x\"y\\z\u0041"}"#, "a").as_deref(),
            Some("x\"y\\zA")
        );
    }

    #[test]
    fn lists_split_on_commas() {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(split_list(&v(&["6.1,6.12", "6.1"])), v(&["6.1", "6.12"]));
    }
}
