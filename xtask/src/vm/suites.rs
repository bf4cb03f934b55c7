//! Which integration suites run in the guests: every suite that can, the
//! tests in them that can't (skipped by name, listed in the report), and the
//! plan of which suites run on which (kernel, tier).
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::{build::Executable, proc::output_of};

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

/// A suite as one (kernel, tier) run runs it.
#[derive(Debug, Clone)]
pub struct Planned {
    pub name: String,
    pub exe: PathBuf,
    /// `(test, reason)`: skipped by name in the guest, listed in the report.
    pub not_in_guest: Vec<(String, String)>,
    pub env: Vec<(String, String)>,
    pub note: Option<String>,
    /// Run the suite's `#[ignore]`d tests too (see [`GuestSuite::guest_only`]).
    pub include_ignored: bool,
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

/// The suite `name`, with what it can't run in a guest, from the test
/// executables `exes`.
pub fn plan_one(name: &str, exes: &[Executable]) -> Result<Planned> {
    let exe = &exes
        .iter()
        .find(|e| e.name == name)
        .with_context(|| {
            let known: Vec<&str> = exes.iter().map(|e| e.name.as_str()).collect();
            format!(
                "no `{name}` integration test (there are: {})",
                known.join(", ")
            )
        })?
        .path;
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
