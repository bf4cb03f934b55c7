//! `cargo xtask test --vm KERNEL… [--tier TIER…] [--vm-test NAME…] [-- TEST
//! ARGS]`: the integration suites in guests booting stock Debian kernels, one
//! guest per (kernel, tier), one after the other or side by side.
use std::{path::Path, time::Duration};

use anyhow::{bail, Result};

use super::{
    guest::{self, Guest, GuestStep},
    kernel,
    report::{Mark, Outcome, Step},
    split_list,
    suites::{plan_one, plan_suites, Planned, SuitePlan, KNOWN_FAILURES, TIERS},
    tools, VmOpts,
};
use crate::{
    build::{build, integration_tests, Build},
    workspace::workspace_root,
};

/// `test`'s options for guests.
#[derive(clap::Args)]
#[group(skip)]
pub struct Options {
    /// Run the integration tests in a VM with this Debian kernel (5.10, 6.1, 6.12);
    /// repeat it or give a comma list.
    #[arg(id = "vm", long = "vm", value_name = "KERNEL")]
    pub kernels: Vec<String>,
    /// With --vm: the pathtrace tier to test (fentry, kprobe); repeatable. Default: both.
    #[arg(long, value_name = "TIER", requires = "vm")]
    pub tier: Vec<String>,
    /// With --vm: the integration test binaries to run in the guest; repeatable.
    /// Default: as --vm-suites says.
    #[arg(long = "vm-test", value_name = "NAME", requires = "vm")]
    pub vm_test: Vec<String>,
    /// With --vm: which suites run where. matrix: the core suites and rules,
    /// diagnose, drops, pcap and hypervisor on one kernel per tier (fentry on
    /// 5.10, kprobe on 6.12),
    /// the core suites (trace_docker, hooks) on the others; all: every guest
    /// suite everywhere; trace: the core suites only.
    #[arg(long = "vm-suites", value_enum, default_value_t = SuitePlan::Matrix, requires = "vm")]
    pub vm_suites: SuitePlan,
    /// With --vm: host CPUs the guests may use at once; with more than 1, guests
    /// run side by side (their vCPUs never more than this in all). Default: 1, one
    /// guest at a time.
    #[arg(
        long = "vm-host-cpus",
        value_name = "N",
        default_value_t = 1,
        requires = "vm"
    )]
    pub vm_host_cpus: u32,
    #[command(flatten)]
    pub vm_opts: VmOpts,
}

/// Limit for one `test --vm` run: boot, plus this much per suite (the full
/// suites took 15 to 22 minutes under emulation; a hang must still end).
const BOOT_SECS: u64 = 3 * 60;
const SECS_PER_SUITE: u64 = 10 * 60;
/// Suites that take longer than [`SECS_PER_SUITE`] under emulation, and
/// their own budget: `failures` is 30 cases of about 30 s each.
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

/// What every job of one `test --vm` shares.
struct Shared<'a> {
    vng: &'a Path,
    console: bool,
    /// The pathtrace binary the suites run.
    bin: &'a Path,
    /// Extra arguments for every test binary.
    args: &'a [String],
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
pub fn run(opts: &Options, args: &[String]) -> Result<()> {
    let kernels = split_list(&opts.kernels);
    let tiers = if opts.tier.is_empty() {
        TIERS.iter().map(|t| t.to_string()).collect()
    } else {
        split_list(&opts.tier)
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
    let built = build(&Build {
        packages: &["tracer"],
        bin: Some("pathtrace"),
        ..Build::default()
    })?;
    let bin = built.executable("pathtrace")?;
    let exes = integration_tests(&built.obj)?;
    let explicit = split_list(&opts.vm_test);

    let mut jobs = Vec::new();
    for k in &ks {
        for tier in &tiers {
            let names: Vec<String> = if explicit.is_empty() {
                plan_suites(opts.vm_suites, &kernels, &k.series, tier)
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
            let timeout = opts
                .vm_opts
                .timeout
                .unwrap_or_else(|| guest_budget(chosen.iter().map(|p| p.name.as_str())));
            jobs.push(Job {
                k,
                tier: tier.clone(),
                cpus: opts.vm_opts.cpus.unwrap_or_else(|| k.default_cpus()),
                timeout,
                suites: chosen,
            });
        }
    }
    let shared = Shared {
        vng: &vng,
        console: opts.vm_opts.console,
        bin: &bin,
        args,
    };
    let run_job = |j: &Job| test_one(&shared, j);
    let results = if opts.vm_host_cpus <= 1 {
        jobs.iter().map(run_job).collect::<Result<Vec<_>>>()?
    } else {
        side_by_side(jobs, opts.vm_host_cpus, run_job)?
    };
    print_summary(&results);
    let broken = results.iter().filter(|r| !r.ok).count();
    if broken > 0 {
        bail!("{broken} of {} VM runs did not pass", results.len());
    }
    Ok(())
}

/// The report of every run: each test's outcome, what didn't run in guests
/// and why, each suite's time, and the closing counts.
fn print_summary(results: &[RunResult]) {
    println!();
    println!("VM test summary:");
    let (mut passed, mut failed, mut skipped, mut not_run) = (0, 0, 0, 0);
    for r in results {
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
    for r in results {
        let parts: Vec<String> = r
            .took
            .iter()
            .map(|(n, t)| format!("{n} {t:.0} s"))
            .collect();
        println!("  {} {}", r.label, parts.join(", "));
    }
    for r in results {
        println!("{}", r.summary);
    }
    println!(
        "vm: {passed} passed, {failed} failed, {skipped} skipped, {not_run} not run in guests"
    );
    print_failures(results);
}

/// Each failed test with what it panicked with, last, where a CI log's
/// tail shows it (the whole output is in the console log).
fn print_failures(results: &[RunResult]) {
    for r in results {
        for s in &r.steps {
            for (name, o, _) in s.results() {
                if o != Outcome::Failed {
                    continue;
                }
                println!("{} FAILED {}::{name}", r.label, s.name);
                for line in s.panics_of(&name).flatten() {
                    println!("{}   {line}", r.label);
                }
            }
        }
    }
}

/// Boots one job's guest and runs its suites; the report of how they went.
fn test_one(shared: &Shared, job: &Job) -> Result<RunResult> {
    let &Shared {
        vng,
        console,
        bin,
        args,
    } = shared;
    let Job {
        k,
        tier,
        cpus,
        timeout,
        suites: tests,
    } = job;
    let (k, cpus, timeout) = (*k, *cpus, *timeout);
    let label = format!("[{}/{tier}]", k.series);
    let env = guest_env(bin, tier);
    let (steps, not_in_guest, notes) = guest_steps(tests, &env, args);
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
    let guest = Guest {
        vng,
        kernel: k,
        cpus,
        timeout: Duration::from_secs(timeout),
        echo_console: console,
        rwdir: None,
    };
    let GuestRun {
        out,
        steps: done_steps,
        took,
    } = run_guest(&guest, &script, &log, &label)?;
    let problems = problems(&out, timeout, tests, &done_steps, args);
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

/// The environment of the suites in a guest, which gets none of the host's.
fn guest_env(bin: &Path, tier: &str) -> Vec<(String, String)> {
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
    env
}

/// Each suite as a step of the guest's script; the tests not run in guests
/// and the suites' notes, one line each.
fn guest_steps(
    tests: &[Planned],
    env: &[(String, String)],
    args: &[String],
) -> (Vec<GuestStep>, Vec<String>, Vec<String>) {
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
            let mut env = env.to_vec();
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
    (steps, not_in_guest, notes)
}

/// What came back from a guest, the steps that ran and how long each took.
struct GuestRun {
    out: guest::Outcome,
    steps: Vec<Step>,
    took: Vec<(String, f64)>,
}

/// Boots `guest` with `script`, echoing its marked lines under `label`.
fn run_guest(guest: &Guest, script: &Path, log: &Path, label: &str) -> Result<GuestRun> {
    let mut done_steps: Vec<Step> = Vec::new();
    let mut took: Vec<(String, f64)> = Vec::new();
    let mut current: Option<(Step, Duration)> = None;
    let out = guest::boot(guest, script, log, |mark, at| match mark {
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
    })?;
    if let Some((s, _)) = current.take() {
        done_steps.push(s);
    }
    Ok(GuestRun {
        out,
        steps: done_steps,
        took,
    })
}

/// What went wrong with a guest's run beyond failed tests.
fn problems(
    out: &guest::Outcome,
    timeout: u64,
    tests: &[Planned],
    done_steps: &[Step],
    args: &[String],
) -> Vec<String> {
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
    problems
}
