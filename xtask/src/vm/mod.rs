//! Stock Debian kernels in QEMU, for the tiers the machine's own kernel refuses
//! (fentry/fexit, kprobes): `cargo xtask vm-kernel`, `cargo xtask vm` and
//! `cargo xtask test --vm`.
//!
//! The guest runs under software emulation (TCG; KVM crashes guests on these
//! machines) with virtme-ng, which shares the host's filesystem as the guest's
//! root, so the binaries built here run inside as they are.
pub mod arm64;
mod bench;
mod guest;
mod kernel;
mod report;
mod tools;

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{bail, Context, Result};

use crate::ebpf::{self, workspace_root};
use crate::proc::{cargo, run};
pub(crate) use crate::proc::{output_of, run_quiet};
pub use bench::bench_task;
use guest::GuestStep;
use report::{Mark, Outcome, Step};

/// The tiers `test --vm` runs by default: those the host kernel can't.
pub const TIERS: &[&str] = &["fentry", "kprobe"];

/// An integration test binary run in the guests, and the cases in it that
/// can't run there (skipped by name with libtest's `--skip`, and listed with
/// their reason in the report: never a silent pass).
pub struct GuestSuite {
    pub name: &'static str,
    /// `(test, why it can't run in a guest)`.
    pub not_in_guest: &'static [(&'static str, &'static str)],
    /// Environment for this suite in the guest, and why (shown in the report).
    pub env: &'static [(&'static str, &'static str)],
    pub note: Option<&'static str>,
    /// Tests `#[ignore]`d on the host because its kernel can't run them,
    /// which the guests run (with `--include-ignored`): exactly the
    /// suite's ignored tests, or planning fails.
    pub guest_only: &'static [&'static str],
}

/// For the suites that need a real dockerd (container names from its API, a
/// dockerd restart): it runs in the guests once AppArmor is off (see
/// `guest::boot`), but is slower to start than the emulated lab the other
/// suites use.
const REAL_DOCKERD: &[(&str, &str)] = &[("PATHTRACE_TEST_DOCKER", "real")];

/// Every suite that can run in a guest, in the order they run. `cli` (no
/// kernel involved) and `install` (the .deb installed with dpkg on the
/// read-only 9p root) run on the host only.
pub const GUEST_SUITES: &[GuestSuite] = &[
    GuestSuite {
        name: "trace_docker",
        not_in_guest: &[],
        env: &[],
        note: None,
        guest_only: &[],
    },
    GuestSuite {
        name: "hooks",
        not_in_guest: &[],
        env: &[],
        note: None,
        guest_only: &[],
    },
    GuestSuite {
        name: "rules",
        not_in_guest: &[],
        env: &[],
        note: None,
        guest_only: &[],
    },
    GuestSuite {
        name: "diagnose",
        not_in_guest: &[],
        env: REAL_DOCKERD,
        note: Some("on a real dockerd (container names come from its API)"),
        guest_only: &[],
    },
    GuestSuite {
        name: "drops",
        not_in_guest: &[],
        env: &[],
        note: None,
        guest_only: &[],
    },
    GuestSuite {
        name: "pcap",
        not_in_guest: &[],
        env: &[],
        note: Some("on the emulated Docker lab, read by the host's tshark and capinfos"),
        guest_only: &[],
    },
    GuestSuite {
        name: "reliability",
        not_in_guest: &[],
        env: REAL_DOCKERD,
        note: Some("on a real dockerd (dockerd_restarting_mid_trace restarts it)"),
        guest_only: &[],
    },
    GuestSuite {
        name: "hypervisor",
        not_in_guest: &[(
            "engine_started_after_pathtrace_names_the_container",
            "names come from a real dockerd's API, started mid-trace; the suite runs on the emulated lab",
        )],
        env: &[],
        note: Some("on the emulated Docker lab: the guest's DOCKER-USER rule and its bridge/ip FORWARD hooks, without container names"),
        guest_only: &[],
    },
    GuestSuite {
        name: "failures",
        not_in_guest: &[],
        env: &[],
        note: Some("the failure classes that are not a rule (docs/diagnosis.md), each in namespaces of its own"),
        guest_only: &[],
    },
    GuestSuite {
        name: "odd_states",
        not_in_guest: &[(
            "more_rule_namespaces_than_the_bound_keep_the_nearest_and_say_so",
            "which namespaces are armed first is decided in userspace, the same on every kernel; it runs on the host (84 s in a guest)",
        )],
        env: &[],
        note: Some("the flowtable case runs only here: the host kernel has no flowtables"),
        guest_only: &["flowtable_offload_names_the_flowtable_and_the_hooks_it_skips"],
    },
    GuestSuite {
        name: "cleanup",
        not_in_guest: &[],
        env: &[("PATHTRACE_CLEANUP_ROUNDS", "12")],
        note: Some("a subset: 12 random ends instead of 50 (time under emulation), demo on the emulated Docker lab"),
        guest_only: &[],
    },
];

/// Tests that fail on one (kernel, tier) for a reason not yet fixed:
/// `(kernel, tier, suite, test, why)`. Skipped there by name and listed in
/// the report as not run, with the reason; docs/testing.md, "Tiers, and where each is tested", says the same.
/// None at present.
pub const KNOWN_FAILURES: &[(&str, &str, &str, &str, &str)] = &[];

/// The suites every (kernel, tier) runs, even where the full suites don't:
/// the path, and the nf_hook_slow verdicts (nested, concurrent).
pub const CORE_SUITES: &[&str] = &["trace_docker", "hooks"];

/// The suites `--vm-suites matrix` runs on one kernel per tier
/// ([`FULL_SUITES_ON`]): the core, rule attribution, diagnosis, drops, the
/// pcap-ng capture, the hypervisor topology, the failure classes and the
/// odd states (the flowtable case runs nowhere else) (in `GUEST_SUITES`'
/// order; see [`FULL_SUITES_ON_ONE_TIER`]). `reliability` and `cleanup`
/// (tier-independent userspace paths, and the slowest under emulation) run
/// in guests with `--vm-suites all` or `--vm-test NAME`.
pub const MATRIX_SUITES: &[&str] = &[
    "trace_docker",
    "hooks",
    "rules",
    "diagnose",
    "drops",
    "pcap",
    "hypervisor",
    "failures",
    "odd_states",
];

/// Where [`MATRIX_SUITES`] run by default, one kernel per tier (the others
/// run [`CORE_SUITES`]): everything on every kernel doesn't fit CI's hour
/// under software emulation (docs/testing.md).
/// - fentry on 5.10: the oldest kernel (no drop reasons, no
///   `NFT_TABLE_F_OWNER`, the pre-5.14 `nf_hook_state` layout, BPF maps
///   charged to `RLIMIT_MEMLOCK`);
/// - kprobe on 6.12: the newest. Both boot with 1 vCPU, so they run side by
///   side on a 2-CPU machine; 6.1 (2 vCPUs, concurrent softirqs) runs the
///   core suites, `hooks`' concurrency case among them, on both tiers.
pub const FULL_SUITES_ON: &[(&str, &str)] = &[("fentry", "5.10"), ("kprobe", "6.12")];

/// Matrix suites that run on one tier's full-suite kernel only, to balance
/// the two guests that run side by side: `failures` (about 15 minutes under
/// emulation) beside 6.12 kprobe's shorter run, not 5.10 fentry's longer
/// one (which runs it with `--vm-test failures`); `odd_states` (about 5
/// minutes) on 5.10 fentry (6.12 kprobe runs it with `--vm-test odd_states`).
pub const FULL_SUITES_ON_ONE_TIER: &[(&str, &str)] =
    &[("failures", "kprobe"), ("odd_states", "fentry")];

/// Which suites `test --vm` runs on each (kernel, tier).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SuitePlan {
    /// MATRIX_SUITES on one kernel per tier (FULL_SUITES_ON), the core suites on the others.
    Matrix,
    /// Every guest suite (GUEST_SUITES, reliability and cleanup too) on every kernel and tier.
    All,
    /// The core suites only (CORE_SUITES).
    Trace,
}

/// The suites a (kernel, tier) runs under `plan`, given all the kernels
/// asked for: when a tier's full-suite kernel isn't among them, the first
/// one asked for runs that tier's full suites instead.
pub fn plan_suites(
    plan: SuitePlan,
    kernels: &[String],
    series: &str,
    tier: &str,
) -> Vec<&'static str> {
    let full = match plan {
        SuitePlan::All => return GUEST_SUITES.iter().map(|s| s.name).collect(),
        SuitePlan::Trace => false,
        SuitePlan::Matrix => {
            let preferred = FULL_SUITES_ON
                .iter()
                .find(|(t, _)| *t == tier)
                .map(|(_, k)| *k)
                .filter(|k| kernels.iter().any(|x| x == k));
            match preferred {
                Some(k) => k == series,
                None => kernels.first().is_some_and(|k| k == series),
            }
        }
    };
    if full {
        MATRIX_SUITES
            .iter()
            .copied()
            .filter(|s| {
                FULL_SUITES_ON_ONE_TIER
                    .iter()
                    .all(|(suite, only)| suite != s || *only == tier)
            })
            .collect()
    } else {
        CORE_SUITES.to_vec()
    }
}

/// Limit for one VM run.
pub const DEFAULT_TIMEOUT_SECS: u64 = 15 * 60;

/// Limit for one `test --vm` run: boot, plus this much per suite (the full
/// suites took 15 to 22 minutes under emulation; a hang must still end).
const BOOT_SECS: u64 = 3 * 60;
const SECS_PER_SUITE: u64 = 10 * 60;
/// Suites that take longer than [`SECS_PER_SUITE`] under emulation, and
/// their own budget: `failures` is 25 cases of about 45 s each.
const LONG_SUITES: &[(&str, u64)] = &[("failures", 35 * 60)];

/// The time one guest may take for `suites`.
fn guest_budget<'a>(suites: impl Iterator<Item = &'a str>) -> u64 {
    BOOT_SECS
        + suites
            .map(|s| {
                LONG_SUITES
                    .iter()
                    .find(|(n, _)| *n == s)
                    .map_or(SECS_PER_SUITE, |(_, secs)| *secs)
            })
            .sum::<u64>()
}

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
    let code = run_command(
        &vng,
        &k,
        cpus.unwrap_or_else(|| k.default_cpus()),
        &format!("run-{series}"),
        GuestStep {
            name: "pathtrace".into(),
            env: Vec::new(),
            argv,
        },
        Duration::from_secs(timeout),
        console,
        None,
    )?;
    std::process::exit(code)
}

/// Boots `k` and runs one command in it (the script `target/vm/NAME.sh`):
/// its output goes to stdout, the guest's checks to stderr. Returns its exit
/// code; a run that never got to its end is an error, with the console's tail.
#[allow(clippy::too_many_arguments)]
fn run_command(
    vng: &Path,
    k: &kernel::Kernel,
    cpus: u32,
    name: &str,
    step: GuestStep,
    timeout: Duration,
    console: bool,
    rwdir: Option<&Path>,
) -> Result<i32> {
    let what = step.name.clone();
    let script = guest::write_script(name, &[step])?;
    let log = workspace_root().join(format!("target/vm/{name}.log"));
    eprintln!(
        "xtask: booting {} ({cpus} vCPU, software emulation) to run {what}",
        k.release
    );
    let mut rc = None;
    let mut in_checks = false;
    let out = guest::boot(
        vng,
        k,
        cpus,
        &script,
        &log,
        timeout,
        console,
        rwdir,
        |mark, _| match mark {
            Mark::Begin(step) => in_checks = step == "guest-checks",
            Mark::Output(line) if in_checks => eprintln!("[guest] {line}"),
            Mark::Output(line) => println!("{line}"),
            Mark::End(step, code) if step == what => rc = Some(code),
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

/// A suite as one (kernel, tier) run runs it.
#[derive(Debug, Clone)]
struct Planned {
    name: String,
    exe: PathBuf,
    /// `(test, reason)`: skipped by name in the guest, listed in the report.
    not_in_guest: Vec<(String, String)>,
    env: Vec<(String, String)>,
    note: Option<String>,
    /// Run the suite's `#[ignore]`d tests too (see [`GuestSuite::guest_only`]).
    include_ignored: bool,
}

/// The names of the tests in a test executable (`EXE --list`, run on the
/// host); only the ignored ones with `ignored`.
fn list_tests_of(exe: &Path, ignored: bool) -> Result<Vec<String>> {
    let mut cmd = Command::new(exe);
    cmd.args(["--list", "--format=terse"]);
    if ignored {
        cmd.arg("--ignored");
    }
    let out = output_of(&mut cmd)?;
    Ok(out
        .lines()
        .filter_map(|l| l.strip_suffix(": test"))
        .map(str::to_owned)
        .collect())
}

/// The names of the tests in a test executable.
fn list_tests(exe: &Path) -> Result<Vec<String>> {
    list_tests_of(exe, false)
}

fn plan_one(name: &str, exes: &[(String, PathBuf)]) -> Result<Planned> {
    let (_, exe) = exes.iter().find(|(n, _)| n == name).with_context(|| {
        let known: Vec<&str> = exes.iter().map(|(n, _)| n.as_str()).collect();
        format!(
            "no `{name}` integration test (there are: {})",
            known.join(", ")
        )
    })?;
    let suite = GUEST_SUITES.iter().find(|s| s.name == name);
    let not_in_guest: Vec<(String, String)> = suite
        .map(|s| s.not_in_guest)
        .unwrap_or_default()
        .iter()
        .map(|(t, why)| (t.to_string(), why.to_string()))
        .collect();
    if !not_in_guest.is_empty() {
        // A stale name would skip nothing and hide nothing: refuse it.
        let tests = list_tests(exe).with_context(|| format!("listing the {name} tests"))?;
        for (t, _) in &not_in_guest {
            if !tests.contains(t) {
                bail!("GUEST_SUITES says {name}::{t} can't run in a guest, but {name} has no such test (there are: {})", tests.join(", "));
            }
        }
    }
    let guest_only = suite.map(|s| s.guest_only).unwrap_or_default();
    if !guest_only.is_empty() {
        // --include-ignored runs every ignored test: they must be these.
        let mut ignored = list_tests_of(exe, true)
            .with_context(|| format!("listing the {name} tests ignored on the host"))?;
        ignored.sort();
        let mut want: Vec<String> = guest_only.iter().map(|t| t.to_string()).collect();
        want.sort();
        if ignored != want {
            bail!("GUEST_SUITES says {name}'s guest-only tests are {want:?}, but its ignored tests are {ignored:?}");
        }
    }
    Ok(Planned {
        name: name.to_string(),
        exe: exe.clone(),
        include_ignored: !guest_only.is_empty(),
        not_in_guest,
        env: suite
            .map(|s| s.env)
            .unwrap_or_default()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        note: suite.and_then(|s| s.note).map(str::to_owned),
    })
}

/// The result of one (kernel, tier) run.
struct RunResult {
    label: String,
    steps: Vec<Step>,
    /// `(suite, seconds)` of each suite that ran.
    took: Vec<(String, f64)>,
    not_in_guest: Vec<String>,
    notes: Vec<String>,
    ok: bool,
    summary: String,
}

/// One (kernel, tier) run of `test --vm`.
struct Job<'a> {
    k: &'a kernel::Kernel,
    tier: String,
    cpus: u32,
    timeout: u64,
    suites: Vec<Planned>,
}

/// Runs `jobs` with guests side by side, their vCPUs never more than
/// `host_cpus` in all (software emulation runs each vCPU on a host thread);
/// the results come back in the jobs' order. The longest (most suites) start
/// first; a free CPU takes the first job that fits.
fn side_by_side<'a>(
    jobs: Vec<Job<'a>>,
    host_cpus: u32,
    run_job: impl Fn(&Job<'a>) -> Result<RunResult> + Sync,
) -> Result<Vec<RunResult>> {
    use std::collections::VecDeque;
    use std::sync::{Condvar, Mutex};
    let n = jobs.len();
    let mut order: Vec<(usize, Job)> = jobs.into_iter().enumerate().collect();
    order.sort_by_key(|(i, j)| (std::cmp::Reverse(j.suites.len()), *i));
    let queue = Mutex::new((order.into_iter().collect::<VecDeque<_>>(), host_cpus));
    let freed = Condvar::new();
    let done: Mutex<Vec<(usize, Result<RunResult>)>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..host_cpus {
            scope.spawn(|| loop {
                let (i, job, need) = {
                    let mut q = queue.lock().expect("job queue");
                    loop {
                        if q.0.is_empty() {
                            return;
                        }
                        let free = q.1;
                        let fits = q.0.iter().position(|(_, j)| j.cpus.min(host_cpus) <= free);
                        if let Some(pos) = fits {
                            let (i, job) = q.0.remove(pos).expect("position is in the queue");
                            let need = job.cpus.min(host_cpus);
                            q.1 -= need;
                            break (i, job, need);
                        }
                        q = freed.wait(q).expect("job queue");
                    }
                };
                let r = run_job(&job);
                queue.lock().expect("job queue").1 += need;
                freed.notify_all();
                done.lock().expect("results").push((i, r));
            });
        }
    });
    let mut done = done.into_inner().expect("results");
    done.sort_by_key(|(i, _)| *i);
    debug_assert_eq!(done.len(), n);
    done.into_iter().map(|(_, r)| r).collect()
}

/// `cargo xtask test --vm KERNEL… [--tier TIER…] [--vm-test NAME…] [-- TEST ARGS]`.
#[allow(clippy::too_many_arguments)]
pub fn test_task(
    kernels: &[String],
    tiers: &[String],
    test_names: &[String],
    plan: SuitePlan,
    cpus: Option<u32>,
    host_cpus: u32,
    timeout: Option<u64>,
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
    // The guest's root is the host's: the suites' tools (ip, nft, iptables,
    // busybox, bpftool, …) must be installed here.
    crate::sysdeps::ensure(
        "cargo xtask test --vm",
        &[crate::sysdeps::DEMO, crate::sysdeps::TEST],
    )?;
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
    let explicit = split_list(test_names);

    let mut jobs = Vec::new();
    for k in &ks {
        for tier in &tiers {
            let names: Vec<String> = if explicit.is_empty() {
                plan_suites(plan, &kernels, &k.series, tier)
                    .into_iter()
                    .map(str::to_owned)
                    .collect()
            } else {
                explicit.clone()
            };
            let mut chosen = names
                .iter()
                .map(|n| plan_one(n, &exes))
                .collect::<Result<Vec<_>>>()?;
            for p in &mut chosen {
                for (series, t, suite, test, why) in KNOWN_FAILURES {
                    if *series == k.series && t == tier && *suite == p.name {
                        p.not_in_guest
                            .push((test.to_string(), format!("known failure: {why}")));
                    }
                }
            }
            let timeout =
                timeout.unwrap_or_else(|| guest_budget(chosen.iter().map(|p| p.name.as_str())));
            jobs.push(Job {
                k,
                tier: tier.clone(),
                cpus: cpus.unwrap_or_else(|| k.default_cpus()),
                timeout,
                suites: chosen,
            });
        }
    }
    let run_job = |j: &Job| {
        test_one(
            &vng, j.k, &j.tier, j.cpus, j.timeout, console, &bin, &j.suites, args,
        )
    };
    let results = if host_cpus <= 1 {
        jobs.iter().map(run_job).collect::<Result<Vec<_>>>()?
    } else {
        side_by_side(jobs, host_cpus, run_job)?
    };

    println!();
    println!("VM test summary:");
    let (mut passed, mut failed, mut skipped, mut not_run) = (0, 0, 0, 0);
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
        for line in &r.not_in_guest {
            not_run += 1;
            println!("  {} {line}", r.label);
        }
        for line in &r.notes {
            println!("  {} {line}", r.label);
        }
    }
    println!("VM run times:");
    for r in &results {
        let parts: Vec<String> = r
            .took
            .iter()
            .map(|(n, t)| format!("{n} {t:.0} s"))
            .collect();
        println!("  {} {}", r.label, parts.join(", "));
    }
    for r in &results {
        println!("{}", r.summary);
    }
    let broken = results.iter().filter(|r| !r.ok).count();
    println!(
        "vm: {passed} passed, {failed} failed, {skipped} skipped, {not_run} not run in guests"
    );
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
    cpus: u32,
    timeout: u64,
    console: bool,
    bin: &Path,
    tests: &[Planned],
    args: &[String],
) -> Result<RunResult> {
    let label = format!("[{}/{tier}]", k.series);
    let mut env = vec![
        ("PATHTRACE_BIN".to_string(), bin.display().to_string()),
        ("PATHTRACE_TEST_TIER".to_string(), tier.to_string()),
        ("PATHTRACE_TEST_DOCKER".to_string(), "emulated".to_string()),
        // Software emulation is several times slower than the host.
        ("PATHTRACE_TEST_TIMEOUT_SCALE".to_string(), "6".to_string()),
    ];
    // The guest gets none of the host's environment: pass on pathtrace's
    // log filter, for debugging a suite in the guest.
    if let Ok(filter) = std::env::var("RUST_LOG") {
        env.push(("RUST_LOG".to_string(), filter));
    }
    let mut not_in_guest = Vec::new();
    let mut notes = Vec::new();
    let steps: Vec<GuestStep> = tests
        .iter()
        .map(|t| {
            let mut argv = vec![
                t.exe.display().to_string(),
                "--test-threads=1".into(),
                "--show-output".into(),
            ];
            if t.include_ignored {
                argv.push("--include-ignored".into());
            }
            for (name, why) in &t.not_in_guest {
                argv.extend(["--skip".to_string(), name.clone()]);
                not_in_guest.push(format!("not run in guests: {}::{name} — {why}", t.name));
            }
            if let Some(note) = &t.note {
                notes.push(format!("{} in guests: {note}", t.name));
            }
            argv.extend(args.iter().cloned());
            let mut env = env.clone();
            for (k, v) in &t.env {
                env.retain(|(e, _)| e != k);
                env.push((k.clone(), v.clone()));
            }
            GuestStep {
                name: t.name.clone(),
                env,
                argv,
            }
        })
        .collect();
    let name = format!("test-{}-{tier}", k.series);
    let script = guest::write_script(&name, &steps)?;
    let log = workspace_root().join(format!("target/vm/{name}.log"));
    let names: Vec<&str> = tests.iter().map(|t| t.name.as_str()).collect();
    println!(
        "{label} booting {} ({cpus} vCPU, software emulation), tier {tier}: {}",
        k.release,
        names.join(", ")
    );
    for l in not_in_guest.iter().chain(&notes) {
        println!("{label} {l}");
    }
    let mut done_steps: Vec<Step> = Vec::new();
    let mut took: Vec<(String, f64)> = Vec::new();
    let mut current: Option<(Step, Duration)> = None;
    let out = guest::boot(
        vng,
        k,
        cpus,
        &script,
        &log,
        Duration::from_secs(timeout),
        console,
        None,
        |mark, at| match mark {
            Mark::Begin(step) => {
                println!("{label} {:>6.1}s ---- {step}", at.as_secs_f64());
                current = (step != "guest-checks").then(|| (Step::new(&step, at), at));
            }
            Mark::Output(line) => {
                println!("{label} {line}");
                if let Some((s, _)) = current.as_mut() {
                    s.feed(&line, at);
                }
            }
            Mark::End(step, rc) => {
                println!("{label} {:>6.1}s ---- {step} exited {rc}", at.as_secs_f64());
                if let Some((mut s, began)) = current.take() {
                    s.rc = Some(rc);
                    took.push((s.name.clone(), at.saturating_sub(began).as_secs_f64()));
                    done_steps.push(s);
                }
            }
            Mark::Done => {}
        },
    )?;
    if let Some((s, _)) = current.take() {
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
    for t in tests {
        let want = &t.name;
        match done_steps.iter().find(|s| &s.name == want) {
            None => problems.push(format!("{want} did not run")),
            Some(s) => {
                if s.rc != Some(0) {
                    problems.push(format!("{want} exited {:?}", s.rc));
                }
                // A suite whose every test is listed as not run in guests
                // runs none, and says so in the report.
                if s.tests.is_empty() && args.is_empty() && t.not_in_guest.is_empty() {
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
        "{label} {} tier {tier}: {} passed, {} failed, {} skipped, {} not run in guests; VM {:.1} s (boot {:.1} s){}{}",
        k.release,
        count(Outcome::Passed),
        count(Outcome::Failed),
        count(Outcome::Skipped) + count(Outcome::Ignored),
        tests.iter().map(|t| t.not_in_guest.len()).sum::<usize>(),
        out.wall.as_secs_f64(),
        out.boot.map(|b| b.as_secs_f64()).unwrap_or(f64::NAN),
        if ok { "" } else { " — FAILED: " },
        problems.join("; ")
    );
    println!("{summary}; console log {}", out.log.display());
    Ok(RunResult {
        label,
        steps: done_steps,
        took,
        not_in_guest,
        notes,
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
    fn one_kernel_per_tier_runs_the_full_suites() {
        let ks = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let all = ks(&["5.10", "6.1", "6.12"]);
        let full =
            |k: &str, t: &str| plan_suites(SuitePlan::Matrix, &all, k, t).len() > CORE_SUITES.len();
        assert!(full("5.10", "fentry") && !full("5.10", "kprobe"));
        assert!(full("6.12", "kprobe") && !full("6.12", "fentry"));
        assert!(!full("6.1", "fentry") && !full("6.1", "kprobe"));
        assert_eq!(
            plan_suites(SuitePlan::Matrix, &all, "6.1", "kprobe"),
            CORE_SUITES.to_vec()
        );
        // Without 5.10, the first kernel asked for runs fentry's full suites.
        let two = ks(&["6.12", "6.1"]);
        assert!(plan_suites(SuitePlan::Matrix, &two, "6.12", "fentry").len() > CORE_SUITES.len());
        let kprobe = plan_suites(SuitePlan::Matrix, &all, "6.12", "kprobe");
        assert!(kprobe.contains(&"failures") && !kprobe.contains(&"odd_states"));
        let fentry = plan_suites(SuitePlan::Matrix, &all, "5.10", "fentry");
        assert!(!fentry.contains(&"failures") && fentry.contains(&"rules"));
        assert!(fentry.contains(&"odd_states"));
        assert_eq!(
            plan_suites(SuitePlan::All, &all, "6.12", "kprobe").len(),
            GUEST_SUITES.len()
        );
        // Every suite a plan names can run in a guest, in GUEST_SUITES' order.
        let order: Vec<&str> = GUEST_SUITES.iter().map(|s| s.name).collect();
        let mut at = 0;
        for s in MATRIX_SUITES.iter().chain(CORE_SUITES) {
            assert!(order.contains(s), "{s}");
        }
        for s in MATRIX_SUITES {
            let i = order.iter().position(|o| o == s).expect("listed");
            assert!(i >= at, "{s} out of order");
            at = i;
        }
        assert_eq!(
            plan_suites(SuitePlan::Trace, &all, "5.10", "fentry"),
            CORE_SUITES.to_vec()
        );
    }

    #[test]
    fn lists_split_on_commas() {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(split_list(&v(&["6.1,6.12", "6.1"])), v(&["6.1", "6.12"]));
    }
}
